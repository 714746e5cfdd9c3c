//! The exporter against a real Prometheus (Debian's package) on loopback: it scrapes
//! `netstack-lat serve` while the test's own traffic flows, and the test asks Prometheus's
//! HTTP API what a user would: packets rising, the delayed reader's median, and every
//! expression of the Grafana dashboard.

mod common;

use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: the API's JSON answer.
fn query(prom: &str, expr: &str) -> Value {
    let (status, body) = get(prom, &format!("/api/v1/query?query={}", urlencode(expr)));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "query {expr}: {body}");
    v
}

fn first_value(v: &Value) -> Option<f64> {
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Prometheus with a 1 s scrape of `target`, its data in a temporary directory.
struct Prometheus {
    _proc: Proc,
    addr: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("nsl-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netstack-lat\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (make deps)");
        let p = Prometheus {
            _proc: Proc {
                child,
                what: "prometheus".into(),
                out: None,
                err: None,
            },
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&p.addr).is_err() || get(&p.addr, "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every `expr` in the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboard.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for p in v["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn prometheus_scrapes_serve_and_answers_like_trace() {
    common::require_root();
    // The delayed reader, as in rx_trace.rs. Prometheus interpolates inside a bucket, and
    // with every read in (25 ms, 50 ms] the median estimate is 37.5 ms: D = 35 ms keeps
    // [0.9 D, 1.3 D] = [31.5, 45.5] ms honest for buckets this wide.
    const D_MS: u64 = 35;
    const K: u64 = 12;
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let listen = format!("127.0.0.1:{}", free_port());
    let tool = tool(&[
        "serve", "--listen", &listen, "--netns", &nb, "--port", "9130",
    ]);
    let prom = Prometheus::start(&listen);
    // Prometheus has scraped at least once before the traffic.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        if let Some(v) = first_value(&query(&prom.addr, "sum(netstack_lat_packets_total)")) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "netstack_lat_packets_total never scraped"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    delayed_exchange(&t, "udp", &t.server(false, 9130), K, D_MS, 2 * D_MS);
    // Two scrapes after the last read.
    std::thread::sleep(Duration::from_millis(2500));

    let after = first_value(&query(&prom.addr, "sum(netstack_lat_packets_total)")).unwrap();
    assert!(
        after >= before + K as f64,
        "netstack_lat_packets_total rose from {before} to {after}"
    );
    let median = first_value(&query(
        &prom.addr,
        "histogram_quantile(0.5, sum by (le) (netstack_lat_span_latency_seconds_bucket{span=\"rx_sockq->rx_read\",proto=\"udp\"}))",
    ))
    .expect("a median for rx_sockq->rx_read");
    let dd = D_MS as f64 / 1000.0;
    assert!(
        (0.9 * dd..=1.3 * dd).contains(&median),
        "rx_sockq->rx_read median {median} s not within [0.9, 1.3] x {dd} s"
    );
    let reads = first_value(&query(
        &prom.addr,
        "sum(netstack_lat_span_latency_seconds_count{span=\"rx_sockq->rx_read\"})",
    ))
    .unwrap();
    assert_eq!(reads, K as f64, "every read once");

    // Every dashboard expression parses and has data.
    for expr in dashboard_exprs() {
        let v = query(&prom.addr, &expr);
        assert_eq!(v["status"], "success", "{expr}: {v}");
        let n = v["data"]["result"].as_array().map_or(0, |r| r.len());
        assert!(n > 0, "no data for dashboard expression {expr}: {v}");
    }
    let (code, _, _) = {
        tool.signal(libc::SIGINT);
        tool.finish(Duration::from_secs(20))
    };
    assert_eq!(code, Some(0));
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn concurrent_scrapes_answer_whole_and_never_show_payload() {
    common::require_root();
    let listen = format!("127.0.0.1:{}", free_port());
    // A port the kernel picked for this test: nothing else on the host sends to it.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let port = to.port().to_string();
    let tool = tool(&[
        "serve",
        "--listen",
        &listen,
        "--port",
        &port,
        "--per-connection-top",
        "5",
    ]);
    // Loopback datagrams whose payload carries a marker that must never be exported.
    let marker = "NSL-SECRET-PAYLOAD-7f3a";
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..50 {
        tx.send_to(marker.as_bytes(), to).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], marker.as_bytes());
    }
    std::thread::sleep(Duration::from_millis(1200));

    let bodies: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..50)
            .map(|_| s.spawn(|| get(&listen, "/metrics")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &bodies {
        assert_eq!(*status, 200);
        // Without an Accept header: the classic text format, whole (trace's last family
        // comes last).
        let last = body.lines().last().unwrap_or("");
        assert!(
            last.starts_with("netstack_lat_join_misses_total{why=\"tx_retransmit\"} "),
            "a whole exposition: {body}"
        );
        assert!(
            body.contains("netstack_lat_packets_total{direction=\"rx\"}"),
            "{body}"
        );
        assert!(
            body.contains("sport="),
            "per-connection series asked for: {body}"
        );
        assert!(!body.contains(marker), "payload bytes leaked into /metrics");
    }
    assert_eq!(get(&listen, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&listen, "/nope").0, 404);
    tool.signal(libc::SIGTERM);
    let (code, _, _) = tool.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
}

/// `promtool check metrics` on one exposition: any complaint (invalid format or a lint
/// problem) fails the test. promtool is part of the test's tools (scripts/deps.sh
/// installs it), so a missing promtool fails too instead of passing unchecked.
fn promtool_check(what: &str, body: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e} (install it with scripts/deps.sh)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // ebpf-network-latency's names, kept for its dashboards on purpose: promtool lints them
    // (and only them) as style problems.
    const SEED_NAMES: [&str; 2] = [
        "latency_histogram metric name should not include type 'histogram'",
        "packets_count non-histogram and non-summary metrics should not have \"_count\" suffix",
    ];
    let other: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty() && !SEED_NAMES.contains(&l.trim()))
        .collect();
    let lint_only = out.status.success() || out.status.code() == Some(3);
    assert!(
        lint_only && other.is_empty(),
        "promtool check metrics on {what}: {said}\n--- exposition ---\n{body}"
    );
}

/// Every family once: promtool does not catch a family split in two blocks.
fn assert_one_block_per_family(what: &str, body: &str) {
    let mut seen = std::collections::HashSet::new();
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split_whitespace().nth(2).unwrap_or("");
        assert!(seen.insert(name), "{what}: family {name} repeated:\n{body}");
    }
}

