//! `netstack-lat netfilter`: time spent in netfilter per hook and family, measured by a
//! bracket of two netfilter BPF links (bpf/netfilter.bpf.c): one at the first priority a
//! link may take, one at the last. Everything registered in between (conntrack, NAT,
//! iptables tables, nftables chains) is inside the bracket. The kernel aggregates per CPU;
//! this module reads, sums and prints.

use std::fmt::Write as _;
use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bpf::netfilter::{types, NetfilterSkel, NetfilterSkelBuilder};
use crate::cli::{NetfilterArgs, PacketFilterArgs};
use crate::cmd::trace::{self, Filters, NF_FIRST, NF_LAST};
use crate::error::{require_root, UserError};
use crate::kernel::names::NF_HOOK_NAMES;
use crate::kernel::netns;
use crate::kernel::nswatch::{Coverage, Watch as NsWatch};
use crate::kernel::probes;
use crate::runloop::{RunLoop, Step};
use crate::stats::hist::{fmt_ns, Hist, Stats, Unit};
pub use crate::stats::nf_hooks::{family_name, HookStat};

/// Hook and family slots the BPF side keeps: hook * 2 + (IPv6 ? 1 : 0).
pub const KEYS: usize = types::nf_sizes::NF_KEYS.0 as usize;
pub const ALL_HOOKS: u32 = (1 << NF_HOOK_NAMES.len()) - 1;

/// The bracket programs loaded once; attach them to hooks in one or more namespaces.
pub struct Bracket<'o> {
    skel: NetfilterSkel<'o>,
    /// Why ipt_do_table/nft_do_chain are not timed (None: they are).
    pub functions_note: Option<String>,
    _functions: Vec<Link>,
    /// The kfree_skb program, which serves every namespace.
    _drop: Option<Link>,
    /// The netfilter links, per namespace and hook.
    links: Vec<Link>,
    keys: Vec<usize>,
    /// The hooks (bit per NF_INET_* number) and families each namespace gets.
    sel: (u32, bool, bool),
}

