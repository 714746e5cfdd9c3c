//! `trace` options, each run with and without the option (or with two values) over traffic
//! the test sends itself between its own namespaces: --no-netfilter-split, --sample, --top,
//! --cgroup, --prometheus, --per-connection-top.

mod common;

use std::time::Duration;

use common::opts::{json_lines, load_in_cgroup, sample_sum, Cgroup};
use common::*;
use serde_json::Value;

/// Start a receiver in b that takes `total` datagrams on `server`.
fn receiver(t: &Topo, server: &str, total: u64) -> Proc {
    let n = total.to_string();
    let mut srv = load_in(&t.b, &["udp-recv", "--bind", server, "--count", &n]);
    wait_ready(&mut srv);
    srv
}

/// `count` datagrams from a to `server`, sent from source port `sport` (0: any).
fn send_from(t: &Topo, server: &str, sport: u16, count: u64) {
    let n = count.to_string();
    let bind = format!("{}:{sport}", t.a4);
    let mut args = vec![
        "udp-send",
        "--to",
        server,
        "--count",
        &n,
        "--interval-ms",
        "1",
    ];
    if sport != 0 {
        args.extend(["--bind", &bind]);
    }
    let (code, _, err) = load_in(&t.a, &args).finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-send: {err}");
}

fn finish_ok(p: Proc, what: &str) {
    let (code, _, err) = p.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{what}: {err}");
}

/// Connection rows of `dir` with destination port `port`.
fn rows<'a>(s: &'a Value, dir: &str, port: u16) -> Vec<&'a Value> {
    s["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no connections in {s}"))
        .iter()
        .filter(|r| r["direction"] == dir && r["dport"] == port)
        .collect()
}

fn packets(rows: &[&Value]) -> u64 {
    rows.iter().map(|r| r["packets"].as_u64().unwrap()).sum()
}

/// The netfilter split adds the per-hook spans; --no-netfilter-split removes exactly those,
/// and the stretch they split is still measured for every datagram.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn no_netfilter_split_leaves_out_the_hook_spans() {
    require_root();
    const K: u64 = 30;
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9501);
    for split in [true, false] {
        let mut args = vec!["trace", "--netns", &nb, "--port", "9501", "--json"];
        if !split {
            args.push("--no-netfilter-split");
        }
        let p = tool(&args);
        udp_exchange(&t, &server, K, 1);
        std::thread::sleep(Duration::from_millis(300));
        let s = stop_summary(p);
        assert_eq!(
            span_count(&s, "rx_ip->rx_transport"),
            K,
            "split {split}: {s}"
        );
        for name in [
            "rx_ip->rx_nf_pre_done",
            "rx_nf_pre_done->rx_nf_in",
            "rx_nf_in->rx_transport",
        ] {
            let want = if split { K } else { 0 };
            assert_eq!(span_count(&s, name), want, "{name}, split {split}: {s}");
        }
    }
}

/// --events --sample N keeps timelines 1, N+1, 2N+1, ...: exactly ceil(M/N) of the M that
/// --sample 1 prints for the same K datagrams.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn sample_keeps_one_timeline_in_n() {
    require_root();
    const K: u64 = 40;
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9502);
    let mut counts = Vec::new();
    for n in ["1", "4"] {
        let p = tool(&[
            "trace", "--netns", &nb, "--port", "9502", "--json", "--events", "--sample", n,
        ]);
        udp_exchange(&t, &server, K, 1);
        std::thread::sleep(Duration::from_millis(300));
        p.signal(libc::SIGINT);
        let (code, out, err) = p.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{err}");
        let events = json_lines(&out)
            .into_iter()
            .filter(|v| v["type"] == "event" && v["dport"] == 9502)
            .count() as u64;
        counts.push(events);
    }
    assert_eq!(counts[0], K, "--sample 1 prints every datagram's timeline");
    assert_eq!(counts[1], K.div_ceil(4), "--sample 4 of {K}: {counts:?}");
}

