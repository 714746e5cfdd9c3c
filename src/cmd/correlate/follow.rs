//! `correlate --follow A.csv B.csv`: the analyzer of audio-marker-latency's DaemonSet. It tails
//! both captures as `marker` writes them (and across rotation or truncation), joins each
//! interval as soon as both sides have it, prints a line per interval and, with
//! `--prometheus`, serves the T2 - T1 histogram with the join's counts. A malformed line is
//! counted, never fatal: a live file may be half-written or rotated under us.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::Columns;
use crate::cli::CorrelateArgs;
use crate::error::UserError;
use crate::events::marker_record::MarkerRow;
use crate::runloop::{RunLoop, Step};
use crate::sink::prom::registry::{Endpoint, Exporter, Family, Value};
use crate::stats::hist::Hist;
use crate::stats::prom_hist::PromHist;

/// A file being followed: where we are in it, and the header of its current generation.
pub struct Tail {
    path: PathBuf,
    name: String,
    default_point: String,
    file: Option<File>,
    ino: u64,
    pos: u64,
    buf: Vec<u8>,
    lineno: usize,
    cols: Option<Columns>,
    /// Malformed lines (and unusable headers), and the last one's message.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Times the file was found rotated (a new inode) or truncated, and read from its start.
    pub reopened: u64,
}

impl Tail {
    /// Follow `path`, which must exist now.
    pub fn new(path: &Path) -> Result<Tail, UserError> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(UserError::new(format!(
                "cannot read {}: {e}; give the CSV files `netstack-lat marker --csv` writes",
                path.display()
            )));
        }
        let name = path.display().to_string();
        let default_point = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&name)
            .to_string();
        Ok(Tail {
            path: path.to_path_buf(),
            name,
            default_point,
            file: None,
            ino: 0,
            pos: 0,
            buf: Vec::new(),
            lineno: 0,
            cols: None,
            errors: 0,
            last_error: None,
            reopened: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rows completed since the last call.
    pub fn poll(&mut self) -> Vec<MarkerRow> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new(); // between a rotation's rename and the new file
        };
        if self.file.is_none() || meta.ino() != self.ino || meta.len() < self.pos {
            if self.file.is_some() {
                self.reopened += 1;
            }
            let Ok(f) = File::open(&self.path) else {
                return Vec::new();
            };
            self.file = Some(f);
            self.ino = meta.ino();
            self.pos = 0;
            self.buf.clear();
            self.lineno = 0;
            self.cols = None;
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut chunk = Vec::new();
        if f.seek(SeekFrom::Start(self.pos)).is_err() || f.read_to_end(&mut chunk).is_err() {
            return Vec::new();
        }
        self.pos += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        let mut rows = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.lineno += 1;
            let text = String::from_utf8_lossy(&line);
            if let Some(r) = self.line(text.trim_end_matches(['\n', '\r'])) {
                rows.push(r);
            }
        }
        rows
    }

    fn line(&mut self, line: &str) -> Option<MarkerRow> {
        let line = if self.lineno == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            return None;
        }
        let res = match &self.cols {
            None => match Columns::parse(&self.name, self.lineno, line) {
                Ok(c) => {
                    self.cols = Some(c);
                    return None;
                }
                Err(e) => Err(e),
            },
            Some(c) => super::parse_row(&self.name, self.lineno, line, c, &self.default_point),
        };
        match res {
            Ok(r) => Some(r),
            Err(e) => {
                self.errors += 1;
                self.last_error = Some(e.to_string());
                None
            }
        }
    }
}

