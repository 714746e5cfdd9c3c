//! What each command exports to Prometheus, as metric families built from its own state
//! (see registry.rs for the encoding and serving). Pure functions of that state, so the
//! names, labels and values are unit-tested without a kernel.

use crate::events::{proto_name, RX_SIRQ_RAISE, TX_BASE, TX_NF_OUT_DONE, TX_NF_POST};
use crate::join::rx::{span_name, Correlator, Dir, SpanId};
use crate::kernel::names::{NF_HOOK_NAMES, VECTORS};
use crate::kernel::nswatch::{Coverage, Names, PodMap};
use crate::sink::prom::registry::{Family, Value};
use crate::stats::counters::KernelCounters;
use crate::stats::hist::Hist;
use crate::stats::nf_hooks::{family_name, HookStat};
use crate::stats::prom_hist::PromHist;

/// The direction a span belongs to, from its first point.
pub fn span_direction(id: SpanId) -> &'static str {
    let tx =
        (TX_BASE..RX_SIRQ_RAISE).contains(&id.0) || matches!(id.0, TX_NF_OUT_DONE | TX_NF_POST);
    if tx {
        "tx"
    } else {
        "rx"
    }
}

/// `trace`'s families: packets, per-span latency (by direction, span, protocol, interface
/// and namespace), the busiest connections' spans when asked, events and losses.
pub fn trace_families(
    c: &Correlator,
    k: &KernelCounters,
    events_per_s: f64,
    per_connection_top: usize,
    names: &Names,
    pods: &PodMap,
) -> Vec<Family> {
    let st = &c.stats;
    let mut packets = Family::new("netstack_lat_packets", "Packets traced");
    for (dir, n) in [("rx", st.chains), ("tx", st.tx_chains)] {
        packets.push(&[("direction", dir)], Value::Counter(n));
    }
    // ebpf-network-latency's gauge, under its own name and meaning for its dashboards:
    // packets received (TX packets are netstack_lat_packets{direction="tx"}). promtool
    // lints a `_count` suffix outside a histogram; the name is kept on purpose.
    let seed_packets = Family::new(
        "packets_count",
        "Compatibility name (ebpf-network-latency): packets received; the same as netstack_lat_packets_total{direction=\"rx\"}",
    )
    .with(&[], Value::Gauge(st.chains as f64));
    let mut spans = Family::new(
        "netstack_lat_span_latency_seconds",
        "Time between two points of the network stack, per packet",
    );
    if let Some(l) = &c.labelled {
        let mut keys: Vec<_> = l.keys().collect();
        keys.sort();
        for key in keys {
            let (id, proto, ifindex, netns) = *key;
            let (name, ifx, ns) = (span_name(id), ifindex.to_string(), netns.to_string());
            let mut labels = vec![
                ("direction", span_direction(id)),
                ("span", name.as_str()),
                ("proto", proto_name(proto)),
                ("ifindex", ifx.as_str()),
                ("netns", ns.as_str()),
            ];
            // A name only where one is known (a namespace gone before it was named has none).
            if let Some(n) = names.get(&netns) {
                labels.push(("netns_name", n.as_str()));
            }
            if let Some(p) = pods.get(&netns) {
                labels.extend(p.labels());
            }
            spans.push(&labels, Value::Hist(l[key].clone()));
        }
    }
    let mut conn = Family::new(
        "netstack_lat_connection_span_latency_seconds",
        "Span latency of the busiest connections (--per-connection-top)",
    );
    if per_connection_top > 0 {
        let mut conns: Vec<_> = c.conns.iter().collect();
        conns.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(b.0)));
        for ((dir, flow), row) in conns.into_iter().take(per_connection_top) {
            let (sa, da) = (flow.saddr.to_string(), flow.daddr.to_string());
            let (sp, dp) = (flow.sport.to_string(), flow.dport.to_string());
            let d = if *dir == Dir::Tx { "tx" } else { "rx" };
            let ns = row.netns.to_string();
            for (id, h) in &row.spans {
                let name = span_name(*id);
                let mut labels = vec![
                    ("direction", d),
                    ("span", name.as_str()),
                    ("proto", flow.proto_name()),
                    ("saddr", sa.as_str()),
                    ("sport", sp.as_str()),
                    ("daddr", da.as_str()),
                    ("dport", dp.as_str()),
                    ("netns", ns.as_str()),
                ];
                if let Some(n) = names.get(&row.netns) {
                    labels.push(("netns_name", n.as_str()));
                }
                if let Some(p) = pods.get(&row.netns) {
                    labels.extend(p.labels());
                }
                conn.push(&labels, Value::Hist(PromHist::from_hist(h)));
            }
        }
    }
    vec![
        packets,
        seed_packets,
        Family::new(
            "netstack_lat_reads",
            "Application reads joined to traced data",
        )
        .with(&[], Value::Counter(st.reads)),
        spans,
        conn,
        Family::new(
            "netstack_lat_events",
            "Events received from the BPF ring buffers",
        )
        .with(&[], Value::Counter(k.events)),
        Family::new(
            "netstack_lat_lost_events",
            "Events lost because a ring buffer was full (never silent)",
        )
        .with(&[], Value::Counter(k.lost_events)),
        Family::new(
            "netstack_lat_events_per_second",
            "Events received per second over the last interval",
        )
        .with(&[], Value::Gauge(events_per_s)),
        Family::new(
            "netstack_lat_tx_in_flight",
            "Transmit chains in flight now: parked for a qdisc or a completion, or cached between LOCAL_OUT and the driver",
        )
        .with(&[("place", "parked")], Value::Gauge(k.tx_parked as f64))
        .with(&[("place", "cached")], Value::Gauge(k.tx_cached as f64)),
        Family::new(
            "netstack_lat_chains_unfinished",
            "Chains that ended without their later points, by why: rx_evicted (per-CPU cache full), rx_backlog_stale and tx_stale (no later point within 1 s and 10 s), tx_evicted",
        )
        .with(&[("why", "rx_evicted")], Value::Counter(k.rx_evicted))
        .with(&[("why", "rx_backlog_stale")], Value::Counter(k.rx_backlog_stale))
        .with(&[("why", "tx_evicted")], Value::Counter(k.tx_evicted))
        .with(&[("why", "tx_stale")], Value::Counter(k.tx_stale)),
        Family::new(
            "netstack_lat_spans_unrecorded",
            "Spans not recorded, by why: series_full (serve's in-kernel table is full: raise --max-series), socket_fifo_full (data queued faster than it was read: its read not timed)",
        )
        .with(&[("why", "series_full")], Value::Counter(k.series_full))
        .with(&[("why", "socket_fifo_full")], Value::Counter(k.fifo_full)),
        Family::new(
            "netstack_lat_join_misses",
            "Where the joins found no partner, by why: read_unmatched (a read found no queued data that was seen), unread (queued data never read), sockq_unjoined (data queued to a socket whose packet was not in flight on that CPU: no spans before rx_sockq), tx_unattributed (a TCP segment whose write was not seen), tx_retransmit (data sent before: no tx_send span)",
        )
        .with(&[("why", "read_unmatched")], Value::Counter(st.reads_unmatched))
        .with(&[("why", "unread")], Value::Counter(st.unread))
        .with(&[("why", "sockq_unjoined")], Value::Counter(k.sockq_unjoined))
        .with(&[("why", "tx_unattributed")], Value::Counter(st.tx_unattributed))
        .with(&[("why", "tx_retransmit")], Value::Counter(st.tx_retransmits)),
    ]
}