impl<'o> Bracket<'o> {
    pub fn load(obj: &'o mut MaybeUninit<OpenObject>, btf: &Path, f: &Filters) -> Result<Self> {
        // One look at the kernel for everything below: the link, kfree_skb, fentry.
        let facts = probes::gather(btf)?;
        if !facts.netfilter_link {
            return Err(UserError::new(
                "this kernel has no netfilter BPF link (Linux 6.4+), which the netfilter bracket needs: \
                 see `netstack-lat probes`",
            )
            .into());
        }
        let mut builder = NetfilterSkelBuilder::default();
        if btf != Path::new(probes::DEFAULT_BTF) {
            builder.obj_builder.btf_custom_path(btf)?;
        }
        let mut open = builder
            .open(obj)
            .context("opening the netfilter BPF object")?;
        let ro = set_filters!(open, f);
        ro.nr_cpus = libbpf_rs::num_possible_cpus()? as u32;
        // Without the kfree_skb tracepoint, drops are counted as unfinished instead.
        let has_kfree = facts.tracepoints.contains("kfree_skb");
        open.progs.nf_drop.set_autoload(has_kfree);
        let (fns, functions_note) = rule_walk_functions(&facts);
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().to_string();
            if let Some((func, _)) = FN_PROGS.iter().find(|(_, p)| p.contains(&name.as_str())) {
                prog.set_autoload(fns.contains(func));
            }
        }
        let skel = open.load().context("loading the netfilter BPF programs")?;
        fill_netns!(skel, f);
        let mut functions = Vec::new();
        let mut functions_note = functions_note;
        for prog in skel.object().progs_mut() {
            let name = prog.name().to_string_lossy().to_string();
            if !FN_PROGS.iter().any(|(_, p)| p.contains(&name.as_str())) || !prog.autoload() {
                continue;
            }
            match prog.attach() {
                Ok(l) => functions.push(l),
                Err(e) => {
                    functions.clear();
                    functions_note = Some(format!("attaching {name} failed: {e}"));
                    break;
                }
            }
        }
        let drop = if has_kfree {
            Some(
                skel.progs
                    .nf_drop
                    .attach()
                    .context("attaching nf_drop to kfree_skb")?,
            )
        } else {
            None
        };
        Ok(Bracket {
            skel,
            functions_note,
            _functions: functions,
            keys: Vec::new(),
            _drop: drop,
            links: Vec::new(),
            sel: (0, false, false),
        })
    }

    /// Bracket the hooks in `hooks` (bit per NF_INET_* number) for the given families, in
    /// `place` (None: this thread's namespace).
    pub fn attach(&mut self, hooks: u32, v4: bool, v6: bool, place: Option<&Path>) -> Result<()> {
        self.select(hooks, v4, v6);
        let _inside = place.map(netns::Entered::enter).transpose()?;
        let links = self.attach_here()?;
        self.links.extend(links);
        Ok(())
    }

    /// Choose the hooks and families that `attach_here` brackets in each namespace.
    pub fn select(&mut self, hooks: u32, v4: bool, v6: bool) {
        for k in attached_keys(hooks, v4, v6) {
            if !self.keys.contains(&k) {
                self.keys.push(k);
            }
        }
        self.keys.sort();
        self.sel = (hooks, v4, v6);
    }

    /// The selected brackets in the namespace this thread is in; the caller keeps the links.
    pub fn attach_here(&self) -> Result<Vec<Link>> {
        let (hooks, v4, v6) = self.sel;
        let mut links = Vec::new();
        let pfs = [(v4, libc::NFPROTO_IPV4), (v6, libc::NFPROTO_IPV6)];
        for hook in (0..NF_HOOK_NAMES.len()).filter(|h| hooks & (1 << h) != 0) {
            for &(_, pf) in pfs.iter().filter(|(on, _)| *on) {
                for (prog, priority) in [
                    (&self.skel.progs.nf_first, NF_FIRST),
                    (&self.skel.progs.nf_last, NF_LAST),
                ] {
                    let what = format!(
                        "the netfilter bracket on {} {}",
                        NF_HOOK_NAMES[hook],
                        family_name(pf == libc::NFPROTO_IPV6)
                    );
                    links.push(trace::attach_nf_link(
                        prog,
                        pf,
                        hook as i32,
                        priority,
                        &what,
                    )?);
                }
            }
        }
        Ok(links)
    }

    /// The hooks and families bracketed so far (keys into `read`).
    pub fn keys(&self) -> &[usize] {
        &self.keys
    }

    /// Remove the netfilter links (the statistics stay).
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// The rule-walk functions' calls per table or chain, summed over CPUs.
    pub fn read_functions(&self) -> Result<Vec<FnRow>> {
        let map = &self.skel.maps.nf_fn_stats;
        let mut out = Vec::new();
        for key in map.keys() {
            let mut k = types::nf_fn_key::default();
            let _ = plain::copy_from_bytes(&mut k, &key);
            let mut h = Hist::new();
            for f in crate::bpf::percpu::<types::fine_hist>(map, &key)? {
                if f.count > 0 {
                    let min = f.min_plus1.saturating_sub(1);
                    h.merge(&Hist::from_fine(&f.b, u128::from(f.sum), min, f.max));
                }
            }
            let name: Vec<u8> = k
                .name
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            out.push(FnRow {
                function: fn_name(k.kind),
                name: String::from_utf8_lossy(&name).to_string(),
                hook: NF_HOOK_NAMES.get(k.hook as usize).copied().unwrap_or("?"),
                latency: h.summary(),
            });
        }
        out.sort_by(|a, b| (a.function, &a.name, a.hook).cmp(&(b.function, &b.name, b.hook)));
        Ok(out)
    }

    /// Every key, summed over CPUs.
    pub fn read(&self) -> Result<Vec<HookStat>> {
        let mut out: Vec<HookStat> = (0..KEYS).map(HookStat::empty).collect();
        for (key, st) in out.iter_mut().enumerate() {
            let key = (key as u32).to_ne_bytes();
            for s in crate::bpf::percpu::<types::nf_hook_stats>(&self.skel.maps.nf_stats, &key)? {
                st.add_cpu(&s);
            }
        }
        Ok(out)
    }
}

