//! Congestion signals for a rate controller, as a library: bytes and calls sent, drops by
//! kernel drop reason, send-buffer pressure, NET_RX/NET_TX softirq time, qdisc backlog per
//! device and TCP retransmits, every event counted in per-CPU BPF maps (no sampling).
//!
//! ```no_run
//! use std::time::Duration;
//! use netstack_lat::cmd::signals::CongestionCollector;
//!
//! let mut collector = CongestionCollector::builder().port(4433).build()?;
//! loop {
//!     let s = collector.next_interval(Duration::from_millis(200))?;
//!     println!("{} bytes sent, {} drops", s.send_bytes, s.drops);
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Synchronous: the caller owns its loop. BPF keeps totals that only grow; each read takes
//! the difference to the previous one, so an event that lands during a read is never lost.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::btf::types::Enum;
use libbpf_rs::btf::Btf;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use serde::Serialize;

use crate::bpf::signals::types::{sig_cpu, sig_qdisc, sig_sock};
use crate::bpf::signals::{SignalsSkel, SignalsSkelBuilder};
use crate::error::{require_root, UserError};
use crate::kernel::probes;

/// One interval's signals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CongestionSignals {
    /// Length of the interval these figures cover.
    pub interval_s: f64,
    /// Bytes the TCP and UDP send calls returned, and how many calls moved data (UDP: one
    /// datagram each).
    pub send_bytes: u64,
    pub send_packets: u64,
    pub tcp_send_bytes: u64,
    pub udp_send_bytes: u64,
    /// Packets freed as drops (kfree_skb with a reason other than "consumed").
    pub drops: u64,
    /// Drops per kernel drop reason, names read from the running kernel's BTF.
    pub drops_by_reason: BTreeMap<String, u64>,
    /// sk_wmem_queued / sk_sndbuf of the TCP sockets that sent in the interval (at their
    /// latest send): mean and max; 0 when none sent.
    pub avg_wmem_pressure: f64,
    pub max_wmem_pressure: f64,
    pub active_sockets: u64,
    /// NET_RX + NET_TX softirq run time, all CPUs.
    pub softirq_ns: u64,
    /// Root qdisc backlog per device: at the interval's end and its peak within.
    pub qdisc: Vec<QdiscBacklog>,
    /// Sum over devices of the backlog at the end of the interval.
    pub qdisc_backlog_bytes: u64,
    pub qdisc_backlog_packets: u64,
    pub retransmits: u64,
    /// Events the BPF programs counted in the interval.
    pub event_count: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QdiscBacklog {
    pub ifindex: u32,
    pub device: String,
    pub bytes: u64,
    pub packets: u64,
    pub peak_bytes: u64,
    pub peak_packets: u64,
}

/// Filters of the collector; all optional.
#[derive(Debug, Clone, Default)]
pub struct CongestionCollectorBuilder {
    pid: Option<u32>,
    cgroup: Option<PathBuf>,
    port: Option<u16>,
    iface: Option<String>,
    btf: Option<PathBuf>,
}

