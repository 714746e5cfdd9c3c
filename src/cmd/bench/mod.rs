//! `netstack-lat bench`: the helpers behind `make bench` (scripts/bench.sh).
//!
//! `empty` attaches do-nothing programs (bpf/empty.bpf.c) on the hooks `trace` uses, so
//! bpf_stats shows each hook's cost floor; `frontend` times the user-space half of `trace`
//! (decode and join) on synthetic ring-buffer records, with no kernel involved.

pub mod netfilter;

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::join::reorder::{self, Reorder};
use crate::runloop::{RunLoop, Step};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::Link;
use serde_json::json;

use crate::bpf::empty::{EmptySkel, EmptySkelBuilder};
use crate::bpf::rx::types;
use crate::cli::{BenchCommand, EmptyHooks};
use crate::cmd::trace::{attach_netfilter, NF_FIRST, NF_LAST};
use crate::error::require_root;
use crate::events::{self, Event, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use crate::join::rx::{Correlator, Limits};
use crate::kernel::netns;

pub fn run(b: &BenchCommand) -> Result<()> {
    match b {
        BenchCommand::Empty {
            duration,
            netns,
            hooks,
            points,
        } => empty(*duration, netns, *hooks, points),
        BenchCommand::Frontend { events, prometheus } => frontend(*events, *prometheus),
        BenchCommand::Spin {
            netns,
            iface,
            us,
            duration,
        } => spin(netns.as_deref(), iface, *us, *duration),
        BenchCommand::Netfilter(a) => crate::cmd::bench::netfilter::run(a),
    }
}

// ---- bench empty ----

fn empty(
    duration: Duration,
    netns_paths: &[PathBuf],
    hooks: EmptyHooks,
    points: &[crate::cli::PointSpec],
) -> Result<()> {
    require_root()?;
    libbpf_rs::set_print(None);
    let marker = hooks == EmptyHooks::Marker;
    if marker && !(1..=2).contains(&points.len()) {
        return Err(crate::error::UserError::new(
            "bench empty --hooks marker takes one or two --iface IFACE:DIR[@NETNS]",
        )
        .into());
    }
    let points = crate::cmd::marker::resolve(points)?;
    let mode = crate::cmd::marker::tc_mode(crate::cli::TcAttach::Auto, None);
    let mut obj = MaybeUninit::uninit();
    let mut open = EmptySkelBuilder::default()
        .open(&mut obj)
        .context("opening the empty BPF object")?;
    crate::cmd::marker::prepare_points(open.open_object_mut(), "empty_marker_p", &points, mode);
    if marker {
        // Only the TC programs: the others would sit loaded, unattached, in the figures.
        for mut p in open.open_object_mut().progs_mut() {
            if !p.name().to_string_lossy().starts_with("empty_marker_p") {
                p.set_autoload(false);
            }
        }
    }
    let mut skel = open.load().context("loading the empty BPF programs")?;
    let (links, tc) = if marker {
        let tc = crate::cmd::marker::attach_points(skel.object(), "empty_marker_p", &points, mode)?;
        (Vec::new(), Some(tc))
    } else {
        (attach_empty(&mut skel, netns_paths, hooks)?, None)
    };
    let started = Instant::now();
    let interrupted = wait(duration)?;
    let hits = read_hits(&skel);
    let attached = links.len() + points.len() * usize::from(marker);
    drop(links);
    drop(tc);
    let out = json!({
        "hits": hits,
        "links": attached,
        "seconds": started.elapsed().as_secs_f64(),
        "interrupted": interrupted,
    });
    println!("{out}");
    Ok(())
}

/// Every tp_btf program globally, the netfilter ones at trace's positions inside the
/// namespace (netfilter hooks are per network namespace).
/// The empty programs standing in for `softirq`'s (raise and entry are shared with trace's
/// softirq context hooks).
const SOFTIRQ_EMPTIES: [&str; 4] = [
    "empty_rx_softirq_raise",
    "empty_rx_softirq_entry",
    "empty_softirq_exit",
    "empty_softirq_napi_poll",
];

fn attach_empty(
    skel: &mut EmptySkel<'_>,
    netns_paths: &[PathBuf],
    hooks: EmptyHooks,
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for prog in skel.object().progs_mut() {
        let name = prog.name().to_string_lossy().to_string();
        let wanted = match hooks {
            EmptyHooks::Softirq => SOFTIRQ_EMPTIES.contains(&name.as_str()),
            // trace's hooks: all but softirq's own exit and NAPI programs.
            EmptyHooks::Trace => {
                !name.ends_with("_nf")
                    && !name.starts_with("empty_marker_")
                    && !name.starts_with("empty_nf_")
                    && !SOFTIRQ_EMPTIES[2..].contains(&name.as_str())
            }
            EmptyHooks::Netfilter => name == "empty_nf_drop",
            // serve's defaults: trace's lean set (no tx_free, no sys_enter), the softirq
            // part, and the netfilter part's kfree_skb.
            EmptyHooks::Serve => {
                (!name.ends_with("_nf")
                    && !name.starts_with("empty_marker_")
                    && !name.starts_with("empty_nf_")
                    && !name.starts_with("empty_tx_free_")
                    && name != "empty_tx_send_sys_enter")
                    || SOFTIRQ_EMPTIES.contains(&name.as_str())
                    || name == "empty_nf_drop"
            }
            EmptyHooks::Marker => false,
        };
        if !wanted {
            continue;
        }
        links.push(
            prog.attach()
                .with_context(|| format!("attaching BPF program {name}"))?,
        );
    }
    if hooks == EmptyHooks::Softirq {
        return Ok(links);
    }
    for place in netns::places(netns_paths) {
        let _inside = place.map(netns::Entered::enter).transpose()?;
        match hooks {
            EmptyHooks::Netfilter => attach_empty_bracket(skel, &mut links)?,
            // No netfilter split by default; the bracket is serve's netfilter part.
            EmptyHooks::Serve => {
                attach_empty_nf(skel, &mut links, false)?;
                attach_empty_bracket(skel, &mut links)?;
            }
            _ => attach_empty_nf(skel, &mut links, true)?,
        }
    }
    Ok(links)
}

/// `netfilter`'s bracket, empty: first and last priority of every hook, both families.
fn attach_empty_bracket(skel: &EmptySkel<'_>, links: &mut Vec<Link>) -> Result<()> {
    for hooknum in 0..crate::kernel::names::NF_HOOK_NAMES.len() as i32 {
        for (prog, priority) in [
            (&skel.progs.empty_nf_first, NF_FIRST),
            (&skel.progs.empty_nf_last, NF_LAST),
        ] {
            links.extend(attach_netfilter(
                prog,
                hooknum,
                priority,
                "an empty program",
            )?);
        }
    }
    Ok(())
}

/// trace's netfilter positions; `split`: with the four of the netfilter split.
fn attach_empty_nf(skel: &EmptySkel<'_>, links: &mut Vec<Link>, split: bool) -> Result<()> {
    let hooks = [
        (
            &skel.progs.empty_rx_ip_nf,
            libbpf_rs::NF_INET_PRE_ROUTING,
            NF_FIRST,
        ),
        (
            &skel.progs.empty_rx_transport_nf,
            libbpf_rs::NF_INET_LOCAL_IN,
            NF_LAST,
        ),
        (
            &skel.progs.empty_tx_transport_nf,
            libbpf_rs::NF_INET_LOCAL_OUT,
            NF_FIRST,
        ),
        (
            &skel.progs.empty_tx_nf_done_nf,
            libbpf_rs::NF_INET_POST_ROUTING,
            NF_LAST,
        ),
        (
            &skel.progs.empty_rx_nf_pre_done_nf,
            libbpf_rs::NF_INET_PRE_ROUTING,
            NF_LAST,
        ),
        (
            &skel.progs.empty_rx_nf_in_nf,
            libbpf_rs::NF_INET_LOCAL_IN,
            NF_FIRST,
        ),
        (
            &skel.progs.empty_tx_nf_out_done_nf,
            libbpf_rs::NF_INET_LOCAL_OUT,
            NF_LAST,
        ),
        (
            &skel.progs.empty_tx_nf_post_nf,
            libbpf_rs::NF_INET_POST_ROUTING,
            NF_FIRST,
        ),
    ];
    for (prog, hooknum, priority) in hooks.into_iter().take(if split { 8 } else { 4 }) {
        links.extend(attach_netfilter(
            prog,
            hooknum,
            priority,
            "an empty program",
        )?);
    }
    Ok(())
}

// ---- bench spin ----

fn spin(netns_path: Option<&Path>, iface: &str, us: u64, duration: Duration) -> Result<()> {
    use crate::bpf::spin::SpinSkelBuilder;
    require_root()?;
    libbpf_rs::set_print(None);
    let (ifindex, ns) = {
        let _inside = netns_path.map(netns::Entered::enter).transpose()?;
        (
            netns::ifindex(iface)?,
            netns::inode(Path::new("/proc/thread-self/ns/net"))?,
        )
    };
    let mut obj = MaybeUninit::uninit();
    let mut open = SpinSkelBuilder::default()
        .open(&mut obj)
        .context("opening the spin BPF object")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("BPF object has no rodata")?;
    ro.f_ifindex = ifindex;
    ro.f_netns = ns;
    ro.spin_ns = us * 1000;
    let skel = open.load().context("loading the spin BPF program")?;
    let link = skel
        .progs
        .spin_xmit
        .attach()
        .context("attaching the spin program")?;
    eprintln!(
        "netstack-lat: tracing net_dev_xmit of {iface}, spinning {us} us per packet; stop with Ctrl-C"
    );
    let interrupted = wait(duration)?;
    drop(link);
    let spins = skel.maps.bss_data.as_deref().map_or(0, |b| {
        // SAFETY: a valid reference into the mmapped .bss, read as volatile memory.
        unsafe { std::ptr::read_volatile(&b.spins) }
    });
    println!("{}", json!({"spins": spins, "interrupted": interrupted}));
    Ok(())
}

/// Sleep until the duration ends (false) or SIGINT/SIGTERM arrives (true).
fn wait(duration: Duration) -> Result<bool> {
    let run = RunLoop::start(Some(duration))?;
    loop {
        match run.step() {
            Step::Wait(w) => std::thread::sleep(w),
            Step::Done => return Ok(false),
            Step::Interrupted => return Ok(true),
        }
    }
}

fn read_hits(skel: &EmptySkel<'_>) -> u64 {
    use libbpf_rs::{MapCore, MapFlags};
    skel.maps
        .hits
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map_or(0, |cpus| {
            cpus.iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum()
        })
}

// ---- bench frontend ----

/// Sockets the synthetic traffic is spread over (a quarter each UDP/TCP, IPv4/IPv6).
const SOCKETS: usize = 1000;
/// Reads trail their chains by this many packets, so socket queues are not always empty.
const READ_LAG: usize = 32;
/// Time between synthetic packets (ns).
const PACKET_GAP: u64 = 500;

/// Raw ring-buffer records, back to back; record i ends at `ends[i]`.
#[derive(Default)]
struct Records {
    data: Vec<u8>,
    ends: Vec<usize>,
    limit: usize,
}

impl Records {
    fn push<T: plain::Plain>(&mut self, rec: &T) {
        if self.ends.len() >= self.limit {
            return;
        }
        // SAFETY: the generated event structs are repr(C) integers and arrays with their
        // padding spelled out as fields, so every byte is initialized.
        self.data.extend_from_slice(unsafe { plain::as_bytes(rec) });
        self.ends.push(self.data.len());
    }

    fn full(&self) -> bool {
        self.ends.len() >= self.limit
    }
}

/// One synthetic packet: which socket it is for and where its sequence space ends.
#[derive(Clone, Copy)]
struct Packet {
    sock: usize,
    ts: u64,
    seq_end: u32,
}

fn is_tcp(sock: usize) -> bool {
    sock % 2 == 1
}

fn is_v6(sock: usize) -> bool {
    sock % 4 >= 2
}

fn payload(sock: usize) -> u32 {
    if is_tcp(sock) {
        1448
    } else {
        64
    }
}

fn sk_addr(sock: usize) -> u64 {
    0xffff_8880_1000_0000 + sock as u64 * 0x800
}

fn synth_flow(sock: usize) -> types::flow {
    let mut f = types::flow {
        sport: 30000 + sock as u16,
        dport: 9999,
        family: if is_v6(sock) { AF_INET6 } else { AF_INET },
        proto: if is_tcp(sock) {
            IPPROTO_TCP
        } else {
            IPPROTO_UDP
        },
        ..Default::default()
    };
    if is_v6(sock) {
        f.saddr = std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1).octets();
        f.daddr = std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2).octets();
    } else {
        f.saddr[..4].copy_from_slice(&[10, 77, 0, 1]);
        f.daddr[..4].copy_from_slice(&[10, 77, 0, 2]);
    }
    f
}

