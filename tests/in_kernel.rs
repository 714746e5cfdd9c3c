//! `serve` keeps its span histograms in the kernel (bpf/agg.bpf.h). These tests run it beside
//! `trace` (which sends every chain to user space and joins there) on the same traffic, and
//! check the two paths against each other and against ground truths the tests control: a
//! reader that sleeps a known time (UDP and TCP, IPv4 and IPv6), a TBF rate, Nagle's wait;
//! and that every miss of the in-kernel path (series table full, socket FIFO full) moves
//! its counter by the exact amount.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SERIES: &str = "netstack_lat_span_latency_seconds";

/// Sum of the `_count` of one span over every label set (optionally one protocol).
fn count_of(text: &str, span: &str, proto: Option<&str>) -> u64 {
    let prefix = format!("{SERIES}_count{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("span=\"{span}\"")))
        .filter(|l| proto.is_none_or(|p| l.contains(&format!("proto=\"{p}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every span name in an exposition with its total count.
fn spans_in(text: &str) -> Vec<(String, u64)> {
    let prefix = format!("{SERIES}_count{{");
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let s = l.split("span=\"").nth(1)?;
            Some(s[..s.find('"')?].to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let c = count_of(text, &n, None);
            (n, c)
        })
        .collect()
}

fn counter(text: &str, name: &str, why: &str) -> u64 {
    let needle = format!("{name}_total{{why=\"{why}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle)?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {needle} in the exposition")) as u64
}

/// `serve` (in the kernel) and `trace --json` (in user space) on the same traffic: the
/// exposition after it, and trace's summary.
fn both(filters: &[&str], serve_extra: &[&str], traffic: impl FnOnce()) -> (String, Value) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut sargs = vec!["serve", "--listen", &listen];
    sargs.extend(filters);
    sargs.extend(serve_extra);
    let serve = tool(&sargs);
    // trace with serve's lean hook set, so that both have the same points.
    let mut targs = vec![
        "trace",
        "--json",
        "--no-netfilter-split",
        "--no-softirq-context",
        "--no-tx-free",
        "--no-send-syscall",
    ];
    targs.extend(filters);
    let trace = tool(&targs);
    traffic();
    std::thread::sleep(Duration::from_millis(1000));
    // trace first: a chain ends only when the next packet on its CPU passes, and a packet
    // after trace stopped would end one in serve alone. Serve publishes every second.
    let summary = stop_summary(trace);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, text) = get(&listen, "/metrics");
    assert_eq!(status, 200);
    serve.signal(libc::SIGTERM);
    let (code, _, err) = serve.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "serve: {err}");
    assert!(err.contains("in-kernel totals"), "serve's last line: {err}");
    (text, summary)
}

