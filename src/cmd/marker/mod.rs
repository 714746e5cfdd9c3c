//! `netstack-lat marker`: TC programs on the chosen interfaces hand the payload bytes of the
//! chosen TCP ports to this process, which follows each stream (scan.rs), finds the marker
//! field (`"interval_id": N`, with `"position"`) and records its first sighting per capture
//! point. Payload bytes are scanned where they arrive and dropped: only the parsed fields
//! are kept or written. `correlate` (pair.rs) joins two such captures.

pub mod scan;
pub mod tc;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::RingBufferBuilder;
use serde_json::{json, Value};

use crate::bpf::marker::types::marker_event;
use crate::bpf::marker::MarkerSkelBuilder;
use crate::cli::{MarkerArgs, PointSpec, TcAttach};
use crate::cmd::correlate::{PairSummary, Sighting};
use crate::error::{require_root, UserError};
use crate::events;
use crate::events::marker_record::{MarkerRow, CSV_HEADER};
use crate::kernel::netns;
use crate::runloop::{RunLoop, Step};
use crate::sink::prom::registry::{Endpoint, Exporter, Family, Value as MValue};
use crate::stats::prom_hist::PromHist;
use scan::{Counts, Found, Keys, StreamKey, Streams};

/// Most capture points one run attaches (bpf/netstack.h MARKER_POINTS).
pub const MAX_POINTS: usize = 8;
/// A stream with no segment for this long is ended (its pending marker reported).
const STREAM_IDLE_NS: u64 = 120_000_000_000;

/// bpf_ktime_get_ns() (CLOCK_MONOTONIC) to CLOCK_REALTIME: the CSV's timestamps are wall
/// clock, so files from two hosts can be joined (up to the hosts' clock offset).
pub fn realtime_offset() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    // The tightest of a few bracketed reads.
    (0..5)
        .map(|_| {
            let m0 = read(libc::CLOCK_MONOTONIC);
            let r = read(libc::CLOCK_REALTIME);
            let m1 = read(libc::CLOCK_MONOTONIC);
            (m1 - m0, r - (m0 + m1) / 2)
        })
        .min()
        .map_or(0, |(_, off)| off)
}

/// Per capture point: what it saw.
#[derive(Debug, Default, Clone)]
pub struct PointStats {
    pub seen: u64,
    pub duplicates: u64,
    pub counts: Counts,
}

/// First sightings per point, and the live pairs (point i -> point i+1).
pub struct Book {
    labels: Vec<String>,
    first: Vec<BTreeMap<u64, Sighting>>,
    pub stats: Vec<PointStats>,
    /// Distinct intervals over all points: a first sighting at one point of an id that no
    /// other point holds within the window. With two points, `seen` summed over the points
    /// is twice this, which is why both are kept.
    pub intervals: u64,
    /// Latencies of each pair as they complete, for Prometheus.
    pair_hist: Vec<PromHist>,
    window_ns: u64,
}

impl Book {
    pub fn new(labels: Vec<String>, window: Duration) -> Book {
        let n = labels.len();
        Book {
            labels,
            first: vec![BTreeMap::new(); n],
            stats: vec![PointStats::default(); n],
            intervals: 0,
            pair_hist: vec![PromHist::default(); n.saturating_sub(1)],
            window_ns: window.as_nanos().min(u128::from(u64::MAX)) as u64,
        }
    }