impl CongestionCollectorBuilder {
    /// Sends of this process (thread group) only; drops have no owner and are then not counted.
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }
    /// Sends of processes in this cgroup v2 directory only (drops: as for `pid`).
    pub fn cgroup(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(dir.into());
        self
    }
    /// Sockets, drops and retransmits with this local or remote port only. A socket's remote
    /// port is known once it is connected: an unconnected UDP socket matches by its own port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// Drops and qdisc backlog of this interface only.
    pub fn iface(mut self, name: impl Into<String>) -> Self {
        self.iface = Some(name.into());
        self
    }
    /// Kernel BTF other than /sys/kernel/btf/vmlinux.
    pub fn btf(mut self, path: impl Into<PathBuf>) -> Self {
        self.btf = Some(path.into());
        self
    }

    /// Load and attach the programs; a clear error when this kernel or user cannot.
    pub fn build(self) -> Result<CongestionCollector> {
        require_root()?;
        let btf = probes::btf_path(self.btf.as_deref());
        probes::require_btf(&btf)?;
        libbpf_rs::set_print(None);
        let (tps, has_cast) = probes::gather_tracepoints(&btf, TRACEPOINTS)?;
        if let Some(missing) = TRACEPOINTS.iter().find(|t| !tps.iter().any(|p| p == *t)) {
            return Err(UserError::new(format!(
                "this kernel has no {missing} tracepoint, which the congestion signals need: see `netstack-lat probes`"
            ))
            .into());
        }
        let reasons = drop_reasons(&btf)?;
        let ifindex = match &self.iface {
            Some(name) => crate::kernel::netns::ifindex(name)?,
            None => 0,
        };
        let cgroup = match &self.cgroup {
            Some(dir) => crate::cmd::trace::resolve_cgroup(dir)?,
            None => 0,
        };
        let tgid = match self.pid {
            Some(pid) => crate::cmd::trace::resolve_pid(pid)?,
            None => 0,
        };
        if self.port == Some(0) {
            return Err(UserError::new("port 0 matches nothing: give 1 to 65535").into());
        }

        let mut obj = Box::new(MaybeUninit::<OpenObject>::uninit());
        // SAFETY: the skeleton borrows the heap cell behind `obj`, which never moves and is
        // dropped after the skeleton (field order of CongestionCollector).
        let cell: &'static mut MaybeUninit<OpenObject> =
            unsafe { &mut *(obj.as_mut() as *mut MaybeUninit<OpenObject>) };
        let mut builder = SignalsSkelBuilder::default();
        if btf != Path::new(probes::DEFAULT_BTF) {
            builder.obj_builder.btf_custom_path(&btf)?;
        }
        let mut open = builder
            .open(cell)
            .context("opening the signals BPF object")?;
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("BPF object has no rodata")?;
        ro.has_cast = has_cast;
        ro.f_port = self.port.unwrap_or(0);
        ro.f_ifindex = ifindex;
        ro.f_tgid = tgid;
        ro.f_cgroup = cgroup;
        let mut skel = open.load().context("loading the signals BPF programs")?;
        skel.attach()
            .context("attaching the signals BPF programs")?;
        let mut c = CongestionCollector {
            skel,
            _obj: obj,
            reasons,
            last: Totals::default(),
            last_at: Instant::now(),
            names: BTreeMap::new(),
        };
        c.last = c.totals()?;
        c.last_at = Instant::now();
        Ok(c)
    }
}

const TRACEPOINTS: &[&str] = &[
    "sock_send_length",
    "kfree_skb",
    "tcp_retransmit_skb",
    "softirq_entry",
    "softirq_exit",
    "qdisc_enqueue",
    "qdisc_dequeue",
];

/// The kernel's `enum skb_drop_reason`, value -> name without the SKB_DROP_REASON_ prefix.
pub fn drop_reasons(btf_path: &Path) -> Result<BTreeMap<u32, String>> {
    let btf = Btf::from_path(btf_path)
        .map_err(|e| UserError::new(format!("cannot read BTF at {}: {e}", btf_path.display())))?;
    let mut out = BTreeMap::new();
    if let Some(e) = btf.type_by_name::<Enum>("skb_drop_reason") {
        for m in e.iter() {
            let Some(name) = m.name.and_then(|n| n.to_str()) else {
                continue;
            };
            if let Ok(v) = u32::try_from(m.value) {
                out.insert(v, reason_name(name).to_string());
            }
        }
    }
    Ok(out)
}

/// `SKB_DROP_REASON_NETFILTER_DROP` -> `NETFILTER_DROP`.
pub fn reason_name(enum_name: &str) -> &str {
    enum_name
        .strip_prefix("SKB_DROP_REASON_")
        .or_else(|| enum_name.strip_prefix("SKB_"))
        .unwrap_or(enum_name)
}

/// Totals summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub send_bytes: [u64; 2],
    pub send_calls: [u64; 2],
    pub drops: u64,
    pub retransmits: u64,
    pub softirq_ns: [u64; 2],
    pub events: u64,
    pub drop_reason: Vec<u64>,
}

impl Totals {
    fn sum(cpus: &[sig_cpu]) -> Totals {
        let mut t = Totals {
            drop_reason: vec![
                0;
                crate::bpf::signals::types::sig_cpu::default()
                    .drop_reason
                    .len()
            ],
            ..Totals::default()
        };
        for c in cpus {
            for i in 0..2 {
                t.send_bytes[i] += c.send_bytes[i];
                t.send_calls[i] += c.send_calls[i];
                t.softirq_ns[i] += c.softirq_ns[i];
            }
            t.drops += c.drops;
            t.retransmits += c.retransmits;
            t.events += c.events;
            for (d, s) in t.drop_reason.iter_mut().zip(c.drop_reason.iter()) {
                *d += s;
            }
        }
        t
    }
}