/// The fentry/fexit pair timing each rule-walk function.
const FN_PROGS: [(&str, [&str; 2]); 3] = [
    ("ipt_do_table", ["nf_ipt_enter", "nf_ipt_exit"]),
    ("ip6t_do_table", ["nf_ip6t_enter", "nf_ip6t_exit"]),
    ("nft_do_chain", ["nf_nft_enter", "nf_nft_exit"]),
];

/// The rule-walk functions this kernel lets us time with fentry, or why none.
fn rule_walk_functions(facts: &probes::Facts) -> (Vec<&'static str>, Option<String>) {
    if let Err(e) = &facts.fentry {
        return (
            Vec::new(),
            Some(format!(
                "ipt_do_table/nft_do_chain not timed: fentry programs cannot load here ({e})"
            )),
        );
    }
    let fns: Vec<&'static str> = FN_PROGS
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| facts.funcs.contains(*f))
        .collect();
    let note = fns
        .is_empty()
        .then(|| "ipt_do_table/nft_do_chain not timed: not in this kernel's BTF".to_string());
    (fns, note)
}

/// One rule-walk function's calls for one table (iptables) or base chain (nftables).
#[derive(Debug, Clone, Serialize)]
pub struct FnRow {
    pub function: &'static str,
    /// iptables table ("nat", "filter") or nftables base chain name.
    pub name: String,
    pub hook: &'static str,
    pub latency: Stats,
}

fn fn_name(kind: u32) -> &'static str {
    match kind {
        1 => "ipt_do_table",
        2 => "ip6t_do_table",
        3 => "nft_do_chain",
        _ => "?",
    }
}

impl crate::cmd::trace::Source for Bracket<'_> {
    fn part(&self) -> &'static str {
        "netfilter"
    }

    fn families(&self) -> Result<Vec<crate::sink::prom::registry::Family>> {
        let stats = self.read()?;
        let chosen: Vec<&HookStat> = self.keys.iter().filter_map(|&k| stats.get(k)).collect();
        let mut f = crate::sink::prom::families::netfilter_families(&chosen);
        f.extend(crate::sink::prom::registry::bpf_families(
            &trace::prog_stats(&[self.skel.object()]),
        ));
        Ok(f)
    }

    fn attach_in_netns(&self) -> Result<Vec<Link>> {
        self.attach_here()
    }
}

/// Every hook of both families in each namespace of `p` (or this one), with its filters:
/// what `serve` exports.
pub fn bracket_everything<'o>(
    obj: &'o mut MaybeUninit<OpenObject>,
    btf: &Path,
    p: &PacketFilterArgs,
) -> Result<Bracket<'o>> {
    let f = {
        let _inside = match p.netns.as_slice() {
            [one] if p.iface.is_some() => Some(netns::Entered::enter(one)?),
            _ => None,
        };
        trace::resolve_packet_filters(p)?
    };
    let mut b = Bracket::load(obj, btf, &f)?;
    // Attached in each namespace by the run loop's namespace watch (attach_in_netns).
    b.select(ALL_HOOKS, !p.ipv6, !p.ipv4);
    Ok(b)
}

/// Counts of the traversals' outcomes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdicts {
    /// Went through every hook function of the bracket.
    pub accept: u64,
    /// Freed inside the bracket: an NF_DROP verdict (DROP, REJECT, conntrack INVALID ...).
    pub drop: u64,
    /// Never came back (NF_STOLEN, NF_QUEUE) or nested deeper than the BPF side follows.
    pub unfinished: u64,
}

