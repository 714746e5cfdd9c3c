//! Options of drops and signals, each against a control run over drops, sends and losses the
//! test causes itself: drops --stack, -6, --iface; signals --pid, --cgroup, --iface and its
//! retransmits and softirq_ns fields.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::opts::{json_lines, load_in_cgroup, snmp, tool_in, Cgroup};
use common::*;
use serde_json::Value;

fn stop_lines(p: Proc) -> Vec<Value> {
    p.signal(libc::SIGINT);
    let (code, out, err) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    json_lines(&out)
}

/// A loopback port nobody listens on.
fn closed_port(v6: bool) -> u16 {
    let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    UdpSocket::bind(any).unwrap().local_addr().unwrap().port()
}

/// Datagrams to a closed loopback port die in the UDP receive path: with --stack each drop
/// line carries that path (the UDP receive function under IP's local delivery); without
/// it, no stack at all.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drops_stack_shows_the_drop_path() {
    require_root();
    let port = closed_port(false);
    let ps = port.to_string();
    let with = tool(&["drops", "--json", "--stack", "--port", &ps]);
    let without = tool(&["drops", "--json", "--port", &ps]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        tx.send_to(b"nobody home", ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let drops = |lines: Vec<Value>| -> Vec<Value> {
        lines.into_iter().filter(|v| v["type"] == "drop").collect()
    };
    let (w, wo) = (drops(stop_lines(with)), drops(stop_lines(without)));
    assert_eq!((w.len(), wo.len()), (5, 5), "{w:?} {wo:?}");
    for d in &w {
        let frames: Vec<&str> = d["stack"]
            .as_array()
            .unwrap_or_else(|| panic!("no stack: {d}"))
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let at = |name: &str| frames.iter().position(|f| f.starts_with(name));
        let udp = at("__udp4_lib_rcv").or(at("udp_rcv"));
        let ip = at("ip_local_deliver");
        assert!(
            udp.is_some() && ip.is_some() && udp < ip,
            "UDP receive under IP local delivery: {frames:?}"
        );
    }
    assert!(wo.iter().all(|d| d.get("stack").is_none()), "{wo:?}");
}

/// 11 datagrams to a closed port over IPv4, 7 over IPv6: -6 counts the 7, the unfiltered
/// run all 18.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drops_ipv6_only() {
    require_root();
    let port = closed_port(true);
    let ps = port.to_string();
    let v6 = tool(&["drops", "--json", "--summary", "--port", &ps, "-6"]);
    let all = tool(&["drops", "--json", "--summary", "--port", &ps]);
    let tx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx6 = UdpSocket::bind("[::1]:0").unwrap();
    for _ in 0..11 {
        tx4.send_to(b"v4", ("127.0.0.1", port)).unwrap();
    }
    for _ in 0..7 {
        tx6.send_to(b"v6", ("::1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let s6 = stop_summary(v6);
    let s = stop_summary(all);
    assert_eq!(s6["drops"], 7, "{s6}");
    assert_eq!(s["drops"], 18, "{s}");
}

/// Closed-port drops in b: 9 arrive over the veth from a, 6 over b's loopback. --iface with
/// b's veth counts the 9, the unfiltered run 15.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drops_iface_keeps_that_device() {
    require_root();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let base = [
        "drops",
        "--json",
        "--summary",
        "--netns",
        &nb,
        "--port",
        "9530",
    ];
    let veth = tool(&[&base[..], &["--iface", &t.vb]].concat());
    let all = tool(&base);
    udp_send(&t.a, &t.server(false, 9530), 9, 1);
    udp_send(&t.b, "127.0.0.1:9530", 6, 1);
    std::thread::sleep(Duration::from_millis(300));
    let sv = stop_summary(veth);
    let s = stop_summary(all);
    assert_eq!(sv["drops"], 9, "{sv}");
    assert_eq!(s["drops"], 15, "{s}");
}

/// The test's own process sends 10 x 300 bytes, a child 20 x 200 to the same port: --pid
/// with the test's pid counts 3000 bytes, the unfiltered run 7000. (--port keeps a socket
/// whose local or remote port it is: the test's socket is connected, the child's bound to
/// the port on another loopback address.)
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_pid_counts_that_process_only() {
    require_root();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let (ps, me) = (port.to_string(), std::process::id().to_string());
    let mine = tool(&["signals", "--json", "--port", &ps, "--pid", &me]);
    let all = tool(&["signals", "--json", "--port", &ps]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(("127.0.0.1", port)).unwrap();
    for _ in 0..10 {
        tx.send(&[1u8; 300]).unwrap();
    }
    let (to, from) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    let other = std::process::Command::new(LOAD)
        .args([
            "udp-send", "--to", &to, "--bind", &from, "--count", "20", "--size", "200",
        ])
        .output()
        .expect("nsl-load");
    assert!(other.status.success(), "{other:?}");
    std::thread::sleep(Duration::from_millis(300));
    let sm = stop_summary(mine);
    let s = stop_summary(all);
    assert_eq!(sm["udp_send_bytes"], 3000, "{sm}");
    assert_eq!(s["udp_send_bytes"], 7000, "{s}");
}

/// In a: one sender in a cgroup of the test's own (20 x 200 bytes), one outside (15 x 100):
/// --cgroup counts the member's 4000 bytes, the unfiltered run 5500. Both send from the
/// filtered port (--port keeps a socket by its local or remote port; an unconnected
/// sender has no remote one).
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_cgroup_counts_its_members_only() {
    require_root();
    let t = Topo::new();
    let cg = Cgroup::new("signals");
    let cgp = cg.path();
    let member = tool(&["signals", "--json", "--port", "9531", "--cgroup", &cgp]);
    let all = tool(&["signals", "--json", "--port", "9531"]);
    let server = t.server(false, 9531);
    let mut srv = load_in(&t.b, &["udp-recv", "--bind", &server, "--count", "35"]);
    wait_ready(&mut srv);
    let from = format!("{}:9531", t.a4);
    let inside = load_in_cgroup(
        &t.a,
        &cg,
        &[
            "udp-send", "--to", &server, "--bind", &from, "--count", "20", "--size", "200",
        ],
    );
    let (code, _, err) = inside.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    let outside = load_in(
        &t.a,
        &[
            "udp-send", "--to", &server, "--bind", &from, "--count", "15", "--size", "100",
        ],
    );
    let (code, _, err) = outside.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = srv.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let sm = stop_summary(member);
    let s = stop_summary(all);
    assert_eq!(s["udp_send_bytes"], 5500, "{s}");
    assert_eq!(sm["udp_send_bytes"], 4000, "{sm}");
}

/// signals resolves --iface in its own namespace, so both runs are started in b: of the
/// closed-port drops there, 9 over the veth and 6 over loopback, --iface counts the 9.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_iface_counts_that_device_only() {
    require_root();
    let t = Topo::new();
    let veth = tool_in(
        &t.b,
        &["signals", "--json", "--port", "9532", "--iface", &t.vb],
    );
    let all = tool_in(&t.b, &["signals", "--json", "--port", "9532"]);
    udp_send(&t.a, &t.server(false, 9532), 9, 1);
    udp_send(&t.b, "127.0.0.1:9532", 6, 1);
    std::thread::sleep(Duration::from_millis(300));
    let sv = stop_summary(veth);
    let s = stop_summary(all);
    assert_eq!(sv["drops"], 9, "{sv}");
    assert_eq!(s["drops"], 15, "{s}");
}

/// A TCP stream over a clean veth has no retransmits; with every 10th packet to the
/// receiver dropped (an iptables statistic rule in b: this kernel has no netem) it has
/// some, exactly as many as both ends' kernels counted (RetransSegs in a and in b: b
/// retransmits its FIN when a's ACK of it is dropped).
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_retransmits_appear_with_loss_only() {
    require_root();
    let t = Topo::new();
    let server = t.server(false, 9533);
    let kernel = || snmp(&t.a, "Tcp", "RetransSegs") + snmp(&t.b, "Tcp", "RetransSegs");
    for lossy in [false, true] {
        if lossy {
            sh(&[
                "ip",
                "netns",
                "exec",
                &t.b,
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                "9533",
                "-m",
                "statistic",
                "--mode",
                "nth",
                "--every",
                "10",
                "--packet",
                "5",
                "-j",
                "DROP",
            ]);
        }
        let before = kernel();
        let p = tool(&["signals", "--json", "--port", "9533"]);
        tcp_stream(&t, &server, 200, 1000, 1);
        std::thread::sleep(Duration::from_millis(300));
        let s = stop_summary(p);
        let (got, want) = (s["retransmits"].as_u64().unwrap(), kernel() - before);
        assert_eq!(
            got, want,
            "retransmits against RetransSegs, loss {lossy}: {s}"
        );
        assert_eq!(got > 0, lossy, "retransmits only with loss: {s}");
    }
}

/// softirq_ns is NET_RX + NET_TX run time: a run over a UDP flood between the test's
/// namespaces has far more of it than a run of the same length without one.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_softirq_time_follows_the_traffic() {
    require_root();
    let t = Topo::new();
    let server = t.server(false, 9534);
    let mut ns = Vec::new();
    for flood in [false, true] {
        let p = tool(&["signals", "--json", "--port", "9534"]);
        if flood {
            let mut sink = load_in(&t.b, &["udp-sink", "--bind", &server, "--seconds", "1"]);
            wait_ready(&mut sink);
            let f = load_in(
                &t.a,
                &[
                    "udp-flood",
                    "--to",
                    &server,
                    "--seconds",
                    "1",
                    "--max-packets",
                    "500000",
                ],
            );
            assert_eq!(f.finish(Duration::from_secs(30)).0, Some(0));
            let _ = sink.finish(Duration::from_secs(30));
        } else {
            std::thread::sleep(Duration::from_secs(1));
        }
        let s = stop_summary(p);
        ns.push(s["softirq_ns"].as_u64().unwrap());
    }
    assert!(
        ns[1] > 20_000_000 && ns[1] > 5 * ns[0],
        "softirq ns idle {} vs flood {}",
        ns[0],
        ns[1]
    );
}