    /// A marker found at `point`: true when it is the interval's first sighting there.
    pub fn sight(&mut self, point: usize, f: &Found, realtime_ns: u64) -> bool {
        let Some(map) = self.first.get_mut(point) else {
            return false;
        };
        if map.contains_key(&f.id) {
            self.stats[point].duplicates += 1;
            return false;
        }
        map.insert(
            f.id,
            Sighting {
                ts: realtime_ns,
                position: f.position,
            },
        );
        self.stats[point].seen += 1;
        let elsewhere = self
            .first
            .iter()
            .enumerate()
            .any(|(i, m)| i != point && m.contains_key(&f.id));
        if !elsewhere {
            self.intervals += 1;
        }
        // The pairs this sighting may complete: (point-1 -> point) and (point -> point+1).
        for pair in [point.checked_sub(1), Some(point)].into_iter().flatten() {
            if pair >= self.pair_hist.len() {
                continue;
            }
            let (t1, t2) = (self.first[pair].get(&f.id), self.first[pair + 1].get(&f.id));
            if let (Some(t1), Some(t2)) = (t1, t2) {
                if t2.ts >= t1.ts {
                    self.pair_hist[pair].record(t2.ts - t1.ts);
                }
            }
        }
        true
    }

    /// Forget sightings older than the window (by the newest time seen).
    pub fn prune(&mut self, now_realtime: u64) {
        let cut = now_realtime.saturating_sub(self.window_ns);
        for m in &mut self.first {
            m.retain(|_, s| s.ts >= cut);
        }
    }

    /// Each live pair (point i -> point i+1) joined over the window.
    pub fn pairs(&self) -> Vec<PairSummary> {
        (0..self.pair_hist.len())
            .map(|i| {
                let j = crate::cmd::correlate::join(&self.first[i], &self.first[i + 1], 0);
                let mut p = PairSummary::new(&j, &self.labels[i], &self.labels[i + 1]);
                (p.duplicates_from, p.duplicates_to) =
                    (self.stats[i].duplicates, self.stats[i + 1].duplicates);
                p
            })
            .collect()
    }

    pub fn families(&self, bpf: &BpfCounts) -> Vec<Family> {
        let mut seen = Family::new(
            "netstack_lat_marker_seen",
            "Intervals seen (first sighting) at each capture point",
        );
        let mut dup = Family::new(
            "netstack_lat_marker_duplicates",
            "Markers seen again at a capture point (same interval_id)",
        );
        let mut bad = Family::new(
            "netstack_lat_marker_unparseable",
            "Marker fields whose value is not a non-negative integer",
        );
        let mut missed = Family::new(
            "netstack_lat_marker_missed",
            "Markers cut by a gap in the captured stream",
        );
        for (l, s) in self.labels.iter().zip(&self.stats) {
            let lab = [("point", l.as_str())];
            seen.push(&lab, MValue::Counter(s.seen));
            dup.push(&lab, MValue::Counter(s.duplicates));
            bad.push(&lab, MValue::Counter(s.counts.unparseable));
            missed.push(&lab, MValue::Counter(s.counts.missed));
        }
        let mut lat = Family::new(
            "netstack_lat_marker_latency_seconds",
            "T2 - T1 of each interval between consecutive capture points",
        );
        for (i, h) in self.pair_hist.iter().enumerate() {
            lat.push(
                &[("from", &self.labels[i]), ("to", &self.labels[i + 1])],
                MValue::Hist(h.clone()),
            );
        }
        let lost = Family::new(
            "netstack_lat_marker_lost_events",
            "Payload chunks lost to a full ring buffer",
        )
        .with(&[], MValue::Counter(bpf.lost));
        let segs = Family::new(
            "netstack_lat_marker_segments",
            "TCP segments of the chosen ports whose payload was read",
        )
        .with(&[], MValue::Counter(bpf.segments));
        let intervals = Family::new(
            "netstack_lat_marker_intervals",
            "Distinct intervals seen at any capture point (each counted once however many points saw it)",
        )
        .with(&[], MValue::Counter(self.intervals));
        vec![intervals, seen, dup, bad, missed, lat, lost, segs]
    }
}

/// The BPF side's counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct BpfCounts {
    pub segments: u64,
    pub bytes: u64,
    pub lost: u64,
    pub truncated: u64,
}

