//! Privileged softirq tests: real BPF, real namespaces and packets, checked against the
//! kernel's own /proc/softirqs counters and the NAPI budget. Run serially.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// /proc/softirqs: vector name -> count per CPU.
fn proc_softirqs() -> BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string("/proc/softirqs").expect("/proc/softirqs");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let counts = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((name.trim().to_string(), counts))
        })
        .collect()
}

/// A UDP flood a -> b; returns (datagrams sent, datagrams the sink received).
fn flood(t: &Topo, port: u16, seconds: &str) -> (u64, u64) {
    let server = t.server(false, port);
    let mut sink = load_in(&t.b, &["udp-sink", "--bind", &server, "--seconds", seconds]);
    wait_ready(&mut sink);
    let f = load_in(&t.a, &["udp-flood", "--to", &server, "--seconds", seconds]);
    let (code, fout, _) = f.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let (_, out, _) = sink.finish(Duration::from_secs(30));
    let field = |text: &str, k: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v[k].as_u64())
            .unwrap_or(0)
    };
    (field(&fout, "sent"), field(&out, "received"))
}

/// Per CPU and vector, the tool's handler-run counts equal the deltas of /proc/softirqs
/// over the same window (the kernel counts right before the softirq_entry tracepoint),
/// within 2% plus a small constant for the window edges.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn counts_agree_with_proc_softirqs() {
    common::require_root();
    let t = Topo::new();
    let tool = tool(&["softirq", "--all", "--json", "--interval", "500ms"]);
    let before = proc_softirqs();
    let _ = flood(&t, 9301, "1.5");
    let after = proc_softirqs();
    let v = stop_summary(tool);
    let mut checked = 0;
    let mut net_rx = 0;
    for (name, a) in &after {
        let b = &before[name];
        for (cpu, (x, y)) in b.iter().zip(a).enumerate() {
            let delta = y - x;
            let row = v["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["vector"] == name.as_str() && r["cpu"] == cpu);
            let got = row.and_then(|r| r["count"].as_u64()).unwrap_or(0);
            let slack = delta / 50 + 50;
            assert!(
                got.abs_diff(delta) <= slack,
                "{name} cpu {cpu}: tool {got}, /proc/softirqs delta {delta} (slack {slack})"
            );
            checked += 1;
            if name == "NET_RX" {
                net_rx += delta;
            }
        }
    }
    assert!(checked >= 10, "{checked} rows checked");
    assert!(net_rx > 10_000, "the flood made NET_RX work: {net_rx}");
}

/// A veth with GRO on at the receiver runs NAPI: under a flood its polls show up with
/// batch sizes of more than one packet and never beyond the budget.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn napi_batches_stay_within_budget() {
    common::require_root();
    let t = Topo::new();
    sh(&[
        "ip", "netns", "exec", &t.b, "ethtool", "-K", &t.vb, "gro", "on",
    ]);
    sh(&[
        "ip", "netns", "exec", &t.a, "ethtool", "-K", &t.va, "tso", "off",
    ]);
    let tool = tool(&["softirq", "--json"]);
    let (sent, _) = flood(&t, 9302, "1.5");
    let v = stop_summary(tool);
    let rows: Vec<&Value> = v["napi"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dev"] == t.vb.as_str())
        .collect();
    let all = rows
        .iter()
        .find(|r| r["cpu"] == "all")
        .unwrap_or_else(|| panic!("no NAPI row for {}: {v}", t.vb));
    let budget = all["budget"].as_u64().unwrap();
    // veth registers its NAPI with the default weight, NAPI_POLL_WEIGHT: each poll's budget.
    assert_eq!(budget, 64, "{all}");
    assert!(all["polls"].as_u64().unwrap() > 100, "{all}");
    let max = all["batch"]["max"].as_u64().unwrap();
    assert!(
        max <= budget,
        "a batch of {max} beyond the budget {budget}: {all}"
    );
    // The distribution accounts for every poll and every packet, and no more packets were
    // polled than the flood sent. What the sink received is no bound: in one CI run only
    // 21789 of 783552 datagrams took vb's NAPI path, the rest the backlog.
    let buckets: Vec<u64> = all["batch"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let polls: u64 = buckets.iter().sum();
    let packets: u64 = buckets.iter().enumerate().map(|(w, n)| w as u64 * n).sum();
    assert_eq!(polls, all["polls"].as_u64().unwrap(), "{all}");
    assert_eq!(packets, all["packets"].as_u64().unwrap(), "{all}");
    // A fresh veth also carries a few packets of its own (IPv6 MLD reports and router
    // solicitations), which its NAPI polls too: seen as 4 beyond the flood in one CI run.
    assert!(
        packets <= sent + 32 && packets > 1000,
        "polled {packets} packets, the flood sent {sent} (+ at most 32 of the veth's own): {all}"
    );
    let full = all["full_budget"].as_u64().unwrap();
    let at_budget = all["batch"]["buckets"]
        .as_array()
        .unwrap()
        .get(budget as usize)
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    assert_eq!(
        full, at_budget,
        "full-budget polls are the polls at the budget: {all}"
    );
    // NET_RX ran, with delays and run times.
    let rx = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vector"] == "NET_RX" && r["cpu"] == "all")
        .unwrap();
    assert!(rx["run"]["count"].as_u64().unwrap() > 0, "{rx}");
}

/// Clean exit on --duration, SIGINT and SIGTERM: a summary, exit 0, nothing left.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn softirq_clean_exit() {
    common::require_root();
    let before = bpf_state();
    for ending in ["duration", "SIGINT", "SIGTERM"] {
        let mut args = vec!["softirq", "--json"];
        if ending == "duration" {
            args.extend(["--duration", "1s"]);
        }
        let p = tool(&args);
        let (code, out, _) = match ending {
            "duration" => p.finish(Duration::from_secs(20)),
            _ => {
                std::thread::sleep(Duration::from_millis(300));
                p.signal(if ending == "SIGINT" {
                    libc::SIGINT
                } else {
                    libc::SIGTERM
                });
                p.finish(Duration::from_secs(20))
            }
        };
        assert_eq!(code, Some(0), "{ending}");
        let v = summary_of(&out);
        assert_eq!(v["interrupted"], ending != "duration", "{ending}");
        assert_no_new_bpf(&before, ending);
    }
}