fn chain_record(p: &Packet) -> types::rx_chain_event {
    let t = p.ts;
    types::rx_chain_event {
        kind: types::event_kind::EV_RX_CHAIN.0,
        cpu: (p.sock % 2) as u32,
        ts: [t, t + 1800, t + 2500, t + 3400, t + 4100],
        skb: 0xffff_8881_0000_0000 + (t & 0xffff_ff00),
        sk: sk_addr(p.sock),
        flow: synth_flow(p.sock),
        ifindex: 2,
        netns: 4026532000,
        payload: payload(p.sock),
        seq_end: if is_tcp(p.sock) { p.seq_end } else { 0 },
        ..Default::default()
    }
}

fn read_record(p: &Packet, now: u64) -> types::rx_read_event {
    let mut e = types::rx_read_event {
        kind: types::event_kind::EV_RX_READ.0,
        cpu: 1,
        ts: now,
        sk: sk_addr(p.sock),
        pid: 4242,
        tgid: 4242,
        bytes: payload(p.sock) as i32,
        copied_seq: if is_tcp(p.sock) { p.seq_end } else { 0 },
        proto: if is_tcp(p.sock) {
            IPPROTO_TCP
        } else {
            IPPROTO_UDP
        },
        ..Default::default()
    };
    for (d, s) in e.comm.iter_mut().zip(b"server") {
        *d = *s as _;
    }
    e
}