/// `softirq`'s families: per vector (all CPUs), raise->entry delay and entry->exit run
/// time, and runs.
pub fn softirq_families(rows: &[(u32, u64, [Hist; 2])]) -> Vec<Family> {
    let mut delay = Family::new(
        "netstack_lat_softirq_delay_seconds",
        "Softirq raise -> entry: how long a raised softirq waited for its CPU",
    );
    let mut run = Family::new(
        "netstack_lat_softirq_run_seconds",
        "Softirq entry -> exit: how long a softirq handler ran",
    );
    let mut runs = Family::new("netstack_lat_softirq_runs", "Softirq handler runs");
    for (v, entered, [d, r]) in rows {
        let l = [("vector", VECTORS[*v as usize])];
        delay.push(&l, Value::Hist(PromHist::from_hist(d)));
        run.push(&l, Value::Hist(PromHist::from_hist(r)));
        runs.push(&l, Value::Counter(*entered));
    }
    vec![delay, run, runs]
}

/// `netfilter`'s families: per hook and family, the bracket time and the verdicts.
pub fn netfilter_families(stats: &[&HookStat]) -> Vec<Family> {
    let mut time = Family::new(
        "netstack_lat_netfilter_seconds",
        "Time spent in netfilter hook functions per packet, first to last priority",
    );
    let mut verdicts = Family::new(
        "netstack_lat_netfilter_verdicts",
        "Netfilter traversals by outcome",
    );
    for s in stats {
        let l = [
            ("hook", NF_HOOK_NAMES[s.hook]),
            ("family", family_name(s.v6)),
        ];
        let h = s.hist();
        time.push(&l, Value::Hist(PromHist::from_hist(&h)));
        for (verdict, n) in [
            ("accept", h.count()),
            ("drop", s.drops),
            ("unfinished", s.unfinished),
        ] {
            verdicts.push(&[l[0], l[1], ("verdict", verdict)], Value::Counter(n));
        }
    }
    let mut out = vec![time, verdicts];
    // ebpf-network-latency's histogram, under its own name for its dashboards: ip_rcv ->
    // ip_rcv_finish, i.e. IPv4 receive through the PRE_ROUTING hooks, which is this
    // bracket's PRE_ROUTING time (first to last priority).
    if let Some(pre) = stats.iter().find(|s| s.hook == 0 && !s.v6) {
        out.push(
            Family::new(
                "latency_histogram",
                "Compatibility name (ebpf-network-latency): IPv4 ip_rcv -> ip_rcv_finish, the time through the PRE_ROUTING hooks, in seconds; the same as netstack_lat_netfilter_seconds{hook=\"PRE_ROUTING\",family=\"ipv4\"}",
            )
            .with(&[], Value::Hist(PromHist::from_hist(&pre.hist()))),
        );
    }
    out
}