/// Scrape `listen` (after the exporter's next publish) and check it.
fn scrape_and_check(what: &str, listen: &str, must_have: &[&str]) {
    // Parts publish once a second.
    std::thread::sleep(Duration::from_millis(1300));
    let (status, body) = get(listen, "/metrics");
    assert_eq!(status, 200, "{what}: {body}");
    for name in must_have {
        assert!(body.contains(name), "{what}: no {name} in:\n{body}");
    }
    assert_one_block_per_family(what, &body);
    promtool_check(what, &body);
}

/// UDP both ways of the veth and a TCP exchange, so RX, TX, softirq and netfilter all
/// have series.
fn some_traffic(t: &Topo, port: u16) {
    udp_exchange(t, &t.server(false, port), 10, 5);
    delayed_exchange(t, "tcp", &t.server(false, port), 10, 0, 5);
}

fn stop_ok(p: Proc, what: &str) {
    p.signal(libc::SIGINT);
    let (code, _, err) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{what}: {err}");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_exposition_passes_promtool() {
    common::require_root();
    let _stats = BpfStats::enable();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    let listen = format!("127.0.0.1:{}", free_port());
    let p = tool(&[
        "serve",
        "--listen",
        &listen,
        "--netns",
        &nb,
        "--port",
        "9132",
        "--per-connection-top",
        "3",
    ]);
    some_traffic(&t, 9132);
    scrape_and_check(
        "serve",
        &listen,
        &[
            "netstack_lat_span_latency_seconds_bucket",
            "netstack_lat_connection_span_latency_seconds_bucket",
            "netstack_lat_softirq_runs_total",
            "netstack_lat_netfilter_verdicts_total",
            "netstack_lat_bpf_runs_total{part=\"softirq\"",
            "netstack_lat_bpf_runs_total{part=\"netfilter\"",
            "netstack_lat_bpf_runs_total{part=\"trace\"",
            "netstack_lat_part_up",
        ],
    );
    stop_ok(p, "serve");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn command_expositions_pass_promtool() {
    common::require_root();
    let t = Topo::new();
    let nb = t.netns_path(&t.b);
    for (cmd, port, must) in [
        ("trace", 9133, "netstack_lat_span_latency_seconds_bucket"),
        ("softirq", 9134, "netstack_lat_softirq_runs_total"),
        ("netfilter", 9135, "netstack_lat_netfilter_seconds_bucket"),
    ] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![cmd, "--prometheus", &listen];
        // softirq has no namespace filter: it counts every CPU's softirqs.
        if cmd != "softirq" {
            args.extend(["--netns", &nb]);
        }
        let p = tool(&args);
        some_traffic(&t, port);
        scrape_and_check(&format!("{cmd} --prometheus"), &listen, &[must]);
        stop_ok(p, cmd);
    }
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn marker_exposition_passes_promtool() {
    common::require_root();
    const N: &str = "10";
    let t = Topo::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let pa = format!("{}:egress@{}", t.va, t.a);
    let p = tool(&[
        "marker",
        "--iface",
        &pa,
        "--port",
        "9136",
        "--json",
        "--prometheus",
        &listen,
    ]);
    let src_addr = t.server(false, 9136).replace(&t.b4, &t.a4);
    let mut src = load_in(
        &t.a,
        &[
            "sse-source",
            "--bind",
            &src_addr,
            "--count",
            N,
            "--interval-ms",
            "20",
        ],
    );
    wait_ready(&mut src);
    let (code, _, err) = load_in(&t.b, &["sse-client", "--to", &src_addr, "--count", N])
        .finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "sse-client: {err}");
    let (code, _, err) = src.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "sse-source: {err}");
    scrape_and_check(
        "marker --prometheus",
        &listen,
        &[
            &format!("netstack_lat_marker_seen_total{{point=\"{pa}\"}} {N}"),
            &format!("netstack_lat_marker_intervals_total {N}"),
        ],
    );
    stop_ok(p, "marker");
}

