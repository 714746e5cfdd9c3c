//! What the user sees: the live interval line, the summary (table or JSON), event lines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::events::{
    point_name, HeldReason, RX_IP, RX_NF_IN, RX_NF_PRE_DONE, RX_POINTS, RX_SIRQ_RAISE, TX_BASE,
    TX_DONE, TX_NF_OUT_DONE, TX_NF_POST, TX_SEND, TX_TRANSPORT,
};
use crate::join::rx::{span_name, Conn, Correlator, Dir, JoinStats, SpanId, Timeline};
use crate::kernel::nswatch::{Coverage, Names};
use crate::kernel::probes::PointPlan;
use crate::stats::counters::KernelCounters;
use crate::stats::hist::{fmt_ns, Hist, Stats, Unit};

/// Cumulative totals at one moment; `delta` turns two of them into an interval line.
#[derive(Debug, Default, Clone)]
pub struct IntervalReport {
    pub elapsed: Duration,
    pub packets: u64,
    pub reads: u64,
    pub tx_packets: u64,
    pub tx_writes: u64,
    pub events: u64,
    pub lost: u64,
}

impl IntervalReport {
    pub fn new(elapsed: Duration, j: &JoinStats, k: &KernelCounters) -> Self {
        IntervalReport {
            elapsed,
            packets: j.chains,
            reads: j.reads,
            tx_packets: j.tx_chains,
            tx_writes: j.tx_writes,
            events: k.events,
            lost: k.lost_events,
        }
    }