/// xorshift64: sockets are picked pseudo-randomly but reproducibly.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `events` records: per packet one chain, then (READ_LAG packets later) its read.
fn synth(events: usize) -> Records {
    let mut recs = Records {
        limit: events,
        ..Default::default()
    };
    let mut seqs: Vec<u32> = (0..SOCKETS)
        .map(|s| (s as u32).wrapping_mul(2_654_435_761))
        .collect();
    let mut unread = std::collections::VecDeque::with_capacity(READ_LAG + 1);
    let (mut rng, mut now) = (0x9e37_79b9_7f4a_7c15u64, 1_000_000_000u64);
    while !recs.full() {
        let sock = (next_random(&mut rng) % SOCKETS as u64) as usize;
        seqs[sock] = seqs[sock].wrapping_add(payload(sock));
        let p = Packet {
            sock,
            ts: now,
            seq_end: seqs[sock],
        };
        recs.push(&chain_record(&p));
        unread.push_back(p);
        if unread.len() > READ_LAG {
            let r = unread.pop_front().expect("queue is not empty");
            recs.push(&read_record(&r, now + 6000));
        }
        now += PACKET_GAP;
    }
    recs
}

/// Decode, reorder and join every record, as trace's ring-buffer loop does (a release
/// per batch of records, holding back the newest HOLD_NS).
fn replay(recs: &Records, labelled: bool) -> (Correlator, u64) {
    let mut corr = Correlator::new(false, Limits::default(), false);
    if labelled {
        corr.keep_labelled();
    }
    let mut held = Reorder::new(1);
    let (mut start, mut errors, mut newest) = (0usize, 0u64, 0u64);
    let mut join = |ev: Event| corr.on_event(&ev);
    for (i, &end) in recs.ends.iter().enumerate() {
        match events::decode(&recs.data[start..end]) {
            Ok(ev) => {
                newest = newest.max(ev.order_ts());
                held.push(0, ev);
            }
            Err(_) => errors += 1,
        }
        start = end;
        if i % 1024 == 1023 {
            held.release(newest.saturating_sub(reorder::HOLD_NS), &mut join);
        }
    }
    held.release(u64::MAX, &mut join);
    (corr, errors)
}

