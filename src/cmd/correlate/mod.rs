//! `netstack-lat correlate`: join two marker captures by interval_id and report T2 - T1 per
//! interval (exact statistics, a log2 histogram), the intervals seen at one point only and
//! those reordered between the points.
//!
//! The timestamps are each host's CLOCK_REALTIME: across hosts every latency includes the
//! clocks' offset, which `--offset-ns` takes out when it is known (latency = (T2 - offset) - T1).
//! `marker` calls [`join`] and [`PairSummary`] for its live pairs.

pub mod follow;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Result;
use csv::StringRecord;
use serde::Serialize;
use serde_json::Value;

use crate::cli::CorrelateArgs;
use crate::error::UserError;
use crate::events::marker_record::{MarkerRow, CSV_HEADER};
use crate::stats::hist::fmt_ns;

/// Header of `--csv`.
pub const JOINED_CSV_HEADER: &str = "interval_id,position,t1_ns,t2_ns,latency_ns,from,to";

/// Ids printed in the human lists before `... (+K more)` (a range counts as one).
const LIST_CAP: usize = 50;

// ---------------------------------------------------------------------------------------
// Reading

/// Where each column sits in one file's header.
pub(crate) struct Columns {
    len: usize,
    /// The header as written, for error messages.
    header: String,
    timestamp_ns: usize,
    interval_id: usize,
    point: Option<usize>,
    position: Option<usize>,
    iface: Option<usize>,
    direction: Option<usize>,
    src: Option<usize>,
    sport: Option<usize>,
    dst: Option<usize>,
    dport: Option<usize>,
}

impl Columns {
    /// The header from one line of text (`correlate --follow` reads line by line).
    pub(crate) fn parse(name: &str, lineno: usize, line: &str) -> Result<Columns, UserError> {
        Columns::from_record(name, lineno, &record(name, lineno, line)?)
    }

    fn from_record(name: &str, lineno: usize, header: &StringRecord) -> Result<Columns, UserError> {
        let names: Vec<&str> = header.iter().map(str::trim).collect();
        // The first column of that name wins, as a reader scanning left to right would expect.
        let find = |col: &str| names.iter().position(|&n| n == col);
        let need = |col: &str| {
            find(col).ok_or_else(|| {
                UserError::new(format!(
                    "{name}:{lineno}: no {col} column in the header (marker writes: {CSV_HEADER})"
                ))
            })
        };
        Ok(Columns {
            len: names.len(),
            // Quoted in every row's error: a header of junk must not make huge messages.
            header: cut(&names.join(","), 300),
            timestamp_ns: need("timestamp_ns")?,
            interval_id: need("interval_id")?,
            point: find("point"),
            position: find("position"),
            iface: find("iface"),
            direction: find("direction"),
            src: find("src"),
            sport: find("sport"),
            dst: find("dst"),
            dport: find("dport"),
        })
    }
}

/// Parse marker CSV text (`name` is the file's name for messages and the default point).
///
/// The first line that is neither blank nor a `#` comment is the header; columns are found by
/// name, so their order may differ and extra ones are ignored. `timestamp_ns` and
/// `interval_id` are required; a missing `point` column makes every row's point the file name.
pub fn parse_csv(name: &str, text: &str) -> Result<Vec<MarkerRow>, UserError> {
    let default_point = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = reader(text.as_bytes())
        .into_records()
        .map(|r| {
            let r = r.map_err(|e| csv_error(name, text, &e))?;
            let lineno = r.position().map_or(0, |p| line_at(text, p.byte()));
            Ok((lineno, r))
        })
        .filter(|r| !matches!(r, Ok((_, rec)) if is_blank(rec)));
    let Some(first) = records.next() else {
        return Err(UserError::new(format!(
            "{name}: empty file, no header line (marker writes: {CSV_HEADER})"
        )));
    };
    let (hline, header) = first?;
    let cols = Columns::from_record(name, hline, &header)?;
    records
        .map(|r| {
            let (n, rec) = r?;
            parse_record(name, n, &rec, &cols, default_point)
        })
        .collect()
}

/// The CSV reader of marker files: quoted fields may hold commas, quotes and line breaks;
/// `#` starts a comment line; rows may differ in length (parse_record says which is wrong).
fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(bytes)
}

/// The 1-based line of a record that starts at byte `at`. The csv crate's own line count
/// leaves out the empty lines it skips; a record's start may lie before them.
fn line_at(text: &str, at: u64) -> usize {
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
    let skipped = text.as_bytes()[at..]
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .filter(|&&b| b == b'\n')
        .count();
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + skipped
        + 1
}

/// A line of spaces reads as one empty field: skipped like an empty line.
fn is_blank(r: &StringRecord) -> bool {
    r.iter().all(|f| f.trim().is_empty()) && r.len() <= 1
}

fn csv_error(name: &str, text: &str, e: &csv::Error) -> UserError {
    let line = e.position().map_or(0, |p| line_at(text, p.byte()));
    UserError::new(format!("{name}:{line}: not CSV: {e}"))
}

/// One line of text as a CSV record (a quoted field may hold commas and doubled quotes).
fn record(name: &str, lineno: usize, line: &str) -> Result<StringRecord, UserError> {
    let mut r = StringRecord::new();
    reader(line.as_bytes())
        .read_record(&mut r)
        .map_err(|e| UserError::new(format!("{name}:{lineno}: not CSV: {e}")))?;
    Ok(r)
}

/// One data line of text (`correlate --follow` reads line by line).
pub(crate) fn parse_row(
    name: &str,
    lineno: usize,
    line: &str,
    c: &Columns,
    default_point: &str,
) -> Result<MarkerRow, UserError> {
    parse_record(name, lineno, &record(name, lineno, line)?, c, default_point)
}

