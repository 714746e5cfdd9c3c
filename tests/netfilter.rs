//! `netstack-lat netfilter` and `bench netfilter` against real iptables and nftables rules in
//! namespaces of the test's own: drop verdicts counted exactly, rule walks that grow with
//! iptables and stay flat with verdict maps, and nothing left behind.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn out_of(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// What a run must leave as it found, of what the bench makes: its namespaces (nslnfb-*),
/// host links of its veth names (nfb*), host rules of its kube-proxy layout (KUBE-* chains,
/// table kube-proxy). Only those: another user of this host may change the rest meanwhile.
#[derive(Debug, PartialEq)]
struct HostState {
    netns: Vec<String>,
    links: Vec<String>,
    nft: Vec<String>,
    legacy: Vec<String>,
}

fn bench_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("KUBE-") || l.contains("kube-proxy"))
        .map(str::to_string)
        .collect()
}

fn host_state() -> HostState {
    let mut netns: Vec<String> = out_of(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n.starts_with("nslnfb-"))
        .collect();
    netns.sort();
    // Link names; counters and states change on their own.
    let links = out_of(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .filter(|n| n.starts_with("nfb"))
        .collect();
    HostState {
        netns,
        links,
        nft: bench_lines(&out_of(&["nft", "list", "ruleset"])),
        // Lists only tables already loaded: looking does not create them.
        legacy: bench_lines(&out_of(&["iptables-legacy-save"])),
    }
}

fn row<'a>(summary: &'a Value, hook: &str, family: &str) -> &'a Value {
    summary["hooks"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["hook"] == hook && r["family"] == family)
        })
        .unwrap_or_else(|| panic!("no {hook}/{family} row in {summary}"))
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drop_rule_gives_exactly_its_drop_verdicts() {
    common::require_root();
    let t = Topo::new();
    const DROPPED: u64 = 37;
    const PASSED: u64 = 50;
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.b,
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "7777",
        "-j",
        "DROP",
    ]);
    let ns = t.netns_path(&t.b);
    let all = tool(&[
        "netfilter",
        "--netns",
        &ns,
        "--hook",
        "INPUT",
        "-4",
        "--proto",
        "udp",
        "--json",
    ]);
    // A second run at the same time, filtered to the port that passes: the BPF-side filter
    // leaves the dropped packets out (counted as filtered). The kernel allows one BPF link
    // per hook and priority, so this one must step to the next free priority.
    let by_port = tool(&[
        "netfilter",
        "--netns",
        &ns,
        "--hook",
        "INPUT",
        "-4",
        "--port",
        "7000",
        "--json",
    ]);
    let to_drop = format!("{}:7777", t.b4);
    udp_send(&t.a, &to_drop, DROPPED, 2);
    udp_exchange(&t, &t.server(false, 7000), PASSED, 2);
    std::thread::sleep(Duration::from_millis(200));
    let s = stop_summary(all);
    let f = stop_summary(by_port);
    let rf = row(&f, "LOCAL_IN", "ipv4");
    assert_eq!(rf["verdicts"]["drop"], 0, "{rf}");
    assert_eq!(rf["count"], PASSED, "{rf}");
    assert_eq!(rf["filtered"], DROPPED, "{rf}");
    let r = row(&s, "LOCAL_IN", "ipv4");
    assert_eq!(r["verdicts"]["drop"], DROPPED, "{r}");
    assert_eq!(r["verdicts"]["accept"], PASSED, "{r}");
    assert_eq!(r["count"], PASSED, "{r}");
    assert!(r["drop_avg_ns"].as_u64().unwrap() > 0, "{r}");
    // Traversals through a filter table with one rule: well under a millisecond each.
    let lat = &r["latency"];
    assert!(lat["avg_ns"].as_u64().unwrap() > 0, "{r}");
    assert!(lat["p50_ns"].as_u64().unwrap() < 1_000_000, "{r}");
    assert_eq!(
        s["hooks"].as_array().unwrap().len(),
        1,
        "only the asked hook and family: {s}"
    );
}

