//! `netstack-lat softirq`: per CPU and vector, how long a raised softirq waits for its
//! CPU (raise -> entry), how long it runs (entry -> exit), how often, and how much of it
//! ksoftirqd runs; per device and CPU, NAPI batch sizes. BPF aggregates in per-CPU maps
//! (softirqs are far more frequent than packets); this module reads, sums and prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, OpenObject};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bpf::softirq::{types, SoftirqSkel, SoftirqSkelBuilder};
use crate::cli::SoftirqArgs;
use crate::error::{require_root, UserError};
use crate::kernel::names::VECTORS;
use crate::kernel::probes;
use crate::runloop::{RunLoop, Step};
use crate::stats::hist::{fmt_ns, Hist, Stats, Unit};

const NET_TX: u32 = 2;
const NET_RX: u32 = 3;
const KINDS: u32 = types::sirq_kind::SIRQ_KINDS.0;
const LINEAR_BINS: usize = 20;

/// Counters of one vector on one CPU (cumulative since attach).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub raised: u64,
    pub entered: u64,
    pub ksoftirqd: u64,
}

/// What the BPF maps hold, per CPU.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// [cpu][vector]
    pub counts: Vec<[Counts; 10]>,
}

/// The vectors a run follows: `--all`, `--vector`, or NET_RX and NET_TX.
pub fn vector_mask(a: &SoftirqArgs) -> u32 {
    if a.all {
        (1 << VECTORS.len()) - 1
    } else {
        a.vector.unwrap_or((1 << NET_RX) | (1 << NET_TX))
    }
}

pub fn vectors_of(mask: u32) -> Vec<u32> {
    (0..VECTORS.len() as u32)
        .filter(|v| mask & (1 << v) != 0)
        .collect()
}

/// Check --cpu against the CPUs that exist.
pub fn check_cpu(cpu: Option<u32>, online: &[u32]) -> Result<(), UserError> {
    match cpu {
        Some(c) if !online.contains(&c) => Err(UserError::new(format!(
            "unknown CPU {c}: this machine has CPUs {} (see /sys/devices/system/cpu/online)",
            fmt_cpus(online)
        ))),
        _ => Ok(()),
    }
}

/// "0-3,6" from a sorted list.
pub fn fmt_cpus(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && Some(cpus[j + 1]) == cpus[j].checked_add(1) {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Highest CPU number a CPU list may name: the kernel's NR_CPUS is at most 8192. Bounds what
/// a range like "0-4294967295" would otherwise allocate.
pub const MAX_CPU: u32 = 8191;

/// Parse the kernel's CPU list format ("0-3,6"): sorted, each CPU once. A part that is not a
/// CPU or an ascending range of them up to MAX_CPU is an error naming it.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            format!(
                "'{}' is not a CPU or a range of them (0 to {MAX_CPU}, e.g. 0-3,6)",
                part.escape_debug()
            )
        };
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a > b || b > MAX_CPU {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out.into_iter().collect())
}

const ONLINE: &str = "/sys/devices/system/cpu/online";

fn online_cpus() -> Result<Vec<u32>, UserError> {
    match std::fs::read_to_string(ONLINE) {
        Ok(s) => parse_cpu_list(&s).map_err(|e| UserError::new(format!("{ONLINE}: {e}"))),
        // Without the list --cpu is checked against none (sysfs not mounted).
        Err(_) => Ok(Vec::new()),
    }
}

fn read_counts(skel: &SoftirqSkel<'_>, ncpu: usize) -> Result<Snapshot> {
    let mut snap = Snapshot {
        counts: vec![[Counts::default(); 10]; ncpu],
    };
    let per: Vec<types::sirq_cpu> = crate::bpf::percpu(&skel.maps.sirq_cpu, &0u32.to_ne_bytes())?;
    for (cpu, s) in per.iter().enumerate().take(ncpu) {
        for (v, c) in s.counts.iter().enumerate().take(VECTORS.len()) {
            snap.counts[cpu][v] = Counts {
                raised: c.raised,
                entered: c.entered,
                ksoftirqd: c.ksoftirqd,
            };
        }
    }
    Ok(snap)
}

