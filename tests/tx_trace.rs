//! Privileged TX tests: real BPF, real namespaces, real packets, ground truth we control
//! (a TBF rate, a tun reader that sleeps a known time, Nagle on or off, write sizes).
//! Run serially (`--test-threads=1`): they share the kernel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TX_SPANS: [&str; 7] = [
    "tx_send->tx_transport",
    "tx_transport->tx_nf_done",
    "tx_nf_done->tx_qdisc_enq",
    "tx_qdisc_enq->tx_qdisc_deq",
    "tx_qdisc_deq->tx_driver",
    "tx_driver->tx_done",
    "tx_send->tx_done",
];

/// The TX connection row of the flow to `dport`.
fn tx_conn(v: &Value, dport: u16) -> Option<&Value> {
    v["connections"]
        .as_array()?
        .iter()
        .find(|c| c["direction"] == "tx" && c["dport"] == dport)
}

fn conn_span<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

fn ns(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {v}"))
}

/// A burst of B bytes into a TBF of rate R waits about B / R in the qdisc: the last
/// datagram's tx_qdisc_enq->tx_qdisc_deq is within 25% of that. Without the TBF (veth's
/// noqueue) the same burst does not wait.
fn tbf_burst(with_tbf: bool) -> u64 {
    const N: u64 = 50;
    const SIZE: u64 = 1000;
    const RATE_BPS: u64 = 1_000_000; // 1 mbit
    let t = Topo::new();
    if with_tbf {
        sh(&[
            "tc", "-n", &t.a, "qdisc", "add", "dev", &t.va, "root", "tbf", "rate", "1mbit",
            "burst", "1600", "limit", "200000",
        ]);
    }
    let port = 9201 + u16::from(with_tbf);
    let netns = t.netns_path(&t.a);
    let tool = tool(&[
        "trace",
        "--tx",
        "--netns",
        &netns,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let server = t.server(false, port);
    let n = N.to_string();
    let mut srv = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", &n]);
    wait_ready(&mut srv);
    let cli = load_in(
        &t.a,
        &[
            "udp-send",
            "--to",
            &server,
            "--count",
            &n,
            "--size",
            &SIZE.to_string(),
        ],
    );
    assert_eq!(cli.finish(Duration::from_secs(20)).0, Some(0));
    let (code, _, err) = srv.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "server got all datagrams: {err}");
    let v = stop_summary(tool);
    let q = span(&v, "tx_qdisc_enq->tx_qdisc_deq").unwrap_or_else(|| panic!("no qdisc span: {v}"));
    // Every datagram is reported. Rarely (a few runs in 60 here, TBF on 6.18) the kernel
    // emits no qdisc_dequeue (nor net_dev_start_xmit) for one enqueued skb, as bpftrace on
    // those tracepoints confirms; its chain is then reported at exit with the points it
    // passed, never lost: allow that one, and only that one. Also rare: the sender is
    // preempted and moved to the other CPU between LOCAL_OUT and dev_queue_xmit (this
    // kernel is PREEMPT_DYNAMIC), so its qdisc points land nowhere and the chain ends,
    // reported, when the skb is freed (seen once in CI). One datagram of either kind.
    let at_exit = ns(&v["join"], "tx_at_exit");
    assert_eq!(ns(&v["join"], "tx_chains"), N, "{}", v["join"]);
    assert!(
        ns(q, "count") + at_exit >= N - 1 && ns(q, "count") + at_exit <= N && at_exit <= 1,
        "one qdisc sample per datagram: {q}; kernel {}; join {}",
        v["kernel"],
        v["join"]
    );
    if with_tbf {
        // TBF counts the frame: payload + UDP 8 + IPv4 20 + Ethernet 14.
        let burst_bytes = N * (SIZE + 8 + 20 + 14);
        let expect = burst_bytes * 8 * 1_000_000_000 / RATE_BPS;
        let max = ns(q, "max_ns");
        assert!(
            (expect * 3 / 4..=expect * 5 / 4).contains(&max),
            "qdisc wait max {max} ns not within 25% of B/rate = {expect} ns: {q}"
        );
        assert!(
            v["kernel"]["tx_park_full"] == 0,
            "parking never overflowed: {v}"
        );
    }
    ns(q, "max_ns")
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn qdisc_wait_is_burst_over_tbf_rate() {
    common::require_root();
    tbf_burst(true);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn qdisc_wait_is_zero_without_a_qdisc() {
    common::require_root();
    let max = tbf_burst(false);
    assert!(max < 100_000, "noqueue: enq->deq max {max} ns");
}

/// write-write-read against a server that answers only once both writes are in: with
/// Nagle on, the second write waits for the delayed ACK of the first (~40 ms).
fn nagle(nodelay: bool) {
    nagle_or_cork(nodelay, None)
}

/// The held data's row: flags and the `held` entry for `reason`.
fn held<'a>(c: &'a Value, reason: &str) -> Option<&'a Value> {
    c["held"].as_array()?.iter().find(|h| h["reason"] == reason)
}

/// The first write with MSG_MORE, the second GAP later: the first write's bytes wait in
/// the socket for the second, about GAP, and the connection is flagged "cork".
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn cork_is_flagged_with_its_wait() {
    common::require_root();
    nagle_or_cork(true, Some(30));
}

fn nagle_or_cork(nodelay: bool, more_gap_ms: Option<u64>) {
    const ROUNDS: &str = "30";
    let t = Topo::new();
    let port = 9210 + u16::from(nodelay) + 2 * u16::from(more_gap_ms.is_some());
    let netns = t.netns_path(&t.a);
    let tool = tool(&[
        "trace",
        "--tx",
        "--netns",
        &netns,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let server = t.server(false, port);
    let mut srv = load_in(
        &t.b,
        &["tcp-rr-server", "--bind", &server, "--rounds", ROUNDS],
    );
    wait_ready(&mut srv);
    let mut args = vec!["tcp-rr-client", "--to", &server, "--rounds", ROUNDS];
    if nodelay {
        args.push("--nodelay");
    }
    let gap = more_gap_ms.map(|g| g.to_string());
    if let Some(g) = &gap {
        args.extend(["--more-gap-ms", g]);
    }
    let cli = load_in(&t.a, &args);
    let (code, out, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "client: {err}");
    assert_eq!(srv.finish(Duration::from_secs(30)).0, Some(0));
    let v = stop_summary(tool);
    let c = tx_conn(&v, port).unwrap_or_else(|| panic!("no TX row for port {port}: {v}"));
    let send = conn_span(c, "tx_send->tx_transport")
        .unwrap_or_else(|| panic!("no tx_send->tx_transport: {c}"));
    let p90 = ns(send, "p90_ns");
    let flags: Vec<&str> = c["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    if let Some(gap) = more_gap_ms {
        assert_eq!(flags, ["cork"], "MSG_MORE: {c}");
        let h = held(c, "cork").unwrap();
        assert_eq!(ns(h, "writes"), 30, "every first write was held: {h}");
        let w = &h["wait"];
        let d = gap * 1_000_000;
        let p50 = ns(w, "p50_ns");
        assert!(
            (d * 9 / 10..=d * 3 / 2).contains(&p50),
            "cork wait p50 {p50} ns vs gap {d} ns: {w}"
        );
        assert_eq!(ns(w, "count"), 30, "{w}");
        assert!(
            ns(&v["flags"]["cork"], "connections") >= 1,
            "{}",
            v["flags"]
        );
    } else if nodelay {
        assert!(
            !flags.contains(&"nagle"),
            "TCP_NODELAY: flags {flags:?}: {c}"
        );
        assert!(p90 < 1_000_000, "TCP_NODELAY: p90 {p90} ns >= 1 ms: {send}");
        assert!(v["flags"].get("nagle").is_none(), "{}", v["flags"]);
    } else {
        assert!(
            flags.contains(&"nagle"),
            "Nagle: flags {flags:?}: {c} ({out})"
        );
        assert!(p90 > 10_000_000, "Nagle: p90 {p90} ns <= 10 ms: {send}");
        // Every round's second write waits for the delayed ACK of the first, but for the
        // first round or two: a new connection's receiver starts in quickack mode and
        // ACKs at once. One run: 29 of 30, each 44 ms.
        let h = held(c, "nagle").unwrap();
        let writes = ns(h, "writes");
        assert!(
            (28..=30).contains(&writes),
            "held in {writes} of 30 rounds: {h}"
        );
        assert_eq!(ns(&h["wait"], "count"), writes, "{h}");
        // The delayed-ACK timer is at least 40 ms (TCP_DELACK_MIN).
        let p50 = ns(&h["wait"], "p50_ns");
        assert!(
            (35_000_000..=80_000_000).contains(&p50),
            "Nagle wait p50 {p50} ns vs the 40 ms delayed ACK: {h}"
        );
        assert!(
            ns(&v["flags"]["nagle"], "connections") >= 1,
            "{}",
            v["flags"]
        );
    }
    // Both writes of every round became segments with a tx_send; cork merges each round's
    // two writes into one segment.
    let want = if more_gap_ms.is_some() { 30 } else { 60 };
    assert_eq!(ns(send, "count"), want, "{send}");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn nagle_is_flagged_with_its_wait() {
    common::require_root();
    nagle(false);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn nodelay_is_not_flagged() {
    common::require_root();
    nagle(true);
}

/// Where the UDP datagrams of the counts test leave.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    Veth4,
    Veth6,
    Loopback,
    /// A tun device with its default qdisc; its reader sleeps D before each read, so
    /// tx_done->tx_free (the driver's completion) is D.
    Tun,
}

/// K datagrams give exactly K samples on each TX span of their flow.
fn counts(out: Out) {
    const K: u64 = 200;
    const TUN_DELAY_MS: u64 = 5;
    let t = Topo::new();
    let port = 9220
        + match out {
            Out::Veth4 => 0,
            Out::Veth6 => 1,
            Out::Loopback => 2,
            Out::Tun => 3,
        };
    let k = K.to_string();
    let (sender_ns, to) = match out {
        Out::Veth4 => (&t.a, t.server(false, port)),
        Out::Veth6 => (&t.a, t.server(true, port)),
        Out::Loopback => (&t.b, format!("127.0.0.1:{port}")),
        Out::Tun => (&t.a, format!("10.202.0.2:{port}")),
    };
    let mut sink = None;
    if out == Out::Tun {
        let mut p = load_in(
            &t.a,
            &[
                "tun-sink",
                "--name",
                "nsltun0",
                "--count",
                &k,
                "--delay-ms",
                &TUN_DELAY_MS.to_string(),
            ],
        );
        wait_ready(&mut p);
        sh(&[
            "ip",
            "netns",
            "exec",
            &t.a,
            "sysctl",
            "-qw",
            "net.ipv6.conf.nsltun0.disable_ipv6=1",
        ]);
        sh(&[
            "ip",
            "-n",
            &t.a,
            "addr",
            "add",
            "10.202.0.1/24",
            "dev",
            "nsltun0",
        ]);
        sh(&["ip", "-n", &t.a, "link", "set", "nsltun0", "up"]);
        sink = Some(p);
    }
    let netns = t.netns_path(sender_ns);
    let tool = tool(&[
        "trace",
        "--tx",
        "--netns",
        &netns,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let interval = if out == Out::Tun {
        (2 * TUN_DELAY_MS).to_string()
    } else {
        "1".to_string()
    };
    let mut srv = None;
    if out != Out::Tun {
        let mut p = load_in(&t.b, &["udp-recv", "--bind", &to, "--count", &k]);
        wait_ready(&mut p);
        srv = Some(p);
    }
    let cli = load_in(
        sender_ns,
        // Slower than the tun reader, so completions do not queue up behind each other.
        &[
            "udp-send",
            "--to",
            &to,
            "--count",
            &k,
            "--interval-ms",
            &interval,
        ],
    );
    assert_eq!(cli.finish(Duration::from_secs(30)).0, Some(0));
    for p in srv.into_iter().chain(sink) {
        let (code, _, err) = p.finish(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{out:?}: receiver got all K: {err}");
    }
    let v = stop_summary(tool);
    assert_eq!(v["lost_events"], 0, "{v}");
    let c = tx_conn(&v, port).unwrap_or_else(|| panic!("{out:?}: no TX row: {v}"));
    assert_eq!(c["packets"], K, "{out:?}: {c}");
    assert_eq!(
        c["comm"], "nsl-load",
        "{out:?}: the sender owns the row: {c}"
    );
    let mut want: Vec<&str> = TX_SPANS.to_vec();
    if out == Out::Tun {
        want.push("tx_done->tx_free");
    }
    for name in &want {
        let s = conn_span(c, name).unwrap_or_else(|| panic!("{out:?}: {name} missing: {c}"));
        assert_eq!(ns(s, "count"), K, "{out:?}: {name}: {s}");
    }
    if out == Out::Tun {
        let free = conn_span(c, "tx_done->tx_free").unwrap();
        let d = TUN_DELAY_MS * 1_000_000;
        let p50 = ns(free, "p50_ns");
        assert!(
            (d * 9 / 10..=d * 2).contains(&p50),
            "tun completion p50 {p50} ns vs reader delay {d} ns: {free}"
        );
    } else {
        assert!(
            conn_span(c, "tx_done->tx_free").is_none(),
            "{out:?}: a forwarding driver has no completion: {c}"
        );
    }
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_veth_ipv4() {
    common::require_root();
    counts(Out::Veth4);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_veth_ipv6() {
    common::require_root();
    counts(Out::Veth6);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_loopback() {
    common::require_root();
    counts(Out::Loopback);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_tun_with_completion() {
    common::require_root();
    counts(Out::Tun);
}

/// Several multi-MB writes, a known pause apart: every data segment carries the tx_send
/// of the write that produced its oldest byte, so grouping segments by tx_send gives back
/// exactly the writes, byte for byte, in order, the pause apart.
fn large_writes(v6: bool) {
    const WRITES: u64 = 3;
    const SIZE: u64 = 4 << 20;
    const PAUSE_MS: u64 = 300;
    let t = Topo::new();
    let port = 9230 + u16::from(v6);
    let netns = t.netns_path(&t.a);
    let tool = tool(&[
        "trace",
        "--tx",
        "--netns",
        &netns,
        "--port",
        &port.to_string(),
        "--json",
        "--events",
    ]);
    let server = t.server(v6, port);
    let cli_out = tcp_stream(&t, &server, WRITES, SIZE, PAUSE_MS);
    let writes: Vec<u64> = serde_json::from_str::<Value>(cli_out.trim()).unwrap()["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(writes.iter().sum::<u64>(), WRITES * SIZE);

    tool.signal(libc::SIGINT);
    let (code, out, _) = tool.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let mut groups: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut data_segments = 0;
    let mut retransmits = 0;
    for line in out.lines().filter(|l| l.contains("\"event\"")) {
        let e: Value = serde_json::from_str(line).unwrap();
        let payload = e["payload"].as_u64().unwrap();
        if e["direction"] != "tx" || payload == 0 {
            continue;
        }
        // Resent bytes (a tail-loss probe under CPU contention) belong to no new write.
        if e["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "retransmit")
        {
            retransmits += 1;
            continue;
        }
        data_segments += 1;
        let send = e["ts_ns"]["tx_send"]
            .as_u64()
            .unwrap_or_else(|| panic!("data segment without tx_send: {e}"));
        *groups.entry(send).or_default() += payload;
    }
    assert!(
        data_segments > 3 * WRITES,
        "writes were split: {data_segments}"
    );
    let sums: Vec<u64> = groups.values().copied().collect();
    assert_eq!(sums, writes, "bytes per tx_send vs bytes per write call");
    // Writes of whole messages are a pause apart (partial writes of one message are not).
    let starts: Vec<u64> = groups.keys().copied().collect();
    let gaps = starts
        .windows(2)
        .filter(|w| w[1] - w[0] >= PAUSE_MS * 1_000_000 * 9 / 10)
        .count() as u64;
    assert_eq!(gaps, WRITES - 1, "pauses between writes: {starts:?}");
    let v = summary_of(&out);
    assert_eq!(v["join"]["tx_unattributed"], 0, "{}", v["join"]);
    assert_eq!(v["join"]["tx_retransmits"], retransmits, "{}", v["join"]);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn large_write_segments_take_their_write_ipv4() {
    common::require_root();
    large_writes(false);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn large_write_segments_take_their_write_ipv6() {
    common::require_root();
    large_writes(true);
}

/// Stopped while datagrams still sit in a slow qdisc: the summary reports them (at exit),
/// the exit is clean, and no BPF program or link stays behind.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn clean_exit_with_packets_queued() {
    common::require_root();
    let t = Topo::new();
    sh(&[
        "tc", "-n", &t.a, "qdisc", "add", "dev", &t.va, "root", "tbf", "rate", "100kbit", "burst",
        "1600", "limit", "200000",
    ]);
    let before = bpf_state();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let netns = t.netns_path(&t.a);
        let p = tool(&[
            "trace", "--tx", "--netns", &netns, "--port", "9240", "--json",
        ]);
        let cli = load_in(
            &t.a,
            &[
                "udp-send",
                "--to",
                &t.server(false, 9240),
                "--count",
                "40",
                "--size",
                "1000",
            ],
        );
        assert_eq!(cli.finish(Duration::from_secs(10)).0, Some(0));
        std::thread::sleep(Duration::from_millis(300));
        p.signal(sig);
        let (code, out, _) = p.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "exit status after signal {sig}");
        let v = summary_of(&out);
        // 40 kB at 100 kbit/s takes 3 s: most are still queued when we stop.
        let chains = v["join"]["tx_chains"].as_u64().unwrap();
        assert_eq!(
            chains, 40,
            "every datagram is reported, queued ones at exit: {v}"
        );
        assert_no_new_bpf(&before, &format!("signal {sig}"));
        // Let the queue drain before the next round.
        std::thread::sleep(Duration::from_secs(4));
    }
}

/// One run over two namespaces sees both halves of a flow: TX in the sender's, RX in the
/// receiver's. With --pid of the receiver, the sender's datagrams are filtered out in BPF.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn rx_and_tx_across_two_namespaces_and_owner_filter() {
    common::require_root();
    const K: u64 = 100;
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let server = t.server(false, 9250);
    let k = K.to_string();
    for by_pid in [false, true] {
        let mut srv = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", &k]);
        wait_ready(&mut srv);
        let pid = srv.pid().to_string();
        let mut args = vec![
            "trace", "--netns", &na, "--netns", &nb, "--port", "9250", "--json",
        ];
        if by_pid {
            args.extend(["--pid", &pid]);
        }
        let tool = tool(&args);
        udp_send(&t.a, &server, K, 1);
        assert_eq!(srv.finish(Duration::from_secs(30)).0, Some(0));
        let v = stop_summary(tool);
        let rx = v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["direction"] == "rx" && c["dport"] == 9250)
            .unwrap_or_else(|| panic!("no RX row: {v}"));
        assert_eq!(rx["packets"], K, "{rx}");
        assert_eq!(span_count(&v, "rx_sockq->rx_read"), K, "{v}");
        let tx = tx_conn(&v, 9250);
        if by_pid {
            assert!(tx.is_none(), "the sender is not --pid: {v}");
            assert!(ns(&v["kernel"], "tx_filtered") >= K, "{}", v["kernel"]);
        } else {
            let tx = tx.unwrap_or_else(|| panic!("no TX row: {v}"));
            assert_eq!(tx["packets"], K, "{tx}");
            assert_eq!(span_count(&v, "tx_send->tx_done"), K, "{v}");
        }
    }
}

/// --iface on TX: the output device decides. Datagrams over the veth are all kept with
/// --iface of the veth and all left out (counted as filtered) with --iface lo.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn tx_iface_filter() {
    common::require_root();
    const K: u64 = 50;
    let t = Topo::new();
    let netns = t.netns_path(&t.a);
    let server = t.server(false, 9260);
    for (iface, kept) in [(t.va.as_str(), true), ("lo", false)] {
        let tool = tool(&[
            "trace", "--tx", "--netns", &netns, "--iface", iface, "--port", "9260", "--json",
        ]);
        udp_send(&t.a, &server, K, 1);
        let v = stop_summary(tool);
        let c = tx_conn(&v, 9260);
        if kept {
            let c = c.unwrap_or_else(|| panic!("--iface {iface}: no TX row: {v}"));
            assert_eq!(c["packets"], K, "{c}");
        } else {
            assert!(c.is_none(), "--iface lo kept veth traffic: {v}");
            assert!(ns(&v["kernel"], "tx_filtered") >= K, "{}", v["kernel"]);
        }
    }
}
