//! Prometheus exposition. The run loops own the data: every so often each one publishes its
//! part (trace, softirq, netfilter, the tool's health) as plain values; an HTTP request
//! encodes the latest parts with prometheus-client's text encoder. Nothing here runs per
//! packet except [`PromHist::record`](crate::stats::prom_hist::PromHist::record), and only for the labelled span histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::UserError;
use crate::sink::prom::http::{Dropped, Handler, Response, Server, Stats};
use crate::stats::prom_hist::PromHist;

/// One value of a series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    Hist(PromHist),
}

pub type Labels = Vec<(String, String)>;

/// A metric family: name (counters without the `_total` the encoder adds), help, series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub series: Vec<(Labels, Value)>,
    /// Several parts publish this family (the BPF cost of their own programs): each series
    /// gets a `part` label when published, so one family holds them all apart.
    pub per_part: bool,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            series: Vec::new(),
            per_part: false,
        }
    }

    pub fn per_part(mut self) -> Family {
        self.per_part = true;
        self
    }

    pub fn with(mut self, labels: &[(&str, &str)], v: Value) -> Family {
        self.push(labels, v);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], v: Value) {
        let l = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.push((l, v));
    }
}

/// The latest published parts, by name; shared by the run loop and the HTTP threads.
#[derive(Debug, Default)]
pub struct Exporter {
    parts: Mutex<BTreeMap<&'static str, Arc<Vec<Family>>>>,
    /// What /healthz says besides "ok": parts of the host not covered, one line each.
    problems: Mutex<Vec<String>>,
}

impl Exporter {
    pub fn new() -> Arc<Exporter> {
        Arc::new(Exporter::default())
    }

    /// Record what is not covered (one line each; none: healthy), for /healthz.
    pub fn set_health(&self, problems: Vec<String>) {
        if let Ok(mut p) = self.problems.lock() {
            *p = problems;
        }
    }

    /// The /healthz body: "ok", or "degraded" and what is missing.
    pub fn health_text(&self) -> String {
        match self.problems.lock() {
            Ok(p) if !p.is_empty() => format!("degraded\n{}\n", p.join("\n")),
            _ => "ok\n".to_string(),
        }
    }

    /// Replace one part (e.g. "trace") with its newest values.
    pub fn publish(&self, part: &'static str, mut families: Vec<Family>) {
        for f in families.iter_mut().filter(|f| f.per_part) {
            for (labels, _) in &mut f.series {
                labels.insert(0, ("part".to_string(), part.to_string()));
            }
        }
        if let Ok(mut p) = self.parts.lock() {
            p.insert(part, Arc::new(families));
        }
    }

    fn parts(&self) -> Parts {
        Parts(match self.parts.lock() {
            Ok(p) => p.values().cloned().collect(),
            Err(_) => Vec::new(),
        })
    }

    /// The OpenMetrics exposition of every part.
    pub fn render(&self) -> String {
        let mut reg = Registry::default();
        reg.register_collector(Box::new(self.parts()));
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &reg);
        s
    }
    /// The same in Prometheus's classic text format (0.0.4), where a counter's family
    /// is named with its `_total` and there is no `# EOF`: what promtool and most
    /// scrapers other than Prometheus itself read.
    pub fn render_text(&self) -> String {
        let parts = self.parts();
        let mut s = String::new();
        for (f, series) in parts.merged() {
            let (kind, suffix) = match series.first().map(|s| &s.1) {
                None => continue,
                Some(Value::Counter(_)) => ("counter", "_total"),
                Some(Value::Hist(_)) => ("histogram", ""),
                Some(Value::Gauge(_)) => ("gauge", ""),
            };
            let name = format!("{}{suffix}", f.name);
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in series {
                match v {
                    Value::Counter(c) => {
                        let _ = writeln!(s, "{name}{} {c}", label_text(labels, None));
                    }
                    Value::Gauge(g) => {
                        let _ = writeln!(s, "{name}{} {}", label_text(labels, None), float(*g));
                    }
                    Value::Hist(h) => {
                        let mut cum = 0;
                        for (le, n) in h.buckets() {
                            cum += n;
                            let l = label_text(labels, Some(&float(le)));
                            let _ = writeln!(s, "{name}_bucket{l} {cum}");
                        }
                        let l = label_text(labels, None);
                        let _ = writeln!(s, "{name}_sum{l} {}", float(h.sum_ns as f64 / 1e9));
                        let _ = writeln!(s, "{name}_count{l} {}", h.count());
                    }
                }
            }
        }
        s
    }
}

