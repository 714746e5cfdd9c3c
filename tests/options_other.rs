//! Options of softirq, serve, probes and bench, each against a control run: softirq --cpu
//! with traffic pinned by taskset, serve --no-softirq/--no-netfilter, probes --json against
//! the kernel's BTF, bench empty and bench frontend in their documented JSON form.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::opts::{json_lines, load_on_cpu, run_tool, sample_sum};
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

/// A short UDP flood a -> b with the sender pinned to `cpu`: on a veth the receive softirq
/// runs where the sender runs.
fn pinned_flood(t: &Topo, cpu: u32, port: u16) {
    let server = t.server(false, port);
    let mut sink = load_in(&t.b, &["udp-sink", "--bind", &server, "--seconds", "1"]);
    wait_ready(&mut sink);
    let f = load_on_cpu(
        &t.a,
        cpu,
        &[
            "udp-flood",
            "--to",
            &server,
            "--seconds",
            "0.5",
            "--max-packets",
            "200000",
        ],
    );
    let (code, _, err) = f.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-flood: {err}");
    let _ = sink.finish(Duration::from_secs(30));
}

/// The count of `vector` on `cpu` in a softirq summary (0 without such a row).
fn vector_count(s: &Value, vector: &str, cpu: u64) -> u64 {
    s["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vector"] == vector && r["cpu"] == cpu)
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0)
}

/// softirq --cpu 1 next to an unfiltered run, floods pinned first to CPU 0, then to CPU 1:
/// the filtered run has CPU 1's rows only, and its NET_RX count on CPU 1 is the kernel's
/// (/proc/softirqs); the unfiltered run has CPU 0's as well.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn softirq_cpu_keeps_that_cpu_only() {
    require_root();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        ncpu >= 2,
        "softirq --cpu needs two CPUs to test, this machine has {ncpu}"
    );
    let t = Topo::new();
    let one = tool(&["softirq", "--cpu", "1", "--json"]);
    let all = tool(&["softirq", "--json"]);
    let before = proc_softirqs();
    pinned_flood(&t, 0, 9520);
    pinned_flood(&t, 1, 9520);
    let after = proc_softirqs();
    let s1 = stop_summary(one);
    let s = stop_summary(all);
    let delta = |cpu: usize| after["NET_RX"][cpu] - before["NET_RX"][cpu];
    let (d0, d1) = (delta(0), delta(1));
    assert!(
        d0 > 1000 && d1 > 1000,
        "both floods made NET_RX work: {d0}, {d1}"
    );
    for r in s1["vectors"].as_array().unwrap() {
        assert!(
            r["cpu"] == 1 || r["cpu"] == "all",
            "a row of another CPU: {r}"
        );
    }
    assert_eq!(vector_count(&s1, "NET_RX", 0), 0, "{s1}");
    let got = vector_count(&s1, "NET_RX", 1);
    assert!(
        got.abs_diff(d1) <= d1 / 50 + 50,
        "CPU 1: tool {got}, kernel {d1}"
    );
    let got = vector_count(&s, "NET_RX", 0);
    assert!(
        got.abs_diff(d0) <= d0 / 50 + 50,
        "CPU 0: tool {got}, kernel {d0}"
    );
}