fn bpf_counts(map: &dyn libbpf_rs::MapCore) -> Result<BpfCounts> {
    let sum = |i: u32| -> Result<u64> {
        let v: Vec<u64> = crate::bpf::percpu(map, &i.to_ne_bytes())?;
        Ok(v.iter().sum())
    };
    use crate::bpf::marker::types::marker_counter as C;
    Ok(BpfCounts {
        segments: sum(C::MKC_SEGMENTS.0)?,
        bytes: sum(C::MKC_BYTES.0)?,
        lost: sum(C::MKC_LOST.0)?,
        truncated: sum(C::MKC_TRUNCATED.0)?,
    })
}

/// The summary line: totals, per point, per live pair.
pub fn summary_json(
    book: &Book,
    pairs: &[PairSummary],
    bpf: &BpfCounts,
    streams: usize,
    secs: f64,
) -> Value {
    let mut total = PointStats::default();
    for s in &book.stats {
        total.seen += s.seen;
        total.duplicates += s.duplicates;
        total.counts.add(&s.counts);
    }
    let points: Vec<Value> = book
        .labels
        .iter()
        .zip(&book.stats)
        .map(|(l, s)| {
            json!({"point": l, "seen": s.seen, "duplicates": s.duplicates,
                   "unparseable": s.counts.unparseable, "missed": s.counts.missed,
                   "gaps": s.counts.gaps, "retransmitted": s.counts.retransmitted})
        })
        .collect();
    // correlate's summary fields (from and to among them), without its "type".
    let pairs: Vec<Value> = pairs
        .iter()
        .map(|p| {
            let mut v = p.json();
            if let Some(o) = v.as_object_mut() {
                o.remove("type");
            }
            v
        })
        .collect();
    json!({
        "type": "summary", "duration_s": secs,
        "intervals": book.intervals, "seen": total.seen, "duplicates": total.duplicates,
        "unparseable": total.counts.unparseable, "missed": total.counts.missed,
        "gaps": total.counts.gaps,
        "segments": bpf.segments, "bytes": bpf.bytes,
        "lost_events": bpf.lost, "truncated_bytes": bpf.truncated,
        "open_streams": streams,
        "points": points, "pairs": pairs,
    })
}

fn summary_human(v: &Value, pairs: &[PairSummary]) -> String {
    // Intervals are counted once; sightings once per point that saw them.
    let points = v["points"].as_array().map_or(0, |p| p.len());
    let mut s = format!(
        "{} intervals seen in {:.1}s ({} sightings at {} point{}): {} duplicates, {} unparseable, {} missed in stream gaps; {} segments, {} bytes read, {} events lost, {} bytes past the 64 KiB per segment\n",
        v["intervals"], v["duration_s"].as_f64().unwrap_or(0.0), v["seen"], points,
        if points == 1 { "" } else { "s" }, v["duplicates"], v["unparseable"],
        v["missed"], v["segments"], v["bytes"], v["lost_events"], v["truncated_bytes"]
    );
    for p in v["points"].as_array().into_iter().flatten() {
        s += &format!(
            "  {:<28} seen {:>7}  duplicates {:>5}  unparseable {:>5}  missed {:>5}\n",
            p["point"].as_str().unwrap_or(""),
            p["seen"],
            p["duplicates"],
            p["unparseable"],
            p["missed"]
        );
    }
    for p in pairs {
        s += &format!("\n{}", p.human());
    }
    s
}

/// A resolved capture point.
pub struct Point {
    spec: PointSpec,
    label: String,
    ifindex: i32,
    l2: u8,
}

pub fn resolve(points: &[PointSpec]) -> Result<Vec<Point>, UserError> {
    if points.len() > MAX_POINTS {
        return Err(UserError::new(format!(
            "{} capture points given: at most {MAX_POINTS} --iface",
            points.len()
        )));
    }
    let mut out: Vec<Point> = Vec::new();
    for spec in points {
        let label = spec.label();
        if out.iter().any(|p| p.label == label) {
            return Err(UserError::new(format!("--iface {label} is given twice")));
        }
        let _inside = spec
            .netns
            .as_deref()
            .map(netns::Entered::enter)
            .transpose()?;
        let ifindex = netns::ifindex(&spec.iface)? as i32;
        let l2 = tc::l2_len(&spec.iface)?;
        out.push(Point {
            spec: spec.clone(),
            label,
            ifindex,
            l2,
        });
    }
    Ok(out)
}