/// Every span both paths saw, with the same count, but for the chains trace took from the
/// per-CPU caches at exit (serve records a chain when the next packet ends it); the
/// in-kernel path has no span trace lacks.
fn assert_same_counts(text: &str, v: &Value, what: &str) {
    let kernel = spans_in(text);
    assert!(!kernel.is_empty(), "{what}: no spans exported");
    let j = &v["join"];
    let at_exit = j["rx_at_exit"].as_u64().unwrap() + j["tx_at_exit"].as_u64().unwrap();
    for (name, n) in &kernel {
        let t = span_count(v, name);
        assert!(
            *n <= t && t <= n + at_exit,
            "{what}: {name}: in-kernel {n}, trace {t} ({at_exit} at exit); trace join {j}"
        );
    }
    for s in v["spans"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        assert!(
            kernel.iter().any(|(n, _)| n == name),
            "{what}: trace has {name}, the kernel path does not: {text}"
        );
    }
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn delayed_readers_udp4_and_tcp6_agree_with_trace() {
    common::require_root();
    const D_MS: u64 = 15;
    const K: u64 = 20;
    let before = bpf_state();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    for (proto, v6, port) in [("udp", false, "9341"), ("tcp", true, "9342")] {
        let filters = ["--netns", &na, "--netns", &nb, "--port", port];
        let server = t.server(v6, port.parse().unwrap());
        let (text, v) = both(&filters, &[], || {
            delayed_exchange(&t, proto, &server, K, D_MS, 2 * D_MS)
        });
        assert_same_counts(&text, &v, proto);
        // Ground truth: each read waited D after its data was queued.
        assert_eq!(
            count_of(&text, "rx_sockq->rx_read", Some(proto)),
            K,
            "{proto}"
        );
        let (lo, hi) = median_bucket(
            &text,
            SERIES,
            &[("span", "rx_sockq->rx_read"), ("proto", proto)],
        );
        let d = D_MS as f64 / 1000.0;
        assert!(
            lo < d && d <= hi,
            "{proto}: the median bucket ({lo}, {hi}] s holds D = {d} s"
        );
        // The bucket is 10-25 ms wide; the exact mean is not: every read waited D after
        // its data was readable, and trace timed the same reads.
        let mean = histogram_mean(
            &text,
            SERIES,
            &[("span", "rx_sockq->rx_read"), ("proto", proto)],
        );
        assert!(
            (0.95 * d..=1.3 * d).contains(&mean),
            "{proto}: exported mean {mean} s vs D = {d} s"
        );
        let traced = span(&v, "rx_sockq->rx_read").unwrap()["avg_ns"]
            .as_f64()
            .unwrap()
            / 1e9;
        assert!(
            (mean - traced).abs() <= 0.02 * traced,
            "{proto}: exported mean {mean} s vs trace's {traced} s on the same reads"
        );
        assert_eq!(
            counter(&text, "netstack_lat_join_misses", "read_unmatched"),
            0
        );
        assert_eq!(
            counter(&text, "netstack_lat_spans_unrecorded", "series_full"),
            0
        );
        assert_eq!(
            counter(&text, "netstack_lat_spans_unrecorded", "socket_fifo_full"),
            0
        );
    }
    drop(t);
    assert_no_new_bpf(&before, "serve and trace");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn tbf_wait_and_nagle_wait_in_the_kernel() {
    common::require_root();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));

    // A burst of N datagrams of SIZE into a 1 mbit TBF: the last waits about B / rate.
    const N: u64 = 50;
    const SIZE: u64 = 1000;
    sh(&[
        "tc", "-n", &t.a, "qdisc", "add", "dev", &t.va, "root", "tbf", "rate", "1mbit", "burst",
        "1600", "limit", "200000",
    ]);
    let server = t.server(false, 9343);
    let filters = ["--netns", &na, "--netns", &nb, "--port", "9343"];
    let (text, v) = both(&filters, &[], || {
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
        assert_eq!(srv.finish(Duration::from_secs(20)).0, Some(0));
    });
    let q = "tx_qdisc_enq->tx_qdisc_deq";
    assert_eq!(count_of(&text, q, Some("udp")), span_count(&v, q), "{q}");
    assert!(count_of(&text, q, Some("udp")) >= N - 1, "{q}: {text}");
    // Waits grow from 0 to B / rate (0.42 s): the median near half of it, in the bucket
    // trace's own median falls in.
    let (lo, hi) = median_bucket(&text, SERIES, &[("span", q), ("proto", "udp")]);
    let p50 = span(&v, q).unwrap()["p50_ns"].as_f64().unwrap() / 1e9;
    assert!(
        lo < p50 * 1.05 && p50 * 0.95 <= hi,
        "{q}: ({lo}, {hi}] vs trace p50 {p50}"
    );
    assert!((0.1..=0.5).contains(&hi), "{q}: median bucket ({lo}, {hi}]");
    sh(&["tc", "-n", &t.a, "qdisc", "del", "dev", &t.va, "root"]);

    // Nagle: write-write-read, the second write waits for the delayed ACK (~40 ms).
    let server = t.server(false, 9344);
    let filters = ["--netns", &na, "--netns", &nb, "--port", "9344"];
    let (text, v) = both(&filters, &[], || {
        let mut srv = load_in(
            &t.b,
            &["tcp-rr-server", "--bind", &server, "--rounds", "30"],
        );
        wait_ready(&mut srv);
        let cli = load_in(&t.a, &["tcp-rr-client", "--to", &server, "--rounds", "30"]);
        assert_eq!(cli.finish(Duration::from_secs(30)).0, Some(0));
        assert_eq!(srv.finish(Duration::from_secs(30)).0, Some(0));
    });
    let s = "tx_send->tx_transport";
    assert_eq!(
        count_of(&text, s, Some("tcp")),
        span_count(&v, s),
        "{s}: {}",
        v["join"]
    );
    assert_eq!(
        counter(&text, "netstack_lat_join_misses", "tx_unattributed"),
        0
    );
    // Half the client's segments are second writes held ~40 ms: more than a quarter of
    // the sends took more than 10 ms.
    let over_10ms: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{SERIES}_bucket{{"))
                && l.contains(&format!("span=\"{s}\""))
                && l.contains("le=\"0.01\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let all = count_of(&text, s, Some("tcp")) as f64;
    assert!(
        all - over_10ms >= all / 4.0,
        "Nagle-held writes: {over_10ms} of {all} sends within 10 ms"
    );
}

/// A reader that lets FIFO_LEN + 24 datagrams pile up, then reads them all: 24 reads are
/// not timed (counted socket_fifo_full and read_unmatched), the first FIFO_LEN are.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn a_full_socket_fifo_is_counted_exactly() {
    common::require_root();
    const FIFO_LEN: u64 = 16;
    const EXTRA: u64 = 24;
    let listen = format!("127.0.0.1:{}", free_port());
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port().to_string();
    let serve = tool(&["serve", "--listen", &listen, "--port", &port]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = Instant::now();
    for i in 0..FIFO_LEN + EXTRA {
        tx.send_to(&[i as u8; 32], rx.local_addr().unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..FIFO_LEN + EXTRA {
        rx.recv(&mut buf).unwrap();
    }
    let all_read = sent.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(2500));
    let (_, text) = get(&listen, "/metrics");
    serve.signal(libc::SIGTERM);
    let (code, _, err) = serve.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        counter(&text, "netstack_lat_spans_unrecorded", "socket_fifo_full"),
        EXTRA
    );
    assert_eq!(
        counter(&text, "netstack_lat_join_misses", "read_unmatched"),
        EXTRA
    );
    assert_eq!(count_of(&text, "rx_sockq->rx_read", Some("udp")), FIFO_LEN);
    // Every timed read waited at least the 50 ms the reader slept after the sends, and at
    // most from the first send to the last read: the median above the 50 ms bound, the
    // exact mean within the two.
    let labels = [("span", "rx_sockq->rx_read"), ("proto", "udp")];
    let (lo, _) = median_bucket(&text, SERIES, &labels);
    assert!(lo >= 0.05, "median bucket above {lo} s");
    let mean = histogram_mean(&text, SERIES, &labels);
    assert!(
        (0.05..=all_read).contains(&mean),
        "mean wait {mean} s, reads done {all_read} s after the first send"
    );
    assert_eq!(
        count_of(&text, "rx_ip->rx_transport", Some("udp")),
        FIFO_LEN + EXTRA
    );
}

/// A table of one series per CPU: every span it cannot hold is counted, so recorded plus
/// series_full equals what trace (no table) recorded on the same traffic.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn a_full_series_table_is_counted_exactly() {
    common::require_root();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let filters = ["--netns", &na, "--netns", &nb, "--port", "9345"];
    let server = t.server(false, 9345);
    let (text, v) = both(&filters, &["--max-series", "1"], || {
        delayed_exchange(&t, "udp", &server, 30, 0, 5)
    });
    let recorded: u64 = spans_in(&text).iter().map(|(_, n)| n).sum();
    let traced: u64 = v["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    let full = counter(&text, "netstack_lat_spans_unrecorded", "series_full");
    assert!(full > 0, "a table of one series overflows: {text}");
    assert!(
        spans_in(&text).len() <= 2 * num_cpus(),
        "one series per CPU and object"
    );
    let j = &v["join"];
    let at_exit = j["rx_at_exit"].as_u64().unwrap() + j["tx_at_exit"].as_u64().unwrap();
    // A chain trace took at exit has at most 4 spans (serve's lean RX points).
    assert!(
        recorded + full <= traced && traced <= recorded + full + 4 * at_exit,
        "recorded {recorded} + full {full} vs trace {traced} ({at_exit} at exit)"
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
