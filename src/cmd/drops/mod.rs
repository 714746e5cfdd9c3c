//! `netstack-lat drops`: every dropped skb with the kernel's drop reason (names from the
//! running kernel's BTF), the freeing location symbolized with blazesym, the flow, device,
//! netns and task, and a summary by reason and by location.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use blazesym::symbolize::source::{Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::MaybeDefault;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};
use serde_json::{json, Value};

use crate::bpf::drops::types::drop_event;
use crate::bpf::drops::DropsSkelBuilder;
use crate::cli::DropsArgs;
use crate::error::{require_root, UserError};
use crate::events::{self, AF_INET, AF_INET6};
use crate::kernel::netns;
use crate::kernel::probes;
use crate::runloop::{RunLoop, Step};

/// One drop as printed.
#[derive(Debug, Clone)]
pub struct Drop {
    pub ts: u64,
    pub reason: String,
    pub location: String,
    pub flow: Option<events::Flow>,
    pub ifindex: u32,
    pub netns: u32,
    pub tgid: u32,
    pub comm: String,
    pub stack: Vec<String>,
}

impl Drop {
    pub fn json(&self) -> Value {
        let mut v = json!({
            "type": "drop", "ts_ns": self.ts, "reason": self.reason, "location": self.location,
            "ifindex": self.ifindex, "netns": self.netns, "pid": self.tgid, "comm": self.comm,
        });
        if let Some(f) = &self.flow {
            v["proto"] = f.proto_name().into();
            v["saddr"] = f.saddr.to_string().into();
            v["sport"] = f.sport.into();
            v["daddr"] = f.daddr.to_string().into();
            v["dport"] = f.dport.into();
        }
        if !self.stack.is_empty() {
            v["stack"] = self.stack.clone().into();
        }
        v
    }

    pub fn line(&self) -> String {
        let flow = self
            .flow
            .map_or_else(|| "(no IP flow)".to_string(), |f| f.to_string());
        format!(
            "{:<22} {:<40} {flow}  if {} netns {} task {} {}",
            self.reason, self.location, self.ifindex, self.netns, self.tgid, self.comm
        )
    }
}

/// Counts by reason and by location, busiest first.
#[derive(Debug, Default)]
pub struct Tally {
    pub by_reason: BTreeMap<String, u64>,
    pub by_location: BTreeMap<String, u64>,
    pub total: u64,
}

impl Tally {
    pub fn add(&mut self, d: &Drop) {
        *self.by_reason.entry(d.reason.clone()).or_insert(0) += 1;
        *self.by_location.entry(d.location.clone()).or_insert(0) += 1;
        self.total += 1;
    }

