//! `netstack-lat marker` against traffic the tests write themselves: an SSE source, a relay
//! that holds each event a known 30 ms, scripted segments with split and malformed markers,
//! and traffic on ports that must never be read.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    assert_no_new_bpf, bpf_state, load_in, summary_of, tool, wait_ready, Line3, Proc, TOOL,
};
use serde_json::Value;

/// A scratch directory for CSV files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("nsl-marker-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn point(dev: &str, ns: &str) -> String {
    format!("{dev}:egress@{ns}")
}

/// marker at a's egress (JSON lines) on `port`, with `extra` options.
fn watch_a(t: &Line3, port: &str, extra: &[&str]) -> Proc {
    let pa = point(&t.va, &t.a);
    let mut args = vec!["marker", "--iface", &pa, "--port", port, "--json"];
    args.extend(extra);
    tool(&args)
}

/// Stop the tool (SIGINT) and return its stdout.
fn stop(p: Proc) -> String {
    p.signal(libc::SIGINT);
    let (code, out, err) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "marker exit status; stderr: {err}");
    out
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn markers(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "marker").collect()
}

/// Run the scripted writes from `a` to a sink at `to` in `b`.
fn script(t: &Line3, to: &str, writes: &[&str]) -> u64 {
    let mut sink = load_in(&t.b, &["tcp-sink", "--bind", to]);
    wait_ready(&mut sink);
    let mut args = vec!["tcp-script", "--to", to, "--gap-ms", "50"];
    for w in writes {
        args.extend(["--write", w]);
    }
    let (code, out, err) = load_in(&t.a, &args).finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-script: {err}");
    let (code, _, err) = sink.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-sink: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("tcp-script JSON");
    v["bytes"].as_u64().expect("bytes written")
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn relay_delay_is_measured_for_every_interval() {
    common::require_root();
    const N: u64 = 50;
    const DELAY_MS: u64 = 30;
    let before = bpf_state();
    let t = Line3::new();
    let dir = Scratch::new("relay");
    let (a_csv, b_csv) = (dir.file("a.csv"), dir.file("b.csv"));
    let (pa, pb) = (point(&t.va, &t.a), point(&t.vbc, &t.b));
    let ports = "8000,8001";
    // One capture per point, as on two hosts, and one live run with both.
    let ma = tool(&["marker", "--iface", &pa, "--port", ports, "--csv", &a_csv]);
    let mb = tool(&["marker", "--iface", &pb, "--port", ports, "--csv", &b_csv]);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let live = tool(&[
        "marker",
        "--iface",
        &pa,
        "--iface",
        &pb,
        "--port",
        ports,
        "--json",
        "--prometheus",
        &listen,
    ]);

    // The DaemonSet's analyzer: both captures followed as they are written.
    let follow_listen = format!("127.0.0.1:{}", common::free_port());
    let follow = Command::new(TOOL)
        .args([
            "correlate",
            "--follow",
            &a_csv,
            &b_csv,
            "--json",
            "--interval",
            "300ms",
            "--prometheus",
            &follow_listen,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn correlate --follow");

    let src_addr = format!("{}:8000", t.a4);
    let relay_addr = format!("{}:8001", t.bc4);
    let (n, d) = (N.to_string(), DELAY_MS.to_string());
    let mut src = load_in(
        &t.a,
        &[
            "sse-source",
            "--bind",
            &src_addr,
            "--count",
            &n,
            "--interval-ms",
            "20",
        ],
    );
    wait_ready(&mut src);
    let mut relay = load_in(
        &t.b,
        &[
            "sse-relay",
            "--from",
            &src_addr,
            "--bind",
            &relay_addr,
            "--count",
            &n,
            "--delay-ms",
            &d,
        ],
    );
    wait_ready(&mut relay);
    let (code, _, err) = load_in(&t.c, &["sse-client", "--to", &relay_addr, "--count", &n])
        .finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "sse-client: {err}");
    for (p, what) in [(relay, "sse-relay"), (src, "sse-source")] {
        let (code, _, err) = p.finish(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{what}: {err}");
    }
    // The exporter publishes once a second.
    std::thread::sleep(Duration::from_millis(1300));
    let (status, metrics) = common::get(&listen, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let (status, followed) = common::get(&follow_listen, "/metrics");
    assert_eq!(status, 200, "{followed}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(follow.id() as i32, libc::SIGINT) };
    let fout = follow.wait_with_output().unwrap();
    assert_eq!(
        fout.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fout.stderr)
    );
    let fsum: Value = serde_json::from_str(
        String::from_utf8_lossy(&fout.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(fsum["type"], "summary", "{fsum}");
    assert_eq!(fsum["count"], N, "{fsum}");
    assert_eq!(fsum["errors"], 0, "{fsum}");
    let fsample = |le: &str| -> f64 {
        followed
            .lines()
            .find(|l| {
                l.starts_with("netstack_lat_marker_latency_seconds_bucket")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no bucket {le} in {followed}"))
    };
    // The relay's 30 ms is the floor; its median within (25, 50] ms.
    assert_eq!(fsample("0.025"), 0.0, "{followed}");
    assert!(fsample("0.05") >= N as f64 / 2.0, "{followed}");
    assert_eq!(fsample("+Inf"), N as f64, "{followed}");
    let (out_a, out_b) = (stop(ma), stop(mb));
    let live_out = stop(live);
    assert!(out_a.contains(&format!("{N} intervals seen")), "{out_a}");
    assert!(out_b.contains(&format!("{N} intervals seen")), "{out_b}");

    let out = Command::new(TOOL)
        .args(["correlate", &a_csv, &b_csv, "--json"])
        .output()
        .expect("correlate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = summary_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["count"], N, "{v}");
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["out_of_order"], serde_json::json!([]), "{v}");
    assert_eq!(v["duplicates_from"], 0, "{v}");
    assert_eq!(v["duplicates_to"], 0, "{v}");
    let ms = |k: &str| v[k].as_i64().unwrap_or(-1) as f64 / 1e6;
    // The relay cannot forward before its 30 ms; the rest is scheduling.
    assert!(ms("min_ns") >= DELAY_MS as f64, "{v}");
    assert!(
        (DELAY_MS as f64..=DELAY_MS as f64 + 10.0).contains(&ms("p50_ns")),
        "{v}"
    );

    // The live pair of the run that watched both points says the same.
    let lines = json_lines(&live_out);
    let s = lines.last().expect("live summary");
    assert_eq!(s["type"], "summary", "{live_out}");
    assert_eq!(markers(&lines).len() as u64, 2 * N, "{live_out}");
    // Each interval once, each sighting (interval x point) once.
    assert_eq!(s["intervals"], N, "{s}");
    assert_eq!(s["seen"], 2 * N, "{s}");
    let pair = &s["pairs"][0];
    assert_eq!(pair["from"], pa.as_str(), "{s}");
    assert_eq!(pair["count"], N, "{s}");
    assert_eq!(pair["missing"], serde_json::json!([]), "{s}");
    let p50 = pair["p50_ns"].as_i64().unwrap_or(0) as f64 / 1e6;
    assert!(
        (DELAY_MS as f64..=DELAY_MS as f64 + 10.0).contains(&p50),
        "{s}"
    );
    assert_eq!(s["lost_events"], 0, "{s}");

    // Prometheus: every interval in the pair's histogram, none below the relay's 30 ms.
    let sample = |name: &str, le: Option<&str>| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains(&format!("from=\"{pa}\""))
                    && le.is_none_or(|b| l.contains(&format!("le=\"{b}\"")))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {le:?} in {metrics}"))
    };
    assert_eq!(
        sample("netstack_lat_marker_latency_seconds_count", None),
        N as f64
    );
    assert_eq!(
        sample("netstack_lat_marker_latency_seconds_bucket", Some("0.025")),
        0.0
    );
    assert!(
        metrics.contains(&format!(
            "netstack_lat_marker_seen_total{{point=\"{pb}\"}} {N}"
        )),
        "{metrics}"
    );
    drop(t);
    assert_no_new_bpf(&before, "marker");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn a_large_write_is_read_whole() {
    common::require_root();
    // 1000 events in one write: one GSO super-packet at the veth, read in many chunks.
    const N: u64 = 1000;
    let before = bpf_state();
    let t = Line3::new();
    let p = watch_a(&t, "8000", &[]);
    let big: String = (1..=N)
        .map(|i| format!(r#"data: {{"interval_id": {i}, "position": {}}}\n\n"#, i * 2))
        .collect();
    let written = script(&t, &format!("{}:8000", t.ba4), &[&big]);
    std::thread::sleep(Duration::from_millis(300));
    let out = stop(p);
    let lines = json_lines(&out);
    let m = markers(&lines);
    assert_eq!(m.len() as u64, N, "{}", lines.last().unwrap());
    for (i, v) in m.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(
            (v["interval_id"].as_u64(), v["position"].as_u64()),
            (Some(id), Some(2 * id))
        );
    }
    let s = lines.last().unwrap();
    // Segments longer than one 1 KiB chunk (GSO ones are tens of KiB) were read whole.
    let per_segment = written / s["segments"].as_u64().unwrap_or(u64::MAX).max(1);
    assert!(per_segment > 1024, "{s}");
    assert_eq!(s["bytes"], written, "{s}");
    assert_eq!(
        (s["missed"].as_u64(), s["gaps"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(s["truncated_bytes"], 0, "{s}");
    assert_eq!(s["lost_events"], 0, "{s}");
    drop(t);
    assert_no_new_bpf(&before, "marker");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn split_several_and_malformed_markers_over_ipv6() {
    common::require_root();
    let before = bpf_state();
    let t = Line3::new();
    let p = watch_a(&t, "8000", &[]);
    let to = format!("[{}]:8000", t.ba6);
    let written = script(
        &t,
        &to,
        &[
            // Three events in one segment.
            r#"data: {"interval_id": 1, "position": 10}\n\ndata: {"position":20,"interval_id":2}\n\ndata: {"interval_id":3}\n\n"#,
            // One marker split inside its value, over two segments.
            r#"data: {"interval_id": 4"#,
            r#"2, "position": 420}\n\n"#,
            // Malformed: never a marker, counted.
            r#"data: {"interval_id": "abc"}\n\ndata: {"interval_id": 5.5}\n\ndata: {"interval_id": }\n\n"#,
            // Look-alikes: not markers at all.
            r#"data: {"note": "interval_id", "interval_idx": 7}\n\n"#,
            r#"data: {"interval_id": 6}\n\n"#,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = stop(p);
    let lines = json_lines(&out);
    let m = markers(&lines);
    let got: Vec<(u64, Option<u64>)> = m
        .iter()
        .map(|v| (v["interval_id"].as_u64().unwrap(), v["position"].as_u64()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(10)),
            (2, Some(20)),
            (3, None),
            (42, Some(420)),
            (6, None)
        ],
        "{out}"
    );
    for v in &m {
        assert_eq!(v["src"], t.a6.as_str(), "{v}");
        assert_eq!(v["dport"], 8000, "{v}");
    }
    let ts: Vec<u64> = m
        .iter()
        .map(|v| v["timestamp_ns"].as_u64().unwrap())
        .collect();
    // The three of one segment share its time; the split one has its second segment's,
    // two 50 ms gaps later.
    assert!(ts[0] == ts[1] && ts[1] == ts[2], "{ts:?}");
    assert!(ts[3] - ts[2] >= 90_000_000, "{ts:?}");
    let s = lines.last().unwrap();
    assert_eq!(s["unparseable"], 3, "{s}");
    assert_eq!(s["missed"], 0, "{s}");
    assert_eq!(s["duplicates"], 0, "{s}");
    assert_eq!(s["bytes"], written, "{s}");
    drop(t);
    assert_no_new_bpf(&before, "marker");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn other_ports_are_never_read() {
    common::require_root();
    let before = bpf_state();
    let t = Line3::new();
    let p = watch_a(&t, "8000", &[]);
    let other = format!("{}:9000", t.ba4);
    let watched = format!("{}:8000", t.ba4);
    let event = r#"data: {"interval_id": 100}\n\n"#;
    script(&t, &other, &[event, event, event]);
    let written = script(&t, &watched, &[r#"data: {"interval_id": 1}\n\n"#]);
    std::thread::sleep(Duration::from_millis(300));
    let out = stop(p);
    let lines = json_lines(&out);
    let ids: Vec<u64> = markers(&lines)
        .iter()
        .map(|v| v["interval_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1], "{out}");
    let s = lines.last().unwrap();
    // Exactly the one watched write was read: none of port 9000's bytes.
    assert_eq!(s["segments"], 1, "{s}");
    assert_eq!(s["bytes"], written, "{s}");
    drop(t);
    assert_no_new_bpf(&before, "marker");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn clsact_fallback_leaves_no_qdisc_after_sigterm() {
    common::require_root();
    let before = bpf_state();
    let t = Line3::new();
    let p = watch_a(&t, "8000", &["--attach", "clsact"]);
    let qdiscs = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &t.a, "tc", "qdisc", "show", "dev", &t.va])
            .output()
            .expect("tc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(qdiscs().contains("clsact"), "{}", qdiscs());
    let written = script(
        &t,
        &format!("{}:8000", t.ba4),
        &[r#"data: {"interval_id": 9}\n\n"#],
    );
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGTERM);
    let (code, out, err) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let lines = json_lines(&out);
    assert_eq!(markers(&lines).len(), 1, "{out}");
    assert_eq!(lines.last().unwrap()["bytes"], written, "{out}");
    assert!(!qdiscs().contains("clsact"), "{}", qdiscs());
    drop(t);
    assert_no_new_bpf(&before, "marker --attach clsact");
}