/// Per (backend, rules): the step lines of `bench netfilter --json`.
fn steps(out: &str) -> BTreeMap<(String, u64), Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "step")
        .map(|v| {
            let key = (
                v["backend"].as_str().unwrap().to_string(),
                v["rules"].as_u64().unwrap(),
            );
            (key, v)
        })
        .collect()
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn rule_walk_grows_with_iptables_and_stays_flat_with_verdict_maps() {
    common::require_root();
    let before = host_state();
    let bpf_before = bpf_state();
    let dir = std::env::temp_dir().join(format!("nsl-nfbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, svg) = (dir.join("sweep.csv"), dir.join("sweep.svg"));
    let p = tool(&[
        "bench",
        "netfilter",
        "--rules",
        "100,5000",
        "--backend",
        "iptables-legacy,iptables-nft,nftables-map",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let (code, out, err) = p.finish(Duration::from_secs(300));
    assert_eq!(code, Some(0), "bench: {err}\n{out}");
    let st = steps(&out);
    assert_eq!(st.len(), 6, "{out}");
    for v in st.values() {
        let (sent, count) = (v["sent"].as_u64().unwrap(), v["count"].as_u64().unwrap());
        // 2000/s for 2 s, paced by the generator; each packet traverses PRE_ROUTING once.
        assert!((3600..=4100).contains(&sent), "{v}");
        assert!(count * 100 >= sent * 95 && count <= sent, "{v}");
    }
    let avg = |b: &str, n: u64| st[&(b.to_string(), n)]["avg_us"].as_f64().unwrap();
    for b in ["iptables-legacy", "iptables-nft"] {
        assert!(
            avg(b, 5000) >= 3.0 * avg(b, 100),
            "{b}: 5000 rules {} us vs 100 rules {} us",
            avg(b, 5000),
            avg(b, 100)
        );
    }
    let m = "nftables-map";
    assert!(
        avg(m, 5000) <= 2.0 * avg(m, 100),
        "{m}: 5000 rules {} us vs 100 rules {} us",
        avg(m, 5000),
        avg(m, 100)
    );

    let text = std::fs::read_to_string(&csv).expect("CSV written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..6],
        &["backend", "rules", "count", "avg_us", "p50_us", "p99_us"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "{text}");
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{text}");
        let v = &st[&(r[0].to_string(), r[1].parse().unwrap())];
        assert_eq!(r[2], v["count"].to_string(), "{text}");
    }
    let svg_text = std::fs::read_to_string(&svg).expect("SVG written");
    let doc = roxmltree::Document::parse(&svg_text).expect("SVG parses");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert_eq!(lines, 3, "one line per backend");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(host_state(), before, "bench left something behind");
    assert_no_new_bpf(&bpf_before, "bench netfilter");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn interrupted_sweep_leaves_nothing_behind() {
    common::require_root();
    let before = host_state();
    let bpf_before = bpf_state();
    // tool() returns once the first step is sending: its namespaces and rules exist.
    let p = tool(&[
        "bench",
        "netfilter",
        "--rules",
        "1000,2000",
        "--backend",
        "iptables-nft,nftables-map",
        "--rate",
        "1000",
        "--duration",
        "30",
        "--json",
    ]);
    let during = host_state();
    // The current step's pair (nslnfb-PID-STEP-c and -n), named by the bench's pid: which
    // step is running when we look depends on the machine's speed.
    let own = format!("nslnfb-{}-", p.pid());
    let pair = during.netns.iter().any(|c| {
        c.starts_with(&own)
            && c.ends_with("-c")
            && during.netns.contains(&format!("{}-n", &c[..c.len() - 2]))
    });
    assert!(
        pair,
        "the sweep's namespaces {own}*-c/-n exist while it runs: {during:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    p.signal(libc::SIGINT);
    let (code, out, err) = p.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    let s = summary_of(&out);
    assert_eq!(s["interrupted"], true, "{s}");
    assert_eq!(s["results"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(
        host_state(),
        before,
        "interrupted bench left something behind"
    );
    assert_no_new_bpf(&bpf_before, "interrupted bench netfilter");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn trace_splits_netfilter_time_by_hook() {
    common::require_root();
    let t = Topo::new();
    // 2000 rules on the receiver's INPUT and the sender's OUTPUT; none on the other hooks.
    unmatched_rules(&t.b, "filter", "INPUT", 2000);
    unmatched_rules(&t.a, "filter", "OUTPUT", 2000);
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let p = tool(&[
        "trace", "--netns", &na, "--netns", &nb, "--port", "7100", "-4", "--json",
    ]);
    udp_exchange(&t, &t.server(false, 7100), 200, 2);
    std::thread::sleep(Duration::from_millis(300));
    let s = stop_summary(p);
    let avg = |name: &str| -> f64 {
        let sp = span(&s, name).unwrap_or_else(|| panic!("no span {name} in {s}"));
        assert_eq!(sp["count"], 200, "{name}: {sp}");
        sp["avg_ns"].as_f64().unwrap()
    };
    let (pre, route, input) = (
        avg("rx_ip->rx_nf_pre_done"),
        avg("rx_nf_pre_done->rx_nf_in"),
        avg("rx_nf_in->rx_transport"),
    );
    let (out, route_tx, post) = (
        avg("tx_transport->tx_nf_out_done"),
        avg("tx_nf_out_done->tx_nf_post"),
        avg("tx_nf_post->tx_nf_done"),
    );
    // The rules are where the time went: 2000 rule checks cost microseconds, an empty hook
    // well under one.
    assert!(
        input > 2000.0 && input > 10.0 * pre,
        "LOCAL_IN {input} vs PRE_ROUTING {pre}"
    );
    assert!(
        out > 2000.0 && out > 10.0 * post,
        "LOCAL_OUT {out} vs POST_ROUTING {post}"
    );
    // The pieces add up to the stretch they split (each mean is of the same packets).
    let whole = avg("rx_ip->rx_transport");
    assert!(
        (pre + route + input - whole).abs() < 0.02 * whole + 10.0,
        "RX {pre}+{route}+{input} vs {whole}"
    );
    let whole = avg("tx_transport->tx_nf_done");
    assert!(
        (out + route_tx + post - whole).abs() < 0.02 * whole + 10.0,
        "TX {out}+{route_tx}+{post} vs {whole}"
    );
}