/// `{k="v",...}` with the text format's escapes, and `le` last for a bucket; "" when empty.
fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A sample value as Go's ParseFloat reads it (Rust spells infinity "inf").
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

#[derive(Debug)]
struct Parts(Vec<Arc<Vec<Family>>>);

impl Parts {
    /// Each family once, in order of first appearance, with the series of every part that
    /// publishes it: the exposition format allows one block per name (`serve` runs trace,
    /// softirq and netfilter, each with its BPF cost). A label set already there is not
    /// repeated (every part reports `netstack_lat_bpf_stats_enabled`, with the same value).
    fn merged(&self) -> Vec<(&Family, Vec<&(Labels, Value)>)> {
        let mut out: Vec<(&Family, Vec<&(Labels, Value)>)> = Vec::new();
        for f in self.0.iter().flat_map(|p| p.iter()) {
            let i = match out.iter().position(|(g, _)| g.name == f.name) {
                Some(i) => i,
                None => {
                    out.push((f, Vec::new()));
                    out.len() - 1
                }
            };
            let kept = &mut out[i].1;
            for s in &f.series {
                // One type per family: a series of another type (a bug) is left out
                // rather than making the whole exposition invalid.
                let same_type = kept
                    .first()
                    .is_none_or(|k| std::mem::discriminant(&k.1) == std::mem::discriminant(&s.1));
                if same_type && !kept.iter().any(|k| k.0 == s.0) {
                    kept.push(s);
                }
            }
        }
        out
    }
}