/// One data record; errors name the file, the 1-based line, the column and the bad value.
fn parse_record(
    name: &str,
    lineno: usize,
    rec: &StringRecord,
    c: &Columns,
    default_point: &str,
) -> Result<MarkerRow, UserError> {
    let f: Vec<&str> = rec.iter().map(str::trim).collect();
    if f.len() != c.len {
        return Err(UserError::new(format!(
            "{name}:{lineno}: {} fields, the header has {} (columns: {})",
            f.len(),
            c.len,
            c.header
        )));
    }
    let bad = |col: &str, v: &str, what: &str| {
        UserError::new(format!(
            "{name}:{lineno}: {col} '{}' is {what} (columns: {})",
            shorten(v),
            c.header
        ))
    };
    let text = |i: Option<usize>| i.map_or("", |i| f[i]);
    let whole = |col: &str, i: usize| {
        f[i].parse::<u64>()
            .map_err(|_| bad(col, f[i], "not a whole number"))
    };
    let port = |col: &str, i: Option<usize>| match i {
        None => Ok(0),
        Some(i) => f[i]
            .parse::<u16>()
            .map_err(|_| bad(col, f[i], "not a port (0 to 65535)")),
    };
    let addr = |col: &str, i: Option<usize>| match i {
        None => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(i) => f[i]
            .parse::<IpAddr>()
            .map_err(|_| bad(col, f[i], "not an IP address")),
    };
    let position = match c.position.map(|i| f[i]) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad("position", v, "not a whole number (nor empty)"))?,
        ),
    };
    Ok(MarkerRow {
        timestamp_ns: whole("timestamp_ns", c.timestamp_ns)?,
        point: c.point.map_or(default_point, |i| f[i]).to_string(),
        iface: text(c.iface).to_string(),
        direction: text(c.direction).to_string(),
        src: addr("src", c.src)?,
        sport: port("sport", c.sport)?,
        dst: addr("dst", c.dst)?,
        dport: port("dport", c.dport)?,
        interval_id: whole("interval_id", c.interval_id)?,
        position,
    })
}

/// A bad value as quoted in a message: long ones cut, so the message stays one short line.
fn shorten(v: &str) -> String {
    cut(v, 40)
}

/// At most `max` characters of `v`, then `...`; control characters (a lone CR, a tab)
/// escaped, so a message quoting it stays one line.
fn cut(v: &str, max: usize) -> String {
    let mut out = String::new();
    for c in v.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if v.chars().nth(max).is_some() {
        out += "...";
    }
    out
}

/// Read and parse one marker CSV file.
pub fn read_csv(path: &Path) -> Result<Vec<MarkerRow>, UserError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::new(format!("cannot read {name}: {e}")))?;
    parse_csv(&name, &text)
}

/// One input file: its name (for messages) and its rows.
#[derive(Debug, Clone)]
pub struct Capture {
    pub name: String,
    pub rows: Vec<MarkerRow>,
}

impl Capture {
    pub fn read(path: &Path) -> Result<Capture, UserError> {
        Ok(Capture {
            name: path.display().to_string(),
            rows: read_csv(path)?,
        })
    }

    /// The distinct capture points, in order of first appearance.
    pub fn points(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.rows
            .iter()
            .map(|r| r.point.as_str())
            .filter(|p| seen.insert(*p))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Choosing the two points

/// "2 capture points (a, b)", the list cut after a few.
fn describe_points(points: &[&str]) -> String {
    const SHOWN: usize = 8;
    let n = points.len();
    let mut list = points
        .iter()
        .take(SHOWN)
        .map(|p| cut(p, 64))
        .collect::<Vec<_>>()
        .join(", ");
    if n > SHOWN {
        let _ = write!(list, ", ... (+{} more)", n - SHOWN);
    }
    let s = if n == 1 { "" } else { "s" };
    format!("{n} capture point{s} ({list})")
}

/// The point `opt` names, which must be in `c`.
fn named_point(c: &Capture, opt: &str, want: &str) -> Result<String, UserError> {
    let points = c.points();
    if points.contains(&want) {
        return Ok(want.to_string());
    }
    let there = if points.is_empty() {
        "it holds no marker rows".to_string()
    } else {
        format!(
            "it holds {}",
            points
                .iter()
                .map(|p| cut(p, 64))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(UserError::new(format!(
        "{opt} {}: no such capture point in {}: {there}",
        cut(want, 64),
        c.name
    )))
}

/// The point of one side of a two-file join: `--from`/`--to` if given, else the file's only
/// one (a file without rows gives its name: that side then sees nothing).
fn side_point(c: &Capture, opt: &str, want: Option<&str>) -> Result<String, UserError> {
    if let Some(w) = want {
        return named_point(c, opt, w);
    }
    match c.points().as_slice() {
        [] => Ok(c.name.clone()),
        [p] => Ok(p.to_string()),
        many => Err(UserError::new(format!(
            "{} holds {}: choose one with {opt}",
            c.name,
            describe_points(many)
        ))),
    }
}

/// The (from, to) point labels. T1 comes from `first`, T2 from `second` or, with one file,
/// from `first` too: it must then hold two points, taken in order of first appearance when
/// neither option is given (or the other one when only one is given).
pub fn choose_points(
    first: &Capture,
    second: Option<&Capture>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(String, String), UserError> {
    if let Some(second) = second {
        return Ok((
            side_point(first, "--from", from)?,
            side_point(second, "--to", to)?,
        ));
    }
    let points = first.points();
    let (f, t) = match (from, to, points.as_slice()) {
        (Some(f), Some(t), _) => (named_point(first, "--from", f)?, named_point(first, "--to", t)?),
        (None, None, [a, b]) => (a.to_string(), b.to_string()),
        (Some(f), None, [a, b]) => {
            let f = named_point(first, "--from", f)?;
            let t = if f == *a { b } else { a };
            (f, t.to_string())
        }
        (None, Some(t), [a, b]) => {
            let t = named_point(first, "--to", t)?;
            let f = if t == *a { b } else { a };
            (f.to_string(), t)
        }
        (_, _, [] | [_]) => {
            return Err(UserError::new(format!(
                "{} holds {}: correlate needs two, from two files (A.csv B.csv) or from one file holding both",
                first.name,
                if points.is_empty() {
                    "no marker rows".to_string()
                } else {
                    describe_points(&points)
                }
            )))
        }
        _ => {
            return Err(UserError::new(format!(
                "{} holds {}: choose two with --from and --to",
                first.name,
                describe_points(&points)
            )))
        }
    };
    if f == t {
        return Err(UserError::new(format!(
            "--from and --to both name {f}: choose two different capture points of {}",
            first.name
        )));
    }
    Ok((f, t))
}

// ---------------------------------------------------------------------------------------
// First sightings and the join

/// When an interval was first seen at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    pub ts: u64,
    pub position: Option<u64>,
}

/// Per interval_id the row with the smallest timestamp (ties: the earliest row), and how many
/// rows were set aside as later sightings of an interval already seen.
pub fn first_sightings<'a>(
    rows: impl IntoIterator<Item = &'a MarkerRow>,
) -> (BTreeMap<u64, Sighting>, u64) {
    let mut out: BTreeMap<u64, Sighting> = BTreeMap::new();
    let mut duplicates = 0;
    for r in rows {
        let s = Sighting {
            ts: r.timestamp_ns,
            position: r.position,
        };
        match out.get_mut(&r.interval_id) {
            None => {
                out.insert(r.interval_id, s);
            }
            Some(old) => {
                duplicates += 1;
                if s.ts < old.ts {
                    *old = s;
                }
            }
        }
    }
    (out, duplicates)
}

/// One interval seen at both points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinedRow {
    pub interval_id: u64,
    /// The position of the T1 sighting, else of the T2 one.
    pub position: Option<u64>,
    pub t1_ns: u64,
    pub t2_ns: u64,
    /// (T2 - offset) - T1: negative when the clocks disagree by more than the latency.
    pub latency_ns: i64,
}

/// The result of [`join`]; every list ascending by interval_id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    pub rows: Vec<JoinedRow>,
    /// Seen at `from` only: they never reached `to` (or not yet).
    pub missing_at_to: Vec<u64>,
    /// Seen at `to` only.
    pub missing_at_from: Vec<u64>,
    /// Overtaken between the points: T2 before the T2 of an interval with an earlier T1.
    pub out_of_order: Vec<u64>,
    pub offset_ns: i64,
}

impl Joined {
    /// The latencies in interval_id order (e.g. for a Prometheus histogram).
    pub fn latencies(&self) -> impl Iterator<Item = i64> + '_ {
        self.rows.iter().map(|r| r.latency_ns)
    }

