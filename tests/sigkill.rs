//! SIGKILL mid-run, with traffic flowing: nothing of the run may remain (its programs and
//! links, by id, pid and name; qdiscs and filters on the test's devices; namespaces; its run
//! record), or the next start must remove it (docs/cleanup.md says which). Someone else's
//! filter on the same device survives that cleanup. Every check is scoped to the test's own
//! namespaces and devices and to the killed run's programs.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{load_in, require_root, tool, Proc, Topo, TOOL};
use serde_json::Value;

const PORT: u16 = 9477;

fn bpftool(kind: &str) -> Vec<Value> {
    let out = Command::new("bpftool")
        .args([kind, "show", "--json"])
        .output()
        .expect("bpftool");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// (id, name) of the programs or links a run made: held by its pid when bpftool can tell,
/// else those new since it started (BPF runs are serialized by the shared lock).
fn held_by(kind: &str, pid: u32, before: &BTreeSet<u64>) -> Vec<(u64, String)> {
    let all = bpftool(kind);
    let by_pid = |o: &&Value| {
        o["pids"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["pid"] == pid))
    };
    let any_pids = all.iter().any(|o| o["pids"].is_array());
    all.iter()
        .filter(|o| {
            if any_pids {
                by_pid(o)
            } else {
                o["id"].as_u64().is_some_and(|i| !before.contains(&i))
            }
        })
        .map(|o| {
            let name = o["name"].as_str().unwrap_or_default().to_string();
            (o["id"].as_u64().unwrap_or(0), name)
        })
        .collect()
}

fn ids(kind: &str) -> BTreeSet<u64> {
    bpftool(kind)
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// Ids of programs named so.
fn prog_ids_named(names: &BTreeSet<String>) -> BTreeSet<u64> {
    bpftool("prog")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| names.contains(n)))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