/// serve's softirq and netfilter parts are in /metrics by default and gone with
/// --no-softirq --no-netfilter, while the trace part counts the same K datagrams.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_leaves_out_softirq_and_netfilter_when_asked() {
    require_root();
    const K: u64 = 30;
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let server = t.server(false, 9521);
    for lean in [false, true] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "serve", "--listen", &listen, "--netns", &nb, "--port", "9521", "-4",
        ];
        if lean {
            args.extend(["--no-softirq", "--no-netfilter"]);
        }
        let p = tool(&args);
        udp_exchange(&t, &server, K, 1);
        let rx = |b: &str| sample_sum(b, "netstack_lat_packets_total", &[("direction", "rx")]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = loop {
            let (status, body) = get(&listen, "/metrics");
            assert_eq!(status, 200, "{body}");
            if rx(&body) == Some(K as f64) || Instant::now() > deadline {
                break body;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        p.signal(libc::SIGINT);
        let (code, _, err) = p.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(rx(&body), Some(K as f64), "{body}");
        let has = |prefix: &str| body.lines().any(|l| l.starts_with(prefix));
        let local_in = sample_sum(
            &body,
            "netstack_lat_netfilter_seconds_count",
            &[("hook", "LOCAL_IN"), ("family", "ipv4")],
        );
        if lean {
            assert!(!has("netstack_lat_softirq_"), "--no-softirq: {body}");
            assert!(!has("netstack_lat_netfilter_"), "--no-netfilter: {body}");
        } else {
            let runs = sample_sum(&body, "netstack_lat_softirq_runs_total", &[]);
            assert!(runs.unwrap_or(0.0) > 0.0, "softirq runs: {body}");
            assert_eq!(local_in, Some(K as f64), "{body}");
        }
    }
}

/// Does the running kernel's BTF have a tracepoint of this name (what tp_btf and raw_tp
/// attach to)?
fn btf_tracepoints() -> String {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool btf dump");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// probes --json is one JSON object naming, per point, the hooks that serve it; every
/// tracepoint it names exists in this kernel's BTF, and --hooks raw_tp changes the kinds
/// (netfilter points then have none). Without --json the table is not JSON.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn probes_json_names_the_hooks() {
    require_root();
    let (code, out, err) = run_tool(&["probes", "--json"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("probes --json is one JSON object");
    let points = v["points"].as_array().expect("points");
    let btf = btf_tracepoints();
    let mut named = 0;
    for p in points {
        let kind = p["kind"].as_str().unwrap_or("none");
        let hooks = p["hooks"].as_array().unwrap();
        for h in hooks.iter().map(|h| h.as_str().unwrap()) {
            if kind == "tp_btf" || kind == "raw_tp" {
                assert!(
                    btf.contains(&format!("'btf_trace_{h}'")),
                    "{h} of {p} is no tracepoint here"
                );
                named += 1;
            }
        }
    }
    assert!(named >= 10, "{v}");
    let kind_of = |v: &Value, point: &str| {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["point"] == point)
            .unwrap_or_else(|| panic!("no point {point} in {v}"))["kind"]
            .clone()
    };
    assert_eq!(kind_of(&v, "rx_netif"), "tp_btf", "{v}");
    assert_eq!(kind_of(&v, "rx_ip"), "netfilter", "{v}");
    let (code, out, err) = run_tool(
        &["probes", "--json", "--hooks", "raw_tp"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{err}");
    let r: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(kind_of(&r, "rx_netif"), "raw_tp", "{r}");
    assert_eq!(kind_of(&r, "rx_ip"), Value::Null, "{r}");
    let (code, out, _) = run_tool(&["probes"], Duration::from_secs(60));
    assert_eq!(code, Some(0));
    assert!(serde_json::from_str::<Value>(out.trim()).is_err(), "{out}");
}

/// bench empty attaches its do-nothing programs in the test's namespaces, counts their
/// runs (at least one per datagram the test sends), prints one JSON object
/// {hits, links, seconds, interrupted} and leaves nothing attached.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn bench_empty_counts_hits_and_cleans_up() {
    require_root();
    const K: u64 = 200;
    let before = bpf_state();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let mut child = std::process::Command::new(TOOL)
        .args([
            "bench",
            "empty",
            "--duration",
            "3s",
            "--netns",
            &na,
            "--netns",
            &nb,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bench empty");
    // Attached once its links exist; bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpf_state().1.len() <= before.1.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    udp_exchange(&t, &t.server(false, 9522), K, 1);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bench empty hangs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines.len(), 1, "one JSON object: {lines:?}");
    let v = &lines[0];
    assert!(v["hits"].as_u64().unwrap() >= 2 * K, "{v}");
    assert!(v["links"].as_u64().unwrap() > 0, "{v}");
    let secs = v["seconds"].as_f64().unwrap();
    assert!((2.9..10.0).contains(&secs), "{v}");
    assert_eq!(v["interrupted"], false, "{v}");
    drop(t);
    assert_no_new_bpf(&before, "bench empty");
}

/// bench frontend joins exactly the events asked for and prints {events, seconds,
/// events_per_s}; --prometheus adds one rendering's time and size.
#[test]
fn bench_frontend_prints_its_numbers() {
    for prometheus in [false, true] {
        let mut args = vec!["bench", "frontend", "--events", "100000"];
        if prometheus {
            args.push("--prometheus");
        }
        let (code, out, err) = run_tool(&args, Duration::from_secs(120));
        assert_eq!(code, Some(0), "{err}");
        let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(v["events"], 100000, "{v}");
        let (secs, rate) = (
            v["seconds"].as_f64().unwrap(),
            v["events_per_s"].as_f64().unwrap(),
        );
        assert!(secs > 0.0, "{v}");
        assert!((rate * secs - 100000.0).abs() < 1.0, "{v}");
        if prometheus {
            assert!(v["exposition_bytes"].as_u64().unwrap() > 0, "{v}");
            assert!(v["render_seconds"].as_f64().unwrap() > 0.0, "{v}");
        } else {
            assert!(v.get("exposition_bytes").is_none(), "{v}");
        }
    }
}

/// marker at an ingress point: b's ingress on the a-b link reads the three markers a writes
/// to b, every byte of them; b's egress on the same device (only ACKs leave there) reads
/// none.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn marker_reads_at_an_ingress_point() {
    require_root();
    let before = bpf_state();
    let t = Line3::new();
    let ingress = format!("{}:ingress@{}", t.vba, t.b);
    let egress = format!("{}:egress@{}", t.vba, t.b);
    let inp = tool(&["marker", "--iface", &ingress, "--port", "8000", "--json"]);
    let outp = tool(&["marker", "--iface", &egress, "--port", "8000", "--json"]);
    let to = format!("{}:8000", t.ba4);
    let mut sink = load_in(&t.b, &["tcp-sink", "--bind", &to]);
    wait_ready(&mut sink);
    let mut args = vec!["tcp-script", "--to", &to, "--gap-ms", "50"];
    let events = [
        r#"data: {"interval_id": 1}\n\n"#,
        r#"data: {"interval_id": 2}\n\n"#,
        r#"data: {"interval_id": 3}\n\n"#,
    ];
    for e in &events {
        args.extend(["--write", e]);
    }
    let (code, out, err) = load_in(&t.a, &args).finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-script: {err}");
    let written = serde_json::from_str::<Value>(out.trim()).expect("tcp-script JSON")["bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(sink.finish(Duration::from_secs(30)).0, Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let stop = |p: Proc| {
        p.signal(libc::SIGINT);
        let (code, out, err) = p.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{err}");
        json_lines(&out)
    };
    let (li, lo) = (stop(inp), stop(outp));
    let ids = |lines: &[Value]| -> Vec<u64> {
        lines
            .iter()
            .filter(|v| v["type"] == "marker")
            .map(|v| v["interval_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&li), vec![1, 2, 3], "{li:?}");
    assert_eq!(li.last().unwrap()["bytes"], written, "{li:?}");
    assert_eq!(ids(&lo), Vec::<u64>::new(), "{lo:?}");
    assert_eq!(lo.last().unwrap()["bytes"], 0, "{lo:?}");
    drop(t);
    assert_no_new_bpf(&before, "marker at ingress");
}