    /// Ids seen at exactly one of the points, ascending.
    pub fn missing(&self) -> Vec<u64> {
        let mut m: Vec<u64> = self
            .missing_at_to
            .iter()
            .chain(&self.missing_at_from)
            .copied()
            .collect();
        m.sort_unstable();
        m
    }

    /// `--csv`: the header and one line per joined interval (labels quoted where needed).
    pub fn csv(&self, from: &str, to: &str) -> Result<String> {
        let mut w = csv_writer();
        w.write_record(JOINED_CSV_HEADER.split(','))?;
        for r in &self.rows {
            w.serialize(JoinedCsvRow::new(r, from, to))?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}

/// A line of `--csv`: serde names the columns of JOINED_CSV_HEADER, in its order.
#[derive(Serialize)]
struct JoinedCsvRow<'a> {
    interval_id: u64,
    position: Option<u64>,
    t1_ns: u64,
    t2_ns: u64,
    latency_ns: i64,
    from: &'a str,
    to: &'a str,
}

impl<'a> JoinedCsvRow<'a> {
    fn new(r: &JoinedRow, from: &'a str, to: &'a str) -> JoinedCsvRow<'a> {
        JoinedCsvRow {
            interval_id: r.interval_id,
            position: r.position,
            t1_ns: r.t1_ns,
            t2_ns: r.t2_ns,
            latency_ns: r.latency_ns,
            from,
            to,
        }
    }
}

/// A CSV writer with `\n` line ends; the header is written by the caller, so an empty
/// result still has one.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

/// (T2 - offset) - T1 without overflow, saturated to i64 (only absurd inputs get there).
fn latency(t1: u64, t2: u64, offset_ns: i64) -> i64 {
    let l = i128::from(t2) - i128::from(offset_ns) - i128::from(t1);
    l.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Join the first sightings at two points by interval_id.
pub fn join(
    from: &BTreeMap<u64, Sighting>,
    to: &BTreeMap<u64, Sighting>,
    offset_ns: i64,
) -> Joined {
    let mut j = Joined {
        offset_ns,
        ..Joined::default()
    };
    for (&id, a) in from {
        match to.get(&id) {
            Some(b) => j.rows.push(JoinedRow {
                interval_id: id,
                position: a.position.or(b.position),
                t1_ns: a.ts,
                t2_ns: b.ts,
                latency_ns: latency(a.ts, b.ts, offset_ns),
            }),
            None => j.missing_at_to.push(id),
        }
    }
    j.missing_at_from = to
        .keys()
        .filter(|id| !from.contains_key(id))
        .copied()
        .collect();
    j.out_of_order = out_of_order(&j.rows);
    j
}

/// Ids whose T2 is below the largest T2 of an interval with an earlier T1 (ties by id): they
/// passed the first point after it and the second one before it. The offset shifts every T2
/// alike, so raw T2s compare the same.
fn out_of_order(rows: &[JoinedRow]) -> Vec<u64> {
    let mut by_t1: Vec<&JoinedRow> = rows.iter().collect();
    by_t1.sort_unstable_by_key(|r| (r.t1_ns, r.interval_id));
    let mut latest_t2 = None;
    let mut out = Vec::new();
    for r in by_t1 {
        match latest_t2 {
            Some(m) if r.t2_ns < m => out.push(r.interval_id),
            _ => latest_t2 = Some(latest_t2.map_or(r.t2_ns, |m: u64| m.max(r.t2_ns))),
        }
    }
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------
// Statistics and output

/// Exact statistics of the joined latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyStats {
    pub count: u64,
    pub min_ns: i64,
    /// The mean rounded toward negative infinity.
    pub avg_ns: i64,
    pub p50_ns: i64,
    pub p90_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
}

/// The value at 1-based rank ceil(q/100 * n) of sorted values (nearest rank).
fn nearest_rank(sorted: &[i64], q: u64) -> i64 {
    let n = sorted.len() as u64;
    let rank = (q * n).div_ceil(100).clamp(1, n);
    sorted[(rank - 1) as usize]
}

/// Count, min, floor of the mean, nearest-rank p50/p90/p99 and max; None without values.
pub fn latency_stats(latencies: &[i64]) -> Option<LatencyStats> {
    if latencies.is_empty() {
        return None;
    }
    let mut v = latencies.to_vec();
    v.sort_unstable();
    let n = v.len() as i128;
    let sum: i128 = v.iter().map(|&l| i128::from(l)).sum();
    Some(LatencyStats {
        count: v.len() as u64,
        min_ns: v[0],
        // Between min and max, so it fits.
        avg_ns: sum.div_euclid(n) as i64,
        p50_ns: nearest_rank(&v, 50),
        p90_ns: nearest_rank(&v, 90),
        p99_ns: nearest_rank(&v, 99),
        max_ns: v[v.len() - 1],
    })
}

/// The summary line in the contract's field order (serde_json's Value would sort the keys).
#[derive(Serialize)]
struct SummaryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    count: u64,
    min_ns: Option<i64>,
    avg_ns: Option<i64>,
    p50_ns: Option<i64>,
    p90_ns: Option<i64>,
    p99_ns: Option<i64>,
    max_ns: Option<i64>,
    missing: &'a [u64],
    out_of_order: &'a [u64],
    from: &'a str,
    to: &'a str,
    offset_ns: i64,
    negative: u64,
    duplicates_from: u64,
    duplicates_to: u64,
    missing_at_to: &'a [u64],
    missing_at_from: &'a [u64],
}