/// Ground truth for raise -> entry: `bench spin` holds the sending CPU in net_dev_xmit of
/// the client's veth, with bottom halves disabled, for a known time after veth raised
/// NET_RX for its peer. NET_RX's delay then follows the spin: p50 about the spin time and
/// p99 many times the idle baseline measured in the same test.
///
/// (The issue suggested a SCHED_FIFO hog to push NET_RX into a starved ksoftirqd. Since
/// Linux 6.5, softirqs pending at IRQ exit or BH enable run inline even while ksoftirqd
/// is runnable, so a hog leaves NET_RX alone: measured here with RPS steering a flood to
/// the hog's CPU, p99 2.1 -> 3.5 us and the ksoftirqd share 12% -> 2%. Held-off bottom
/// halves are the contention that delays it now.)
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn net_rx_delay_follows_a_known_bh_stall() {
    common::require_root();
    const SPIN_US: u64 = 300;
    const K: u64 = 200;
    let t = Topo::new();
    let server = t.server(false, 9303);
    let measure = || -> Value {
        let tool = tool(&["softirq", "--vector", "NET_RX", "--json"]);
        udp_exchange(&t, &server, K, 2);
        let v = stop_summary(tool);
        v["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["vector"] == "NET_RX" && r["cpu"] == "all")
            .cloned()
            .unwrap_or_else(|| panic!("no NET_RX row: {v}"))
    };
    let before = bpf_state();
    let base = measure();
    let netns = t.netns_path(&t.a);
    let us = SPIN_US.to_string();
    let spin = tool(&[
        "bench",
        "spin",
        "--netns",
        &netns,
        "--iface",
        &t.va,
        "--us",
        &us,
        "--duration",
        "30s",
    ]);
    let stalled = measure();
    // trace carries the same delay per packet.
    let nb = t.netns_path(&t.b);
    let tr = tool(&["trace", "--rx", "--netns", &nb, "--port", "9303", "--json"]);
    udp_exchange(&t, &server, 50, 2);
    let tv = stop_summary(tr);
    let ctx = span(&tv, "rx_softirq_raise->rx_softirq_entry")
        .unwrap_or_else(|| panic!("no softirq context span in trace: {tv}"))
        .clone();
    spin.signal(libc::SIGINT);
    let (code, out, _) = spin.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let spins: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(spins["spins"].as_u64().unwrap() >= K, "{spins}");

    let d = SPIN_US * 1000;
    let (b99, s50, s99) = (
        base["delay"]["p99_ns"].as_u64().unwrap(),
        stalled["delay"]["p50_ns"].as_u64().unwrap(),
        stalled["delay"]["p99_ns"].as_u64().unwrap(),
    );
    assert!(
        (d * 9 / 10..=d * 3 / 2).contains(&s50),
        "NET_RX delay p50 {s50} ns vs a {d} ns stall: {stalled}"
    );
    assert!(
        s99 >= 5 * b99,
        "p99 {s99} ns not 5x the baseline {b99} ns: {base} / {stalled}"
    );
    assert!(stalled["count"].as_u64().unwrap() >= K, "{stalled}");
    let t50 = ctx["p50_ns"].as_u64().unwrap();
    assert!(
        (d * 9 / 10..=d * 3 / 2).contains(&t50) && ctx["count"].as_u64().unwrap() >= 50,
        "trace's rx_softirq_raise->rx_softirq_entry p50 {t50} ns vs a {d} ns stall: {ctx}"
    );
    assert_no_new_bpf(&before, "softirq + bench spin");
}

/// `trace --no-softirq-context` attaches no softirq hooks and reports no context span; the
/// default run does both.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn trace_softirq_context_can_be_left_out() {
    common::require_root();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9304);
    for without in [false, true] {
        let mut args = vec!["trace", "--rx", "--netns", &nb, "--port", "9304", "--json"];
        if without {
            args.push("--no-softirq-context");
        }
        let tr = tool(&args);
        udp_exchange(&t, &server, 20, 0);
        let v = stop_summary(tr);
        let n = span_count(&v, "rx_softirq_raise->rx_softirq_entry");
        let hooked = v["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["point"] == "rx_softirq");
        if without {
            assert_eq!((n, hooked), (0, false), "{v}");
        } else {
            assert_eq!((n, hooked), (20, true), "{v}");
        }
    }
}
