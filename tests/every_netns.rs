//! Every network namespace by default: the tool started without `--netns` covers
//! namespaces created after it, lets go of deleted ones, reports the ones that refuse, and
//! `--netns` still narrows. Real namespaces, real BPF, ground truth the test controls.
//! Run serially (`--test-threads=1`): they share the kernel.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A namespace watch pass is 500 ms: a namespace is covered within this long.
const PICKUP: Duration = Duration::from_millis(1000);

fn inode(path: &str) -> u64 {
    std::fs::metadata(path).expect("netns file").ino()
}

fn conn<'a>(v: &'a Value, dir: &str, dport: u16) -> &'a Value {
    v["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["direction"] == dir && c["dport"] == dport)
        .unwrap_or_else(|| panic!("no {dir} connection to port {dport}: {v}"))
}

fn finish_json(p: Proc, what: &str) -> Value {
    let (code, out, err) = p.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{what}: {err}");
    serde_json::from_str(out.lines().last().unwrap_or("{}")).expect("reader JSON")
}

/// Started with no `--netns`, then the namespaces are made: a delayed reader in one, the
/// sender in the other. Every RX span is there, rx_netif->rx_read agrees with the
/// reader's own SO_TIMESTAMPNS waits within 10%, counts are exact, and the rows carry
/// both namespaces by inode and by name.
fn created_after_start(proto: &str, v6: bool, port: u16) {
    const K: u64 = 20;
    const D_MS: u64 = 30;
    let p = port.to_string();
    let tool = tool(&["trace", "--json", "--port", &p]);
    let t = Topo::new();
    std::thread::sleep(PICKUP);
    let server = t.server(v6, port);
    let (k, d) = (K.to_string(), D_MS.to_string());
    let recv = format!("{proto}-stamp-recv");
    let mut rargs = vec![
        recv.as_str(),
        "--bind",
        &server,
        "--count",
        &k,
        "--delay-ms",
        &d,
    ];
    if proto == "tcp" {
        rargs.extend(["--size", "100"]);
    }
    let mut srv = load_in(&t.b, &rargs);
    wait_ready(&mut srv);
    let send = format!("{proto}-send");
    let cli = load_in(
        &t.a,
        &[
            &send,
            "--to",
            &server,
            "--count",
            &k,
            "--interval-ms",
            &(3 * D_MS).to_string(),
            "--size",
            "100",
        ],
    );
    let (code, _, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{send}: {err}");
    let got = finish_json(srv, &recv);
    let v = stop_summary(tool);

    let what = format!("{proto} v6={v6}");
    assert_eq!(got["stamped"], K, "{what}: reader stamps {got}");
    // Stage spans: one per datagram; TCP adds its handshake, ACKs and FIN.
    for name in [
        "rx_driver->rx_netif",
        "rx_netif->rx_ip",
        "rx_ip->rx_transport",
        "rx_transport->rx_sockq",
    ] {
        let n = span_count(&v, name);
        assert!(
            if proto == "udp" { n == K } else { n >= K },
            "{what}: {name} {n} for {K} messages; kernel {} join {}",
            v["kernel"],
            v["join"]
        );
    }
    for name in ["rx_sockq->rx_read", "rx_netif->rx_read"] {
        assert_eq!(
            span_count(&v, name),
            K,
            "{what}: {name} once per read; kernel {} join {}",
            v["kernel"],
            v["join"]
        );
    }
    let full = span(&v, "rx_netif->rx_read").unwrap();
    let (ours, theirs) = (
        full["p50_ns"].as_u64().unwrap() as f64,
        got["p50_wait_ns"].as_u64().unwrap() as f64,
    );
    assert!(
        (ours - theirs).abs() <= 0.1 * theirs,
        "{what}: rx_netif->rx_read p50 {ours} ns vs SO_TIMESTAMPNS {theirs} ns: {full}"
    );
    assert!(
        theirs >= (D_MS * 1_000_000) as f64,
        "the reader waited D: {got}"
    );
    // TX from the sender's namespace: every message, its transmit path whole.
    assert_eq!(
        span_count(&v, "tx_send->tx_done"),
        K,
        "{what}: {}",
        v["join"]
    );
    let rx = conn(&v, "rx", port);
    assert_eq!(rx["netns"], inode(&t.netns_path(&t.b)), "{rx}");
    assert_eq!(rx["netns_name"], t.b.as_str(), "{rx}");
    let tx = conn(&v, "tx", port);
    assert_eq!(tx["netns"], inode(&t.netns_path(&t.a)), "{tx}");
    assert_eq!(tx["netns_name"], t.a.as_str(), "{tx}");
    assert_eq!(v["netns"]["mode"], "all", "{}", v["netns"]);
    assert_eq!(
        v["netns"]["refused"],
        Value::Array(vec![]),
        "{}",
        v["netns"]
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn udp4_in_namespaces_created_after_start() {
    common::require_root();
    created_after_start("udp", false, 9601);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn tcp6_in_namespaces_created_after_start() {
    common::require_root();
    created_after_start("tcp", true, 9602);
}

/// A TBF on the sender's veth, made after the tool started: a burst of B bytes at rate R
/// waits about B / R in the qdisc.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn tbf_in_a_namespace_created_after_start() {
    common::require_root();
    const N: u64 = 50;
    const SIZE: u64 = 1000;
    const RATE_BPS: u64 = 1_000_000;
    let port = 9603u16;
    let tool = tool(&["trace", "--tx", "--json", "--port", &port.to_string()]);
    let t = Topo::new();
    sh(&[
        "tc", "-n", &t.a, "qdisc", "add", "dev", &t.va, "root", "tbf", "rate", "1mbit", "burst",
        "1600", "limit", "200000",
    ]);
    std::thread::sleep(PICKUP);
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
    assert_eq!(srv.finish(Duration::from_secs(20)).0, Some(0));
    let v = stop_summary(tool);
    assert_eq!(v["join"]["tx_chains"], N, "{}", v["join"]);
    let q = span(&v, "tx_qdisc_enq->tx_qdisc_deq").unwrap_or_else(|| panic!("no qdisc span: {v}"));
    // As in tx_trace.rs: at most one datagram may miss its qdisc points (a dequeue the
    // kernel does not report, or a sender moved to the other CPU mid-transmit).
    let at_exit = v["join"]["tx_at_exit"].as_u64().unwrap();
    let count = q["count"].as_u64().unwrap();
    assert!(
        count + at_exit >= N - 1 && count <= N,
        "one qdisc sample per datagram: {q}"
    );
    let expect = N * (SIZE + 8 + 20 + 14) * 8 * 1_000_000_000 / RATE_BPS;
    let max = q["max_ns"].as_u64().unwrap();
    assert!(
        (expect * 3 / 4..=expect * 5 / 4).contains(&max),
        "qdisc wait max {max} ns not within 25% of B/rate = {expect} ns: {q}"
    );
}

/// The value of one series of a text exposition whose labels include all of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `serve` without --netns exports the spans of traffic in namespaces made after it
/// started, labelled by namespace name.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_exports_namespaces_created_after_start() {
    common::require_root();
    const K: u64 = 15;
    const D_MS: u64 = 30;
    let listen = format!("127.0.0.1:{}", free_port());
    let tool = tool(&["serve", "--listen", &listen, "--port", "9604"]);
    let t = Topo::new();
    std::thread::sleep(PICKUP);
    delayed_exchange(&t, "udp", &t.server(false, 9604), K, D_MS, 2 * D_MS);
    // The loop republishes every second.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, text) = get(&listen, "/metrics");
    assert_eq!(status, 200);
    let count = "netstack_lat_span_latency_seconds_count";
    for (span, ns) in [
        ("rx_netif->rx_read", &t.b),
        ("rx_sockq->rx_read", &t.b),
        ("rx_netif->rx_ip", &t.b),
        ("tx_driver->tx_done", &t.a),
        ("tx_transport->tx_nf_done", &t.a),
    ] {
        assert_eq!(
            series(&text, count, &[("span", span), ("netns_name", ns)]),
            Some(K as f64),
            "{span} in {ns}: {}",
            text.lines()
                .filter(|l| l.starts_with(count))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        series(&text, "netstack_lat_netns_covered", &[]).is_some_and(|n| n >= 3.0),
        "host and both test namespaces covered"
    );
    let (_, health) = get(&listen, "/healthz");
    assert_eq!(health.trim(), "ok");
    tool.signal(libc::SIGTERM);
    let (code, _, err) = tool.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Namespaces whose names start with `prefix`.
fn named(prefix: &str) -> usize {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// 200 namespaces made and deleted while `trace` runs, some with traffic: no error, exact
/// counts for the traffic, links back to the start when they are gone, memory bounded,
/// and BPF programs and links back to the start after exit.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn namespace_churn() {
    common::require_root();
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 20;
    const K: u64 = 5;
    let before = bpf_state();
    let prefix = format!("nslc-{}-", std::process::id());
    let tool = tool(&["trace", "--json", "--port", "9605", "--interval", "500ms"]);
    std::thread::sleep(PICKUP);
    let rss0 = rss_kib(tool.pid());
    let mut with_traffic = 0u64;
    let started = Instant::now();
    for r in 0..ROUNDS {
        let names: Vec<String> = (0..PER_ROUND).map(|i| format!("{prefix}{r}-{i}")).collect();
        for n in &names {
            sh(&["ip", "netns", "add", n]);
        }
        // Every other round, a pair of namespaces with traffic, alive across a pass.
        if r % 2 == 0 {
            let t = Topo::new();
            std::thread::sleep(PICKUP);
            udp_exchange(&t, &t.server(false, 9605), K, 10);
            with_traffic += K;
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        for n in &names {
            sh(&["ip", "netns", "del", n]);
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120), "bounded run");
    // Every deleted namespace let go within two passes.
    std::thread::sleep(Duration::from_millis(1500));
    let rss1 = rss_kib(tool.pid());
    let v = stop_summary(tool);
    assert_eq!(named(&prefix), 0);
    let ns = &v["netns"];
    assert!(
        ns["seen"].as_u64().unwrap() >= (ROUNDS * PER_ROUND) as u64 / 2,
        "most churned namespaces were covered while they lived: {ns}"
    );
    assert!(
        ns["gone"].as_u64().unwrap() + 5
            >= ns["seen"].as_u64().unwrap() - ns["covered"].as_u64().unwrap(),
        "{ns}"
    );
    assert_eq!(ns["refused"], Value::Array(vec![]), "{ns}");
    // Only the namespaces that outlive the test remain covered (the host's and the other
    // ones of this machine): not one of the 200.
    let covered = ns["covered"].as_u64().unwrap();
    let others = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0) as u64;
    assert!(
        covered <= others + 2 + 5,
        "covered {covered} at the end with {others} named namespaces: {ns}"
    );
    assert_eq!(
        span_count(&v, "rx_netif->rx_read"),
        with_traffic,
        "every datagram of the namespaces with traffic: {}",
        v["kernel"]
    );
    assert_eq!(span_count(&v, "tx_send->tx_done"), with_traffic);
    assert!(
        rss1 < rss0 + 64 * 1024,
        "memory bounded over the churn: {rss0} KiB -> {rss1} KiB"
    );
    assert_no_new_bpf(&before, "namespace churn");
}

/// Deleting a namespace while the tool holds netfilter links in it: the links are let go,
/// so the kernel frees the namespace (its veth, whose peer lives here, disappears) while
/// the tool still runs; the run ends cleanly.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn deleted_namespace_is_let_go() {
    common::require_root();
    let ns = format!("nsld-{}", std::process::id());
    let host_end = format!("nsld{}", std::process::id() % 100000);
    // Whatever happens below, nothing of this test stays behind.
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for args in [["netns", "del", &self.0], ["link", "del", &self.1]] {
                // Usually gone already: quietly.
                let _ = Command::new("ip")
                    .args(args)
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
    let _cleanup = Cleanup(ns.clone(), host_end.clone());
    sh(&["ip", "netns", "add", &ns]);
    sh(&[
        "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "inner0", "netns", &ns,
    ]);
    for given in [false, true] {
        if given {
            // The same with the namespace named by --netns.
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "inner0", "netns",
                &ns,
            ]);
        }
        let path = format!("/run/netns/{ns}");
        let mut args = vec!["trace", "--json", "--port", "9606"];
        if given {
            args.extend(["--netns", &path]);
        }
        let tool = tool(&args);
        std::thread::sleep(PICKUP);
        sh(&["ip", "netns", "del", &ns]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let gone = || {
            !Command::new("ip")
                .args(["link", "show", &host_end])
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let alive = tool.child.id();
        assert!(
            gone(),
            "given={given}: the namespace was not freed while netstack-lat ({alive}) ran"
        );
        let v = stop_summary(tool);
        assert_eq!(v["netns"]["gone"], 1, "given={given}: {}", v["netns"]);
    }
}

/// A namespace whose PRE_ROUTING priorities are all taken by another BPF user refuses
/// the attach: the tool runs on, and names it in the summary, /metrics and /healthz.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn refusing_namespace_is_reported() {
    common::require_root();
    let t = Topo::new();
    let mut hold = load_in(&t.b, &["nf-hold", "--count", "64", "--seconds", "40"]);
    wait_ready(&mut hold);
    let ino = inode(&t.netns_path(&t.b));
    let tool_ = tool(&["trace", "--json", "--port", "9607"]);
    std::thread::sleep(PICKUP);
    // The other namespace is still traced whole.
    udp_exchange(&t, &t.server(false, 9607), 5, 10);
    let v = stop_summary(tool_);
    let refused = v["netns"]["refused"].as_array().expect("refused list");
    let r = refused
        .iter()
        .find(|r| r["netns"] == ino)
        .unwrap_or_else(|| panic!("{} not reported: {}", t.b, v["netns"]));
    assert_eq!(r["name"], t.b.as_str());
    assert!(r["reason"].as_str().unwrap().contains("priorities"), "{r}");
    assert_eq!(span_count(&v, "tx_send->tx_done"), 5, "{}", v["join"]);

    let listen = format!("127.0.0.1:{}", free_port());
    let serve = tool(&["serve", "--listen", &listen, "--port", "9607"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, health) = get(&listen, "/healthz");
    assert_eq!(status, 200);
    assert!(
        health.starts_with("degraded") && health.contains(&t.b),
        "/healthz: {health}"
    );
    let (_, text) = get(&listen, "/metrics");
    assert_eq!(
        series(&text, "netstack_lat_netns_refused", &[("netns_name", &t.b)]),
        Some(1.0),
        "{text}"
    );
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish(Duration::from_secs(20)).0, Some(0));
    drop(hold);
}

/// --netns narrows to the namespaces given (more than 4 work); traffic elsewhere is left
/// out; a bare name means /run/netns/NAME.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn given_namespaces_narrow() {
    common::require_root();
    let (t, u) = (Topo::new(), Topo::new());
    let extra: Vec<String> = (0..4)
        .map(|i| format!("nslg-{}-{i}", std::process::id()))
        .collect();
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }
    let _cleanup = Cleanup(extra.clone());
    for n in &extra {
        sh(&["ip", "netns", "add", n]);
    }
    let (ta, tb) = (t.netns_path(&t.a), t.b.clone());
    let mut args = vec![
        "trace", "--json", "--port", "9608", "--netns", &ta, "--netns", &tb,
    ];
    for n in &extra {
        args.extend(["--netns", n.as_str()]);
    }
    let tool = tool(&args);
    udp_exchange(&t, &t.server(false, 9608), 7, 10);
    udp_exchange(&u, &u.server(false, 9608), 9, 10);
    let v = stop_summary(tool);
    assert_eq!(v["netns"]["mode"], "given");
    assert_eq!(v["netns"]["covered"], 6, "{}", v["netns"]);
    assert_eq!(span_count(&v, "rx_netif->rx_read"), 7, "only t's traffic");
    assert_eq!(span_count(&v, "tx_send->tx_done"), 7);
}

/// `drops`, `signals` and `netfilter`, started without --netns before the namespaces
/// exist, count an iptables DROP rule's K packets in a namespace made afterwards, and the
/// K that pass it.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drops_signals_netfilter_see_later_namespaces() {
    common::require_root();
    const DROPPED: u64 = 17;
    const PASSED: u64 = 9;
    let before = bpf_state();
    let drops = tool(&["drops", "--json", "--summary", "--port", "9609"]);
    let signals = tool(&["signals", "--json", "--port", "9609"]);
    let nf = tool(&[
        "netfilter",
        "--json",
        "--hook",
        "INPUT",
        "-4",
        "--proto",
        "udp",
        "--port",
        "9609",
    ]);
    let t = Topo::new();
    sh(&[
        "ip", "netns", "exec", &t.b, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9609",
        "-s", &t.a4, "-m", "length", "--length", "0:100", "-j", "DROP",
    ]);
    std::thread::sleep(PICKUP);
    // Small datagrams hit the rule; large ones pass it to a reader.
    udp_send(&t.a, &t.server(false, 9609), DROPPED, 2);
    let server = t.server(false, 9609);
    let n = PASSED.to_string();
    let mut srv = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", &n]);
    wait_ready(&mut srv);
    let cli = load_in(
        &t.a,
        &["udp-send", "--to", &server, "--count", &n, "--size", "500"],
    );
    assert_eq!(cli.finish(Duration::from_secs(20)).0, Some(0));
    assert_eq!(srv.finish(Duration::from_secs(20)).0, Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let d = stop_summary(drops);
    let s = stop_summary(signals);
    let f = stop_summary(nf);
    assert_eq!(d["drops"], DROPPED, "drops: {d}");
    assert_eq!(s["drops"], DROPPED, "signals: {s}");
    let r = f["hooks"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["hook"] == "LOCAL_IN" && r["family"] == "ipv4")
        })
        .unwrap_or_else(|| panic!("no LOCAL_IN row: {f}"));
    assert_eq!(r["verdicts"]["drop"], DROPPED, "netfilter: {r}");
    assert_eq!(r["count"], PASSED, "netfilter: {r}");
    assert_eq!(f["netns"]["mode"], "all", "{}", f["netns"]);
    drop(t);
    assert_no_new_bpf(&before, "drops, signals, netfilter");
}