/// Everything `correlate` prints about one pair of points.
#[derive(Debug, Clone)]
pub struct PairSummary {
    pub from: String,
    pub to: String,
    pub offset_ns: i64,
    /// None when no interval was seen at both points.
    pub stats: Option<LatencyStats>,
    /// Latencies below zero (left out of the histogram).
    pub negative: u64,
    pub missing: Vec<u64>,
    pub missing_at_to: Vec<u64>,
    pub missing_at_from: Vec<u64>,
    pub out_of_order: Vec<u64>,
    /// Later sightings set aside by [`first_sightings`]; the caller fills them in.
    pub duplicates_from: u64,
    pub duplicates_to: u64,
    /// The points come from two files, maybe two hosts' clocks: adds the note about offset.
    pub separate_clocks: bool,
    /// The latencies as a linear histogram over their range.
    pub bins: Vec<Bin>,
}

/// One bar of the latency histogram: latencies in [lo, hi).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    pub lo: i64,
    pub hi: i64,
    pub count: u64,
}

/// Most bars of the histogram.
const MAX_BINS: i128 = 20;

/// Equal-width bins from min to max, the width a 1-2-5 step (in ns) that needs at most
/// MAX_BINS bars: T2 - T1 of a stream sits in a narrow band far from zero, where
/// power-of-two buckets would put everything in one bar.
pub fn linear_bins(lat: &[i64]) -> Vec<Bin> {
    let (Some(&min), Some(&max)) = (lat.iter().min(), lat.iter().max()) else {
        return Vec::new();
    };
    let (min, max) = (i128::from(min), i128::from(max));
    let mut width: i128 = 1;
    'ladder: loop {
        for step in [1, 2, 5] {
            if (max - min) / (width * step) < MAX_BINS {
                width *= step;
                break 'ladder;
            }
        }
        width *= 10;
    }
    let first = min.div_euclid(width) * width;
    let n = ((max - first) / width + 1) as usize;
    let mut counts = vec![0u64; n];
    for &l in lat {
        counts[((i128::from(l) - first) / width) as usize] += 1;
    }
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| {
            let lo = first + i as i128 * width;
            Bin {
                lo: clamp(lo),
                hi: clamp(lo + width),
                count,
            }
        })
        .collect()
}

/// `v` ns in the unit of the largest bound, with the decimals the bin width needs.
fn fmt_bound(v: i64, largest: i64, width: i64) -> String {
    let (unit, name) = match largest.unsigned_abs() {
        n if n >= 1_000_000_000 => (1e9, "s"),
        n if n >= 1_000_000 => (1e6, "ms"),
        n if n >= 1_000 => (1e3, "us"),
        _ => (1.0, "ns"),
    };
    let decimals = (unit / width.max(1) as f64).log10().ceil().max(0.0) as usize;
    format!("{:.*}{name}", decimals, v as f64 / unit)
}

fn render_bins(bins: &[Bin]) -> String {
    const BAR: u64 = 40;
    let peak = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let largest = bins
        .iter()
        .flat_map(|b| [b.lo, b.hi])
        .max_by_key(|v| v.unsigned_abs())
        .unwrap_or(0);
    let mut out = String::new();
    for b in bins {
        let bar = (b.count * BAR / peak) as usize;
        let w = b.hi - b.lo;
        let range = format!(
            "[{}, {})",
            fmt_bound(b.lo, largest, w),
            fmt_bound(b.hi, largest, w)
        );
        let _ = writeln!(
            out,
            "{range:<22}{:>8} |{:<width$}|",
            b.count,
            "@".repeat(bar),
            width = BAR as usize
        );
    }
    out
}

impl PairSummary {
    pub fn new(j: &Joined, from: &str, to: &str) -> PairSummary {
        let lat: Vec<i64> = j.latencies().collect();
        PairSummary {
            from: from.to_string(),
            to: to.to_string(),
            offset_ns: j.offset_ns,
            stats: latency_stats(&lat),
            negative: lat.iter().filter(|&&l| l < 0).count() as u64,
            missing: j.missing(),
            missing_at_to: j.missing_at_to.clone(),
            missing_at_from: j.missing_at_from.clone(),
            out_of_order: j.out_of_order.clone(),
            duplicates_from: 0,
            duplicates_to: 0,
            separate_clocks: false,
            bins: linear_bins(&lat),
        }
    }

    fn line(&self) -> SummaryLine<'_> {
        let s = self.stats;
        SummaryLine {
            kind: "summary",
            count: s.map_or(0, |s| s.count),
            min_ns: s.map(|s| s.min_ns),
            avg_ns: s.map(|s| s.avg_ns),
            p50_ns: s.map(|s| s.p50_ns),
            p90_ns: s.map(|s| s.p90_ns),
            p99_ns: s.map(|s| s.p99_ns),
            max_ns: s.map(|s| s.max_ns),
            missing: &self.missing,
            out_of_order: &self.out_of_order,
            from: &self.from,
            to: &self.to,
            offset_ns: self.offset_ns,
            negative: self.negative,
            duplicates_from: self.duplicates_from,
            duplicates_to: self.duplicates_to,
            missing_at_to: &self.missing_at_to,
            missing_at_from: &self.missing_at_from,
        }
    }

    /// The `{"type":"summary",...}` object (keys sorted, as serde_json's Value keeps them).
    pub fn json(&self) -> Value {
        serde_json::to_value(self.line()).unwrap_or_default()
    }

    /// The same object as one line, keys in the documented order.
    pub fn json_line(&self) -> String {
        serde_json::to_string(&self.line()).unwrap_or_default()
    }

    /// The table: points, statistics, histogram, missing and out-of-order intervals.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} -> {}  (offset {} ns)\n",
            self.from, self.to, self.offset_ns
        );
        match &self.stats {
            None => s.push_str("count 0: no interval was seen at both points\n"),
            Some(t) => {
                let _ = writeln!(
                    s,
                    "count {}  min {}  avg {}  p50 {}  p90 {}  p99 {}  max {}",
                    t.count,
                    fmt_signed(t.min_ns),
                    fmt_signed(t.avg_ns),
                    fmt_signed(t.p50_ns),
                    fmt_signed(t.p90_ns),
                    fmt_signed(t.p99_ns),
                    fmt_signed(t.max_ns)
                );
            }
        }
        if self.negative > 0 {
            let _ = writeln!(
                s,
                "negative: {} (T2 before T1: the clocks differ by more than the latency)",
                self.negative
            );
        }
        if self.duplicates_from + self.duplicates_to > 0 {
            let _ = writeln!(
                s,
                "repeated sightings ignored (the first one counts): {} at from, {} at to",
                self.duplicates_from, self.duplicates_to
            );
        }
        if !self.bins.is_empty() {
            let _ = write!(s, "\nlatency:\n{}\n", render_bins(&self.bins));
        }
        let _ = write!(
            s,
            "missing ({}): {}",
            self.missing.len(),
            compress_ids(&self.missing, LIST_CAP)
        );
        if !self.missing.is_empty() {
            let _ = write!(
                s,
                "  [{} not seen at to, {} not seen at from]",
                self.missing_at_to.len(),
                self.missing_at_from.len()
            );
        }
        let _ = writeln!(
            s,
            "\nout of order ({}): {}",
            self.out_of_order.len(),
            compress_ids(&self.out_of_order, LIST_CAP)
        );
        if self.separate_clocks && self.offset_ns == 0 {
            s.push_str(
                "note: the two files' clocks may differ: cross-host latency includes their offset (see --offset-ns)\n",
            );
        }
        s
    }
}