/// Which network namespaces the per-namespace hooks cover; a refused one is a series of
/// its own, so an alert can name it.
pub fn netns_families(c: &Coverage) -> Vec<Family> {
    let mut refused = Family::new(
        "netstack_lat_netns_refused",
        "Network namespaces where the netfilter hooks could not be attached (1 each)",
    );
    for r in &c.refused {
        refused.push(
            &[
                ("netns", &r.netns.to_string()),
                ("netns_name", &r.name),
                ("reason", &r.reason),
            ],
            Value::Gauge(1.0),
        );
    }
    vec![
        Family::new(
            "netstack_lat_netns_covered",
            "Network namespaces whose netfilter hooks are attached now",
        )
        .with(&[], Value::Gauge(c.covered as f64)),
        Family::new(
            "netstack_lat_netns_links",
            "Per-namespace BPF links held now",
        )
        .with(&[], Value::Gauge(c.links as f64)),
        Family::new(
            "netstack_lat_netns_gone",
            "Network namespaces that went away while covered (their links released)",
        )
        .with(&[], Value::Counter(c.gone)),
        refused,
    ]
}

/// The tool's own health beside the BPF cost: which parts run, and attach errors.
pub fn health_families(parts: &[(&str, Option<&str>)]) -> Vec<Family> {
    let mut up = Family::new(
        "netstack_lat_part_up",
        "1 when this part of the tool is running",
    );
    let mut errors = Family::new(
        "netstack_lat_attach_errors",
        "Parts that could not load or attach their BPF programs (the reason is logged)",
    );
    for (part, err) in parts {
        up.push(
            &[("part", part)],
            Value::Gauge(if err.is_none() { 1.0 } else { 0.0 }),
        );
        errors.push(
            &[("part", part)],
            Value::Gauge(if err.is_some() { 1.0 } else { 0.0 }),
        );
    }
    vec![
        up,
        errors,
        Family::new("netstack_lat_build_info", "The running netstack-lat")
            .with(&[("version", env!("CARGO_PKG_VERSION"))], Value::Gauge(1.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Chain, Flow, IPPROTO_UDP, RX_NETIF, TX_SEND, TX_TRANSPORT};
    use crate::join::rx::Limits;
    use crate::sink::prom::registry::Exporter;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn directions_follow_the_first_point() {
        assert_eq!(span_direction((RX_NETIF, RX_NETIF + 1)), "rx");
        assert_eq!(
            span_direction((TX_BASE + TX_SEND, TX_BASE + TX_TRANSPORT)),
            "tx"
        );
        assert_eq!(span_direction((TX_NF_OUT_DONE, TX_NF_POST)), "tx");
        assert_eq!(span_direction((RX_SIRQ_RAISE, RX_SIRQ_RAISE + 1)), "rx");
    }

    #[test]
    fn labelled_spans_and_packets_reach_the_exposition() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.keep_labelled();
        let ip = |d| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d));
        c.on_chain(&Chain {
            ts: [0, 1000, 3000, 4000, 9000, 0],
            sk: 0,
            flow: Flow {
                proto: IPPROTO_UDP,
                saddr: ip(1),
                sport: 5000,
                daddr: ip(2),
                dport: 53,
            },
            ifindex: 7,
            netns: 4026531840,
            payload: 10,
            seq_end: 0,
            flags: 0,
            cpu: 0,
            sirq_raise: 0,
            sirq_entry: 0,
            nf_mid: [0; 2],
        });
        let k = KernelCounters {
            events: 3,
            lost_events: 0,
            ..KernelCounters::default()
        };
        let e = Exporter::new();
        let names = [(4026531840, "host".to_string())].into_iter().collect();
        e.publish(
            "trace",
            trace_families(&c, &k, 1.5, 1, &names, &Default::default()),
        );
        let t = e.render();
        assert!(
            t.contains("netstack_lat_packets_total{direction=\"rx\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("netstack_lat_span_latency_seconds_count{direction=\"rx\",span=\"rx_netif->rx_ip\",proto=\"udp\",ifindex=\"7\",netns=\"4026531840\",netns_name=\"host\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("netstack_lat_connection_span_latency_seconds_count{direction=\"rx\",span=\"rx_netif->rx_ip\",proto=\"udp\",saddr=\"10.0.0.1\",sport=\"5000\",daddr=\"10.0.0.2\",dport=\"53\",netns=\"4026531840\",netns_name=\"host\"} 1"),
            "{t}"
        );
        assert!(t.contains("netstack_lat_events_total 3"), "{t}");
        // No payload bytes or connection labels unless asked for.
        e.publish(
            "trace",
            trace_families(&c, &k, 1.5, 0, &Default::default(), &Default::default()),
        );
        assert!(!e.render().contains("saddr"));
        // A pod's namespace: its labels on its series.
        let pod = crate::kernel::k8s::Pod {
            k8s_namespace: "shop".into(),
            k8s_pod: "cart-0".into(),
            uid: "u".into(),
            container_id: "c0ffee".into(),
        };
        let pods = [(4026531840, pod)].into_iter().collect();
        e.publish("trace", trace_families(&c, &k, 1.5, 0, &names, &pods));
        let t = e.render();
        assert!(
            t.contains("netns_name=\"host\",k8s_namespace=\"shop\",k8s_pod=\"cart-0\",container_id=\"c0ffee\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn refused_namespaces_reach_healthz_and_their_series() {
        let c = Coverage::one_refused();
        let e = Exporter::new();
        assert_eq!(e.health_text(), "ok\n");
        e.set_health(c.problems());
        assert_eq!(
            e.health_text(),
            "degraded\nnetns 4026532001 (blue) not covered: cannot attach rx_ip to netfilter\n"
        );
        e.publish("netns", netns_families(&c));
        let r = e.render_text();
        assert!(r.contains("netstack_lat_netns_refused{netns=\"4026532001\",netns_name=\"blue\",reason=\"cannot attach rx_ip to netfilter\"} 1"), "{r}");
        assert!(r.contains("netstack_lat_netns_covered 3"), "{r}");
    }
}