/// Delay and run histograms per (vector, cpu).
fn read_hists(skel: &SoftirqSkel<'_>, vecs: &[u32]) -> Result<BTreeMap<(u32, usize), [Hist; 2]>> {
    let mut out = BTreeMap::new();
    for &v in vecs {
        for kind in 0..KINDS {
            let key = v * KINDS + kind;
            let per: Vec<types::fine_hist> =
                crate::bpf::percpu(&skel.maps.sirq_hists, &key.to_ne_bytes())?;
            for (cpu, h) in per.iter().enumerate() {
                let min = h.min_plus1.saturating_sub(1);
                let hist = Hist::from_fine(&h.b, u128::from(h.sum), min, h.max);
                let e = out
                    .entry((v, cpu))
                    .or_insert_with(|| [Hist::new(), Hist::new()]);
                e[kind as usize] = hist;
            }
        }
    }
    Ok(out)
}

/// One NAPI instance's polls on one CPU.
#[derive(Debug, Clone)]
pub struct Napi {
    pub dev: String,
    pub ifindex: u32,
    pub netns: u32,
    pub cpu: Option<usize>,
    pub polls: u64,
    pub full: u64,
    pub packets: u64,
    pub budget: u32,
    /// Polls by packets processed (index = packets; the last also holds more).
    pub batches: Vec<u64>,
}

impl Napi {
    fn merge(&mut self, o: &Napi) {
        self.polls += o.polls;
        self.full += o.full;
        self.packets += o.packets;
        self.budget = self.budget.max(o.budget);
        if o.batches.len() > self.batches.len() {
            self.batches.resize(o.batches.len(), 0);
        }
        for (a, b) in self.batches.iter_mut().zip(&o.batches) {
            *a += b;
        }
    }

    /// Batch size statistics (values are packets, not time).
    pub fn batch_hist(&self) -> Hist {
        let mut h = Hist::new();
        for (w, &n) in self.batches.iter().enumerate() {
            h.record_n(w as u64, n);
        }
        h
    }
}

fn read_napi(skel: &SoftirqSkel<'_>) -> Result<Vec<Napi>> {
    let mut out = Vec::new();
    for key in skel.maps.napi.keys() {
        let mut k = types::napi_key::default();
        if plain::copy_from_bytes(&mut k, &key).is_err() {
            continue;
        }
        let per: Vec<types::napi_stats> = crate::bpf::percpu(&skel.maps.napi, &key)?;
        for (cpu, s) in per.iter().enumerate() {
            if s.polls == 0 {
                continue;
            }
            let name: Vec<u8> = s.name.iter().map(|&c| c as u8).collect();
            out.push(Napi {
                dev: crate::events::comm_str(&name),
                ifindex: k.ifindex,
                netns: k.netns,
                cpu: Some(cpu),
                polls: s.polls,
                full: s.full,
                packets: s.work,
                budget: s.budget,
                batches: s.b.to_vec(),
            });
        }
    }
    out.sort_by(|a, b| (&a.dev, a.ifindex, a.cpu).cmp(&(&b.dev, b.ifindex, b.cpu)));
    Ok(out)
}

/// One row of the summary: a vector on one CPU, or on all of them (cpu = None).
#[derive(Debug, Clone, Serialize)]
pub struct VectorRow {
    pub vector: &'static str,
    #[serde(serialize_with = "cpu_or_all")]
    pub cpu: Option<usize>,
    /// Handler runs (what /proc/softirqs counts).
    pub count: u64,
    pub per_s: f64,
    pub raised: u64,
    pub delay: Stats,
    pub run: Stats,
    /// Share of runs in ksoftirqd rather than on IRQ exit or BH enable.
    pub ksoftirqd_share: f64,
    /// Linear view of the delay: counts per `linear_width_ns`, the last bin holding more.
    pub delay_linear: Vec<u64>,
    pub run_linear: Vec<u64>,
    pub linear_width_ns: u64,
}