/// Interval figures from two totals (counters only grow; a wrap or reset gives 0).
pub fn delta(now: &Totals, before: &Totals, reasons: &BTreeMap<u32, String>) -> CongestionSignals {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let mut by_reason = BTreeMap::new();
    for (i, (&a, &b)) in now
        .drop_reason
        .iter()
        .zip(before.drop_reason.iter().chain(std::iter::repeat(&0)))
        .enumerate()
    {
        let n = d(a, b);
        if n > 0 {
            let name = reasons
                .get(&(i as u32))
                .cloned()
                .unwrap_or_else(|| format!("REASON_{i}"));
            *by_reason.entry(name).or_insert(0) += n;
        }
    }
    CongestionSignals {
        tcp_send_bytes: d(now.send_bytes[0], before.send_bytes[0]),
        udp_send_bytes: d(now.send_bytes[1], before.send_bytes[1]),
        send_bytes: d(now.send_bytes[0], before.send_bytes[0])
            + d(now.send_bytes[1], before.send_bytes[1]),
        send_packets: d(now.send_calls[0], before.send_calls[0])
            + d(now.send_calls[1], before.send_calls[1]),
        drops: d(now.drops, before.drops),
        drops_by_reason: by_reason,
        softirq_ns: d(now.softirq_ns[0], before.softirq_ns[0])
            + d(now.softirq_ns[1], before.softirq_ns[1]),
        retransmits: d(now.retransmits, before.retransmits),
        event_count: d(now.events, before.events),
        ..CongestionSignals::default()
    }
}

/// Mean and max of occupancies in parts per million, as fractions.
pub fn pressure(ppms: &[u32]) -> (f64, f64) {
    if ppms.is_empty() {
        return (0.0, 0.0);
    }
    let sum: u64 = ppms.iter().map(|&p| u64::from(p)).sum();
    let max = ppms.iter().copied().max().unwrap_or(0);
    (sum as f64 / ppms.len() as f64 / 1e6, f64::from(max) / 1e6)
}

/// Loaded and attached congestion-signal programs.
pub struct CongestionCollector {
    // Declared before `_obj`: dropped first (it borrows the object cell).
    skel: SignalsSkel<'static>,
    _obj: Box<MaybeUninit<OpenObject>>,
    reasons: BTreeMap<u32, String>,
    last: Totals,
    last_at: Instant,
    names: BTreeMap<u32, String>,
}

impl CongestionCollector {
    pub fn builder() -> CongestionCollectorBuilder {
        CongestionCollectorBuilder::default()
    }

    fn totals(&self) -> Result<Totals> {
        let cpus: Vec<sig_cpu> = crate::bpf::percpu(&self.skel.maps.sig, &0u32.to_ne_bytes())?;
        Ok(Totals::sum(&cpus))
    }

    /// The signals since the previous read (or since `build`), then start a new interval.
    pub fn read_and_reset(&mut self) -> Result<CongestionSignals> {
        let now = self.totals()?;
        let at = Instant::now();
        let since_ns = crate::cmd::trace::now_monotonic_ns()
            .saturating_sub(at.duration_since(self.last_at).as_nanos() as u64);
        let mut s = delta(&now, &self.last, &self.reasons);
        s.interval_s = at.duration_since(self.last_at).as_secs_f64();
        // Sockets that sent in the interval, at their latest send.
        let mut ppms = Vec::new();
        for key in self.skel.maps.sig_socks.keys() {
            if let Ok(Some(v)) = self.skel.maps.sig_socks.lookup(&key, MapFlags::ANY) {
                let mut e = sig_sock::default();
                if plain::copy_from_bytes(&mut e, &v).is_ok() && e.ts >= since_ns {
                    ppms.push(e.ppm);
                }
            }
        }
        (s.avg_wmem_pressure, s.max_wmem_pressure) = pressure(&ppms);
        s.active_sockets = ppms.len() as u64;
        s.qdisc = self.qdiscs()?;
        s.qdisc_backlog_bytes = s.qdisc.iter().map(|q| q.bytes).sum();
        s.qdisc_backlog_packets = s.qdisc.iter().map(|q| q.packets).sum();
        self.last = now;
        self.last_at = at;
        Ok(s)
    }

    /// Sleep until `interval` after the previous read, then read.
    pub fn next_interval(&mut self, interval: Duration) -> Result<CongestionSignals> {
        let due = self.last_at + interval;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.read_and_reset()
    }

