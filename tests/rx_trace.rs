//! Privileged RX tests: real BPF, real namespaces, real packets, ground truth we control.
//! Run serially (`--test-threads=1`): they share the kernel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const STAGE_SPANS: [&str; 4] = [
    "rx_driver->rx_netif",
    "rx_netif->rx_ip",
    "rx_ip->rx_transport",
    "rx_transport->rx_sockq",
];

/// A server that waits until data is readable, sleeps D, then reads; a client that sends
/// every 2*D. rx_sockq->rx_read must be about D, and every stage before it short.
fn delayed_reader(proto: &str, v6: bool) {
    const D_MS: u64 = 50;
    const K: usize = 8;
    let t = Topo::new();
    let port = if v6 { 9106 } else { 9104 } + u16::from(proto == "tcp");
    let port_s = port.to_string();
    let netns = t.netns_path(&t.b);
    let tool = tool(&[
        "trace",
        "--netns",
        &netns,
        "--port",
        &port_s,
        "--json",
        "--interval",
        "500ms",
    ]);
    delayed_exchange(&t, proto, &t.server(v6, port), K as u64, D_MS, 2 * D_MS);
    let v = stop_summary(tool);

    let read = span(&v, "rx_sockq->rx_read").unwrap_or_else(|| panic!("no rx_sockq->rx_read: {v}"));
    let p50 = read["p50_ns"].as_u64().unwrap() as f64;
    let d = (D_MS * 1_000_000) as f64;
    assert!(
        (0.9 * d..=1.3 * d).contains(&p50),
        "{proto} v6={v6}: rx_sockq->rx_read p50 {p50} ns not within [0.9, 1.3] x {d} ns: {read}"
    );
    // One sample per message: the reads are 2*D apart, so no read takes two.
    assert_eq!(read["count"].as_u64().unwrap(), K as u64, "{read}");
    for name in STAGE_SPANS {
        let s =
            span(&v, name).unwrap_or_else(|| panic!("{proto} v6={v6}: span {name} missing: {v}"));
        let p99 = s["p99_ns"].as_u64().unwrap();
        assert!(
            p99 < 5_000_000,
            "{proto} v6={v6}: {name} p99 {p99} ns >= 5 ms: {s}"
        );
    }
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn delayed_reader_udp_ipv4() {
    common::require_root();
    delayed_reader("udp", false);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn delayed_reader_udp_ipv6() {
    common::require_root();
    delayed_reader("udp", true);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn delayed_reader_tcp_ipv4() {
    common::require_root();
    delayed_reader("tcp", false);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn delayed_reader_tcp_ipv6() {
    common::require_root();
    delayed_reader("tcp", true);
}

/// The connection row of the flow to `dport` (RX direction: destination = our server).
fn conn(v: &Value, dport: u16) -> Option<&Value> {
    v["connections"]
        .as_array()?
        .iter()
        .find(|c| c["direction"] == "rx" && c["dport"] == dport)
}

/// K datagrams give K samples on every span of the flow, or the shortfall is accounted for.
/// Which receive path the datagrams take.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// veth without NAPI: rx_driver is netif_rx.
    Veth,
    /// veth with NAPI (GRO on at the receiver, TSO off at the sender): rx_driver is
    /// napi_gro_receive_entry.
    VethNapi,
    /// 127.0.0.1 inside the server's namespace.
    Loopback,
}

fn counts(path: Path) {
    const K: u64 = 300;
    let loopback = path == Path::Loopback;
    let t = Topo::new();
    let _stats = (path == Path::VethNapi).then(|| {
        sh(&[
            "ip", "netns", "exec", &t.b, "ethtool", "-K", &t.vb, "gro", "on",
        ]);
        sh(&[
            "ip", "netns", "exec", &t.a, "ethtool", "-K", &t.va, "tso", "off",
        ]);
        BpfStats::enable()
    });
    let port = match path {
        Path::Veth => 9120,
        Path::Loopback => 9121,
        Path::VethNapi => 9122,
    };
    let server = if loopback {
        format!("127.0.0.1:{port}")
    } else {
        t.server(false, port)
    };
    let client_ns = if loopback { &t.b } else { &t.a };
    let netns = t.netns_path(&t.b);
    let tool = tool(&[
        "trace",
        "--netns",
        &netns,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let k = K.to_string();
    let mut srv = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", &k]);
    wait_ready(&mut srv);
    udp_send(client_ns, &server, K, 1);
    assert_eq!(
        srv.finish(Duration::from_secs(30)).0,
        Some(0),
        "server got all K"
    );
    let v = stop_summary(tool);

    let c = conn(&v, port).unwrap_or_else(|| panic!("no connection row for port {port}: {v}"));
    let lost = v["lost_events"].as_u64().unwrap();
    let unjoined = v["kernel"]["sockq_unjoined"].as_u64().unwrap();
    assert_eq!(
        c["packets"], K,
        "packets of the flow: {c}; join {}; kernel {}",
        v["join"], v["kernel"]
    );
    // rx_softirq_raise->rx_softirq_entry: the NET_RX run that processed each datagram.
    for name in STAGE_SPANS.iter().chain(&[
        "rx_sockq->rx_read",
        "rx_netif->rx_read",
        "rx_softirq_raise->rx_softirq_entry",
    ]) {
        let n = c["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == *name)
            .and_then(|s| s["count"].as_u64())
            .unwrap_or(0);
        // Any shortfall must be explained by counted loss, never silent.
        assert!(
            n == K || (n + lost + unjoined >= K && lost + unjoined > 0),
            "{path:?}: span {name} has {n} of {K} samples, lost {lost}, unjoined {unjoined}: {c}"
        );
    }
    assert_eq!(lost, 0, "no ring-buffer loss expected at this rate");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_udp_veth() {
    common::require_root();
    counts(Path::Veth);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_udp_loopback() {
    common::require_root();
    counts(Path::Loopback);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_udp_veth_napi_gro() {
    common::require_root();
    counts(Path::VethNapi);
}

/// Two flows on two ports from two processes: --port and --pid each keep exactly one.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn filters_port_and_pid() {
    common::require_root();
    const K: u64 = 40;
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let k = K.to_string();
    let (p1, p2) = (9131u16, 9132u16);
    let run = |filter: &[&str]| -> Value {
        let mut r1 = load_in(
            &t.b,
            &["udp-recv", "--bind", &t.server(false, p1), "--count", &k],
        );
        let mut r2 = load_in(
            &t.b,
            &["udp-recv", "--bind", &t.server(false, p2), "--count", &k],
        );
        wait_ready(&mut r1);
        wait_ready(&mut r2);
        let pid2 = r2.pid().to_string();
        let mut args = vec!["trace", "--netns", &netns, "--json"];
        let filter: Vec<String> = filter.iter().map(|f| f.replace("PID2", &pid2)).collect();
        args.extend(filter.iter().map(String::as_str));
        let tool = tool(&args);
        let s1 = load_in(
            &t.a,
            &[
                "udp-send",
                "--to",
                &t.server(false, p1),
                "--count",
                &k,
                "--interval-ms",
                "2",
            ],
        );
        let s2 = load_in(
            &t.a,
            &[
                "udp-send",
                "--to",
                &t.server(false, p2),
                "--count",
                &k,
                "--interval-ms",
                "2",
            ],
        );
        for p in [s1, s2, r1, r2] {
            assert_eq!(p.finish(Duration::from_secs(30)).0, Some(0));
        }
        stop_summary(tool)
    };

    let v = run(&["--port", "9131"]);
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "--port keeps one flow: {v}");
    assert_eq!(conns[0]["dport"], p1);
    assert_eq!(span_count(&v, "rx_sockq->rx_read"), K);

    let v = run(&["--pid", "PID2"]);
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "--pid keeps one flow: {v}");
    assert_eq!(conns[0]["dport"], p2);
    assert_eq!(span_count(&v, "rx_sockq->rx_read"), K);
}

/// Every BPF-side filter keeps the flow when it matches and drops it when it does not.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn filters_protocol_family_address_comm_iface() {
    common::require_root();
    const K: u64 = 20;
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let k = K.to_string();
    let server = t.server(false, 9151);
    let read_count = |filter: &[&str]| -> u64 {
        let mut args = vec!["trace", "--netns", netns.as_str(), "--json"];
        args.extend(filter);
        let tool = tool(&args);
        let mut r = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", &k]);
        wait_ready(&mut r);
        let s = load_in(
            &t.a,
            &[
                "udp-send",
                "--to",
                &server,
                "--count",
                &k,
                "--interval-ms",
                "2",
            ],
        );
        for p in [s, r] {
            assert_eq!(p.finish(Duration::from_secs(30)).0, Some(0));
        }
        span_count(&stop_summary(tool), "rx_sockq->rx_read")
    };
    let b_net = format!("{}/24", t.b4);
    let cases: [(&[&str], u64); 10] = [
        (&["--proto", "udp"], K),
        (&["--proto", "tcp"], 0),
        (&["-4"], K),
        (&["-6"], 0),
        (&["--addr", &b_net], K),
        (&["--addr", "192.0.2.0/24"], 0),
        (&["--comm", "nsl-load"], K),
        (&["--comm", "no-such-comm"], 0),
        (&["--iface", &t.vb], K),
        (&["--iface", "lo"], 0),
    ];
    for (filter, want) in cases {
        assert_eq!(read_count(filter), want, "filter {filter:?}");
    }
}

/// However the tool ends, bpftool shows the same programs and links as before.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn clean_exit_all_endings() {
    common::require_root();
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let before = bpf_state();
    for ending in ["duration", "SIGINT", "SIGTERM", "SIGKILL"] {
        let mut args = vec!["trace", "--netns", netns.as_str(), "--json"];
        if ending == "duration" {
            args.extend(["--duration", "2s"]);
        }
        let p = tool(&args);
        // Scoped to the tool's pid: another BPF user's programs prove nothing here.
        let (progs, links) = owned_by(p.pid());
        assert!(!progs.is_empty(), "programs are loaded while tracing");
        assert!(!links.is_empty(), "links exist while tracing");
        // Some traffic while attached, so the exit path has events in flight.
        let mut srv = load_in(
            &t.b,
            &[
                "udp-recv",
                "--bind",
                &t.server(false, 9141),
                "--count",
                "20",
            ],
        );
        wait_ready(&mut srv);
        let cli = load_in(
            &t.a,
            &["udp-send", "--to", &t.server(false, 9141), "--count", "20"],
        );
        let _ = cli.finish(Duration::from_secs(10));
        let _ = srv.finish(Duration::from_secs(10));
        let code = match ending {
            "duration" => p.finish(Duration::from_secs(20)).0,
            "SIGINT" | "SIGTERM" => {
                p.signal(if ending == "SIGINT" {
                    libc::SIGINT
                } else {
                    libc::SIGTERM
                });
                let (code, out, _) = p.finish(Duration::from_secs(20));
                summary_of(&out);
                code
            }
            _ => {
                p.signal(libc::SIGKILL);
                p.finish(Duration::from_secs(20)).0
            }
        };
        if ending != "SIGKILL" {
            assert_eq!(code, Some(0), "{ending}: exit status");
        }
        assert_no_new_bpf(&before, ending);
    }
}
