//! What the user sees: the live interval line, the summary (table or JSON), event lines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::correlate::{span_name, Correlator, JoinStats, SpanId, Timeline};
use crate::events::RX_POINTS;
use crate::hist::{fmt_ns, Hist, Stats, Unit};
use crate::probes::PointPlan;
use crate::trace::KernelCounters;

/// Cumulative totals at one moment; `delta` turns two of them into an interval line.
#[derive(Debug, Default, Clone)]
pub struct IntervalReport {
    pub elapsed: Duration,
    pub packets: u64,
    pub reads: u64,
    pub events: u64,
    pub lost: u64,
}

impl IntervalReport {
    pub fn new(elapsed: Duration, j: &JoinStats, k: &KernelCounters) -> Self {
        IntervalReport {
            elapsed,
            packets: j.chains,
            reads: j.reads,
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
            elapsed_s: self.elapsed.as_secs_f64(),
            packets: self.packets.saturating_sub(prev.packets),
            reads: self.reads.saturating_sub(prev.reads),
            events,
            events_per_s: events as f64 / secs,
            lost_events: self.lost.saturating_sub(prev.lost),
            lost_events_total: self.lost,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IntervalLine {
    pub elapsed_s: f64,
    pub packets: u64,
    pub reads: u64,
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

    pub fn human(&self) -> String {
        format!(
            "{:>8.1}s  packets {:>8}  reads {:>8}  events/s {:>10.0}  lost {}{}",
            self.elapsed_s,
            self.packets,
            self.reads,
            self.events_per_s,
            self.lost_events,
            if self.lost_events_total > 0 {
                format!(" (total {})", self.lost_events_total)
            } else {
                String::new()
            }
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanStats {
    pub name: String,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnRow {
    pub proto: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub spans: Vec<SpanStats>,
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
    pub join: JoinStats,
    pub kernel: KernelCounters,
    pub decode_errors: u64,
    pub hooks: Vec<HookRow>,
}

fn span_rows(spans: &std::collections::BTreeMap<SpanId, Hist>) -> Vec<(SpanStats, Hist)> {
    let mut ids: Vec<&SpanId> = spans.keys().collect();
    // Path order; the total (rx_netif->rx_read) after the stage spans.
    ids.sort_by_key(|(a, b)| (b - a > 1 && *b == RX_POINTS.len() - 1, *a, *b));
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
        let connections = conns
            .iter()
            .take(top)
            .map(|(f, k)| ConnRow {
                proto: f.proto_name(),
                saddr: f.saddr.to_string(),
                sport: f.sport,
                daddr: f.daddr.to_string(),
                dport: f.dport,
                pid: k.owner.as_ref().map(|o| o.tgid),
                comm: k.owner.as_ref().map(|o| o.comm.to_string()),
                packets: k.packets,
                bytes: k.bytes,
                spans: span_rows(&k.spans).into_iter().map(|(s, _)| s).collect(),
            })
            .collect();
        Summary {
            duration,
            interrupted,
            spans: span_rows(&c.spans),
            connections,
            connections_total: c.conns.len(),
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

    pub fn to_json(&self) -> String {
        json!({
            "type": "summary",
            "duration_s": self.duration.as_secs_f64(),
            "interrupted": self.interrupted,
            "lost_events": self.kernel.lost_events,
            "spans": self.spans.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "connections": self.connections,
            "connections_total": self.connections_total,
            "join": self.join,
            "kernel": self.kernel,
            "decode_errors": self.decode_errors,
            "hooks": self.hooks,
        })
        .to_string()
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nRX trace: {:.1}s{}, {} packets, {} reads, lost events {}",
            self.duration.as_secs_f64(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.join.chains,
            self.join.reads,
            self.kernel.lost_events
        );
        let _ = writeln!(
            s,
            "\n{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "span", "count", "min", "avg", "p50", "p90", "p99", "max"
        );
        for (sp, _) in &self.spans {
            let t = &sp.stats;
            let _ = writeln!(
                s,
                "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                sp.name,
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
                let _ = writeln!(
                    s,
                    "  {} {}:{} -> {}:{}  {}  packets {} bytes {}",
                    c.proto, c.saddr, c.sport, c.daddr, c.dport, who, c.packets, c.bytes
                );
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
        let hooks: Vec<String> = self
            .hooks
            .iter()
            .map(|h| format!("{}={}", h.point, h.hook.as_deref().unwrap_or("none")))
            .collect();
        let _ = writeln!(s, "Hooks: {}", hooks.join(" "));
        s
    }
}

/// One `--events` line: the packet's timestamps and spans.
pub fn timeline_json(t: &Timeline) -> String {
    let mut ts = serde_json::Map::new();
    for (i, &v) in t.ts.iter().enumerate() {
        if v != 0 {
            ts.insert(RX_POINTS[i].into(), v.into());
        }
    }
    let mut spans = serde_json::Map::new();
    for (id, v) in crate::correlate::spans_of(&t.ts) {
        spans.insert(span_name(id), v.into());
    }
    json!({
        "type": "event",
        "direction": "rx",
        "proto": t.flow.proto_name(),
        "saddr": t.flow.saddr.to_string(),
        "sport": t.flow.sport,
        "daddr": t.flow.daddr.to_string(),
        "dport": t.flow.dport,
        "pid": t.owner.as_ref().map(|o| o.tgid),
        "comm": t.owner.as_ref().map(|o| o.comm.to_string()),
        "payload": t.payload,
        "ts_ns": ts,
        "spans": spans,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::Limits;
    use crate::events::{Chain, Flow, Read, IPPROTO_UDP};
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
        let v: Value = serde_json::from_str(&l.to_json()).unwrap();
        assert_eq!(v["type"], "interval");
        assert_eq!(v["lost_events"], 2);
    }

    #[test]
    fn timeline_line() {
        let mut c = correlator();
        let t = c.timelines.take().unwrap();
        let v: Value = serde_json::from_str(&timeline_json(&t[0])).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["spans"]["rx_sockq->rx_read"], 1000);
        assert_eq!(v["spans"]["rx_netif->rx_read"], 1140);
        assert_eq!(v["ts_ns"]["rx_driver"], 10);
    }
}