fn cpu_or_all<S: serde::Serializer>(cpu: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    match cpu {
        Some(c) => s.serialize_u64(*c as u64),
        None => s.serialize_str("all"),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Rows per vector: each CPU that ran it, then all CPUs together; and per vector the
/// all-CPU delay and run histograms.
pub fn vector_rows(
    vecs: &[u32],
    counts: &Snapshot,
    hists: &BTreeMap<(u32, usize), [Hist; 2]>,
    secs: f64,
    width_ns: u64,
) -> (Vec<VectorRow>, Vec<(u32, [Hist; 2])>) {
    let mut rows = Vec::new();
    let mut merged = Vec::new();
    for &v in vecs {
        let mut all = [Hist::new(), Hist::new()];
        let mut tot = Counts::default();
        for (cpu, per) in counts.counts.iter().enumerate() {
            let c = per[v as usize];
            let empty = [Hist::new(), Hist::new()];
            let h = hists.get(&(v, cpu)).unwrap_or(&empty);
            if c.entered == 0 && c.raised == 0 && h[0].count() == 0 {
                continue;
            }
            all[0].merge(&h[0]);
            all[1].merge(&h[1]);
            tot.raised += c.raised;
            tot.entered += c.entered;
            tot.ksoftirqd += c.ksoftirqd;
            rows.push(row(v, Some(cpu), c, h, secs, width_ns));
        }
        rows.push(row(v, None, tot, &all, secs, width_ns));
        merged.push((v, all));
    }
    (rows, merged)
}

fn row(v: u32, cpu: Option<usize>, c: Counts, h: &[Hist; 2], secs: f64, width: u64) -> VectorRow {
    VectorRow {
        vector: VECTORS[v as usize],
        cpu,
        count: c.entered,
        per_s: if secs > 0.0 {
            c.entered as f64 / secs
        } else {
            0.0
        },
        raised: c.raised,
        delay: h[0].summary(),
        run: h[1].summary(),
        ksoftirqd_share: share(c.ksoftirqd, c.entered),
        delay_linear: h[0].linear(width, LINEAR_BINS),
        run_linear: h[1].linear(width, LINEAR_BINS),
        linear_width_ns: width,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchStats {
    pub count: u64,
    pub min: u64,
    pub avg: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// Polls by packets processed, index = packets (0 ..= the largest seen).
    pub buckets: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NapiRow {
    pub dev: String,
    pub ifindex: u32,
    pub netns: u32,
    #[serde(serialize_with = "cpu_or_all")]
    pub cpu: Option<usize>,
    pub polls: u64,
    pub polls_per_s: f64,
    /// Polls that used their whole budget: the kernel stops there and comes back later
    /// (time_squeeze in /proc/net/softnet_stat when its time or budget runs out).
    pub full_budget: u64,
    pub budget: u32,
    pub packets: u64,
    pub batch: BatchStats,
}

pub fn napi_rows(napis: &[Napi], secs: f64) -> Vec<NapiRow> {
    let mut rows = Vec::new();
    let mut groups: BTreeMap<(String, u32, u32), Napi> = BTreeMap::new();
    for n in napis {
        rows.push(napi_row(n, secs));
        groups
            .entry((n.dev.clone(), n.ifindex, n.netns))
            .and_modify(|g| g.merge(n))
            .or_insert_with(|| Napi {
                cpu: None,
                ..n.clone()
            });
    }
    rows.extend(groups.values().map(|g| napi_row(g, secs)));
    rows.sort_by(|a, b| {
        (&a.dev, a.ifindex, a.cpu.is_none(), a.cpu).cmp(&(
            &b.dev,
            b.ifindex,
            b.cpu.is_none(),
            b.cpu,
        ))
    });
    rows
}

fn napi_row(n: &Napi, secs: f64) -> NapiRow {
    let h = n.batch_hist();
    let last = n.batches.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    NapiRow {
        dev: n.dev.clone(),
        ifindex: n.ifindex,
        netns: n.netns,
        cpu: n.cpu,
        polls: n.polls,
        polls_per_s: if secs > 0.0 {
            n.polls as f64 / secs
        } else {
            0.0
        },
        full_budget: n.full,
        budget: n.budget,
        packets: n.packets,
        batch: BatchStats {
            count: h.count(),
            min: h.min(),
            avg: h.avg(),
            p50: h.percentile(50.0),
            p90: h.percentile(90.0),
            p99: h.percentile(99.0),
            max: h.max(),
            buckets: n.batches[..last].to_vec(),
        },
    }
}

/// The interval line: per vector (all CPUs), runs per second and the ksoftirqd share.
pub fn interval_json(
    elapsed: f64,
    vecs: &[u32],
    prev: &Snapshot,
    cur: &Snapshot,
    secs: f64,
) -> Value {
    let rows: Vec<Value> = vecs
        .iter()
        .map(|&v| {
            let (mut n, mut k, mut r) = (0u64, 0u64, 0u64);
            for (cpu, c) in cur.counts.iter().enumerate() {
                let p = prev
                    .counts
                    .get(cpu)
                    .map(|p| p[v as usize])
                    .unwrap_or_default();
                let c = c[v as usize];
                n += c.entered.saturating_sub(p.entered);
                k += c.ksoftirqd.saturating_sub(p.ksoftirqd);
                r += c.raised.saturating_sub(p.raised);
            }
            json!({
                "vector": VECTORS[v as usize],
                "count": n,
                "per_s": if secs > 0.0 { n as f64 / secs } else { 0.0 },
                "raised": r,
                "ksoftirqd_share": share(k, n),
            })
        })
        .collect();
    json!({"type": "interval", "elapsed_s": elapsed, "vectors": rows})
}

fn interval_human(v: &Value) -> String {
    let mut s = format!("{:>8.1}s", v["elapsed_s"].as_f64().unwrap_or(0.0));
    for r in v["vectors"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "  {} {:.0}/s (ksoftirqd {:.0}%)",
            r["vector"].as_str().unwrap_or("?"),
            r["per_s"].as_f64().unwrap_or(0.0),
            100.0 * r["ksoftirqd_share"].as_f64().unwrap_or(0.0)
        );
    }
    s
}

pub fn render_linear(bins: &[u64], width: u64) -> String {
    let peak = bins.iter().copied().max().unwrap_or(0).max(1);
    let mut out = String::new();
    let last = bins.len().saturating_sub(1);
    for (i, &n) in bins.iter().enumerate() {
        let label = if i == last {
            format!("[{}, ...)", fmt_ns(i as u64 * width))
        } else {
            format!(
                "[{}, {})",
                fmt_ns(i as u64 * width),
                fmt_ns((i as u64 + 1) * width)
            )
        };
        let bar = (n * 40 / peak) as usize;
        let _ = writeln!(out, "{label:<22}{n:>10} |{:<40}|", "@".repeat(bar));
    }
    out
}

crate::sink::trace_report::report!(Summary);

pub struct Summary {
    pub duration: Duration,
    pub interrupted: bool,
    pub vectors: Vec<VectorRow>,
    pub napi: Vec<NapiRow>,
    pub hists: Vec<(String, Hist)>,
}

impl Summary {
    pub fn to_json(&self) -> String {
        json!({
            "type": "summary",
            "duration_s": self.duration.as_secs_f64(),
            "interrupted": self.interrupted,
            "vectors": self.vectors,
            "napi": self.napi,
        })
        .to_string()
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nSoftirq: {:.1}s{}",
            self.duration.as_secs_f64(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "\n{:<8} {:>4} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "vector",
            "cpu",
            "count",
            "per s",
            "delay p50",
            "p99",
            "max",
            "run p50",
            "p99",
            "max",
            "ksoftirqd"
        );
        for r in &self.vectors {
            let cpu = r.cpu.map_or("all".to_string(), |c| c.to_string());
            let _ = writeln!(
                s,
                "{:<8} {:>4} {:>10} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.1}%",
                r.vector,
                cpu,
                r.count,
                r.per_s,
                fmt_ns(r.delay.p50_ns),
                fmt_ns(r.delay.p99_ns),
                fmt_ns(r.delay.max_ns),
                fmt_ns(r.run.p50_ns),
                fmt_ns(r.run.p99_ns),
                fmt_ns(r.run.max_ns),
                100.0 * r.ksoftirqd_share
            );
        }
        for (name, h) in &self.hists {
            let _ = write!(s, "\n@{name} (us):\n{}", h.render_log2(Unit::Us));
        }
        for r in self
            .vectors
            .iter()
            .filter(|r| r.cpu.is_none() && r.delay.count > 0)
        {
            let _ = write!(
                s,
                "\n{} raise->entry, linear:\n{}",
                r.vector,
                render_linear(&r.delay_linear, r.linear_width_ns)
            );
        }
        if self.napi.is_empty() {
            let _ = writeln!(s, "\nNAPI: no polls seen");
        } else {
            let _ = writeln!(
                s,
                "\n{:<16} {:>4} {:>10} {:>9} {:>11} {:>7} {:>6} {:>6} {:>6} {:>6}",
                "NAPI device",
                "cpu",
                "polls",
                "per s",
                "full budget",
                "budget",
                "avg",
                "p50",
                "p99",
                "max"
            );
            for n in &self.napi {
                let cpu = n.cpu.map_or("all".to_string(), |c| c.to_string());
                let _ = writeln!(
                    s,
                    "{:<16} {:>4} {:>10} {:>9.0} {:>11} {:>7} {:>6} {:>6} {:>6} {:>6}",
                    n.dev,
                    cpu,
                    n.polls,
                    n.polls_per_s,
                    n.full_budget,
                    n.budget,
                    n.batch.avg,
                    n.batch.p50,
                    n.batch.p99,
                    n.batch.max
                );
            }
        }
        s
    }
}

fn attach(skel: &mut SoftirqSkel<'_>) -> Result<Vec<libbpf_rs::Link>> {
    let mut links = Vec::new();
    for prog in skel.object().progs_mut() {
        let name = prog.name().to_string_lossy().to_string();
        links.push(
            prog.attach()
                .with_context(|| format!("attaching BPF program {name}"))?,
        );
    }
    Ok(links)
}

/// The softirq programs loaded and attached: `run` prints from them, `serve` exports them.
pub struct Source<'o> {
    skel: SoftirqSkel<'o>,
    _links: Vec<libbpf_rs::Link>,
    vecs: Vec<u32>,
}

impl<'o> Source<'o> {
    /// NET_RX and NET_TX on every CPU (what `serve` exports).
    pub fn load(obj: &'o mut MaybeUninit<OpenObject>, btf: &Path) -> Result<Source<'o>> {
        Self::load_with(obj, btf, (1 << NET_RX) | (1 << NET_TX), None)
    }

    pub fn load_with(
        obj: &'o mut MaybeUninit<OpenObject>,
        btf: &Path,
        mask: u32,
        cpu: Option<u32>,
    ) -> Result<Source<'o>> {
        let (facts, has_cast) = probes::gather_tracepoints(
            btf,
            &[
                "softirq_raise",
                "softirq_entry",
                "softirq_exit",
                "napi_poll",
            ],
        )?;
        if facts.len() < 4 {
            return Err(UserError::new(
                "this kernel lacks the irq:softirq_* or napi:napi_poll tracepoints (CONFIG_TRACEPOINTS): \
                 see `netstack-lat probes`",
            )
            .into());
        }
        let mut builder = SoftirqSkelBuilder::default();
        if btf != Path::new(probes::DEFAULT_BTF) {
            builder.obj_builder.btf_custom_path(btf)?;
        }
        let mut open = builder
            .open(obj)
            .context("opening the softirq BPF object")?;
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("BPF object has no rodata")?;
        ro.f_vectors = mask;
        ro.f_cpu = cpu.map_or(-1, |c| c as i32);
        ro.has_cast = has_cast;
        let mut skel = open.load().context("loading the softirq BPF programs")?;
        let links = attach(&mut skel)?;
        Ok(Source {
            skel,
            _links: links,
            vecs: vectors_of(mask),
        })
    }

    /// Per vector over all CPUs: runs, and the delay and run histograms.
    pub fn rows(&self) -> Result<Vec<(u32, u64, [Hist; 2])>> {
        let ncpu = libbpf_rs::num_possible_cpus()?;
        let counts = read_counts(&self.skel, ncpu)?;
        let hists = read_hists(&self.skel, &self.vecs)?;
        let (rows, merged) = vector_rows(&self.vecs, &counts, &hists, 1.0, 1000);
        Ok(merged
            .into_iter()
            .map(|(v, h)| {
                let n = rows
                    .iter()
                    .find(|r| r.cpu.is_none() && r.vector == VECTORS[v as usize])
                    .map_or(0, |r| r.count);
                (v, n, h)
            })
            .collect())
    }
}

impl crate::cmd::trace::Source for Source<'_> {
    fn part(&self) -> &'static str {
        "softirq"
    }

    fn families(&self) -> Result<Vec<crate::sink::prom::registry::Family>> {
        let mut f = crate::sink::prom::families::softirq_families(&self.rows()?);
        f.extend(crate::sink::prom::registry::bpf_families(
            &crate::cmd::trace::prog_stats(&[self.skel.object()]),
        ));
        Ok(f)
    }
}

pub fn run(a: &SoftirqArgs) -> Result<()> {
    require_root()?;
    let endpoint = match &a.prometheus {
        Some(l) => {
            let x = crate::sink::prom::registry::Exporter::new();
            Some((
                crate::sink::prom::registry::Endpoint::start(l, std::sync::Arc::clone(&x))?,
                x,
            ))
        }
        None => None,
    };
    let btf = probes::btf_path(a.btf.as_deref());
    probes::require_btf(&btf)?;
    if !a.verbose {
        libbpf_rs::set_print(None);
    }
    check_cpu(a.cpu, &online_cpus()?)?;
    let mask = vector_mask(a);
    let vecs = vectors_of(mask);
    let mut obj = MaybeUninit::uninit();
    let source = Source::load_with(&mut obj, &btf, mask, a.cpu)?;
    let skel = &source.skel;
    let names: Vec<&str> = vecs.iter().map(|&v| VECTORS[v as usize]).collect();
    eprintln!(
        "netstack-lat: tracing softirq {} (tp_btf softirq_raise/entry/exit, napi_poll){}; stop with Ctrl-C",
        names.join(","),
        a.cpu.map_or(String::new(), |c| format!(" on CPU {c}"))
    );

    let run = RunLoop::start(a.duration)?;
    let ncpu = libbpf_rs::num_possible_cpus()?;
    let started = run.started();
    let ticker = crossbeam_channel::tick(a.interval);
    let mut out = std::io::stdout().lock();
    let mut prev = Snapshot {
        counts: vec![[Counts::default(); 10]; ncpu],
    };
    let mut prev_t = 0.0f64;
    let interrupted = loop {
        let wait = match run.step() {
            Step::Wait(w) => w,
            Step::Done => break false,
            Step::Interrupted => break true,
        };
        if crossbeam_channel::select! {
            recv(ticker) -> _ => true,
            default(wait) => false,
        } {
            let cur = read_counts(skel, ncpu)?;
            if let Some((_, x)) = &endpoint {
                use crate::cmd::trace::Source as _;
                x.publish("softirq", source.families()?);
            }
            let t = started.elapsed().as_secs_f64();
            let line = interval_json(t, &vecs, &prev, &cur, t - prev_t);
            if a.json {
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "{}", interval_human(&line))?;
            }
            out.flush()?;
            prev = cur;
            prev_t = t;
        }
    };
    let counts = read_counts(skel, ncpu)?;
    let hists = read_hists(skel, &vecs)?;
    let napis = read_napi(skel)?;
    drop(source);
    let secs = started.elapsed().as_secs_f64();
    let width = a.linear_us * 1000;
    let (vectors, merged) = vector_rows(&vecs, &counts, &hists, secs, width);
    let mut named = Vec::new();
    for (v, [d, r]) in merged {
        if d.count() > 0 {
            named.push((format!("{} raise->entry", VECTORS[v as usize]), d));
        }
        if r.count() > 0 {
            named.push((format!("{} entry->exit", VECTORS[v as usize]), r));
        }
    }
    let summary = Summary {
        duration: started.elapsed(),
        interrupted,
        vectors,
        napi: napi_rows(&napis, secs),
        hists: named,
    };
    crate::sink::trace_report::print_report(&mut out, a.json, &summary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Ok(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Ok(vec![0]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        // Regressions from fuzzing: a range to u32::MAX allocated 16 GiB; junk was skipped.
        assert!(parse_cpu_list("0-4294967295")
            .unwrap_err()
            .contains("'0-4294967295'"));
        assert!(parse_cpu_list("0-3,x").unwrap_err().contains("'x'"));
        assert!(parse_cpu_list("3-1").is_err());
        assert_eq!(fmt_cpus(&[u32::MAX - 1, u32::MAX]), "4294967294-4294967295");
        assert_eq!(fmt_cpus(&[0, 1, 2, 3, 6]), "0-3,6");
        assert!(check_cpu(Some(1), &[0, 1]).is_ok());
        let e = check_cpu(Some(7), &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("unknown CPU 7") && e.contains("0-1"), "{e}");
    }

    #[test]
    fn masks() {
        let a = SoftirqArgs::default();
        assert_eq!(vectors_of(vector_mask(&a)), vec![NET_TX, NET_RX]);
        let all = SoftirqArgs {
            all: true,
            ..SoftirqArgs::default()
        };
        assert_eq!(vectors_of(vector_mask(&all)).len(), 10);
        assert_eq!(crate::cli::parse_vectors("timer, net_rx").unwrap(), 0b1010);
        assert!(crate::cli::parse_vectors("NET_XX")
            .unwrap_err()
            .contains("unknown softirq vector 'NET_XX'"));
    }

    #[test]
    fn rows_per_cpu_and_all() {
        let mut snap = Snapshot {
            counts: vec![[Counts::default(); 10]; 2],
        };
        snap.counts[0][3] = Counts {
            raised: 10,
            entered: 8,
            ksoftirqd: 2,
        };
        snap.counts[1][3] = Counts {
            raised: 4,
            entered: 4,
            ksoftirqd: 0,
        };
        let mut hists = BTreeMap::new();
        let mut d = Hist::new();
        d.record(1000);
        hists.insert((3, 0), [d, Hist::new()]);
        let (rows, merged) = vector_rows(&[3], &snap, &hists, 2.0, 10_000);
        assert_eq!(merged[0].1[0].count(), 1);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].cpu, None);
        assert_eq!(rows[2].count, 12);
        assert!((rows[2].ksoftirqd_share - 2.0 / 12.0).abs() < 1e-9);
        assert_eq!(rows[2].per_s, 6.0);
        assert_eq!(rows[2].delay.count, 1);
        let v: Value = serde_json::to_value(&rows[2]).unwrap();
        assert_eq!(v["cpu"], "all");
        assert_eq!(v["vector"], "NET_RX");
        for k in [
            "count",
            "min_ns",
            "avg_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "log2_buckets",
        ] {
            assert!(v["delay"].get(k).is_some(), "{k}");
        }
        let v0: Value = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(v0["cpu"], 0);
    }

    #[test]
    fn napi_rows_sum_cpus() {
        let mk = |cpu, polls, b: Vec<u64>| Napi {
            dev: "veth0".into(),
            ifindex: 5,
            netns: 1,
            cpu: Some(cpu),
            polls,
            full: 1,
            packets: 0,
            budget: 64,
            batches: b,
        };
        let rows = napi_rows(&[mk(0, 2, vec![0, 1, 1]), mk(1, 1, vec![0, 0, 0, 1])], 1.0);
        assert_eq!(rows.len(), 3);
        let all = rows.iter().find(|r| r.cpu.is_none()).unwrap();
        assert_eq!(all.polls, 3);
        assert_eq!(all.full_budget, 2);
        assert_eq!(all.batch.max, 3);
        assert_eq!(all.batch.buckets, vec![0, 1, 1, 1]);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text: the CPUs it names, sorted and each once, all within MAX_CPU (so at most
        /// MAX_CPU + 1 of them), or a one-line message.
        #[test]
        fn fuzz_cpu_list_any(s in prop_oneof!["[0-9, \n-]{0,40}", any::<String>()]) {
            match parse_cpu_list(&s) {
                Ok(v) => {
                    prop_assert!(v.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(v.iter().all(|&c| c <= MAX_CPU));
                    // Formatted back, it reads the same.
                    prop_assert_eq!(parse_cpu_list(&fmt_cpus(&v)), Ok(v));
                }
                Err(e) => prop_assert!(!e.contains('\n') || s.contains(['\n', '\r'])),
            }
        }

        /// Lists written from a set of CPUs (ranges and singles, any order) read back as it.
        #[test]
        fn fuzz_cpu_list_written(
            parts in proptest::collection::vec((0u32..=MAX_CPU, 0u32..64, any::<bool>()), 0..10),
        ) {
            let mut want = BTreeSet::new();
            let mut text = Vec::new();
            for (a, n, single) in parts {
                let b = a.saturating_add(n).min(MAX_CPU);
                if single {
                    text.push(a.to_string());
                    want.insert(a);
                } else {
                    text.push(format!("{a}-{b}"));
                    want.extend(a..=b);
                }
            }
            let got = parse_cpu_list(&format!("{}\n", text.join(",")));
            prop_assert_eq!(got, Ok(want.into_iter().collect::<Vec<_>>()));
        }
    }
}