/// A ring record: the header and as much data as the record holds (small chunks are
/// reserved short, see MARKER_SMALL); None when it is too short for what it says it holds.
pub fn decode(raw: &[u8]) -> Option<marker_event> {
    let mut e = marker_event::default();
    // SAFETY: marker_event is Plain (integers and byte arrays): any bytes are a value.
    let dst = unsafe { plain::as_mut_bytes(&mut e) };
    let n = raw.len().min(dst.len());
    dst[..n].copy_from_slice(&raw[..n]);
    let hdr = std::mem::size_of::<crate::bpf::marker::types::marker_hdr>();
    (n >= hdr + usize::from(e.h.len)).then_some(e)
}

/// Where rows go: CSV (file or stdout) and JSON lines.
struct Sinks {
    csv: Option<Box<dyn Write>>,
    json: Option<Box<dyn Write>>,
}

impl Sinks {
    fn row(&mut self, r: &MarkerRow) -> Result<()> {
        if let Some(w) = &mut self.csv {
            writeln!(w, "{}", r.csv()?)?;
        }
        if let Some(w) = &mut self.json {
            writeln!(w, "{}", r.json())?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for w in [&mut self.csv, &mut self.json].into_iter().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}

pub fn run(a: &MarkerArgs) -> Result<()> {
    require_root()?;
    if a.key == a.position_key {
        return Err(UserError::new(format!(
            "--key and --position-key are both '{}': give two different fields",
            a.key
        ))
        .into());
    }
    let points = resolve(&a.points)?;
    let endpoint = match &a.prometheus {
        Some(l) => {
            let x = Exporter::new();
            Some((Endpoint::start(l, std::sync::Arc::clone(&x))?, x))
        }
        None => None,
    };
    let csv_out: Box<dyn Write> = match &a.csv {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| UserError::new(format!("cannot create {}: {e}", p.display())),
        )?)),
        None => Box::new(std::io::stdout()),
    };
    let mut sinks = Sinks {
        csv: (a.csv.is_some() || !a.json).then_some(csv_out),
        json: a
            .json
            .then(|| Box::new(std::io::stdout()) as Box<dyn Write>),
    };
    if !a.verbose {
        libbpf_rs::set_print(None);
    }
    let mode = tc_mode(a.attach, a.btf.as_deref());

    let mut obj = MaybeUninit::uninit();
    let mut open = MarkerSkelBuilder::default()
        .open(&mut obj)
        .context("opening the marker BPF object")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("BPF object has no rodata")?;
    for (d, s) in ro.ports.iter_mut().zip(&a.port.0) {
        *d = *s;
    }
    ro.n_ports = a.port.0.len() as u32;
    for (d, p) in ro.l2_len.iter_mut().zip(&points) {
        *d = p.l2;
    }
    prepare_points(open.open_object_mut(), "marker_p", &points, mode);
    let skel = open.load().context("loading the marker BPF programs")?;
    // Signals are caught from here on, so a clsact qdisc made next is always removed.
    let run = RunLoop::start(a.duration)?;
    let mut attached = Some(attach_points(skel.object(), "marker_p", &points, mode)?);
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let ports: Vec<String> = a.port.0.iter().map(u16::to_string).collect();
    eprintln!(
        "netstack-lat: tracing markers \"{}\" at {} ({}), TCP ports {}; stop with Ctrl-C",
        a.key,
        labels.join(", "),
        mode.name(),
        ports.join(",")
    );
    if let Some(w) = &mut sinks.csv {
        writeln!(w, "{CSV_HEADER}")?;
    }
    sinks.flush()?;

    let got: Rc<RefCell<Vec<marker_event>>> = Rc::new(RefCell::new(Vec::new()));
    let bad = Rc::new(std::cell::Cell::new(0u64));
    let (sink, bad_sink) = (Rc::clone(&got), Rc::clone(&bad));
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.marker_events, move |raw| {
        match decode(raw) {
            Some(e) => sink.borrow_mut().push(e),
            None => bad_sink.set(bad_sink.get() + 1),
        }
        0
    })?;
    let rb = rb.build()?;

    let keys = Keys::new(&a.key, &a.position_key);
    let offset = realtime_offset();
    let to_real = |mono: u64| (i128::from(mono) + offset).max(0) as u64;
    let mut book = Book::new(labels.clone(), a.window);
    let mut streams = Streams::default();
    let ticker = crossbeam_channel::tick(Duration::from_secs(1));
    let mut found = Vec::new();
    loop {
        let stop = match run.step() {
            Step::Wait(w) => {
                let _ = rb.poll(w);
                false
            }
            _ => true,
        };
        if stop {
            // Detach first: what was on its way is then all in the buffer.
            drop(attached.take());
        }
        rb.consume().context("reading the ring buffer")?;
        for e in got.borrow_mut().drain(..) {
            let h = &e.h;
            let point = usize::from(h.point);
            let Some(p) = points.get(point) else {
                // Not a point this run attached: a corrupt record, counted like a short one.
                bad.set(bad.get() + 1);
                continue;
            };
            let f = &h.flow;
            let key = StreamKey {
                point: h.point,
                flow: events::flow_of(f.family, f.proto, &f.saddr, f.sport, &f.daddr, f.dport),
            };
            let len = usize::from(h.len).min(e.data.len());
            let mut c = Counts::default();
            streams.feed(
                &keys,
                key,
                h.seq,
                h.flags,
                h.ts,
                &e.data[..len],
                &mut found,
                &mut c,
            );
            book.stats[point].counts.add(&c);
            for m in found.drain(..) {
                note(&mut book, &mut sinks, p, key, &m, to_real(m.ts))?;
            }
        }
        let tick = stop || ticker.try_recv().is_ok();
        if tick {
            let older = if stop {
                u64::MAX
            } else {
                crate::cmd::trace::now_monotonic_ns().saturating_sub(STREAM_IDLE_NS)
            };
            for (k, marks, c) in streams.expire(older) {
                let i = usize::from(k.point);
                book.stats[i].counts.add(&c);
                for m in marks {
                    note(&mut book, &mut sinks, &points[i], k, &m, to_real(m.ts))?;
                }
            }
            if !stop {
                book.prune(to_real(crate::cmd::trace::now_monotonic_ns()));
            }
            if let Some((_, x)) = &endpoint {
                let bc = bpf_counts(&skel.maps.marker_counts)?;
                let mut fams = book.families(&bc);
                fams.extend(crate::sink::prom::registry::bpf_families(
                    &crate::cmd::trace::prog_stats(&[skel.object()]),
                ));
                x.publish("marker", fams);
            }
        }
        sinks.flush()?;
        if stop {
            break;
        }
    }
    let bc = bpf_counts(&skel.maps.marker_counts)?;
    let secs = run.started().elapsed().as_secs_f64();
    let pairs = book.pairs();
    let mut v = summary_json(&book, &pairs, &bc, streams.len(), secs);
    v["decode_errors"] = bad.get().into();
    v["attach"] = mode.name().into();
    if a.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")?;
    } else if a.csv.is_some() {
        print!("{}", summary_human(&v, &pairs));
    } else {
        eprint!("{}", summary_human(&v, &pairs));
    }
    drop(endpoint);
    Ok(())
}

