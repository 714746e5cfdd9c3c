//! `netfilter` options and hooks over traffic the test routes through its own namespaces:
//! the FORWARD hook (a three-namespace router), IPv6, --iface and --addr.

mod common;

use std::time::Duration;

use common::opts::route_through_b;
use common::*;
use serde_json::Value;

/// The count of the hook/family row, 0 when the run has no such row.
fn count(s: &Value, hook: &str, family: &str) -> u64 {
    s["hooks"]
        .as_array()
        .unwrap_or_else(|| panic!("no hooks in {s}"))
        .iter()
        .find(|r| r["hook"] == hook && r["family"] == family)
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0)
}

/// `count` datagrams from namespace `from` to `to`, taken by a receiver in namespace `at`.
fn deliver(at: &str, from: &str, to: &str, count: u64) {
    let n = count.to_string();
    let mut srv = load_in(at, &["udp-recv", "--bind", to, "--count", &n]);
    wait_ready(&mut srv);
    let (code, _, err) = load_in(
        from,
        &["udp-send", "--to", to, "--count", &n, "--interval-ms", "1"],
    )
    .finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-send: {err}");
    let (code, _, err) = srv.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-recv got all {count}: {err}");
}

/// b routes a's datagrams to c: 25 cross b's FORWARD hook, 10 sent to b itself its
/// LOCAL_IN; PRE_ROUTING sees both, POST_ROUTING only the forwarded ones.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn forward_hook_counts_routed_packets() {
    require_root();
    let t = Line3::new();
    route_through_b(&t);
    let nb = format!("/run/netns/{}", t.b);
    let p = tool(&[
        "netfilter",
        "--netns",
        &nb,
        "--port",
        "9510",
        "-4",
        "--json",
    ]);
    deliver(&t.c, &t.a, &format!("{}:9510", t.c4), 25);
    deliver(&t.b, &t.a, &format!("{}:9510", t.ba4), 10);
    std::thread::sleep(Duration::from_millis(300));
    let s = stop_summary(p);
    assert_eq!(count(&s, "FORWARD", "ipv4"), 25, "{s}");
    assert_eq!(count(&s, "LOCAL_IN", "ipv4"), 10, "{s}");
    assert_eq!(count(&s, "PRE_ROUTING", "ipv4"), 35, "{s}");
    assert_eq!(count(&s, "POST_ROUTING", "ipv4"), 25, "{s}");
    // Only --hook FORWARD: that row alone, the same 25.
    let p = tool(&[
        "netfilter",
        "--netns",
        &nb,
        "--port",
        "9510",
        "-4",
        "--hook",
        "FORWARD",
        "--json",
    ]);
    deliver(&t.c, &t.a, &format!("{}:9510", t.c4), 25);
    deliver(&t.b, &t.a, &format!("{}:9510", t.ba4), 10);
    std::thread::sleep(Duration::from_millis(300));
    let s = stop_summary(p);
    assert_eq!(count(&s, "FORWARD", "ipv4"), 25, "{s}");
    assert_eq!(s["hooks"].as_array().unwrap().len(), 1, "{s}");
}

/// 20 datagrams over IPv4 and 30 over IPv6 to b: each family's LOCAL_IN row has its own
/// count; a run with -6 at the same time has the IPv6 row only.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn ipv6_packets_have_their_own_rows() {
    require_root();
    let t = Topo::new();
    let nb = format!("/run/netns/{}", t.b);
    let base = [
        "netfilter",
        "--netns",
        &nb,
        "--port",
        "9511",
        "--hook",
        "INPUT",
    ];
    let both = tool(&[&base[..], &["--json"]].concat());
    // The kernel allows one link per hook and priority: this run steps to the next one.
    let v6 = tool(&[&base[..], &["-6", "--json"]].concat());
    deliver(&t.b, &t.a, &t.server(false, 9511), 20);
    deliver(&t.b, &t.a, &t.server(true, 9511), 30);
    std::thread::sleep(Duration::from_millis(300));
    let s = stop_summary(both);
    let s6 = stop_summary(v6);
    assert_eq!(count(&s, "LOCAL_IN", "ipv4"), 20, "{s}");
    assert_eq!(count(&s, "LOCAL_IN", "ipv6"), 30, "{s}");
    assert_eq!(count(&s6, "LOCAL_IN", "ipv6"), 30, "{s6}");
    assert_eq!(count(&s6, "LOCAL_IN", "ipv4"), 0, "{s6}");
}

/// b has two links: 20 datagrams come in from a on one, 30 from c on the other. --iface
/// keeps the first 20, --addr with c's address the 30, and the unfiltered run sees 50.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn iface_and_addr_keep_their_packets() {
    require_root();
    let t = Line3::new();
    let nb = format!("/run/netns/{}", t.b);
    let c_only = format!("{}/32", t.c4);
    let base = [
        "netfilter",
        "--netns",
        &nb,
        "--hook",
        "INPUT",
        "-4",
        "--port",
        "9512",
    ];
    let all = tool(&[&base[..], &["--json"]].concat());
    let by_iface = tool(&[&base[..], &["--iface", &t.vba, "--json"]].concat());
    let by_addr = tool(&[&base[..], &["--addr", &c_only, "--json"]].concat());
    deliver(&t.b, &t.a, &format!("{}:9512", t.ba4), 20);
    deliver(&t.b, &t.c, &format!("{}:9512", t.bc4), 30);
    std::thread::sleep(Duration::from_millis(300));
    let s = stop_summary(all);
    let si = stop_summary(by_iface);
    let sa = stop_summary(by_addr);
    assert_eq!(count(&s, "LOCAL_IN", "ipv4"), 50, "{s}");
    assert_eq!(count(&si, "LOCAL_IN", "ipv4"), 20, "{si}");
    assert_eq!(count(&sa, "LOCAL_IN", "ipv4"), 30, "{sa}");
}