fn frontend(events: u64, prometheus: bool) -> Result<()> {
    let n = usize::try_from(events).context("--events is too large for this machine")?;
    let recs = synth(n);
    let started = Instant::now();
    let (corr, errors) = replay(&recs, prometheus);
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(&corr.stats);
    anyhow::ensure!(errors == 0, "{errors} synthetic records did not decode");
    let rate = if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    };
    let mut out = json!({"events": events, "seconds": seconds, "events_per_s": rate});
    if prometheus {
        // One scrape's work: the families from the join's state, then the text encoding.
        let t = Instant::now();
        let x = crate::sink::prom::registry::Exporter::new();
        let k = crate::cmd::trace::KernelCounters::default();
        x.publish(
            "trace",
            crate::sink::prom::families::trace_families(
                &corr,
                &k,
                0.0,
                0,
                &Default::default(),
                &Default::default(),
            ),
        );
        let text = x.render();
        out["render_seconds"] = json!(t.elapsed().as_secs_f64());
        out["exposition_bytes"] = json!(text.len());
    }
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_makes_exactly_the_records_asked_for() {
        for n in [0, 1, 7, 100] {
            assert_eq!(synth(n).ends.len(), n);
        }
    }

    #[test]
    fn synthetic_records_decode_and_join() {
        let recs = synth(20_000);
        let (corr, errors) = replay(&recs, false);
        assert_eq!(errors, 0);
        assert_eq!(corr.stats.chains + corr.stats.reads, 20_000);
        // Every read but those of the last few packets finds its data.
        assert_eq!(corr.stats.reads_unmatched, 0);
        assert_eq!(corr.pending(), READ_LAG);
        let tcp = corr
            .conns
            .keys()
            .filter(|(_, f)| f.proto == IPPROTO_TCP)
            .count();
        let udp = corr
            .conns
            .keys()
            .filter(|(_, f)| f.proto == IPPROTO_UDP)
            .count();
        assert!(tcp > 400 && udp > 400, "tcp {tcp} udp {udp}");
    }
}