    pub fn delta(&self, prev: &IntervalReport, nominal: Duration) -> IntervalLine {
        let secs = self
            .elapsed
            .saturating_sub(prev.elapsed)
            .as_secs_f64()
            .max(nominal.as_secs_f64() / 1000.0);
        let events = self.events.saturating_sub(prev.events);
        IntervalLine {
            rx: true,
            tx: true,
            elapsed_s: self.elapsed.as_secs_f64(),
            packets: self.packets.saturating_sub(prev.packets),
            reads: self.reads.saturating_sub(prev.reads),
            tx_packets: self.tx_packets.saturating_sub(prev.tx_packets),
            tx_writes: self.tx_writes.saturating_sub(prev.tx_writes),
            events,
            events_per_s: events as f64 / secs,
            lost_events: self.lost.saturating_sub(prev.lost),
            lost_events_total: self.lost,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IntervalLine {
    /// The directions traced: the human line leaves out the other's counters, which would
    /// only ever read 0. JSON keeps every field, so its schema does not depend on flags.
    #[serde(skip)]
    pub rx: bool,
    #[serde(skip)]
    pub tx: bool,
    pub elapsed_s: f64,
    pub packets: u64,
    pub reads: u64,
    pub tx_packets: u64,
    pub tx_writes: u64,
    pub events: u64,
    pub events_per_s: f64,
    pub lost_events: u64,
    pub lost_events_total: u64,
}

impl IntervalLine {
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("type".into(), "interval".into());
        }
        v.to_string()
    }

    /// Only the counters of the traced directions (`--rx`, `--tx`).
    pub fn traced(mut self, rx: bool, tx: bool) -> Self {
        (self.rx, self.tx) = (rx, tx);
        self
    }

    pub fn human(&self) -> String {
        let mut s = format!("{:>8.1}s", self.elapsed_s);
        if self.rx {
            let _ = write!(
                s,
                "  rx packets {:>8}  reads {:>8}",
                self.packets, self.reads
            );
        }
        if self.tx {
            // Only TCP sends are seen as writes (UDP datagrams are their own packets).
            let _ = write!(
                s,
                "  tx packets {:>8}  tcp writes {:>8}",
                self.tx_packets, self.tx_writes
            );
        }
        let _ = write!(
            s,
            "  events/s {:>10.0}  lost {}",
            self.events_per_s, self.lost_events
        );
        if self.lost_events_total > 0 {
            let _ = write!(s, " (total {})", self.lost_events_total);
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanStats {
    pub name: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Data held in the socket for one reason: how many writes, and how long segments waited.
#[derive(Debug, Clone, Serialize)]
pub struct HeldRow {
    pub reason: &'static str,
    pub writes: u64,
    pub wait: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnRow {
    pub direction: Dir,
    pub proto: &'static str,
    /// Network namespace inode, and its name (a /run/netns name, "host", or a process).
    pub netns: u32,
    pub netns_name: Option<String>,
    /// On a Kubernetes node: the pod of the connection's owner (else of its namespace):
    /// k8s_namespace, k8s_pod, k8s_pod_uid, container_id. Absent elsewhere.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::kernel::k8s::Pod>,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub spans: Vec<SpanStats>,
    /// TX: "nagle" / "cork" when data waited in the socket for that reason.
    pub flags: Vec<&'static str>,
    pub held: Vec<HeldRow>,
}

/// A connection is flagged for Nagle or cork when held data waited at least this long:
/// a bulk writer without TCP_NODELAY has its partial tail held for microseconds until the
/// next write fills it, which `held` shows but is not worth a flag.
pub const FLAG_MIN_WAIT_NS: u64 = 1_000_000;

/// Per-connection flags worth a user's attention.
fn conn_flags(c: &Conn) -> Vec<&'static str> {
    c.held
        .iter()
        .filter(|(r, h)| **r != HeldReason::Other && h.wait.max() >= FLAG_MIN_WAIT_NS)
        .map(|(r, _)| r.name())
        .collect()
}

/// Flags counted over all connections: how many connections and writes had each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagCount {
    pub connections: u64,
    pub writes: u64,
    pub segments_waited: u64,
    pub max_wait_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HookRow {
    pub point: &'static str,
    pub hook: Option<String>,
    pub hooks: Vec<String>,
    pub reason: Option<String>,
}

pub struct Summary {
    pub duration: Duration,
    pub interrupted: bool,
    pub spans: Vec<(SpanStats, Hist)>,
    pub connections: Vec<ConnRow>,
    pub connections_total: usize,
    /// Which network namespaces the run covered (None: a unit test).
    pub namespaces: Option<Coverage>,
    pub flags: std::collections::BTreeMap<&'static str, FlagCount>,
    pub join: JoinStats,
    pub kernel: KernelCounters,
    pub decode_errors: u64,
    pub hooks: Vec<HookRow>,
}

/// A command's closing summary, printed as one JSON line or as text.
pub trait Report {
    fn to_json(&self) -> String;
    fn human(&self) -> String;
}

pub fn print_report(
    out: &mut impl std::io::Write,
    json: bool,
    r: &impl Report,
) -> std::io::Result<()> {
    if json {
        std::io::Write::write_all(out, format!("{}\n", r.to_json()).as_bytes())?;
    } else {
        std::io::Write::write_all(out, r.human().as_bytes())?;
    }
    out.flush()
}

macro_rules! report {
    ($t:ty) => {
        impl $crate::sink::trace_report::Report for $t {
            fn to_json(&self) -> String {
                Self::to_json(self)
            }
            fn human(&self) -> String {
                Self::human(self)
            }
        }
    };
}
pub(crate) use report;

report!(Summary);

fn is_nf_mid(p: usize) -> bool {
    matches!(p, RX_NF_PRE_DONE | RX_NF_IN | TX_NF_OUT_DONE | TX_NF_POST)
}

/// A netfilter split span, by name (indented under the span it splits).
fn is_split_name(name: &str) -> bool {
    ["rx_nf_pre_done", "rx_nf_in", "tx_nf_out_done", "tx_nf_post"]
        .iter()
        .any(|p| name.split("->").any(|end| end == *p))
}

fn span_rows(spans: &std::collections::BTreeMap<SpanId, Hist>) -> Vec<(SpanStats, Hist)> {
    let mut ids: Vec<&SpanId> = spans.keys().collect();
    // RX then TX, path order, each direction's total after its stage spans.
    let total = |a: usize, b: usize| {
        (a, b) == (1, RX_POINTS.len() - 1) || (a, b) == (TX_BASE + TX_SEND, TX_BASE + TX_DONE)
    };
    // The softirq context span leads the RX group; a netfilter split follows the span it
    // splits.
    let tx = |a: usize| {
        (TX_BASE..RX_SIRQ_RAISE).contains(&a) || matches!(a, TX_NF_OUT_DONE | TX_NF_POST)
    };
    let first = |a: usize| a != RX_SIRQ_RAISE;
    let group = |a: usize| match a {
        RX_NF_PRE_DONE | RX_NF_IN => RX_IP,
        TX_NF_OUT_DONE | TX_NF_POST => TX_BASE + TX_TRANSPORT,
        a => a,
    };
    let order = |p: usize| match p {
        RX_NF_PRE_DONE | TX_NF_OUT_DONE => group(p) * 10 + 1,
        RX_NF_IN | TX_NF_POST => group(p) * 10 + 2,
        p => p * 10,
    };
    ids.sort_by_key(|(a, b)| {
        let split = is_nf_mid(*a) || is_nf_mid(*b);
        (
            tx(*a),
            total(*a, *b),
            first(*a),
            group(*a),
            split,
            order(*a),
            order(*b),
        )
    });
    ids.into_iter()
        .map(|id| {
            let h = &spans[id];
            (
                SpanStats {
                    name: span_name(*id),
                    stats: h.summary(),
                },
                h.clone(),
            )
        })
        .collect()
}

impl Summary {
    pub fn build(
        duration: Duration,
        c: &Correlator,
        kernel: KernelCounters,
        decode_errors: u64,
        plan: &[PointPlan],
        top: usize,
        interrupted: bool,
    ) -> Self {
        let mut conns: Vec<_> = c.conns.iter().collect();
        conns.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(b.0)));
        let mut flags: std::collections::BTreeMap<&'static str, FlagCount> = Default::default();
        for k in c.conns.values() {
            for (r, h) in &k.held {
                if *r == HeldReason::Other || h.wait.max() < FLAG_MIN_WAIT_NS {
                    continue;
                }
                let f = flags.entry(r.name()).or_default();
                f.connections += 1;
                f.writes += h.writes;
                f.segments_waited += h.wait.count();
                f.max_wait_ns = f.max_wait_ns.max(h.wait.max());
            }
        }
        let connections = conns
            .iter()
            .take(top)
            .map(|((dir, f), k)| ConnRow {
                direction: *dir,
                proto: f.proto_name(),
                netns: k.netns,
                netns_name: None,
                pod: None,
                saddr: f.saddr.to_string(),
                sport: f.sport,
                daddr: f.daddr.to_string(),
                dport: f.dport,
                pid: k.owner.as_ref().map(|o| o.tgid),
                comm: k.owner.as_ref().map(|o| o.comm.to_string()),
                packets: k.packets,
                bytes: k.bytes,
                spans: span_rows(&k.spans).into_iter().map(|(s, _)| s).collect(),
                flags: conn_flags(k),
                held: k
                    .held
                    .iter()
                    .map(|(r, h)| HeldRow {
                        reason: r.name(),
                        writes: h.writes,
                        wait: h.wait.summary(),
                    })
                    .collect(),
            })
            .collect();
        Summary {
            duration,
            interrupted,
            spans: span_rows(&c.spans),
            connections,
            connections_total: c.conns.len(),
            namespaces: None,
            flags,
            join: c.stats.clone(),
            kernel,
            decode_errors,
            hooks: plan
                .iter()
                .map(|p| HookRow {
                    point: p.point,
                    hook: p.kind.map(|k| k.to_string()),
                    hooks: p.hooks.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
        }
    }

    /// Which namespaces the run covered, and their names on the connection rows.
    pub fn with_namespaces(mut self, coverage: Coverage, names: &Names) -> Self {
        for c in &mut self.connections {
            c.netns_name = names.get(&c.netns).cloned();
        }
        self.namespaces = Some(coverage);
        self
    }

    /// Kubernetes pods on the connection rows: `owner_pod` of a row's owner process, else
    /// the pod whose namespace the row is in.
    pub fn with_pods(
        mut self,
        pods: &crate::kernel::nswatch::PodMap,
        owner_pod: &mut dyn FnMut(u32) -> Option<crate::kernel::k8s::Pod>,
    ) -> Self {
        for c in &mut self.connections {
            c.pod = c
                .pid
                .and_then(&mut *owner_pod)
                .or_else(|| pods.get(&c.netns).cloned());
        }
        self
    }

    pub fn to_json(&self) -> String {
        json!({
            "type": "summary",
            "duration_s": self.duration.as_secs_f64(),
            "interrupted": self.interrupted,
            "lost_events": self.kernel.lost_events,
            "spans": self.spans.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "connections": self.connections,
            "connections_total": self.connections_total,
            "netns": self.namespaces,
            "flags": self.flags,
            "join": self.join,
            "kernel": self.kernel,
            "decode_errors": self.decode_errors,
            "hooks": self.hooks,
        })
        .to_string()
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        // Each direction's counters only when it was traced (no hooks: a unit test).
        let traced = |dir: &str| {
            self.hooks.is_empty() || self.hooks.iter().any(|h| h.point.starts_with(dir))
        };
        let _ = write!(
            s,
            "\nTrace: {:.1}s{}",
            self.duration.as_secs_f64(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        if traced("rx_") {
            let _ = write!(
                s,
                ", RX {} packets {} reads",
                self.join.chains, self.join.reads
            );
        }
        if traced("tx_") {
            let _ = write!(
                s,
                ", TX {} packets {} tcp writes",
                self.join.tx_chains, self.join.tx_writes
            );
        }
        let _ = writeln!(s, ", lost events {}", self.kernel.lost_events);
        let _ = writeln!(
            s,
            "\n{:<36} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "span", "count", "min", "avg", "p50", "p90", "p99", "max"
        );
        for (sp, _) in &self.spans {
            let t = &sp.stats;
            let indent = if is_split_name(&sp.name) { "  " } else { "" };
            let _ = writeln!(
                s,
                "{:<36} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                format!("{indent}{}", sp.name),
                t.count,
                fmt_ns(t.min_ns),
                fmt_ns(t.avg_ns),
                fmt_ns(t.p50_ns),
                fmt_ns(t.p90_ns),
                fmt_ns(t.p99_ns),
                fmt_ns(t.max_ns)
            );
        }
        if self.spans.is_empty() {
            let _ = writeln!(s, "(no packets matched)");
        }
        for (sp, h) in &self.spans {
            let _ = write!(s, "\n@{} (us):\n{}", sp.name, h.render_log2(Unit::Us));
        }
        if !self.connections.is_empty() {
            let _ = writeln!(
                s,
                "\nTop connections ({} of {}), p50 / p99 per span:",
                self.connections.len(),
                self.connections_total
            );
            for c in &self.connections {
                let who = match (&c.pid, &c.comm) {
                    (Some(p), Some(n)) => format!("pid {p} {n}"),
                    _ => "pid ?".to_string(),
                };
                let dir = match c.direction {
                    Dir::Rx => "RX",
                    Dir::Tx => "TX",
                };
                let flags = if c.flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", c.flags.join(","))
                };
                let mut ns = match (&c.netns_name, c.netns) {
                    (_, 0) => String::new(),
                    (Some(n), _) => format!("  netns {n}"),
                    (None, i) => format!("  netns {i}"),
                };
                if let Some(p) = c.pod.as_ref().filter(|p| !p.k8s_pod.is_empty()) {
                    let _ = write!(ns, "  pod {}/{}", p.k8s_namespace, p.k8s_pod);
                }
                let _ = writeln!(
                    s,
                    "  {dir} {} {}:{} -> {}:{}  {}{ns}  packets {} bytes {}{flags}",
                    c.proto, c.saddr, c.sport, c.daddr, c.dport, who, c.packets, c.bytes
                );
                for h in &c.held {
                    let _ = writeln!(
                        s,
                        "      held by {:<6} {} writes, segments waited p50 {} p90 {} max {} (n={})",
                        h.reason,
                        h.writes,
                        fmt_ns(h.wait.p50_ns),
                        fmt_ns(h.wait.p90_ns),
                        fmt_ns(h.wait.max_ns),
                        h.wait.count
                    );
                }
                for sp in &c.spans {
                    let _ = writeln!(
                        s,
                        "      {:<26} {:>9} / {:>9}  (n={})",
                        sp.name,
                        fmt_ns(sp.stats.p50_ns),
                        fmt_ns(sp.stats.p99_ns),
                        sp.stats.count
                    );
                }
            }
        }
        let j = &self.join;
        let k = &self.kernel;
        if traced("rx_") {
            let _ = writeln!(
            s,
            "\nAccounting: lost events {}, unread at exit/aged {}, reads without queued data {}, \
             queue evictions {}, chains without a socket {}, sockq without its skb {}, \
             netif without driver stamp {}, owner-filtered {}, decode errors {}",
            k.lost_events,
            j.unread,
            j.reads_unmatched,
            j.queue_evicted,
            k.chains_without_socket,
            k.sockq_unjoined,
            k.driver_miss,
            j.owner_filtered,
            self.decode_errors
        );
            let _ = writeln!(
                s,
                "Sockets: closed (state ended) {}, chains evicted from the per-CPU cache \
                 unfinished {}, repeated data_ready {}, placeholders for --iface {}",
                j.sockets_closed, k.rx_evicted, k.sockq_repeated, j.placeholders
            );
        }
        if traced("tx_") {
            let _ = writeln!(
                s,
                "TX accounting: tcp writes {}, held by nagle {} / cork {}, retransmits {}, \
             segments of unseen writes {}, dropped {}, evicted from cache {}, filtered {}",
                j.tx_writes,
                j.tx_held_nagle,
                j.tx_held_cork,
                j.tx_retransmits,
                j.tx_unattributed,
                j.tx_dropped,
                k.tx_evicted,
                k.tx_filtered
            );
            let _ = writeln!(s, "TX driver refused or dropped {}", k.tx_xmit_failed);
        }
        for (name, f) in &self.flags {
            let _ = writeln!(
                s,
                "Flag {name}: {} connections, {} writes held, {} segments waited, max wait {}",
                f.connections,
                f.writes,
                f.segments_waited,
                fmt_ns(f.max_wait_ns)
            );
        }
        let hooks: Vec<String> = self
            .hooks
            .iter()
            .map(|h| format!("{}={}", h.point, h.hook.as_deref().unwrap_or("none")))
            .collect();
        let _ = writeln!(s, "Hooks: {}", hooks.join(" "));
        if let Some(n) = &self.namespaces {
            let _ = writeln!(s, "{}", n.human());
        }
        s
    }
}

/// One `--events` line: the packet's timestamps and spans.
pub fn timeline_json(t: &Timeline, names: &Names) -> String {
    let mut ts = serde_json::Map::new();
    for &(i, v) in &t.points {
        ts.insert(point_name(i).into(), v.into());
    }
    let mut spans = serde_json::Map::new();
    for &(id, v) in &t.spans {
        spans.insert(span_name(id), v.into());
    }
    json!({
        "type": "event",
        "direction": t.dir,
        "flags": t.flags,
        "skb": (t.skb != 0).then(|| format!("{:#x}", t.skb)),
        "proto": t.flow.proto_name(),
        "saddr": t.flow.saddr.to_string(),
        "sport": t.flow.sport,
        "daddr": t.flow.daddr.to_string(),
        "dport": t.flow.dport,
        "pid": t.owner.as_ref().map(|o| o.tgid),
        "comm": t.owner.as_ref().map(|o| o.comm.to_string()),
        "netns": t.netns,
        "netns_name": names.get(&t.netns),
        "payload": t.payload,
        "ts_ns": ts,
        "spans": spans,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Chain, Flow, Read, IPPROTO_UDP};
    use crate::join::rx::Limits;
    use std::net::{IpAddr, Ipv4Addr};

    fn correlator() -> Correlator {
        let mut c = Correlator::new(false, Limits::default(), true);
        let flow = Flow {
            proto: IPPROTO_UDP,
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport: 5000,
            daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dport: 9000,
        };
        c.on_chain(&Chain {
            ts: [10, 20, 40, 80, 160, 0],
            sk: 1,
            flow,
            ifindex: 1,
            netns: 1,
            payload: 64,
            seq_end: 0,
            flags: 0,
            cpu: 0,
            sirq_raise: 0,
            sirq_entry: 0,
            nf_mid: [0; 2],
        });
        c.on_read(&Read {
            ts: 1160,
            sk: 1,
            pid: 7,
            tgid: 7,
            bytes: 64,
            copied_seq: 0,
            proto: IPPROTO_UDP,
            comm: "srv".into(),
        });
        c
    }

    #[test]
    fn summary_json_keeps_the_contract_names() {
        let c = correlator();
        let s = Summary::build(
            Duration::from_secs(2),
            &c,
            KernelCounters::default(),
            0,
            &[],
            10,
            false,
        );
        let v: Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["duration_s"], 2.0);
        assert_eq!(v["lost_events"], 0);
        let names: Vec<&str> = v["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "rx_driver->rx_netif",
                "rx_netif->rx_ip",
                "rx_ip->rx_transport",
                "rx_transport->rx_sockq",
                "rx_sockq->rx_read",
                "rx_netif->rx_read"
            ]
        );
        let read = &v["spans"][4];
        for k in [
            "count",
            "min_ns",
            "avg_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "log2_buckets",
        ] {
            assert!(read.get(k).is_some(), "{k} missing");
        }
        assert_eq!(read["min_ns"], 1000);
        let conn = &v["connections"][0];
        assert_eq!(conn["proto"], "udp");
        assert_eq!(conn["dport"], 9000);
        assert_eq!(conn["pid"], 7);
        assert_eq!(conn["comm"], "srv");
        assert_eq!(conn["spans"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn human_summary_and_interval_line() {
        let c = correlator();
        let s = Summary::build(
            Duration::from_secs(2),
            &c,
            KernelCounters::default(),
            0,
            &[],
            10,
            true,
        );
        let h = s.human();
        assert!(h.contains("rx_sockq->rx_read"));
        assert!(h.contains("(interrupted)"));
        assert!(h.contains("pid 7 srv"));
        let a = IntervalReport {
            elapsed: Duration::from_secs(1),
            events: 100,
            ..Default::default()
        };
        let b = IntervalReport {
            elapsed: Duration::from_secs(2),
            events: 300,
            lost: 2,
            packets: 50,
            ..Default::default()
        };
        let l = b.delta(&a, Duration::from_secs(1));
        assert_eq!(l.events_per_s, 200.0);
        let both = l.human();
        assert!(
            both.contains("rx packets") && both.contains("tcp writes"),
            "{both}"
        );
        assert!(
            !both.contains(" writes ") || both.contains("tcp writes"),
            "{both}"
        );
        let rx = l.clone().traced(true, false).human();
        assert!(rx.contains("rx packets") && rx.contains("reads"), "{rx}");
        assert!(!rx.contains("tx ") && !rx.contains("writes"), "{rx}");
        let tx = l.clone().traced(false, true).human();
        assert!(
            tx.contains("tx packets") && tx.contains("tcp writes"),
            "{tx}"
        );
        assert!(!tx.contains("rx ") && !tx.contains("reads"), "{tx}");
        // JSON keeps its fields whatever was traced.
        let v: Value = serde_json::from_str(&l.clone().traced(true, false).to_json()).unwrap();
        assert_eq!(v["tx_writes"], 0);
        let v: Value = serde_json::from_str(&l.to_json()).unwrap();
        assert_eq!(v["type"], "interval");
        assert_eq!(v["lost_events"], 2);
    }

    #[test]
    fn summary_shows_only_the_traced_directions_counters() {
        let c = correlator();
        let hook = |point| PointPlan {
            point,
            kind: None,
            family: None,
            hooks: vec![],
            reason: None,
            alternatives: vec![],
        };
        let only = |points: &[&'static str]| {
            Summary::build(
                Duration::from_secs(1),
                &c,
                KernelCounters::default(),
                0,
                &points.iter().map(|p| hook(p)).collect::<Vec<_>>(),
                10,
                false,
            )
            .human()
        };
        let head = |h: &str| {
            h.lines()
                .find(|l| l.starts_with("Trace:"))
                .unwrap()
                .to_string()
        };
        let rx = only(&["rx_netif", "rx_read"]);
        assert!(head(&rx).contains("RX 1 packets 1 reads"), "{rx}");
        assert!(!head(&rx).contains("TX"), "{rx}");
        assert!(!rx.contains("TX accounting"), "{rx}");
        let tx = only(&["tx_send", "tx_done"]);
        assert!(head(&tx).contains("TX 0 packets 0 tcp writes"), "{tx}");
        assert!(!head(&tx).contains("RX"), "{tx}");
        assert!(tx.contains("TX accounting: tcp writes 0"), "{tx}");
        assert!(!tx.contains("\nAccounting:"), "{tx}");
    }

    #[test]
    fn timeline_line() {
        let mut c = correlator();
        let t = c.timelines.take().unwrap();
        let v: Value = serde_json::from_str(&timeline_json(&t[0], &Names::new())).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["spans"]["rx_sockq->rx_read"], 1000);
        assert_eq!(v["spans"]["rx_netif->rx_read"], 1140);
        assert_eq!(v["ts_ns"]["rx_driver"], 10);
    }

    #[test]
    fn netfilter_split_rows_follow_the_span_they_split() {
        let mut spans = std::collections::BTreeMap::new();
        for id in [
            (RX_IP, RX_POINTS.len() - 3),
            (RX_NF_IN, RX_IP + 1),
            (RX_IP, RX_NF_PRE_DONE),
            (RX_NF_PRE_DONE, RX_NF_IN),
            (1, RX_IP),
            (1, RX_POINTS.len() - 1),
            (TX_NF_POST, TX_BASE + TX_TRANSPORT + 1),
            (TX_BASE + TX_TRANSPORT, TX_NF_OUT_DONE),
            (TX_BASE + TX_TRANSPORT, TX_BASE + TX_TRANSPORT + 1),
        ] {
            let mut h = Hist::new();
            h.record(100);
            spans.insert(id, h);
        }
        let names: Vec<String> = span_rows(&spans).into_iter().map(|(s, _)| s.name).collect();
        assert_eq!(
            names,
            [
                "rx_netif->rx_ip",
                "rx_ip->rx_transport",
                "rx_ip->rx_nf_pre_done",
                "rx_nf_pre_done->rx_nf_in",
                "rx_nf_in->rx_transport",
                "rx_netif->rx_read",
                "tx_transport->tx_nf_done",
                "tx_transport->tx_nf_out_done",
                "tx_nf_post->tx_nf_done",
            ]
        );
        assert!(is_split_name("rx_nf_in->rx_transport"));
        assert!(!is_split_name("rx_ip->rx_transport"));
    }
}