/// Three flows of 5, 15 and 30 datagrams: the summary lists all three busiest first, and
/// with --top 1 only the 30, while still counting three connections.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn top_keeps_the_busiest_connections() {
    require_root();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9503);
    for top in [None, Some("1")] {
        let mut args = vec!["trace", "--netns", &nb, "--port", "9503", "--json"];
        if let Some(n) = top {
            args.extend(["--top", n]);
        }
        let p = tool(&args);
        let srv = receiver(&t, &server, 50);
        for k in [5, 15, 30] {
            send_from(&t, &server, 0, k);
        }
        finish_ok(srv, "udp-recv");
        std::thread::sleep(Duration::from_millis(300));
        let s = stop_summary(p);
        let got: Vec<u64> = rows(&s, "rx", 9503)
            .iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .collect();
        assert_eq!(s["connections_total"], 3, "{s}");
        match top {
            None => assert_eq!(got, vec![30, 15, 5], "{s}"),
            Some(_) => assert_eq!(got, vec![30], "{s}"),
        }
    }
}

/// Two senders on a's side, 25 datagrams from one in a cgroup of the test's own and 15
/// from one outside it: --cgroup counts the member's 25 only, without it both.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn cgroup_counts_only_its_members() {
    require_root();
    let t = Topo::new();
    let cg = Cgroup::new("trace");
    let cgp = cg.path();
    let na = t.netns_path(&t.a);
    let server = t.server(false, 9504);
    for filtered in [true, false] {
        let mut args = vec!["trace", "--netns", &na, "--port", "9504", "--json"];
        if filtered {
            args.extend(["--cgroup", &cgp]);
        }
        let p = tool(&args);
        let srv = receiver(&t, &server, 40);
        let inside = load_in_cgroup(
            &t.a,
            &cg,
            &[
                "udp-send",
                "--to",
                &server,
                "--count",
                "25",
                "--interval-ms",
                "1",
            ],
        );
        let member = inside.pid();
        finish_ok(inside, "udp-send in the cgroup");
        send_from(&t, &server, 0, 15);
        finish_ok(srv, "udp-recv");
        std::thread::sleep(Duration::from_millis(300));
        let s = stop_summary(p);
        let tx = rows(&s, "tx", 9504);
        if filtered {
            assert_eq!(packets(&tx), 25, "the member's datagrams only: {s}");
            assert!(tx.iter().all(|r| r["pid"] == member), "{s}");
        } else {
            assert_eq!(packets(&tx), 40, "both senders: {s}");
        }
    }
}

/// --prometheus serves what the run traced: packets_total moves from 0 to exactly the K
/// datagrams sent. --per-connection-top 1 adds the busiest flow's spans (sport fixed by the
/// test) and no other flow's; without it there are none.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn prometheus_and_per_connection_top() {
    require_root();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9505);
    const FAMILY: &str = "netstack_lat_connection_span_latency_seconds_count";
    for per_conn in [None, Some("1")] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "trace",
            "--netns",
            &nb,
            "--port",
            "9505",
            "--json",
            "--interval",
            "200ms",
            "--prometheus",
            &listen,
        ];
        if let Some(n) = per_conn {
            args.extend(["--per-connection-top", n]);
        }
        let p = tool(&args);
        let rx = |b: &str| sample_sum(b, "netstack_lat_packets_total", &[("direction", "rx")]);
        // The first families appear with the first interval.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let body = loop {
            let (status, body) = get(&listen, "/metrics");
            assert_eq!(status, 200, "{body}");
            if rx(&body).is_some() || std::time::Instant::now() > deadline {
                break body;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(rx(&body), Some(0.0), "nothing traced yet: {body}");
        let srv = receiver(&t, &server, 40);
        send_from(&t, &server, 41001, 30);
        send_from(&t, &server, 41002, 10);
        finish_ok(srv, "udp-recv");
        std::thread::sleep(Duration::from_millis(800));
        let (_, body) = get(&listen, "/metrics");
        let _ = stop_summary(p);
        assert_eq!(rx(&body), Some(40.0), "{body}");
        let busy = sample_sum(&body, FAMILY, &[("sport", "41001")]);
        let quiet = sample_sum(&body, FAMILY, &[("sport", "41002")]);
        assert_eq!(quiet, None, "only the busiest connection: {body}");
        match per_conn {
            None => assert_eq!(busy, None, "no connection series by default: {body}"),
            Some(_) => {
                // Every span of the flow counts its 30 datagrams.
                let spans = body
                    .lines()
                    .filter(|l| l.starts_with(FAMILY) && l.contains("sport=\"41001\""))
                    .count() as f64;
                assert!(spans >= 1.0, "{body}");
                assert_eq!(busy, Some(30.0 * spans), "{body}");
            }
        }
    }
}