/// A marker found: book it, and write it when it is the interval's first sighting there.
fn note(
    book: &mut Book,
    sinks: &mut Sinks,
    p: &Point,
    key: StreamKey,
    m: &Found,
    realtime_ns: u64,
) -> Result<()> {
    if !book.sight(usize::from(key.point), m, realtime_ns) {
        return Ok(());
    }
    let f = &key.flow;
    sinks.row(&MarkerRow {
        timestamp_ns: realtime_ns,
        point: p.label.clone(),
        iface: p.spec.iface.clone(),
        direction: p.spec.direction.name().to_string(),
        src: f.saddr,
        sport: f.sport,
        dst: f.daddr,
        dport: f.dport,
        interval_id: m.id,
        position: m.position,
    })
}

/// "marker_p3" -> 3 (with prefix "marker_p").
fn point_of(prefix: &str, prog: &str) -> Option<usize> {
    prog.strip_prefix(prefix)?.parse().ok()
}

/// tcx where asked for or, with auto, where the kernel has it.
pub fn tc_mode(a: TcAttach, btf: Option<&std::path::Path>) -> tc::Mode {
    match a {
        TcAttach::Tcx => tc::Mode::Tcx,
        TcAttach::Clsact => tc::Mode::Clsact,
        // TC programs need no CO-RE: BTF only tells whether tcx exists.
        TcAttach::Auto => {
            match libbpf_rs::btf::Btf::from_path(crate::kernel::probes::btf_path(btf)) {
                Ok(b) if tc::has_tcx(&b) => tc::Mode::Tcx,
                _ => tc::Mode::Clsact,
            }
        }
    }
}