    /// Backlog per device; peaks start again from the current backlog.
    fn qdiscs(&mut self) -> Result<Vec<QdiscBacklog>> {
        let map = &self.skel.maps.sig_qdiscs;
        let mut out = Vec::new();
        for key in map.keys() {
            let Ok(Some(v)) = map.lookup(&key, MapFlags::ANY) else {
                continue;
            };
            let mut e = sig_qdisc::default();
            if plain::copy_from_bytes(&mut e, &v).is_err() {
                continue;
            }
            let ifindex = u32::from_ne_bytes(key[..4].try_into().unwrap_or([0; 4]));
            let device = self
                .names
                .entry(ifindex)
                .or_insert_with(|| if_name(ifindex))
                .clone();
            out.push(QdiscBacklog {
                ifindex,
                device,
                bytes: e.bytes.into(),
                packets: e.packets.into(),
                peak_bytes: e.peak_bytes.max(e.bytes).into(),
                peak_packets: e.peak_packets.max(e.packets).into(),
            });
            e.peak_bytes = e.bytes;
            e.peak_packets = e.packets;
            // SAFETY: sig_qdisc is a plain C struct; its bytes are its value.
            let bytes = unsafe { plain::as_bytes(&e) };
            let _ = map.update(&key, bytes, MapFlags::EXIST);
        }
        out.sort_by_key(|q| q.ifindex);
        Ok(out)
    }
}

fn if_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(bytes: u64, reason3: u64) -> Totals {
        let mut t = Totals {
            send_bytes: [bytes, 10],
            send_calls: [2, 1],
            drops: reason3,
            drop_reason: vec![0; 8],
            ..Totals::default()
        };
        t.drop_reason[3] = reason3;
        t
    }

    #[test]
    fn delta_names_reasons_and_never_goes_negative() {
        let reasons: BTreeMap<u32, String> = [(3, "NO_SOCKET".to_string())].into();
        let s = delta(&totals(1500, 7), &totals(500, 2), &reasons);
        assert_eq!(s.tcp_send_bytes, 1000);
        assert_eq!(s.udp_send_bytes, 0);
        assert_eq!(s.send_bytes, 1000);
        assert_eq!(s.drops, 5);
        assert_eq!(s.drops_by_reason.get("NO_SOCKET"), Some(&5));
        let s = delta(&totals(0, 0), &totals(500, 2), &reasons);
        assert_eq!((s.send_bytes, s.drops), (0, 0));
        assert!(s.drops_by_reason.is_empty());
    }

    #[test]
    fn pressure_is_mean_and_max() {
        assert_eq!(pressure(&[]), (0.0, 0.0));
        let (avg, max) = pressure(&[500_000, 1_000_000]);
        assert!((avg - 0.75).abs() < 1e-9 && (max - 1.0).abs() < 1e-9);
    }

    #[test]
    fn reason_names_lose_their_prefix() {
        assert_eq!(
            reason_name("SKB_DROP_REASON_NETFILTER_DROP"),
            "NETFILTER_DROP"
        );
        assert_eq!(reason_name("SKB_CONSUMED"), "CONSUMED");
        assert_eq!(reason_name("OTHER"), "OTHER");
    }
}

/// `netstack-lat signals`: one line (or JSON object) per interval, a total at the end.
pub fn run(a: &crate::cli::SignalsArgs) -> Result<()> {
    use std::io::Write;
    let mut b = CongestionCollector::builder();
    if let Some(p) = a.pid {
        b = b.pid(p);
    }
    if let Some(c) = &a.cgroup {
        b = b.cgroup(c);
    }
    if let Some(p) = a.port {
        b = b.port(p);
    }
    if let Some(i) = &a.iface {
        b = b.iface(i);
    }
    if let Some(f) = &a.btf {
        b = b.btf(f);
    }
    let mut c = b.build()?;
    eprintln!(
        "netstack-lat: tracing congestion signals every {:?}; stop with Ctrl-C",
        a.interval
    );
    let run = crate::runloop::RunLoop::start(a.duration)?;
    let started = Instant::now();
    let mut total = Summary::default();
    let mut out = std::io::stdout().lock();
    loop {
        let stop = loop {
            match run.step() {
                crate::runloop::Step::Wait(w) => {
                    let left = c.last_at + a.interval;
                    let now = Instant::now();
                    if now >= left {
                        break false;
                    }
                    std::thread::sleep(w.min(left - now));
                }
                _ => break true,
            }
        };
        let s = c.read_and_reset()?;
        total.add(&s);
        let at = started.elapsed().as_secs_f64();
        if a.json {
            let mut v = serde_json::to_value(&s)?;
            v["type"] = "interval".into();
            v["elapsed_s"] = at.into();
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "{}", line(at, &s))?;
        }
        out.flush()?;
        if stop {
            break;
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&total)?;
        v["type"] = "summary".into();
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "total {:.1}s: {} bytes in {} sends, {} drops, {} retransmits, softirq {} us",
            total.seconds,
            total.send_bytes,
            total.send_packets,
            total.drops,
            total.retransmits,
            total.softirq_ns / 1000
        )?;
        for (r, n) in &total.drops_by_reason {
            writeln!(out, "  drops {r}: {n}")?;
        }
    }
    Ok(())
}