fn sh_out(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tc(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["ip", "netns", "exec", ns, "tc"];
    a.extend(args);
    sh_out(&a)
}

/// qdiscs and filters of a device, as tc shows them.
fn tc_state(ns: &str, dev: &str) -> String {
    let mut s = tc(ns, &["qdisc", "show", "dev", dev]);
    for dir in ["ingress", "egress"] {
        s += &tc(ns, &["filter", "show", "dev", dev, dir]);
    }
    s
}

fn record(pid: u32) -> PathBuf {
    PathBuf::from(format!("/run/netstack-lat/{pid}.json"))
}

fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("nslnfb-{pid}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// What a killed run held, seen just before the kill.
struct Killed {
    pid: u32,
    progs: Vec<(u64, String)>,
    links: Vec<(u64, String)>,
    /// Program ids with the run's program names that existed before it started.
    named_before: BTreeSet<u64>,
}

/// Start the tool, run UDP from a to b, SIGKILL the tool while the traffic flows.
fn kill_mid_run(t: &Topo, args: &[&str]) -> Killed {
    let before = ids("prog");
    let links_before = ids("link");
    let p = tool(args);
    let pid = p.pid();
    let to = format!("{}:{PORT}", t.b4);
    // 4000 datagrams 1 ms apart: still sending at the kill, bounded at ~4 s.
    let traffic = load_in(
        &t.a,
        &[
            "udp-send",
            "--to",
            &to,
            "--count",
            "4000",
            "--interval-ms",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    let progs = held_by("prog", pid, &before);
    let links = held_by("link", pid, &links_before);
    assert!(!progs.is_empty(), "the run holds no programs: {args:?}");
    let mut traffic = traffic;
    assert!(
        traffic.child.try_wait().expect("wait").is_none(),
        "the traffic must still run at the kill"
    );
    kill(p);
    drop(traffic);
    let names: BTreeSet<String> = progs.iter().map(|(_, n)| n.clone()).collect();
    let named_before = prog_ids_named(&names)
        .into_iter()
        .filter(|i| before.contains(i))
        .collect();
    Killed {
        pid,
        progs,
        links,
        named_before,
    }
}

fn kill(p: Proc) {
    p.signal(libc::SIGKILL);
    let what = p.what.clone();
    let (code, _, _) = p.finish(Duration::from_secs(10));
    assert_eq!(code, None, "{what} must die of SIGKILL");
}

/// None of the run's programs or links left (by id, and no program of its names that was
/// not there before it), within a bound: the kernel frees them after an RCU grace period.
fn assert_bpf_gone(k: &Killed, what: &str) {
    let names: BTreeSet<String> = k.progs.iter().map(|(_, n)| n.clone()).collect();
    let left = || {
        let (p, l) = (ids("prog"), ids("link"));
        let progs: Vec<u64> = k
            .progs
            .iter()
            .map(|x| x.0)
            .filter(|i| p.contains(i))
            .collect();
        let links: Vec<u64> = k
            .links
            .iter()
            .map(|x| x.0)
            .filter(|i| l.contains(i))
            .collect();
        let named: Vec<u64> = prog_ids_named(&names)
            .into_iter()
            .filter(|i| !k.named_before.contains(i))
            .collect();
        (progs, links, named)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut l = left();
    while l != (vec![], vec![], vec![]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        l = left();
    }
    assert_eq!(
        l,
        (vec![], vec![], vec![]),
        "{what}: programs, links, programs by name left"
    );
}

/// The test's devices hold no qdisc or filter of the run, there is no run record, and the
/// test's namespaces are there (and no other of the run's).
fn assert_nothing_left(t: &Topo, k: &Killed, clean: &[(String, String)], what: &str) {
    assert_bpf_gone(k, what);
    for ((ns, dev), was) in [(&t.a, &t.va), (&t.b, &t.vb)].iter().zip(clean) {
        assert_eq!(&(ns.to_string(), tc_state(ns, dev)), was, "{what}: {dev}");
    }
    assert!(!record(k.pid).exists(), "{what}: run record left");
    assert_eq!(namespaces_of(k.pid), Vec::<String>::new(), "{what}");
    for ns in [&t.a, &t.b] {
        assert!(
            PathBuf::from(format!("/run/netns/{ns}")).exists(),
            "{what} removed the test's namespace"
        );
    }
}

fn clean_state(t: &Topo) -> Vec<(String, String)> {
    [(&t.a, &t.va), (&t.b, &t.vb)]
        .iter()
        .map(|(ns, dev)| (ns.to_string(), tc_state(ns, dev)))
        .collect()
}

/// One command killed mid-run; nothing of it may remain right away.
fn leaves_nothing(args: impl Fn(&Topo) -> Vec<String>, what: &str) {
    require_root();
    let t = Topo::new();
    let clean = clean_state(&t);
    let a = args(&t);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let k = kill_mid_run(&t, &a);
    assert_nothing_left(&t, &k, &clean, what);
}

/// A start of the tool after a kill (a short marker run elsewhere would do as well): the
/// sweep runs first; its stderr says what it removed.
fn next_start() -> String {
    let child = Command::new(TOOL)
        .args(["probes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netstack-lat");
    let p = Proc {
        child,
        what: "netstack-lat probes".into(),
        out: None,
        err: None,
    };
    let (code, _, err) = p.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "next start: {err}");
    err
}

fn netns(t: &Topo) -> String {
    t.netns_path(&t.b)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn trace_leaves_nothing() {
    leaves_nothing(
        |t| {
            let p = PORT.to_string();
            s(&["trace", "--netns", &netns(t), "--port", &p, "--json"])
        },
        "trace",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_leaves_nothing() {
    let listen = format!("127.0.0.1:{}", common::free_port());
    leaves_nothing(
        |t| {
            let p = PORT.to_string();
            s(&[
                "serve",
                "--listen",
                &listen,
                "--netns",
                &netns(t),
                "--port",
                &p,
            ])
        },
        "serve",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn softirq_leaves_nothing() {
    leaves_nothing(|_| s(&["softirq", "--json"]), "softirq");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn netfilter_leaves_nothing() {
    leaves_nothing(
        |t| {
            let p = PORT.to_string();
            s(&["netfilter", "--netns", &netns(t), "--port", &p, "--json"])
        },
        "netfilter",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn drops_leaves_nothing() {
    leaves_nothing(
        |_| s(&["drops", "--json", "--port", &PORT.to_string()]),
        "drops",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn signals_leaves_nothing() {
    leaves_nothing(
        |_| s(&["signals", "--json", "--port", &PORT.to_string()]),
        "signals",
    );
}

fn marker_args(t: &Topo, attach: &str) -> Vec<String> {
    let pa = format!("{}:egress@{}", t.va, t.a);
    let pb = format!("{}:ingress@{}", t.vb, t.b);
    s(&[
        "marker", "--iface", &pa, "--iface", &pb, "--port", "8000", "--json", "--attach", attach,
    ])
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn marker_tcx_leaves_nothing() {
    leaves_nothing(|t| marker_args(t, "tcx"), "marker --attach tcx");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn marker_clsact_is_removed_by_the_next_start() {
    require_root();
    let t = Topo::new();
    let clean = clean_state(&t);
    let a = marker_args(&t, "clsact");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let k = kill_mid_run(&t, &a);
    // The kernel keeps netlink-attached filters (and their programs) after the kill.
    for (ns, dev, dir) in [(&t.a, &t.va, "egress"), (&t.b, &t.vb, "ingress")] {
        let f = tc(ns, &["filter", "show", "dev", dev, dir]);
        assert!(f.contains("marker_p"), "{dev} {dir} after the kill: {f}");
        assert!(tc(ns, &["qdisc", "show", "dev", dev]).contains("clsact"));
    }
    assert!(record(k.pid).exists(), "the run record names them");
    let said = next_start();
    assert!(
        said.contains(&format!("pid {}", k.pid)) && said.contains("removed"),
        "{said}"
    );
    assert_nothing_left(&t, &k, &clean, "marker --attach clsact");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn bench_netfilter_is_removed_by_the_next_start() {
    require_root();
    let t = Topo::new();
    let clean = clean_state(&t);
    let a = s(&[
        "bench",
        "netfilter",
        "--rules",
        "100",
        "--backend",
        "nftables-map",
        "--rate",
        "1000",
        "--duration",
        "30",
        "--json",
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // The bench makes its own traffic between its own namespaces; the test's UDP runs too.
    let k = kill_mid_run(&t, &a);
    let left = namespaces_of(k.pid);
    assert_eq!(left.len(), 2, "the kernel keeps named namespaces: {left:?}");
    assert!(record(k.pid).exists(), "the run record names them");
    let said = next_start();
    assert!(
        said.contains(&format!("pid {}", k.pid)) && said.contains("removed"),
        "{said}"
    );
    assert_nothing_left(&t, &k, &clean, "bench netfilter");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn foreign_filters_and_qdiscs_survive_the_cleanup() {
    require_root();
    let t = Topo::new();
    // b's clsact qdisc and a filter on it are someone else's before the run starts.
    let u32_pass = |ns: &str, dev: &str, dir: &str| {
        common::sh(&[
            "ip", "netns", "exec", ns, "tc", "filter", "add", "dev", dev, dir, "protocol", "all",
            "prio", "7", "u32", "match", "u32", "0", "0",
        ]);
    };
    common::sh(&[
        "ip", "netns", "exec", &t.b, "tc", "qdisc", "add", "dev", &t.vb, "clsact",
    ]);
    u32_pass(&t.b, &t.vb, "ingress");
    let a = marker_args(&t, "clsact");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let before = ids("prog");
    let p = tool(&a);
    let pid = p.pid();
    // a's qdisc is the run's; someone adds a filter to it while the run is on.
    u32_pass(&t.a, &t.va, "egress");
    let progs = held_by("prog", pid, &before);
    kill(p);
    let said = next_start();
    assert!(said.contains("removed"), "{said}");
    for (ns, dev, dir) in [(&t.a, &t.va, "egress"), (&t.b, &t.vb, "ingress")] {
        let f = tc(ns, &["filter", "show", "dev", dev, dir]);
        assert!(!f.contains("marker_p"), "the run's filter on {dev}: {f}");
        assert!(
            f.contains("u32"),
            "the foreign filter on {dev} is gone: {f}"
        );
        assert!(tc(ns, &["qdisc", "show", "dev", dev]).contains("clsact"));
    }
    // The run's qdisc on a waits for the foreign filter, then a later start removes it.
    assert!(said.contains("stays"), "{said}");
    assert!(record(pid).exists());
    common::sh(&[
        "ip", "netns", "exec", &t.a, "tc", "filter", "del", "dev", &t.va, "egress", "prio", "7",
    ]);
    let said = next_start();
    assert!(
        said.contains("clsact qdisc") && said.contains("removed"),
        "{said}"
    );
    assert!(!tc(&t.a, &["qdisc", "show", "dev", &t.va]).contains("clsact"));
    assert!(!record(pid).exists());
    // b's qdisc was never the run's: it stays, with its filter.
    assert!(tc(&t.b, &["qdisc", "show", "dev", &t.vb]).contains("clsact"));
    let k = Killed {
        pid,
        progs,
        links: vec![],
        named_before: before,
    };
    assert_bpf_gone(&k, "marker --attach clsact");
}