/// One summary row: a hook and family over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct HookRow {
    pub hook: &'static str,
    pub family: &'static str,
    /// Traversals measured (accepted ones: the bracket closed).
    pub count: u64,
    pub per_s: f64,
    pub verdicts: Verdicts,
    /// Time from the first priority to the drop, averaged.
    pub drop_avg_ns: u64,
    /// Traversals the filters left out.
    pub filtered: u64,
    pub latency: Stats,
    pub linear: Linear,
}

#[derive(Debug, Clone, Serialize)]
pub struct Linear {
    pub width_ns: u64,
    /// Counts per bin from 0; the last bin also holds everything above.
    pub bins: Vec<u64>,
}

/// Bins for a linear view from 0 to `max_us` in `width_us` steps, plus one for the rest.
pub fn linear_bins(width_us: u64, max_us: u64) -> usize {
    (max_us.div_ceil(width_us.max(1)) as usize).clamp(1, 1000) + 1
}

pub fn hook_row(s: &HookStat, secs: f64, width_ns: u64, bins: usize) -> HookRow {
    let h = s.hist();
    HookRow {
        hook: NF_HOOK_NAMES[s.hook],
        family: family_name(s.v6),
        count: h.count(),
        per_s: if secs > 0.0 {
            h.count() as f64 / secs
        } else {
            0.0
        },
        verdicts: Verdicts {
            accept: h.count(),
            drop: s.drops,
            unfinished: s.unfinished,
        },
        drop_avg_ns: s.drop_ns.checked_div(s.drops).unwrap_or(0),
        filtered: s.filtered,
        latency: h.summary(),
        linear: Linear {
            width_ns,
            bins: h.linear(width_ns, bins),
        },
    }
}

/// The keys a run brackets, in hook order.
pub fn attached_keys(hooks: u32, v4: bool, v6: bool) -> Vec<usize> {
    (0..KEYS)
        .filter(|k| hooks & (1 << (k / 2)) != 0 && if k % 2 == 1 { v6 } else { v4 })
        .collect()
}

/// The interval line: per attached key with traffic, rate, mean and tail of the interval.
pub fn interval_json(
    elapsed: f64,
    prev: &[HookStat],
    cur: &[HookStat],
    keys: &[usize],
    secs: f64,
) -> Value {
    let rows: Vec<Value> = keys
        .iter()
        .filter_map(|&k| {
            let d = cur.get(k)?.since(prev.get(k)?);
            let h = d.delta_hist();
            if h.count() == 0 && d.drops == 0 {
                return None;
            }
            Some(json!({
                "hook": NF_HOOK_NAMES[d.hook],
                "family": family_name(d.v6),
                "count": h.count(),
                "per_s": if secs > 0.0 { h.count() as f64 / secs } else { 0.0 },
                "avg_ns": h.avg(),
                "p50_ns": h.percentile(50.0),
                "p99_ns": h.percentile(99.0),
                "drops": d.drops,
            }))
        })
        .collect();
    json!({"type": "interval", "elapsed_s": elapsed, "hooks": rows})
}

fn interval_human(v: &Value) -> String {
    let mut s = format!("{:>8.1}s", v["elapsed_s"].as_f64().unwrap_or(0.0));
    let rows = v["hooks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        s.push_str("  no traversals");
    }
    for r in rows {
        let _ = write!(
            s,
            "  {}/{} {:.0}/s avg {} p99 {}",
            r["hook"].as_str().unwrap_or("?"),
            r["family"].as_str().unwrap_or("?"),
            r["per_s"].as_f64().unwrap_or(0.0),
            fmt_ns(r["avg_ns"].as_u64().unwrap_or(0)),
            fmt_ns(r["p99_ns"].as_u64().unwrap_or(0)),
        );
        let drops = r["drops"].as_u64().unwrap_or(0);
        if drops > 0 {
            let _ = write!(s, " drops {drops}");
        }
    }
    s
}

