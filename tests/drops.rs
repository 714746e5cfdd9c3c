//! `netstack-lat drops` against drops the test causes: an iptables DROP rule matching exactly
//! K packets, and datagrams to a closed port.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{assert_no_new_bpf, bpf_state, sh, stop_summary, tool, Topo};
use serde_json::Value;

fn count_of(list: &Value, key: &str, name: &str) -> u64 {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r[key].as_str().is_some_and(|s| s.contains(name)))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn netfilter_drops_are_counted_with_reason_and_location() {
    common::require_root();
    const K: u64 = 23;
    let before = bpf_state();
    let t = Topo::new();
    sh(&[
        "ip", "netns", "exec", &t.b, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9441",
        "-j", "DROP",
    ]);
    let netns = t.netns_path(&t.b);
    let p = tool(&[
        "drops",
        "--json",
        "--summary",
        "--stack",
        "--port",
        "9441",
        "--netns",
        &netns,
    ]);
    common::udp_send(&t.a, &t.server(false, 9441), K, 2);
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(p);
    assert_eq!(v["drops"], K, "{v}");
    assert_eq!(
        count_of(&v["by_reason"], "reason", "NETFILTER_DROP"),
        K,
        "{v}"
    );
    // The freeing address is netfilter code, symbolized: nf_hook_slow, or the table walk
    // itself (nft_do_chain behind iptables-nft, ipt_do_table behind iptables-legacy).
    let top = v["by_location"][0]["location"].as_str().unwrap_or("");
    assert!(
        ["nf_", "nft_", "ipt_"].iter().any(|p| top.starts_with(p)) && top.contains("+0x"),
        "location {top}: {v}"
    );
    assert_eq!(v["lost_events"], 0, "{v}");
    drop(t);
    assert_no_new_bpf(&before, "drops");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn closed_port_drops_name_the_reason_and_flow() {
    common::require_root();
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = tool(&["drops", "--json", "--port", &closed.to_string()]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = tx.local_addr().unwrap().port();
    for _ in 0..11 {
        tx.send_to(b"nobody home", ("127.0.0.1", closed)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGINT);
    let (code, out, _) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let drops: Vec<&Value> = lines.iter().filter(|v| v["type"] == "drop").collect();
    assert_eq!(drops.len(), 11, "{out}");
    for d in &drops {
        assert_eq!(d["reason"], "NO_SOCKET", "{d}");
        assert_eq!(d["proto"], "udp", "{d}");
        assert_eq!(d["sport"], from, "{d}");
        assert_eq!(d["dport"], closed, "{d}");
        assert!(d["location"].as_str().unwrap().contains("udp"), "{d}");
    }
    let s = lines.last().unwrap();
    assert_eq!(s["type"], "summary");
    assert_eq!(count_of(&s["by_reason"], "reason", "NO_SOCKET"), 11, "{s}");
}