impl Collector for Parts {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (f, series) in self.merged() {
            let kind = match series.first().map(|s| &s.1) {
                None => continue,
                Some(Value::Counter(_)) => MetricType::Counter,
                Some(Value::Hist(_)) => MetricType::Histogram,
                Some(Value::Gauge(_)) => MetricType::Gauge,
            };
            let mut m = enc.encode_descriptor(f.name, f.help, None, kind)?;
            for (labels, v) in series {
                if labels.is_empty() {
                    encode_value(&mut m, v)?;
                } else {
                    encode_value(&mut m.encode_family(labels)?, v)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(m: &mut MetricEncoder<'_>, v: &Value) -> Result<(), std::fmt::Error> {
    match v {
        Value::Counter(c) => m.encode_counter::<NoLabelSet, _, u64>(c, None),
        Value::Gauge(g) => m.encode_gauge(g),
        Value::Hist(h) => {
            m.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count(), &h.buckets(), None)
        }
    }
}

/// run_time_ns and run_cnt of a loaded program (non-zero only with kernel.bpf_stats_enabled).
pub fn prog_run_stats(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a valid, writable bpf_prog_info of `len` bytes; fd is a program fd.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    (r == 0).then_some((info.run_time_ns, info.run_cnt))
}

/// The tool's own cost, per program: from bpf_stats when enabled (else zeros, and the
/// `netstack_lat_bpf_stats_enabled` gauge says why).
pub fn bpf_families(progs: &[(String, u64, u64)]) -> Vec<Family> {
    let mut time = Family::new(
        "netstack_lat_bpf_run_time_seconds",
        "Time spent in the tool's BPF programs (kernel bpf_stats)",
    );
    let mut runs = Family::new(
        "netstack_lat_bpf_runs",
        "Runs of the tool's BPF programs (kernel bpf_stats)",
    );
    let mut per = Family::new(
        "netstack_lat_bpf_seconds_per_run",
        "Mean time per run of each BPF program since it was loaded (kernel bpf_stats)",
    );
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, t, c) in progs {
        let e = by_name.entry(name.clone()).or_default();
        e.0 += t;
        e.1 += c;
    }
    for (name, (t, c)) in &by_name {
        let l = [("program", name.as_str())];
        time.push(&l, Value::Gauge(*t as f64 / 1e9));
        runs.push(&l, Value::Counter(*c));
        per.push(
            &l,
            Value::Gauge(if *c > 0 {
                *t as f64 / 1e9 / *c as f64
            } else {
                0.0
            }),
        );
    }
    let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    // run_time is cumulative but starts from zero whenever bpf_stats is switched on, so it
    // is exposed as a gauge of CPU seconds, with the counter of runs beside it.
    vec![
        time.per_part(),
        runs.per_part(),
        per.per_part(),
        Family::new(
            "netstack_lat_bpf_stats_enabled",
            "1 when kernel.bpf_stats_enabled is on (the BPF cost figures need it)",
        )
        .with(&[], Value::Gauge(if enabled { 1.0 } else { 0.0 })),
    ]
}

/// The HTTP endpoint: `/metrics` (the exporter's parts), `/healthz`. Stops when dropped.
pub struct Endpoint {
    pub addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// OpenMetrics, which prometheus-client's encoder writes, for clients that ask for it
/// (Prometheus does); the classic text format for everyone else (curl, promtool).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Endpoint {
    /// Bind at once, so a bad address is reported before any BPF is loaded.
    pub fn start(listen: &str, exporter: Arc<Exporter>) -> Result<Endpoint, UserError> {
        let server = Server::bind(listen)?;
        let addr = server.local_addr();
        let stats = server.stats();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(move |path: &str, accept: &str| {
            if path == "/metrics" {
                exporter.publish("http", http_families(&stats));
            }
            match path {
                "/metrics" if accept.contains("application/openmetrics-text") => Response {
                    status: 200,
                    content_type: OPENMETRICS,
                    body: exporter.render().into_bytes(),
                },
                "/metrics" => Response {
                    status: 200,
                    content_type: TEXT,
                    body: exporter.render_text().into_bytes(),
                },
                // Still 200 when degraded: a restart would not attach what the kernel refused.
                "/healthz" => Response {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: exporter.health_text().into_bytes(),
                },
                _ => Response {
                    status: 404,
                    content_type: "text/plain; charset=utf-8",
                    body: b"not found: try /metrics or /healthz\n".to_vec(),
                },
            }
        });
        let thread = Some(server.spawn(handler, Arc::clone(&stop)));
        Ok(Endpoint { addr, stop, thread })
    }
}

/// The endpoint's own state: open connections and those it cut off, by reason.
pub fn http_families(stats: &Stats) -> Vec<Family> {
    let mut dropped = Family::new(
        "netstack_lat_http_connections_dropped",
        "Connections the metrics endpoint closed unserved, by reason (see docs/http.md)",
    );
    for why in Dropped::ALL {
        dropped.push(
            &[("reason", why.label())],
            Value::Counter(stats.dropped(why)),
        );
    }
    vec![
        Family::new(
            "netstack_lat_http_open_connections",
            "Connections open to the metrics endpoint",
        )
        .with(&[], Value::Gauge(stats.open() as f64)),
        dropped,
    ]
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_speaks_the_text_format() {
        let e = Exporter::new();
        let mut h = PromHist::default();
        h.record(3000);
        h.record(40_000);
        e.publish(
            "trace",
            vec![
                Family::new("packets_count", "Packets seen")
                    .with(&[("direction", "rx")], Value::Gauge(2.0)),
                Family::new("netstack_lat_lost_events", "Lost").with(&[], Value::Counter(0)),
                Family::new("netstack_lat_span_latency_seconds", "Span latency").with(
                    &[("span", "rx_sockq->rx_read"), ("proto", "udp")],
                    Value::Hist(h),
                ),
                Family::new("netstack_lat_empty", "No series"),
            ],
        );
        let t = e.render();
        assert!(t.contains("# TYPE packets_count gauge"), "{t}");
        assert!(t.contains("packets_count{direction=\"rx\"} 2"), "{t}");
        assert!(t.contains("netstack_lat_lost_events_total 0"), "{t}");
        assert!(
            t.contains("_bucket{le=\"0.000005\",span=\"rx_sockq->rx_read\",proto=\"udp\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("le=\"+Inf\",span=\"rx_sockq->rx_read\",proto=\"udp\"} 2"),
            "{t}"
        );
        assert!(t.contains("netstack_lat_span_latency_seconds_count{span=\"rx_sockq->rx_read\",proto=\"udp\"} 2"), "{t}");
        assert!(!t.contains("netstack_lat_empty"), "{t}");
        assert!(t.trim_end().ends_with("# EOF"), "{t}");
        // A newer publish of the same part replaces it.
        e.publish("trace", vec![]);
        assert!(!e.render().contains("packets_count"));
    }

    #[test]
    fn parts_share_a_family_once_each_part_labelled() {
        let e = Exporter::new();
        let cost = |prog: &str, runs| {
            vec![
                Family::new("netstack_lat_bpf_runs", "Runs")
                    .with(&[("program", prog)], Value::Counter(runs))
                    .per_part(),
                Family::new("netstack_lat_bpf_stats_enabled", "On").with(&[], Value::Gauge(1.0)),
            ]
        };
        // The same program name in two parts stays two series.
        e.publish("trace", cost("softirq_entry", 3));
        e.publish("softirq", cost("softirq_entry", 5));
        for t in [e.render(), e.render_text()] {
            assert_eq!(t.matches("# TYPE netstack_lat_bpf_runs").count(), 1, "{t}");
            assert_eq!(
                t.matches("# TYPE netstack_lat_bpf_stats_enabled").count(),
                1,
                "{t}"
            );
            assert_eq!(
                t.matches("netstack_lat_bpf_stats_enabled 1").count(),
                1,
                "{t}"
            );
            assert!(
                t.contains(
                    "netstack_lat_bpf_runs_total{part=\"trace\",program=\"softirq_entry\"} 3"
                ),
                "{t}"
            );
            assert!(
                t.contains(
                    "netstack_lat_bpf_runs_total{part=\"softirq\",program=\"softirq_entry\"} 5"
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn classic_text_names_counters_with_total_and_accumulates_buckets() {
        let e = Exporter::new();
        let mut h = PromHist::default();
        h.record(3000);
        h.record(40_000);
        e.publish(
            "trace",
            vec![
                Family::new("netstack_lat_events", "Events\nread").with(&[], Value::Counter(7)),
                Family::new("netstack_lat_span_latency_seconds", "Span latency")
                    .with(&[("span", "a\"b")], Value::Hist(h)),
                Family::new("netstack_lat_up", "Up").with(&[], Value::Gauge(f64::INFINITY)),
            ],
        );
        let t = e.render_text();
        assert!(
            t.contains("# HELP netstack_lat_events_total Events\\nread\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE netstack_lat_events_total counter\n"),
            "{t}"
        );
        assert!(t.contains("\nnetstack_lat_events_total 7\n"), "{t}");
        assert!(
            t.contains(
                "netstack_lat_span_latency_seconds_bucket{span=\"a\\\"b\",le=\"0.000001\"} 0"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "netstack_lat_span_latency_seconds_bucket{span=\"a\\\"b\",le=\"0.000005\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("netstack_lat_span_latency_seconds_bucket{span=\"a\\\"b\",le=\"+Inf\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("netstack_lat_span_latency_seconds_sum{span=\"a\\\"b\"} 0.000043"),
            "{t}"
        );
        assert!(t.contains("netstack_lat_up +Inf"), "{t}");
        assert!(!t.contains("# EOF"), "{t}");
    }
}