/// fmt_ns with a sign.
fn fmt_signed(ns: i64) -> String {
    if ns < 0 {
        format!("-{}", fmt_ns(ns.unsigned_abs()))
    } else {
        fmt_ns(ns as u64)
    }
}

/// Ascending ids as "1,2,5-9,12": runs of three or more become ranges; after `cap` items
/// (an id or a range) the rest is counted: "... (+K more)". "none" when empty.
pub fn compress_ids(ids: &[u64], cap: usize) -> String {
    if ids.is_empty() {
        return "none".to_string();
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(id) => *hi = id,
            _ => runs.push((id, id)),
        }
    }
    let mut items: Vec<String> = Vec::new();
    let mut shown = 0u64;
    for &(lo, hi) in &runs {
        if items.len() >= cap {
            break;
        }
        match hi - lo {
            0 => items.push(lo.to_string()),
            1 => {
                items.push(lo.to_string());
                if items.len() < cap {
                    items.push(hi.to_string());
                } else {
                    shown += 1;
                    break;
                }
            }
            _ => items.push(format!("{lo}-{hi}")),
        }
        shown += hi - lo + 1;
    }
    let mut out = items.join(",");
    let rest = ids.len() as u64 - shown;
    if rest > 0 {
        let _ = write!(out, ",... (+{rest} more)");
    }
    out
}

// ---------------------------------------------------------------------------------------
// The command