/// The seed validator's line, with the backlog and retransmits added.
pub fn line(at_s: f64, s: &CongestionSignals) -> String {
    format!(
        "[{:>5.1}s] Events: {:>8} | Send: {:>10} B | Drops: {:>5} | Wmem: {:>5.1}% (max {:>5.1}%) | Softirq: {:>8} us | Qdisc: {:>8} B | Retrans: {:>4}",
        at_s,
        s.event_count,
        s.send_bytes,
        s.drops,
        s.avg_wmem_pressure * 100.0,
        s.max_wmem_pressure * 100.0,
        s.softirq_ns / 1000,
        s.qdisc_backlog_bytes,
        s.retransmits
    )
}

/// Totals over the run, for the summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub seconds: f64,
    pub intervals: u64,
    pub send_bytes: u64,
    pub send_packets: u64,
    pub tcp_send_bytes: u64,
    pub udp_send_bytes: u64,
    pub drops: u64,
    pub drops_by_reason: BTreeMap<String, u64>,
    pub retransmits: u64,
    pub softirq_ns: u64,
    pub max_wmem_pressure: f64,
    pub max_qdisc_backlog_bytes: u64,
    pub event_count: u64,
}

impl Summary {
    pub fn add(&mut self, s: &CongestionSignals) {
        self.seconds += s.interval_s;
        self.intervals += 1;
        self.send_bytes += s.send_bytes;
        self.send_packets += s.send_packets;
        self.tcp_send_bytes += s.tcp_send_bytes;
        self.udp_send_bytes += s.udp_send_bytes;
        self.drops += s.drops;
        for (r, n) in &s.drops_by_reason {
            *self.drops_by_reason.entry(r.clone()).or_insert(0) += n;
        }
        self.retransmits += s.retransmits;
        self.softirq_ns += s.softirq_ns;
        self.max_wmem_pressure = self.max_wmem_pressure.max(s.max_wmem_pressure);
        let peak: u64 = s.qdisc.iter().map(|q| q.peak_bytes).sum();
        self.max_qdisc_backlog_bytes = self.max_qdisc_backlog_bytes.max(peak);
        self.event_count += s.event_count;
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::kernel::probes::fuzz::{btf, corrupt, edits, Scratch};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// `enum skb_drop_reason` with any members: the table maps each value to its name
        /// without the prefix (a later member of the same value wins); a corrupted file gives
        /// an error naming it, or some table, never a panic.
        #[test]
        fn fuzz_btf_drop_reasons(
            members in proptest::collection::vec(
                (
                    (prop::sample::select(vec!["SKB_DROP_REASON_", "SKB_", ""]), "[A-Z0-9_]{1,8}")
                        .prop_map(|(p, n)| format!("{p}{n}")),
                    prop_oneof![0u32..200, any::<u32>()],
                ),
                0..8,
            ),
            edits in edits(),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let dir = Scratch::new("reasons");
            let clean = edits.is_empty() && cut.is_none();
            let path = dir.write(&corrupt(btf(&members, &[]), &edits, cut));
            match drop_reasons(&path) {
                Ok(table) => {
                    if clean {
                        let mut want = BTreeMap::new();
                        for (n, v) in &members {
                            want.insert(*v, reason_name(n).to_string());
                        }
                        prop_assert_eq!(table, want);
                    }
                }
                Err(e) => {
                    prop_assert!(!clean, "{}", e);
                    let m = e.to_string();
                    prop_assert!(m.starts_with("cannot read BTF at ") && !m.contains('\n'), "{}", m);
                }
            }
        }
    }
}