/// The count of one span in a text exposition (all label sets summed); None when absent.
fn span_total(text: &str, span: &str) -> Option<f64> {
    let prefix = "netstack_lat_span_latency_seconds_count{";
    let needle = format!("span=\"{span}\"");
    let vals: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

/// `serve` is lean by default (no netfilter split, softirq context, tx_free or sys_enter
/// hooks) and still counts every packet of its spans; the four flags bring them back.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_is_lean_by_default_and_opt_ins_add_their_spans() {
    common::require_root();
    const K: u64 = 12;
    let before = bpf_state();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    for full in [false, true] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "serve", "--listen", &listen, "--netns", &na, "--netns", &nb, "--port", "9135",
        ];
        if full {
            args.extend([
                "--netfilter-split",
                "--softirq-context",
                "--tx-free",
                "--send-syscall",
            ]);
        }
        let serve = tool(&args);
        delayed_exchange(&t, "udp", &t.server(false, 9135), K, 5, 20);
        std::thread::sleep(Duration::from_millis(2500));
        let (status, text) = get(&listen, "/metrics");
        assert_eq!(status, 200);
        for span in [
            "rx_netif->rx_read",
            "rx_ip->rx_transport",
            "tx_driver->tx_done",
        ] {
            assert_eq!(
                span_total(&text, span),
                Some(K as f64),
                "full={full}: {span} once per datagram"
            );
        }
        for span in [
            "rx_ip->rx_nf_pre_done",
            "tx_transport->tx_nf_out_done",
            "rx_softirq_raise->rx_softirq_entry",
            // UDP's send time comes from the syscall's entry.
            "tx_send->tx_done",
        ] {
            let n = span_total(&text, span);
            if full {
                assert_eq!(n, Some(K as f64), "{span} with its flag");
            } else {
                assert_eq!(n, None, "{span} is opt-in");
            }
        }
        serve.signal(libc::SIGTERM);
        let (code, _, err) = serve.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{err}");
    }
    drop(t);
    assert_no_new_bpf(&before, "serve lean and full");
}