/// The live join of two sides: first sightings wait for their other side, for at most
/// `grace`, then count as missing.
pub struct LiveJoin {
    offset_ns: i64,
    grace: Duration,
    t1: HashMap<u64, (u64, Instant)>,
    t2: HashMap<u64, (u64, Instant)>,
    /// Joined intervals by id, with their T2: an interval whose T2 comes after that of a
    /// later interval was overtaken (out of order). The newest few thousand are kept.
    joined_t2: BTreeMap<u64, u64>,
    done: HashMap<u64, Instant>,
    pub hist: Hist,
    pub prom: PromHist,
    pub count: u64,
    /// T2 before T1 (clocks apart beyond --offset-ns): counted, recorded as 0.
    pub negative: u64,
    pub missing_to: u64,
    pub missing_from: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

const JOINED_KEPT: usize = 4096;

impl LiveJoin {
    pub fn new(offset_ns: i64, grace: Duration) -> LiveJoin {
        LiveJoin {
            offset_ns,
            grace,
            t1: HashMap::new(),
            t2: HashMap::new(),
            joined_t2: BTreeMap::new(),
            done: HashMap::new(),
            hist: Hist::default(),
            prom: PromHist::default(),
            count: 0,
            negative: 0,
            missing_to: 0,
            missing_from: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// A first-side (`first`) or second-side sighting of interval `id` at `ts`.
    pub fn add(&mut self, first: bool, id: u64, ts: u64, now: Instant) {
        let (mine, other) = if first {
            (&mut self.t1, &mut self.t2)
        } else {
            (&mut self.t2, &mut self.t1)
        };
        if mine.contains_key(&id) || self.done.contains_key(&id) {
            self.duplicates += 1;
            return;
        }
        let Some((ots, _)) = other.remove(&id) else {
            mine.insert(id, (ts, now));
            return;
        };
        let (t1, t2) = if first { (ts, ots) } else { (ots, ts) };
        self.done.insert(id, now);
        let lat = (t2 as i128 - i128::from(self.offset_ns) - t1 as i128) as i64;
        if lat < 0 {
            self.negative += 1;
        }
        let v = lat.max(0) as u64;
        self.hist.record(v);
        self.prom.record(v);
        self.count += 1;
        if self.joined_t2.range(id + 1..).any(|(_, &later)| later < t2) {
            self.out_of_order += 1;
        }
        self.joined_t2.insert(id, t2);
        while self.joined_t2.len() > JOINED_KEPT {
            self.joined_t2.pop_first();
        }
    }

    /// Sightings whose other side has not come within the grace time are missing there.
    pub fn expire(&mut self, now: Instant) {
        let grace = self.grace;
        let old = |m: &mut HashMap<u64, (u64, Instant)>| {
            let before = m.len();
            m.retain(|_, (_, at)| now.duration_since(*at) < grace);
            (before - m.len()) as u64
        };
        self.missing_to += old(&mut self.t1);
        self.missing_from += old(&mut self.t2);
        // Joined ids are remembered as long, so a late duplicate is not a new sighting.
        self.done.retain(|_, at| now.duration_since(*at) < grace);
    }

    /// Sightings still waiting for their other side (at the end: missing there).
    pub fn pending(&self) -> (u64, u64) {
        (self.t1.len() as u64, self.t2.len() as u64)
    }
}

fn families(j: &LiveJoin, from: &str, to: &str, tails: &[&Tail]) -> Vec<Family> {
    let mut errors = Family::new(
        "netstack_lat_correlate_errors",
        "Malformed lines in the followed files (counted, skipped)",
    );
    let mut reopened = Family::new(
        "netstack_lat_correlate_reopened",
        "Followed files found rotated or truncated and read again from their start",
    );
    for t in tails {
        errors.push(&[("file", t.name())], Value::Counter(t.errors));
        reopened.push(&[("file", t.name())], Value::Counter(t.reopened));
    }
    vec![
        Family::new(
            "netstack_lat_marker_latency_seconds",
            "T2 - T1 of each interval between two capture points",
        )
        .with(&[("from", from), ("to", to)], Value::Hist(j.prom.clone())),
        Family::new(
            "netstack_lat_correlate_missing",
            "Intervals one side saw and the other did not within the grace time, by the side that lacks them",
        )
        .with(&[("side", "to")], Value::Counter(j.missing_to))
        .with(&[("side", "from")], Value::Counter(j.missing_from)),
        Family::new(
            "netstack_lat_correlate_out_of_order",
            "Intervals overtaken: their T2 came after the T2 of a later interval",
        )
        .with(&[], Value::Counter(j.out_of_order)),
        Family::new(
            "netstack_lat_correlate_duplicates",
            "Sightings of an interval already seen on that side",
        )
        .with(&[], Value::Counter(j.duplicates)),
        errors,
        reopened,
    ]
}

fn line_json(kind: &str, j: &LiveJoin, from: &str, to: &str, tails: &[&Tail]) -> String {
    let (pend_from, pend_to) = j.pending();
    json!({
        "type": kind,
        "from": from,
        "to": to,
        "count": j.count,
        "p50_ns": j.hist.percentile(50.0),
        "p99_ns": j.hist.percentile(99.0),
        "min_ns": j.hist.min(),
        "max_ns": j.hist.max(),
        "negative": j.negative,
        "missing_to": j.missing_to,
        "missing_from": j.missing_from,
        "waiting_from": pend_from,
        "waiting_to": pend_to,
        "out_of_order": j.out_of_order,
        "duplicates": j.duplicates,
        "errors": tails.iter().map(|t| t.errors).sum::<u64>(),
        "reopened": tails.iter().map(|t| t.reopened).sum::<u64>(),
    })
    .to_string()
}

fn line_human(j: &LiveJoin, tails: &[&Tail]) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut s = format!(
        "joined {}  p50 {:.3} ms  p99 {:.3} ms  missing to/from {}/{}  out of order {}  errors {}",
        j.count,
        ms(j.hist.percentile(50.0)),
        ms(j.hist.percentile(99.0)),
        j.missing_to,
        j.missing_from,
        j.out_of_order,
        tails.iter().map(|t| t.errors).sum::<u64>()
    );
    if let Some(e) = tails.iter().rev().find_map(|t| t.last_error.as_deref()) {
        s.push_str(&format!("  (last: {e})"));
    }
    s
}

/// `correlate --follow`.
pub fn run(a: &CorrelateArgs) -> Result<()> {
    let mut first = Tail::new(&a.first)?;
    let mut second = a.second.as_deref().map(Tail::new).transpose()?;
    if second.is_none() && (a.from.is_none() || a.to.is_none()) {
        return Err(UserError::new(
            "--follow with one file needs --from POINT and --to POINT (its two capture points)",
        )
        .into());
    }
    let endpoint_exporter = match &a.prometheus {
        Some(addr) => {
            let x = Exporter::new();
            Some((Endpoint::start(addr, Arc::clone(&x))?, x))
        }
        None => None,
    };
    let run = RunLoop::start(a.duration)?;
    let mut join = LiveJoin::new(a.offset_ns, a.grace);
    // Without --from/--to, each file's first point names its side.
    let (mut from, mut to) = (a.from.clone(), a.to.clone());
    let mut out = std::io::stdout().lock();
    let mut next_line = Instant::now() + a.interval;
    while let Step::Wait(wait) = run.step() {
        let now = Instant::now();
        let rows_a = first.poll();
        let rows_b = second.as_mut().map_or_else(Vec::new, Tail::poll);
        let one_file = second.is_none();
        for r in rows_a {
            if from.is_none() {
                from = Some(r.point.clone());
            }
            if Some(&r.point) == from.as_ref() {
                join.add(true, r.interval_id, r.timestamp_ns, now);
            } else if one_file && Some(&r.point) == to.as_ref() {
                join.add(false, r.interval_id, r.timestamp_ns, now);
            }
        }
        for r in rows_b {
            if to.is_none() {
                to = Some(r.point.clone());
            }
            if Some(&r.point) == to.as_ref() {
                join.add(false, r.interval_id, r.timestamp_ns, now);
            }
        }
        join.expire(now);
        if now >= next_line {
            next_line = now + a.interval;
            let tails: Vec<&Tail> = std::iter::once(&first).chain(second.as_ref()).collect();
            let (f, t) = (from.as_deref().unwrap_or(""), to.as_deref().unwrap_or(""));
            if let Some((_, x)) = &endpoint_exporter {
                x.publish("correlate", families(&join, f, t, &tails));
            }
            if a.json {
                writeln!(out, "{}", line_json("interval", &join, f, t, &tails))?;
            } else {
                writeln!(out, "{}", line_human(&join, &tails))?;
            }
            out.flush()?;
        }
        std::thread::sleep(wait.min(Duration::from_millis(100)));
    }
    let tails: Vec<&Tail> = std::iter::once(&first).chain(second.as_ref()).collect();
    let (f, t) = (from.as_deref().unwrap_or(""), to.as_deref().unwrap_or(""));
    if a.json {
        writeln!(out, "{}", line_json("summary", &join, f, t, &tails))?;
    } else {
        writeln!(out, "{}", line_human(&join, &tails))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn joins_as_sides_arrive_and_counts_what_never_does() {
        let t0 = Instant::now();
        let mut j = LiveJoin::new(0, Duration::from_secs(5));
        j.add(true, 1, 100 * MS, t0);
        j.add(true, 2, 120 * MS, t0);
        j.add(false, 2, 150 * MS, t0); // 30 ms
        j.add(false, 1, 160 * MS, t0); // 60 ms, after 2's T2: overtaken
        j.add(false, 1, 170 * MS, t0); // duplicate
        j.add(true, 3, 200 * MS, t0); // never on the other side
        j.add(false, 4, 210 * MS, t0); // never on the first side
        assert_eq!(j.count, 2);
        assert_eq!(j.out_of_order, 1);
        assert_eq!(j.duplicates, 1);
        assert_eq!(j.pending(), (1, 1));
        j.expire(t0 + Duration::from_secs(6));
        assert_eq!((j.missing_to, j.missing_from), (1, 1));
        assert_eq!(j.pending(), (0, 0));
        assert_eq!(j.prom.count(), 2);
        assert_eq!(j.hist.min(), 30 * MS);
    }

    #[test]
    fn offset_and_negative_latencies() {
        let t0 = Instant::now();
        let mut j = LiveJoin::new(5 * MS as i64, Duration::from_secs(5));
        j.add(true, 1, 100 * MS, t0);
        j.add(false, 1, 115 * MS, t0);
        assert_eq!(j.hist.max(), 10 * MS);
        j.add(true, 2, 200 * MS, t0);
        j.add(false, 2, 201 * MS, t0);
        assert_eq!(j.negative, 1);
        assert_eq!(j.count, 2);
    }

    #[test]
    fn tails_follow_appends_partial_lines_truncation_and_rotation() {
        let dir = std::env::temp_dir().join(format!("nsl-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        let header = crate::events::marker_record::CSV_HEADER;
        let row = |id: u64| format!("{},p,veth0,egress,10.0.0.1,1,10.0.0.2,2,{id},\n", id * MS);
        std::fs::write(&p, format!("{header}\n{}", row(1))).unwrap();
        let mut t = Tail::new(&p).unwrap();
        assert_eq!(t.poll().len(), 1);
        // A half-written line waits for its end.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        let r2 = row(2);
        f.write_all(&r2.as_bytes()[..10]).unwrap();
        assert!(t.poll().is_empty());
        f.write_all(&r2.as_bytes()[10..]).unwrap();
        f.write_all(b"garbage,line\n").unwrap();
        f.write_all(row(3).as_bytes()).unwrap();
        let rows = t.poll();
        assert_eq!(
            rows.iter().map(|r| r.interval_id).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(t.errors, 1);
        assert!(t.last_error.as_deref().unwrap().contains("a.csv:4"));
        // copytruncate: the same file, shorter.
        std::fs::write(&p, format!("{header}\n{}", row(4))).unwrap();
        assert_eq!(t.poll()[0].interval_id, 4);
        assert_eq!(t.reopened, 1);
        // Rotation: renamed away, a new file in its place.
        std::fs::rename(&p, dir.join("a.csv.1")).unwrap();
        assert!(t.poll().is_empty());
        std::fs::write(&p, format!("{header}\n{}{}", row(5), row(6))).unwrap();
        assert_eq!(t.poll().len(), 2);
        assert_eq!(t.reopened, 2);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Tail::new(&dir.join("none.csv")).is_err());
    }
}