crate::sink::trace_report::report!(Summary);

pub struct Summary {
    pub secs: f64,
    pub interrupted: bool,
    pub rows: Vec<HookRow>,
    pub hists: Vec<Hist>,
    pub functions: Vec<FnRow>,
    pub functions_note: Option<String>,
    /// The network namespaces bracketed (None: a unit test).
    pub netns: Option<Coverage>,
}

impl Summary {
    pub fn to_json(&self) -> String {
        json!({
            "type": "summary",
            "duration_s": self.secs,
            "interrupted": self.interrupted,
            "hooks": self.rows,
            "functions": self.functions,
            "functions_note": self.functions_note,
            "netns": self.netns,
        })
        .to_string()
    }

    /// A table, then per active hook the seed's report: totals, min/avg/max, log2 and
    /// linear histograms.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nNetfilter: {:.1}s{}\n\n{:<13} {:<6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            self.secs,
            if self.interrupted { " (interrupted)" } else { "" },
            "hook",
            "family",
            "count",
            "per s",
            "min",
            "avg",
            "p50",
            "p99",
            "max",
            "drops",
            "unfin."
        );
        for r in &self.rows {
            let l = &r.latency;
            let _ = writeln!(
                s,
                "{:<13} {:<6} {:>10} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                r.hook,
                r.family,
                r.count,
                r.per_s,
                fmt_ns(l.min_ns),
                fmt_ns(l.avg_ns),
                fmt_ns(l.p50_ns),
                fmt_ns(l.p99_ns),
                fmt_ns(l.max_ns),
                r.verdicts.drop,
                r.verdicts.unfinished
            );
        }
        if let Some(n) = &self.netns {
            let _ = writeln!(s, "{}", n.human());
        }
        if let Some(note) = &self.functions_note {
            let _ = writeln!(s, "\n{note}");
        } else if !self.functions.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<14} {:<24} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8}",
                "function", "table/chain", "hook", "calls", "avg", "p50", "p99", "max"
            );
            for f in &self.functions {
                let l = &f.latency;
                let _ = writeln!(
                    s,
                    "{:<14} {:<24} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8}",
                    f.function,
                    f.name,
                    f.hook,
                    l.count,
                    fmt_ns(l.avg_ns),
                    fmt_ns(l.p50_ns),
                    fmt_ns(l.p99_ns),
                    fmt_ns(l.max_ns)
                );
            }
        }
        for (r, h) in self.rows.iter().zip(&self.hists) {
            if r.count == 0 && r.verdicts.drop == 0 {
                continue;
            }
            let l = &r.latency;
            let _ = writeln!(
                s,
                "\n--- {} {} ---\nTotal invocations: {} (accepted {}, dropped {}, unfinished {})\n\
                 Min latency: {}\nAvg latency: {}\nMax latency: {}\np50 / p90 / p99: {} / {} / {}",
                r.hook,
                r.family,
                r.count + r.verdicts.drop + r.verdicts.unfinished,
                r.count,
                r.verdicts.drop,
                r.verdicts.unfinished,
                fmt_ns(l.min_ns),
                fmt_ns(l.avg_ns),
                fmt_ns(l.max_ns),
                fmt_ns(l.p50_ns),
                fmt_ns(l.p90_ns),
                fmt_ns(l.p99_ns),
            );
            if r.count == 0 {
                continue;
            }
            let w = r.linear.width_ns;
            let top = w * (r.linear.bins.len() as u64 - 1);
            // Microsecond buckets say nothing when everything is below 10 us.
            let (unit, unit_name) = if l.max_ns < 10_000 {
                (Unit::Ns, "ns")
            } else {
                (Unit::Us, "us")
            };
            let _ = write!(
                s,
                "\nLatency distribution (logarithmic buckets, {unit_name}):\n{}\nLatency distribution (linear 0-{}, {} buckets):\n{}",
                h.render_log2(unit),
                fmt_ns(top),
                fmt_ns(w),
                crate::cmd::softirq::render_linear(&r.linear.bins, w)
            );
        }
        s
    }
}