pub fn run(a: &CorrelateArgs) -> Result<()> {
    if a.follow {
        return follow::run(a);
    }
    let first = Capture::read(&a.first)?;
    let second = a.second.as_deref().map(Capture::read).transpose()?;
    let (from, to) = choose_points(&first, second.as_ref(), a.from.as_deref(), a.to.as_deref())?;
    let to_file = second.as_ref().unwrap_or(&first);
    let (t1, dup_from) = first_sightings(first.rows.iter().filter(|r| r.point == from));
    let (t2, dup_to) = first_sightings(to_file.rows.iter().filter(|r| r.point == to));
    let joined = join(&t1, &t2, a.offset_ns);
    let mut summary = PairSummary::new(&joined, &from, &to);
    summary.duplicates_from = dup_from;
    summary.duplicates_to = dup_to;
    summary.separate_clocks = second.is_some();

    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", summary.json_line())?;
    } else if a.csv {
        out.write_all(joined.csv(&from, &to)?.as_bytes())?;
        out.flush()?;
        eprint!("{}", summary.human());
    } else {
        out.write_all(summary.human().as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const BASE: u64 = 1_700_000_000_000_000_000;

    fn err(text: &str) -> String {
        parse_csv("B.csv", text).unwrap_err().0
    }

    fn sightings(pairs: &[(u64, u64)]) -> BTreeMap<u64, Sighting> {
        pairs
            .iter()
            .map(|&(id, ts)| (id, Sighting { ts, position: None }))
            .collect()
    }

    fn capture(name: &str, rows: &[(u64, &str, u64)]) -> Capture {
        let text: String = std::iter::once(format!("{CSV_HEADER}\n"))
            .chain(rows.iter().map(|(ts, p, id)| {
                format!("{ts},{p},veth0,egress,10.0.0.1,8000,10.0.0.2,41000,{id},\n")
            }))
            .collect();
        Capture {
            name: name.into(),
            rows: parse_csv(name, &text).unwrap(),
        }
    }

    #[test]
    fn parses_what_marker_writes() {
        let row = MarkerRow {
            timestamp_ns: BASE,
            point: "veth0:egress@a".into(),
            iface: "veth0".into(),
            direction: "egress".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 8000,
            dst: "fd00::2".parse().unwrap(),
            dport: 41000,
            interval_id: 42,
            position: Some(7),
        };
        let text = format!("{CSV_HEADER}\n{}\n", row.csv().unwrap());
        assert_eq!(parse_csv("A.csv", &text).unwrap(), vec![row]);
    }

    #[test]
    fn labels_with_commas_and_quotes_round_trip() {
        let row = MarkerRow {
            timestamp_ns: BASE,
            point: "eth0:egress@pod \"a,b\", c".into(),
            iface: "e,\"x\"".into(),
            direction: "egress".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 8000,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 41000,
            interval_id: 42,
            position: None,
        };
        let text = format!("{CSV_HEADER}\n{}\n", row.csv().unwrap());
        assert_eq!(parse_csv("A.csv", &text).unwrap(), vec![row.clone()]);
        // Line by line, as `correlate --follow` reads.
        let cols = Columns::parse("A.csv", 1, CSV_HEADER).unwrap();
        let line = row.csv().unwrap();
        assert_eq!(parse_row("A.csv", 2, &line, &cols, "A.csv").unwrap(), row);

        let mut from = sightings(&[(1, 50)]);
        from.get_mut(&1).unwrap().position = Some(7);
        let to = sightings(&[(1, 80)]);
        let (a, b) = ("x,\"y\"", "z, w");
        let out = join(&from, &to, 0).csv(a, b).unwrap();
        let mut r = csv::Reader::from_reader(out.as_bytes());
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>().join(","),
            JOINED_CSV_HEADER
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].iter().collect::<Vec<_>>(),
            ["1", "7", "50", "80", "30", a, b]
        );
    }

    #[test]
    fn a_broken_quote_is_a_one_line_error() {
        let h = "timestamp_ns,point,interval_id";
        // An unclosed quote runs to the end of the file: too few fields, not a panic.
        let e = err(&format!("{h}\n1,\"p,1\n2,q,2\n"));
        assert!(e.starts_with("B.csv:2: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn columns_by_name_extras_comments_and_blanks() {
        let text = "\n# written by hand\n interval_id , extra, timestamp_ns,position\r\n\n3,x,100,\n# skip\n4,y,200,9\n";
        let rows = parse_csv("dir/A.csv", text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].interval_id, rows[0].timestamp_ns), (3, 100));
        assert_eq!((rows[0].position, rows[1].position), (None, Some(9)));
        // No point column: the file's name; no addresses: unspecified.
        assert_eq!(rows[1].point, "A.csv");
        assert_eq!(rows[1].src.to_string(), "0.0.0.0");
        assert_eq!(rows[1].dst.to_string(), "0.0.0.0");
        assert_eq!((rows[1].sport, rows[1].iface.as_str()), (0, ""));
        // A header alone is no error: no rows.
        assert!(parse_csv("A.csv", "timestamp_ns,interval_id\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn errors_name_file_line_column_and_value() {
        let h = "timestamp_ns,point,interval_id,position,sport,src";
        assert_eq!(
            err(&format!("{h}\n1,p,1,,80,::1\n\n1,p,x,,80,::1\n")),
            format!("B.csv:4: interval_id 'x' is not a whole number (columns: {h})")
        );
        assert_eq!(
            err(&format!("# c\n{h}\n-5,p,1,,80,::1\n")),
            format!("B.csv:3: timestamp_ns '-5' is not a whole number (columns: {h})")
        );
        assert_eq!(
            err(&format!("{h}\n1,p,1,2.5,80,::1\n")),
            format!("B.csv:2: position '2.5' is not a whole number (nor empty) (columns: {h})")
        );
        assert_eq!(
            err(&format!("{h}\n1,p,1,,70000,::1\n")),
            format!("B.csv:2: sport '70000' is not a port (0 to 65535) (columns: {h})")
        );
        assert_eq!(
            err(&format!("{h}\n1,p,1,,80,10.0.0\n")),
            format!("B.csv:2: src '10.0.0' is not an IP address (columns: {h})")
        );
        assert_eq!(
            err(&format!("{h}\n1,p,1,,80\n")),
            format!("B.csv:2: 5 fields, the header has 6 (columns: {h})")
        );
        assert_eq!(
            err("\n\ntimestamp_ns,point\n1,p\n"),
            format!("B.csv:3: no interval_id column in the header (marker writes: {CSV_HEADER})")
        );
        assert_eq!(
            err("interval_id\n1\n"),
            format!("B.csv:1: no timestamp_ns column in the header (marker writes: {CSV_HEADER})")
        );
        assert_eq!(
            err("\n# only a comment\n"),
            format!("B.csv: empty file, no header line (marker writes: {CSV_HEADER})")
        );
        let long = "9".repeat(60);
        assert!(
            err(&format!("{h}\n{long},p,1,,80,::1\n")).contains(&format!("'{}...'", &long[..40]))
        );
        for e in [err(&format!("{h}\n1,p,1,,80\n")), err("")] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn unreadable_file() {
        let e = read_csv(Path::new("/nonexistent/A.csv")).unwrap_err().0;
        assert!(e.starts_with("cannot read /nonexistent/A.csv: "), "{e}");
    }

    #[test]
    fn first_sighting_keeps_the_earliest() {
        let c = capture(
            "A.csv",
            &[
                (300, "p", 1),
                (100, "p", 1),
                (100, "p", 2),
                (500, "p", 1),
                (100, "p", 2),
            ],
        );
        let (m, dups) = first_sightings(&c.rows);
        assert_eq!(dups, 3);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&1].ts, 100);
        assert_eq!(m[&2].ts, 100);
        // Ties keep the first line's position.
        let text = "timestamp_ns,interval_id,position\n5,1,10\n5,1,11\n4,2,1\n3,2,2\n";
        let rows = parse_csv("A.csv", text).unwrap();
        let (m, dups) = first_sightings(&rows);
        assert_eq!(dups, 2);
        assert_eq!(
            m[&1],
            Sighting {
                ts: 5,
                position: Some(10)
            }
        );
        assert_eq!(
            m[&2],
            Sighting {
                ts: 3,
                position: Some(2)
            }
        );
    }

    #[test]
    fn exact_statistics_by_nearest_rank() {
        // Latencies 1..=10 ms, given shuffled.
        let order = [7u64, 2, 9, 1, 10, 4, 3, 8, 6, 5];
        let from = sightings(&order.map(|i| (i, BASE + i * 1_000_000_000)));
        let to = sightings(&order.map(|i| (i, BASE + i * 1_000_000_000 + i * 1_000_000)));
        let j = join(&from, &to, 0);
        let s = PairSummary::new(&j, "a", "b");
        let t = s.stats.unwrap();
        assert_eq!(
            t,
            LatencyStats {
                count: 10,
                min_ns: MS,
                avg_ns: 5_500_000,
                p50_ns: 5 * MS,
                p90_ns: 9 * MS,
                p99_ns: 10 * MS,
                max_ns: 10 * MS,
            }
        );
        assert_eq!(
            j.latencies().collect::<Vec<_>>(),
            (1..=10).map(|i| i * MS).collect::<Vec<_>>()
        );
        assert!(j.missing().is_empty() && j.out_of_order.is_empty());
        assert_eq!(s.bins.iter().map(|b| b.count).sum::<u64>(), 10);
        let v = s.json();
        assert_eq!(v["p90_ns"], 9 * MS);
        assert_eq!(v["type"], "summary");
        let line = s.json_line();
        assert!(
            line.starts_with(r#"{"type":"summary","count":10,"min_ns":1000000,"avg_ns":5500000,"p50_ns":5000000,"p90_ns":9000000,"p99_ns":10000000,"max_ns":10000000,"missing":[],"out_of_order":[],"from":"a""#),
            "{line}"
        );
    }

    #[test]
    fn percentiles_and_floored_average() {
        // Nearest rank: with 3 values p50 is the 2nd, p90 and p99 the 3rd.
        let t = latency_stats(&[30, 10, 20]).unwrap();
        assert_eq!((t.p50_ns, t.p90_ns, t.p99_ns, t.avg_ns), (20, 30, 30, 20));
        // 200 values 1..=200: p99 is rank 198.
        let v: Vec<i64> = (1..=200).collect();
        let t = latency_stats(&v).unwrap();
        assert_eq!((t.p50_ns, t.p90_ns, t.p99_ns), (100, 180, 198));
        // -7 / 2 = -3.5 floors to -4; 7 / 2 floors to 3.
        assert_eq!(latency_stats(&[-3, -4]).unwrap().avg_ns, -4);
        assert_eq!(latency_stats(&[3, 4]).unwrap().avg_ns, 3);
        assert_eq!(
            latency_stats(&[i64::MAX, i64::MAX]).unwrap().avg_ns,
            i64::MAX
        );
        assert_eq!(latency_stats(&[]), None);
    }

    #[test]
    fn missing_both_ways_and_offset() {
        let from = sightings(&[(1, 1000), (2, 2000), (3, 3000), (5, 5000)]);
        let to = sightings(&[(2, 2100), (3, 2900), (4, 4000), (5, 5500), (6, 1)]);
        let j = join(&from, &to, -50);
        assert_eq!(j.missing_at_to, vec![1]);
        assert_eq!(j.missing_at_from, vec![4, 6]);
        assert_eq!(j.missing(), vec![1, 4, 6]);
        // (T2 - (-50)) - T1.
        assert_eq!(j.latencies().collect::<Vec<_>>(), vec![150, -50, 550]);
        let s = PairSummary::new(&j, "a", "b");
        assert_eq!(s.negative, 1);
        // -50, 150 and 550 ns: 50 ns bars from -50 to 600.
        assert_eq!(s.bins.len(), 13);
        assert_eq!(
            s.bins[0],
            Bin {
                lo: -50,
                hi: 0,
                count: 1
            }
        );
        assert_eq!(s.bins.iter().map(|b| b.count).sum::<u64>(), 3);
        assert_eq!(s.stats.unwrap().avg_ns, 216); // 650 / 3 = 216.67
        assert_eq!(s.json()["missing"], serde_json::json!([1, 4, 6]));
        assert_eq!(s.json()["offset_ns"], -50);
        assert_eq!(latency(0, u64::MAX, i64::MIN), i64::MAX);
    }

    #[test]
    fn overtaken_intervals_are_out_of_order() {
        // T1 in id order; id 1 arrives last, id 4 ties the latest T2 (not reordered).
        let from = sightings(&[(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
        let to = sightings(&[(1, 100), (2, 60), (3, 70), (4, 100), (5, 110)]);
        assert_eq!(join(&from, &to, 0).out_of_order, vec![2, 3]);
        // Equal T1: ordered by id, so 8 (earlier T2) counts as overtaken by 7.
        let from = sightings(&[(8, 10), (7, 10)]);
        let to = sightings(&[(8, 20), (7, 30)]);
        assert_eq!(join(&from, &to, 0).out_of_order, vec![8]);
    }

    #[test]
    fn count_zero_gives_nulls_and_still_lists_missing() {
        let j = join(&sightings(&[(1, 5)]), &sightings(&[(2, 5)]), 0);
        let mut s = PairSummary::new(&j, "a", "b");
        s.separate_clocks = true;
        let v = s.json();
        assert_eq!(v["count"], 0);
        for k in ["min_ns", "avg_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns"] {
            assert_eq!(v[k], Value::Null, "{k}");
        }
        assert_eq!(v["missing"], serde_json::json!([1, 2]));
        let h = s.human();
        assert!(h.contains("count 0"), "{h}");
        assert!(
            h.contains("missing (2): 1,2  [1 not seen at to, 1 not seen at from]"),
            "{h}"
        );
        assert!(h.contains("note: the two files' clocks may differ"), "{h}");
    }

    #[test]
    fn linear_bins_cover_the_range_in_1_2_5_steps() {
        assert!(linear_bins(&[]).is_empty());
        assert_eq!(
            linear_bins(&[7]),
            vec![Bin {
                lo: 7,
                hi: 8,
                count: 1
            }]
        );
        let b = linear_bins(&[30_100_000, 30_150_000, 30_620_000]);
        // A 0.52 ms span: 50 us bars from 30.10 ms.
        assert_eq!((b[0].lo, b[0].hi), (30_100_000, 30_150_000));
        assert_eq!(b.len(), 11);
        assert_eq!(b.iter().map(|x| x.count).collect::<Vec<_>>()[..2], [1, 1]);
        assert_eq!(b[10].count, 1);
        assert_eq!(fmt_bound(30_150_000, 30_650_000, 50_000), "30.15ms");
        assert_eq!(fmt_bound(-500, 600, 50), "-500ns");
        assert!(linear_bins(&[i64::MIN, i64::MAX]).len() <= 20);
    }

    #[test]
    fn human_table() {
        let from = sightings(&[(1, 0), (2, 0), (3, 0)]);
        let to = sightings(&[(1, 20_000), (2, 30_000), (3, 40_000), (9, 1)]);
        let mut s = PairSummary::new(&join(&from, &to, 0), "x:egress", "y:ingress");
        s.duplicates_to = 2;
        let h = s.human();
        assert!(
            h.starts_with("x:egress -> y:ingress  (offset 0 ns)\n"),
            "{h}"
        );
        assert!(
            h.contains(
                "count 3  min 20.0us  avg 30.0us  p50 30.0us  p90 40.0us  p99 40.0us  max 40.0us\n"
            ),
            "{h}"
        );
        // 20, 30 and 40 us: 2 us bars.
        assert!(h.contains("latency:\n[20us, 22us)"), "{h}");
        assert!(
            h.contains("(the first one counts): 0 at from, 2 at to\n"),
            "{h}"
        );
        assert!(
            h.contains("missing (1): 9  [0 not seen at to, 1 not seen at from]\n"),
            "{h}"
        );
        assert!(h.contains("out of order (0): none\n"), "{h}");
        // One file: no clock note.
        assert!(!h.contains("note:"), "{h}");
        assert_eq!(fmt_signed(-1500), "-1.50us");
    }

    #[test]
    fn id_lists_compress_and_cap() {
        assert_eq!(compress_ids(&[], 50), "none");
        assert_eq!(compress_ids(&[1, 2, 5, 6, 7, 8, 9, 12], 50), "1,2,5-9,12");
        let many: Vec<u64> = (0..100).map(|i| i * 2).collect();
        let s = compress_ids(&many, 50);
        assert!(s.ends_with(",98,... (+50 more)"), "{s}");
        assert_eq!(compress_ids(&[1, 3, 4], 2), "1,3,... (+1 more)");
        assert_eq!(compress_ids(&[1, 5, 6, 7], 1), "1,... (+3 more)");
        assert_eq!(
            compress_ids(&[u64::MAX - 1, u64::MAX], 5),
            format!("{},{}", u64::MAX - 1, u64::MAX)
        );
    }

    #[test]
    fn joined_csv_rows() {
        let mut from = sightings(&[(2, 100), (1, 50)]);
        from.get_mut(&1).unwrap().position = Some(7);
        let mut to = sightings(&[(1, 80), (2, 90)]);
        to.get_mut(&2).unwrap().position = Some(8);
        assert_eq!(
            join(&from, &to, 0).csv("a", "b").unwrap(),
            format!("{JOINED_CSV_HEADER}\n1,7,50,80,30,a,b\n2,8,100,90,-10,a,b\n")
        );
    }

    #[test]
    fn choosing_points() {
        let a = capture(
            "A.csv",
            &[(1, "veth0:egress@a", 1), (2, "veth1:egress@b", 1)],
        );
        let b = capture("B.csv", &[(3, "eth0:ingress", 1)]);
        let pair = |f: Option<&str>, t: Option<&str>, two: bool| {
            choose_points(&a, two.then_some(&b), f, t)
        };
        assert_eq!(
            pair(None, None, true).unwrap_err().0,
            "A.csv holds 2 capture points (veth0:egress@a, veth1:egress@b): choose one with --from"
        );
        assert_eq!(
            pair(Some("veth1:egress@b"), None, true).unwrap(),
            ("veth1:egress@b".into(), "eth0:ingress".into())
        );
        assert_eq!(
            pair(Some("veth0:egress@a"), Some("nope"), true)
                .unwrap_err()
                .0,
            "--to nope: no such capture point in B.csv: it holds eth0:ingress"
        );
        // One file, two points: order of first appearance, or the other one.
        assert_eq!(
            pair(None, None, false).unwrap(),
            ("veth0:egress@a".into(), "veth1:egress@b".into())
        );
        assert_eq!(
            pair(Some("veth1:egress@b"), None, false).unwrap(),
            ("veth1:egress@b".into(), "veth0:egress@a".into())
        );
        assert_eq!(
            pair(None, Some("veth0:egress@a"), false).unwrap(),
            ("veth1:egress@b".into(), "veth0:egress@a".into())
        );
        assert!(pair(Some("veth0:egress@a"), Some("veth0:egress@a"), false)
            .unwrap_err()
            .0
            .contains("both name veth0:egress@a"));
        assert_eq!(
            pair(Some("x"), None, false).unwrap_err().0,
            "--from x: no such capture point in A.csv: it holds veth0:egress@a, veth1:egress@b"
        );
        let three = capture("C.csv", &[(1, "p", 1), (1, "q", 1), (1, "r", 1)]);
        assert_eq!(
            choose_points(&three, None, None, None).unwrap_err().0,
            "C.csv holds 3 capture points (p, q, r): choose two with --from and --to"
        );
        assert_eq!(
            choose_points(&three, None, Some("r"), Some("p")).unwrap(),
            ("r".into(), "p".into())
        );
        assert!(choose_points(&b, None, None, None)
            .unwrap_err()
            .0
            .starts_with("B.csv holds 1 capture point (eth0:ingress): correlate needs two"));
        // An empty second file: every interval is missing there.
        let empty = capture("E.csv", &[]);
        assert_eq!(
            choose_points(&b, Some(&empty), None, None).unwrap(),
            ("eth0:ingress".into(), "E.csv".into())
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A row as `marker` could write it: labels from what parse_point accepts.
    fn row() -> impl Strategy<Value = MarkerRow> {
        let label = "[a-z0-9._-]{1,6}";
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        (
            (
                any::<u64>(),
                label,
                any::<bool>(),
                proptest::option::of("[a-z0-9-]{1,6}"),
            ),
            (addr.clone(), any::<u16>(), addr, any::<u16>()),
            (any::<u64>(), proptest::option::of(any::<u64>())),
        )
            .prop_map(
                |((ts, iface, ing, ns), (src, sport, dst, dport), (id, position))| {
                    let direction = if ing { "ingress" } else { "egress" }.to_string();
                    let mut point = format!("{iface}:{direction}");
                    if let Some(ns) = ns {
                        point += &format!("@{ns}");
                    }
                    MarkerRow {
                        timestamp_ns: ts,
                        point,
                        iface,
                        direction,
                        src,
                        sport,
                        dst,
                        dport,
                        interval_id: id,
                        position,
                    }
                },
            )
    }

    /// What correlate does with the rows of one file: every step, every output.
    fn correlate(rows: &[MarkerRow], offset: i64) -> Result<(), TestCaseError> {
        let c = Capture {
            name: "A.csv".into(),
            rows: rows.to_vec(),
        };
        for r in [
            choose_points(&c, Some(&c), None, None),
            choose_points(&c, None, None, None),
            choose_points(&c, None, Some("x:in"), Some(&c.name)),
        ] {
            if let Err(e) = r {
                one_line(&e)?;
            }
        }
        let points = c.points();
        let Some(&from) = points.first() else {
            return Ok(());
        };
        let to = points.get(1).copied().unwrap_or(from);
        let (t1, d1) = first_sightings(c.rows.iter().filter(|r| r.point == from));
        let (t2, d2) = first_sightings(c.rows.iter().filter(|r| r.point == to));
        prop_assert_eq!(
            t1.len() as u64 + t2.len() as u64 + d1 + d2,
            c.rows.iter().filter(|r| r.point == from).count() as u64
                + c.rows.iter().filter(|r| r.point == to).count() as u64
        );
        let j = join(&t1, &t2, offset);
        prop_assert_eq!(j.rows.len() + j.missing_at_to.len(), t1.len());
        prop_assert_eq!(j.rows.len() + j.missing_at_from.len(), t2.len());
        let mut p = PairSummary::new(&j, from, to);
        (p.duplicates_from, p.duplicates_to) = (d1, d2);
        let _ = (p.human(), j.csv(from, to));
        let line = p.json_line();
        prop_assert!(!line.contains('\n'));
        prop_assert!(serde_json::from_str::<Value>(&line).is_ok());
        Ok(())
    }

    fn one_line(e: &UserError) -> Result<(), TestCaseError> {
        prop_assert!(!e.0.is_empty());
        prop_assert!(!e.0.contains(['\n', '\r']), "{:?}", e.0);
        // Bad values are quoted short: a long line does not make a long message.
        prop_assert!(e.0.len() < 2048, "{} bytes", e.0.len());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// What marker writes reads back as the same rows, and correlates.
        #[test]
        fn fuzz_correlate_csv_roundtrip(
            rows in proptest::collection::vec(row(), 0..8),
            offset in any::<i64>(),
        ) {
            let mut text = format!("{CSV_HEADER}\n");
            for r in &rows {
                text += &r.csv().unwrap();
                text.push('\n');
            }
            let back = parse_csv("A.csv", &text).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(&back, &rows);
            correlate(&back, offset)?;
        }

        /// That text with bytes changed, inserted or cut anywhere, or any text at all: rows or
        /// a one-line error naming the file, never a panic; and the rows correlate.
        #[test]
        fn fuzz_correlate_csv_mutated(
            rows in proptest::collection::vec(row(), 0..8),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
                0..6,
            ),
            cut in any::<prop::sample::Index>(),
            noise in proptest::collection::vec(any::<u8>(), 0..400),
            use_noise in any::<bool>(),
        ) {
            let mut bytes = if use_noise {
                noise
            } else {
                let mut t = format!("{CSV_HEADER}\n");
                for r in &rows {
                    t += &r.csv().unwrap();
                    t.push('\n');
                }
                t.into_bytes()
            };
            for (at, b, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = b,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, b),
                }
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let text = String::from_utf8_lossy(&bytes);
            match parse_csv("dir/A.csv", &text) {
                Ok(rows) => correlate(&rows, 0)?,
                Err(e) => {
                    one_line(&e)?;
                    prop_assert!(e.0.starts_with("dir/A.csv"), "{}", e.0);
                }
            }
        }
    }
}