/// ebpf-network-latency's own names: `packets_count` (packets received) and
/// `latency_histogram` (ip_rcv -> ip_rcv_finish, the PRE_ROUTING time), beside `netfilter`
/// measuring the same traffic, without and with 3000 PREROUTING rules; its dashboard's
/// queries answer from a real Prometheus.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn seed_metric_names_agree_with_netfilter() {
    common::require_root();
    const N: u64 = 300;
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let mut medians = Vec::new();
    for rules in [0, 3000] {
        if rules > 0 {
            unmatched_rules(&t.b, "raw", "PREROUTING", rules);
        }
        let listen = format!("127.0.0.1:{}", free_port());
        let serve = tool(&[
            "serve", "--listen", &listen, "--netns", &na, "--netns", &nb, "--port", "9136",
        ]);
        let nf = tool(&[
            "netfilter",
            "--netns",
            &nb,
            "--hook",
            "PREROUTING",
            "-4",
            "--port",
            "9136",
            "--json",
        ]);
        let prom = (rules > 0).then(|| Prometheus::start(&listen));
        udp_exchange(&t, &t.server(false, 9136), N, 2);
        std::thread::sleep(Duration::from_millis(2500));
        let (_, text) = get(&listen, "/metrics");
        let s = stop_summary(nf);
        let pre = s["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hook"] == "PRE_ROUTING" && r["family"] == "ipv4")
            .unwrap_or_else(|| panic!("no PRE_ROUTING row: {s}"))
            .clone();
        assert_eq!(pre["count"], N, "{pre}");
        let count = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(count("latency_histogram_count"), N as f64, "rules {rules}");
        assert_eq!(
            count("packets_count"),
            N as f64,
            "received packets, rules {rules}"
        );
        // The same PRE_ROUTING time as netfilter's own run: its median in the bucket that
        // holds netfilter's (converted from fine buckets: a bound moves by at most 3%).
        let p50 = pre["latency"]["p50_ns"].as_f64().unwrap() / 1e9;
        let (lo, hi) = median_bucket(&text, "latency_histogram", &[]);
        assert!(
            lo * 0.97 < p50 && p50 <= hi * 1.03,
            "rules {rules}: latency_histogram median in ({lo}, {hi}] s, netfilter p50 {p50} s"
        );
        medians.push(p50);
        if let Some(prom) = &prom {
            for expr in [
                "packets_count",
                "rate(latency_histogram_count[1m])",
                "histogram_quantile(0.95, sum(rate(latency_histogram_bucket[1m])) by (le))",
            ] {
                // The first scrapes may still be on their way.
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let v = query(&prom.addr, expr);
                    assert_eq!(v["status"], "success", "{expr}: {v}");
                    if first_value(&v).is_some() {
                        break;
                    }
                    assert!(Instant::now() < deadline, "no data for {expr}: {v}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        serve.signal(libc::SIGTERM);
        let (code, _, err) = serve.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{err}");
    }
    // 3000 rule checks cost microseconds: the rules moved the median, as netfilter saw.
    assert!(
        medians[1] > 5.0 * medians[0],
        "PRE_ROUTING p50 without rules {} s, with 3000 {} s",
        medians[0],
        medians[1]
    );
}