    fn sorted(m: &BTreeMap<String, u64>) -> Vec<(&String, u64)> {
        let mut v: Vec<_> = m.iter().map(|(k, &n)| (k, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    pub fn json(&self, lost: u64, filtered: u64, decode_errors: u64, seconds: f64) -> Value {
        let list = |m: &BTreeMap<String, u64>, key: &str| -> Vec<Value> {
            Self::sorted(m)
                .into_iter()
                .map(|(k, n)| json!({ key: k, "count": n }))
                .collect()
        };
        json!({
            "type": "summary", "duration_s": seconds, "drops": self.total,
            "by_reason": list(&self.by_reason, "reason"),
            "by_location": list(&self.by_location, "location"),
            "lost_events": lost, "filtered": filtered, "decode_errors": decode_errors,
        })
    }
}

/// Kernel addresses to `symbol+0xoff`, cached: drops come from few places.
pub struct Locations {
    symbolizer: Symbolizer,
    cache: HashMap<u64, String>,
}

impl Default for Locations {
    fn default() -> Self {
        Self::new()
    }
}

impl Locations {
    pub fn new() -> Locations {
        Locations {
            symbolizer: Symbolizer::new(),
            cache: HashMap::new(),
        }
    }

    pub fn name(&mut self, addr: u64) -> String {
        if let Some(s) = self.cache.get(&addr) {
            return s.clone();
        }
        // kallsyms only: no search for a vmlinux image, and module symbols are included.
        let src = Source::Kernel(Kernel {
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        });
        let name = match self
            .symbolizer
            .symbolize(&src, Input::AbsAddr(&[addr]))
            .ok()
            .and_then(|v| v.into_iter().next())
        {
            Some(Symbolized::Sym(s)) => format!("{}+{:#x}", s.name, s.offset),
            _ => format!("{addr:#x}"),
        };
        self.cache.insert(addr, name.clone());
        name
    }
}

/// One ring record; None (counted as a decode error) when it is shorter than a drop_event.
fn decode(raw: &[u8]) -> Option<drop_event> {
    let mut e = drop_event::default();
    plain::copy_from_bytes(&mut e, raw).ok()?;
    Some(e)
}

pub fn run(a: &DropsArgs) -> Result<()> {
    require_root()?;
    let btf = probes::btf_path(a.btf.as_deref());
    probes::require_btf(&btf)?;
    if std::env::var_os("NSL_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    let filters = {
        let _inside = a
            .packet
            .netns
            .first()
            .map(|p| netns::Entered::enter(p))
            .transpose()?;
        crate::cmd::trace::resolve_packet_filters(&a.packet)?
    };
    let (tps, has_cast) = probes::gather_tracepoints(&btf, &["kfree_skb"])?;
    if tps.is_empty() {
        return Err(UserError::new(
            "this kernel has no skb:kfree_skb tracepoint: see `netstack-lat probes`",
        )
        .into());
    }
    let reasons = crate::cmd::signals::drop_reasons(&btf)?;
    let mut obj = MaybeUninit::uninit();
    let mut builder = DropsSkelBuilder::default();
    if btf != Path::new(probes::DEFAULT_BTF) {
        builder.obj_builder.btf_custom_path(&btf)?;
    }
    let mut open = builder
        .open(&mut obj)
        .context("opening the drops BPF object")?;
    let ro = set_filters!(open, &filters);
    ro.has_cast = has_cast;
    ro.f_stack = a.stack;
    if !a.stack {
        open.maps.drop_stacks.set_max_entries(1)?;
    }
    let mut skel = open.load().context("loading the drops BPF program")?;
    fill_netns!(skel, filters);
    skel.attach().context("attaching the drops BPF program")?;
    eprintln!("netstack-lat: tracing drops (tp_btf kfree_skb); stop with Ctrl-C");

    let got: Rc<RefCell<Vec<drop_event>>> = Rc::new(RefCell::new(Vec::new()));
    let bad = Rc::new(std::cell::Cell::new(0u64));
    let (sink, bad_sink) = (Rc::clone(&got), Rc::clone(&bad));
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.drop_events, move |raw| {
        match decode(raw) {
            Some(e) => sink.borrow_mut().push(e),
            None => bad_sink.set(bad_sink.get() + 1),
        }
        0
    })?;
    let rb = rb.build()?;
    let run = RunLoop::start(a.duration)?;
    let mut locs = Locations::new();
    let mut tally = Tally::default();
    let mut out = std::io::stdout().lock();
    loop {
        let stop = match run.step() {
            Step::Wait(w) => {
                let _ = rb.poll(w.min(Duration::from_millis(200)));
                false
            }
            _ => true,
        };
        rb.consume().context("reading the ring buffer")?;
        for e in got.borrow_mut().drain(..) {
            let d = to_drop(&e, &reasons, &mut locs, &skel.maps.drop_stacks, a.stack);
            tally.add(&d);
            if !a.summary {
                if a.json {
                    writeln!(out, "{}", d.json())?;
                } else {
                    writeln!(out, "{}", d.line())?;
                    for f in &d.stack {
                        writeln!(out, "        {f}")?;
                    }
                }
            }
        }
        if stop {
            break;
        }
    }
    let counts: Vec<u64> = crate::bpf::percpu(&skel.maps.drop_counts, &0u32.to_ne_bytes())?;
    let lost: u64 = counts.iter().sum();
    let filt: Vec<u64> = crate::bpf::percpu(&skel.maps.drop_counts, &1u32.to_ne_bytes())?;
    let filtered: u64 = filt.iter().sum();
    let secs = run.started().elapsed().as_secs_f64();
    if a.json {
        writeln!(out, "{}", tally.json(lost, filtered, bad.get(), secs))?;
    } else {
        writeln!(
            out,
            "\n{} drops in {secs:.1}s (lost events {lost}, filtered out {filtered}, decode errors {})",
            tally.total,
            bad.get()
        )?;
        writeln!(out, "{:>8}  reason", "count")?;
        for (r, n) in Tally::sorted(&tally.by_reason) {
            writeln!(out, "{n:>8}  {r}")?;
        }
        writeln!(out, "{:>8}  location", "count")?;
        for (l, n) in Tally::sorted(&tally.by_location) {
            writeln!(out, "{n:>8}  {l}")?;
        }
    }
    Ok(())
}

fn to_drop(
    e: &drop_event,
    reasons: &BTreeMap<u32, String>,
    locs: &mut Locations,
    stacks: &dyn MapCore,
    with_stack: bool,
) -> Drop {
    let f = &e.flow;
    let flow = (e.has_flow != 0 && (f.family == AF_INET || f.family == AF_INET6))
        .then(|| events::flow_of(f.family, f.proto, &f.saddr, f.sport, &f.daddr, f.dport));
    let mut stack = Vec::new();
    if with_stack && e.stack_id >= 0 {
        if let Ok(Some(raw)) = stacks.lookup(&(e.stack_id as u32).to_ne_bytes(), MapFlags::ANY) {
            for c in raw.chunks_exact(8) {
                let ip = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
                if ip == 0 {
                    break;
                }
                stack.push(locs.name(ip));
            }
            // The BPF program and the tracepoint's dispatch are ours, not the kernel's path.
            let ours = stack.iter().take_while(|f| f.starts_with("bpf_")).count();
            stack.drain(..ours);
        }
    }
    Drop {
        ts: e.ts,
        reason: reasons
            .get(&e.reason)
            .cloned()
            .unwrap_or_else(|| format!("REASON_{}", e.reason)),
        location: locs.name(e.location),
        flow,
        ifindex: e.ifindex,
        netns: e.netns,
        tgid: e.tgid,
        comm: events::comm_str(&e.comm.map(|c| c as u8)),
        stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_at(reason: &str, location: &str) -> Drop {
        Drop {
            ts: 0,
            reason: reason.into(),
            location: location.into(),
            flow: None,
            ifindex: 0,
            netns: 0,
            tgid: 0,
            comm: String::new(),
            stack: Vec::new(),
        }
    }

    #[test]
    fn summary_is_busiest_first_with_the_contract_fields() {
        let mut t = Tally::default();
        for _ in 0..3 {
            t.add(&drop_at("NETFILTER_DROP", "nf_hook_slow+0x9c"));
        }
        t.add(&drop_at("NO_SOCKET", "__udp4_lib_rcv+0x1"));
        let v = t.json(0, 2, 1, 1.0);
        assert_eq!(v["type"], "summary");
        assert_eq!(
            v["by_reason"][0],
            json!({"reason": "NETFILTER_DROP", "count": 3})
        );
        assert_eq!(v["by_reason"][1]["reason"], "NO_SOCKET");
        assert_eq!(v["by_location"][0]["location"], "nf_hook_slow+0x9c");
        assert_eq!(v["drops"], 4);
        assert_eq!(v["decode_errors"], 1);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Records of any length up to twice a drop_event, any bytes: whole ones decode to
        /// exactly their bytes, short ones are refused (and counted by the caller).
        #[test]
        fn fuzz_drops_decode(
            raw in proptest::collection::vec(any::<u8>(), 0..2 * std::mem::size_of::<drop_event>()),
        ) {
            let n = std::mem::size_of::<drop_event>();
            match decode(&raw) {
                None => prop_assert!(raw.len() < n),
                Some(e) => {
                    prop_assert!(raw.len() >= n);
                    // SAFETY: drop_event is Plain: its bytes are a value.
                    prop_assert_eq!(unsafe { plain::as_bytes(&e) }, &raw[..n]);
                    // The parts the printed line takes from the raw event, whatever they hold.
                    let f = &e.flow;
                    let _ = events::flow_of(f.family, f.proto, &f.saddr, f.sport, &f.daddr, f.dport)
                        .to_string();
                    prop_assert!(!events::comm_str(&e.comm.map(|c| c as u8)).contains('\0'));
                }
            }
        }
    }
}