/// The packet filters, read and rejected as `trace` does. Interface names belong to the
/// namespace measured.
fn filters(a: &NetfilterArgs) -> Result<Filters, UserError> {
    let p = &a.packet;
    let _inside = match p.netns.as_slice() {
        [one] if p.iface.is_some() => Some(netns::Entered::enter(one)?),
        _ => None,
    };
    trace::resolve_packet_filters(p)
}

pub fn run(a: &NetfilterArgs) -> Result<()> {
    require_root()?;
    // Bound first, so a bad address is reported before any BPF is loaded.
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
    let f = filters(a)?;
    let hooks = a.hook.unwrap_or(ALL_HOOKS);
    let (v4, v6) = (!a.packet.ipv6, !a.packet.ipv4);
    let keys = attached_keys(hooks, v4, v6);

    let mut obj = MaybeUninit::uninit();
    let mut bracket = Bracket::load(&mut obj, &btf, &f)?;
    bracket.select(hooks, v4, v6);
    let mut ns_obj = MaybeUninit::uninit();
    let mut watch = NsWatch::start(
        &mut ns_obj,
        &btf,
        &trace::watched_netns(&a.packet)?,
        crate::kernel::k8s::Pods::off(),
        &mut || bracket.attach_here(),
    )?;
    let names: Vec<&str> = NF_HOOK_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| hooks & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    eprintln!(
        "netstack-lat: tracing netfilter {} ({}) between priorities {NF_FIRST} and {NF_LAST}; stop with Ctrl-C",
        names.join(","),
        match (v4, v6) {
            (true, true) => "IPv4 and IPv6",
            (true, false) => "IPv4",
            _ => "IPv6",
        }
    );

    let run = RunLoop::start(a.duration)?;
    let started = run.started();
    let ticker = crossbeam_channel::tick(a.interval);
    let mut out = std::io::stdout().lock();
    let mut prev = bracket.read()?;
    let mut prev_t = 0.0f64;
    let interrupted = loop {
        let wait = match run.step() {
            Step::Wait(w) => w,
            Step::Done => break false,
            Step::Interrupted => break true,
        };
        watch.tick(&mut || bracket.attach_here())?;
        if crossbeam_channel::select! {
            recv(ticker) -> _ => true,
            default(wait) => false,
        } {
            let cur = bracket.read()?;
            if let Some((_, x)) = &endpoint {
                use crate::cmd::trace::Source as _;
                let coverage = watch.coverage();
                x.publish(
                    "netns",
                    crate::sink::prom::families::netns_families(&coverage),
                );
                x.set_health(coverage.problems());
                x.publish("netfilter", bracket.families()?);
            }
            let t = started.elapsed().as_secs_f64();
            let line = interval_json(t, &prev, &cur, &keys, t - prev_t);
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
    let stats = bracket.read()?;
    let functions = bracket.read_functions()?;
    let functions_note = bracket.functions_note.clone();
    let coverage = watch.coverage();
    drop(watch);
    drop(bracket);
    let secs = started.elapsed().as_secs_f64();
    let width = a.linear_us * 1000;
    let bins = linear_bins(a.linear_us, a.linear_max_us);
    let chosen: Vec<&HookStat> = keys.iter().filter_map(|&k| stats.get(k)).collect();
    let summary = Summary {
        secs,
        interrupted,
        rows: chosen
            .iter()
            .map(|s| hook_row(s, secs, width, bins))
            .collect(),
        hists: chosen.iter().map(|s| s.hist()).collect(),
        functions,
        functions_note,
        netns: Some(coverage),
    };
    crate::sink::trace_report::print_report(&mut out, a.json, &summary)?;
    drop(endpoint);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_nf_hooks;

    fn stat(key: usize, values: &[u64]) -> HookStat {
        let mut h = Hist::new();
        let mut s = HookStat::empty(key);
        for &v in values {
            h.record(v);
            s.sum += u128::from(v);
            s.min = s.min.min(v);
            s.max = s.max.max(v);
        }
        s.fine = h.fine_buckets().to_vec();
        s
    }

    #[test]
    fn keys_follow_hooks_and_families() {
        assert_eq!(
            attached_keys(ALL_HOOKS, true, true),
            (0..10).collect::<Vec<_>>()
        );
        let out = parse_nf_hooks("OUTPUT").unwrap();
        assert_eq!(attached_keys(out, true, false), vec![6]);
        assert_eq!(attached_keys(out | 1, false, true), vec![1, 7]);
        let s = HookStat::empty(7);
        assert_eq!((s.hook, s.v6, s.key()), (3, true, 7));
    }

    #[test]
    fn hook_names_parse_both_spellings() {
        assert_eq!(parse_nf_hooks("prerouting,LOCAL_IN").unwrap(), 0b11);
        assert_eq!(parse_nf_hooks("post-routing, forward").unwrap(), 0b10100);
        assert!(parse_nf_hooks("SIDEWAYS").unwrap_err().contains("SIDEWAYS"));
        assert!(parse_nf_hooks(",").is_err());
    }

    #[test]
    fn rows_count_verdicts_and_exact_extremes() {
        let mut s = stat(6, &[1000, 2000, 3000, 42_000]);
        s.drops = 2;
        s.drop_ns = 5000;
        s.unfinished = 1;
        let r = hook_row(&s, 2.0, 5000, linear_bins(5, 100));
        assert_eq!((r.hook, r.family), ("LOCAL_OUT", "ipv4"));
        assert_eq!(r.count, 4);
        assert_eq!(r.per_s, 2.0);
        assert_eq!(
            r.verdicts,
            Verdicts {
                accept: 4,
                drop: 2,
                unfinished: 1
            }
        );
        assert_eq!(r.drop_avg_ns, 2500);
        assert_eq!((r.latency.min_ns, r.latency.max_ns), (1000, 42_000));
        assert_eq!(r.latency.avg_ns, 12_000);
        assert_eq!(r.linear.bins.len(), 21);
        assert_eq!(r.linear.bins[0], 3);
        assert_eq!(r.linear.bins[8], 1);
        assert!(Summary {
            secs: 2.0,
            interrupted: false,
            rows: vec![r],
            hists: vec![s.hist()],
            functions: Vec::new(),
            functions_note: None,
            netns: None,
        }
        .human()
        .contains("Total invocations: 7 (accepted 4, dropped 2, unfinished 1)"));
    }

    #[test]
    fn intervals_are_differences() {
        let a = stat(6, &[1000, 1000]);
        let b = stat(6, &[1000, 1000, 8000, 8000]);
        let d = b.since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.delta_hist().avg(), 8000);
        let mut prev: Vec<HookStat> = (0..KEYS).map(HookStat::empty).collect();
        let mut cur = prev.clone();
        prev[6] = a;
        cur[6] = b;
        let v = interval_json(1.0, &prev, &cur, &[0, 6], 1.0);
        let rows = v["hooks"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "quiet hooks are left out: {v}");
        assert_eq!(rows[0]["hook"], "LOCAL_OUT");
        assert_eq!(rows[0]["count"], 2);
        assert!(interval_human(&v).contains("LOCAL_OUT/ipv4 2/s"));
    }

    #[test]
    fn linear_bins_cover_the_range_plus_overflow() {
        assert_eq!(linear_bins(5, 100), 21);
        assert_eq!(linear_bins(7, 100), 16);
        assert_eq!(linear_bins(1000, 1), 2);
    }
}