/// Before load: the `{prefix}N` program of each point gets its direction's tcx attach type;
/// those of unused points are not loaded.
pub fn prepare_points(
    obj: &mut libbpf_rs::OpenObject,
    prefix: &str,
    points: &[Point],
    mode: tc::Mode,
) {
    for mut prog in obj.progs_mut() {
        let Some(i) = point_of(prefix, &prog.name().to_string_lossy()) else {
            continue;
        };
        match points.get(i) {
            Some(p) if mode == tc::Mode::Tcx => {
                prog.set_attach_type(tc::tcx_attach_type(p.spec.direction))
            }
            Some(_) => {}
            None => prog.set_autoload(false),
        }
    }
}

/// After load: every `{prefix}N` program attached at point N.
pub fn attach_points(
    obj: &libbpf_rs::Object,
    prefix: &str,
    points: &[Point],
    mode: tc::Mode,
) -> Result<tc::Attached> {
    let mut attached = tc::Attached::default();
    for prog in obj.progs() {
        let Some(p) = point_of(prefix, &prog.name().to_string_lossy()).and_then(|i| points.get(i))
        else {
            continue;
        };
        attached.attach(
            mode,
            &prog,
            p.ifindex,
            p.spec.direction,
            p.spec.netns.as_deref(),
            &p.label,
        )?;
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_short_or_whole() {
        let hdr = std::mem::size_of::<crate::bpf::marker::types::marker_hdr>();
        let mut raw = vec![0u8; hdr + 128];
        let mut e = marker_event::default();
        e.h.len = 5;
        e.h.seq = 77;
        e.data[..5].copy_from_slice(b"hello");
        // SAFETY: Plain struct viewed as bytes.
        let bytes = unsafe { plain::as_bytes(&e) };
        raw.copy_from_slice(&bytes[..hdr + 128]);
        let d = decode(&raw).expect("a short record");
        assert_eq!((d.h.seq, &d.data[..5]), (77, &b"hello"[..]));
        // A record that says it holds more than it does is refused.
        e.h.len = 200;
        let bytes = unsafe { plain::as_bytes(&e) };
        assert!(decode(&bytes[..hdr + 128]).is_none());
        assert!(decode(bytes).is_some());
        assert!(decode(&bytes[..hdr - 1]).is_none());
    }

    #[test]
    fn limits_match_the_bpf_arrays() {
        // The array lengths in bpf/marker.bpf.c's rodata, which the CLI's limits must match.
        fn len<T, const N: usize>(_: fn(&crate::bpf::marker::types::rodata) -> &[T; N]) -> usize {
            N
        }
        assert_eq!(len(|r| &r.l2_len), MAX_POINTS);
        assert_eq!(len(|r| &r.ports), crate::cli::MAX_MARKER_PORTS);
    }

    #[test]
    fn programs_name_their_point() {
        assert_eq!(point_of("marker_p", "marker_p0"), Some(0));
        assert_eq!(point_of("marker_p", "marker_p7"), Some(7));
        assert_eq!(point_of("marker_p", "empty_marker_p1"), None);
        assert_eq!(point_of("empty_marker_p", "empty_marker_p1"), Some(1));
    }

    fn found(id: u64) -> Found {
        Found {
            id,
            position: None,
            ts: 0,
        }
    }

    #[test]
    fn the_book_keeps_first_sightings_and_pairs_them() {
        let mut b = Book::new(vec!["a".into(), "b".into()], Duration::from_secs(60));
        assert!(b.sight(0, &found(1), 1_000));
        assert!(!b.sight(0, &found(1), 1_500));
        assert!(b.sight(1, &found(1), 31_000));
        assert!(b.sight(1, &found(2), 40_000));
        assert_eq!((b.stats[0].seen, b.stats[0].duplicates), (1, 1));
        // Interval 1 at both points and interval 2 at one: two intervals, three sightings.
        assert_eq!(b.intervals, 2);
        let v = summary_json(&b, &b.pairs(), &BpfCounts::default(), 0, 1.0);
        assert_eq!(
            (v["intervals"].as_u64(), v["seen"].as_u64()),
            (Some(2), Some(3))
        );
        let h = summary_human(&v, &[]);
        assert!(
            h.starts_with("2 intervals seen in 1.0s (3 sightings at 2 points)"),
            "{h}"
        );
        assert_eq!(b.pair_hist[0].count(), 1);
        assert_eq!(b.pair_hist[0].sum_ns, 30_000);
        let pairs = b.pairs();
        let v = pairs[0].json();
        assert_eq!(v["count"], 1);
        assert_eq!(v["min_ns"], 30_000);
        assert_eq!(v["missing"], json!([2]));
        b.prune(40_001 + 60_000_000_000);
        assert!(b.first.iter().all(|m| m.is_empty()));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::bpf::marker::types::marker_hdr;
    use proptest::prelude::*;
    use std::mem::size_of;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A header saying it holds `len` bytes (any u16, so also more than a record can),
        /// then data, cut anywhere or padded past a whole event: decode takes the record
        /// exactly when it holds the header and `len` bytes, with its bytes unchanged.
        #[test]
        fn fuzz_marker_decode(
            len in prop_oneof![0u16..=300, any::<u16>()],
            fields in any::<(u64, u32, u8, u8)>(),
            data in proptest::collection::vec(any::<u8>(), 0..size_of::<marker_event>() + 64),
            cut in any::<prop::sample::Index>(),
        ) {
            let hdr_len = size_of::<marker_hdr>();
            let mut h = marker_hdr::default();
            (h.ts, h.seq, h.point, h.flags) = fields;
            h.len = len;
            // SAFETY: marker_hdr is Plain: viewing it as bytes is sound.
            let mut raw = unsafe { plain::as_bytes(&h) }.to_vec();
            raw.extend_from_slice(&data);
            let raw = &raw[..cut.index(raw.len() + 1)];
            let fits = raw.len().min(size_of::<marker_event>()) >= hdr_len + usize::from(len);
            match decode(raw) {
                None => prop_assert!(!fits),
                Some(e) => {
                    prop_assert!(fits);
                    prop_assert_eq!((e.h.len, e.h.seq, e.h.ts), (len, h.seq, h.ts));
                    // What the run loop slices: always inside the record that came.
                    let n = usize::from(e.h.len).min(e.data.len());
                    prop_assert_eq!(&e.data[..n], &raw[hdr_len..hdr_len + n]);
                }
            }
        }
    }
}
