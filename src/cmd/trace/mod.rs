//! `netstack-lat trace`: load the RX programs chosen by probing, attach them, run the
//! ring-buffer loop until the duration ends or a signal arrives, then print the summary.

use std::cell::RefCell;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, MapType, NetfilterOpts, RingBufferBuilder};
use std::os::fd::{AsFd, AsRawFd};

use crate::bpf::rx::{types, RxSkel, RxSkelBuilder};
use crate::bpf::tx::{TxSkel, TxSkelBuilder};
use crate::cli::{PacketFilterArgs, Proto, TraceArgs};
use crate::error::{require_root, UserError};
use crate::events::{self, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use crate::join::kernel_spans;
use crate::join::reorder::{self, Reorder};
use crate::join::rx::{Correlator, Limits};
use crate::kernel::netns;
use crate::kernel::nswatch::{Names, Watch as NsWatch};
use crate::kernel::probes::{self, HookKind, PointPlan};
use crate::runloop::{RunLoop, Step};
use crate::sink::prom::families;
use crate::sink::prom::registry::{self, Endpoint, Exporter, Family};
use crate::sink::trace_report::{self, IntervalReport, Summary};
pub use crate::stats::counters::KernelCounters;
use std::sync::Arc;

/// Filters resolved against the system (pids, interfaces, namespaces, cgroups exist).
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub port: u16,
    pub proto: u8,
    pub family: u8,
    pub ifindex: u32,
    /// Network namespace inodes (empty: any).
    pub netns: Vec<u32>,
    pub cidr: Option<crate::cli::Cidr>,
    pub tgid: u32,
    pub comm: Option<String>,
    pub cgroup: u64,
}

impl Filters {
    /// Owner filters can only be applied at read time, by process.
    pub fn by_owner(&self) -> bool {
        self.tgid != 0 || self.comm.is_some() || self.cgroup != 0
    }
}

/// Check every packet filter against the system; each failure is a one-line user error.
/// Interface names are looked up in the namespace this thread is in, so the caller enters
/// the traced one first.
pub fn resolve_packet_filters(a: &PacketFilterArgs) -> Result<Filters, UserError> {
    let mut f = Filters {
        port: a.port.unwrap_or(0),
        proto: match a.proto {
            Some(Proto::Tcp) => IPPROTO_TCP,
            Some(Proto::Udp) => IPPROTO_UDP,
            None => 0,
        },
        family: if a.ipv4 {
            AF_INET
        } else if a.ipv6 {
            AF_INET6
        } else {
            0
        },
        cidr: a.addr,
        ..Filters::default()
    };
    if a.port == Some(0) {
        return Err(UserError::new(
            "--port 0 matches nothing: give a port from 1 to 65535",
        ));
    }
    if let Some(c) = &a.addr {
        let fam = if c.addr.is_ipv4() { AF_INET } else { AF_INET6 };
        if f.family != 0 && f.family != fam {
            return Err(UserError::new(format!(
                "--addr {} is not of the family chosen with -4/-6",
                c.addr
            )));
        }
    }
    f.netns = a
        .netns
        .iter()
        .map(|p| netns::check_netns(p))
        .collect::<Result<_, _>>()?;
    f.netns.sort_unstable();
    f.netns.dedup();
    if let Some(name) = &a.iface {
        if a.netns.len() > 1 {
            return Err(UserError::new(
                "--iface names an interface of one namespace: give a single --netns with it",
            ));
        }
        f.ifindex = netns::ifindex(name)?;
        // An interface index means something only in its own namespace.
        if f.netns.is_empty() {
            f.netns.push(netns::current_inode()?);
        }
    }
    Ok(f)
}

/// The namespaces whose per-namespace hooks a run attaches: those of --netns; with
/// --iface alone, the tool's own (where the name was looked up); else none given, which
/// means every namespace of the host.
pub fn watched_netns(a: &PacketFilterArgs) -> Result<Vec<PathBuf>, UserError> {
    if !a.netns.is_empty() {
        return Ok(a.netns.clone());
    }
    if a.iface.is_some() {
        return Ok(vec![PathBuf::from(format!(
            "/proc/{}/ns/net",
            std::process::id()
        ))]);
    }
    Ok(Vec::new())
}

/// The packet filters, then the owner filters (pid, comm, cgroup) of `trace`.
pub fn resolve_filters(a: &TraceArgs) -> Result<Filters, UserError> {
    let mut f = resolve_packet_filters(&a.packet)?;
    if let Some(pid) = a.pid {
        f.tgid = resolve_pid(pid)?;
    }
    if let Some(comm) = &a.comm {
        if comm.is_empty() || comm.len() > 15 {
            return Err(UserError::new(format!(
                "--comm '{comm}' must be 1 to 15 bytes, as the kernel keeps command names"
            )));
        }
        f.comm = Some(comm.clone());
    }
    if let Some(cg) = &a.cgroup {
        f.cgroup = resolve_cgroup(cg)?;
    }
    Ok(f)
}

/// A process filter: the pid must name a running process.
pub fn resolve_pid(pid: u32) -> Result<u32, UserError> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(UserError::new(format!(
            "unknown pid {pid}: no such process (check with `ps -p {pid}`)"
        )));
    }
    Ok(pid)
}

/// A cgroup filter: a cgroup v2 directory, as the id BPF compares (its inode number).
pub fn resolve_cgroup(cg: &Path) -> Result<u64, UserError> {
    let md = std::fs::metadata(cg).map_err(|e| {
        UserError::new(format!(
            "cannot use cgroup {}: {e} (give a cgroup v2 directory under /sys/fs/cgroup)",
            cg.display()
        ))
    })?;
    if !md.is_dir() {
        return Err(UserError::new(format!(
            "cgroup {} is not a directory: give a cgroup v2 directory under /sys/fs/cgroup",
            cg.display()
        )));
    }
    Ok(md.ino())
}

/// The send syscalls whose entry starts tx_send, for this architecture.
const SEND_SYSCALLS: [libc::c_long; 5] = [
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
];

/// Program names per point and hook kind (the skeleton's program fields).
fn programs_for(point: &str, kind: HookKind) -> &'static [&'static str] {
    use HookKind::*;
    match (point, kind) {
        ("rx_driver", TpBtf) => &[
            "rx_driver_netif_rx",
            "rx_driver_gro",
            "rx_driver_receive_entry",
        ],
        ("rx_driver", RawTp) => &[
            "rx_driver_netif_rx_raw",
            "rx_driver_gro_raw",
            "rx_driver_receive_entry_raw",
        ],
        ("rx_netif", TpBtf) => &["rx_netif_tp_btf"],
        ("rx_netif", RawTp) => &["rx_netif_raw"],
        ("rx_ip", Netfilter) => &["rx_ip_nf"],
        ("rx_ip", Fentry) => &[
            "rx_ip4_fentry",
            "rx_ip6_fentry",
            "rx_ip4_list_fentry",
            "rx_ip6_list_fentry",
        ],
        ("rx_ip", Kprobe) => &[
            "rx_ip4_kprobe",
            "rx_ip6_kprobe",
            "rx_ip4_list_kprobe",
            "rx_ip6_list_kprobe",
        ],
        ("rx_transport", Netfilter) => &["rx_transport_nf"],
        ("rx_transport", Fentry) => &[
            "rx_transport_tcp4_fentry",
            "rx_transport_tcp6_fentry",
            "rx_transport_udp4_fentry",
            "rx_transport_udp6_fentry",
        ],
        ("rx_transport", Kprobe) => &[
            "rx_transport_tcp4_kprobe",
            "rx_transport_tcp6_kprobe",
            "rx_transport_udp4_kprobe",
            "rx_transport_udp6_kprobe",
        ],
        ("rx_sockq", TpBtf) => &["rx_sockq_tp_btf"],
        ("rx_sockq", RawTp) => &["rx_sockq_raw"],
        ("rx_sockq", Fentry) => &["rx_sockq_fentry"],
        ("rx_sockq", Kprobe) => &["rx_sockq_kprobe"],
        ("rx_read", TpBtf) => &["rx_read_tp_btf"],
        ("rx_read", RawTp) => &["rx_read_raw"],
        ("rx_read", Fentry) => &["rx_read_fexit"],
        ("rx_read", Kprobe) => &["rx_read_kprobe", "rx_read_kretprobe"],
        ("rx_softirq", TpBtf) => &["rx_softirq_raise", "rx_softirq_entry"],
        ("rx_softirq", RawTp) => &["rx_softirq_raise_raw", "rx_softirq_entry_raw"],
        ("tx_send", TpBtf) => &["tx_send_sys_enter", "tx_send_tcp", "tx_send_end"],
        ("tx_send", RawTp) => &[
            "tx_send_sys_enter_raw",
            "tx_send_tcp_raw",
            "tx_send_end_raw",
        ],
        ("tx_send", Fentry) => &[
            "tx_send_sys_enter_raw",
            "tx_send_tcp_fentry",
            "tx_send_end4_fexit",
            "tx_send_end6_fexit",
        ],
        ("tx_send", Kprobe) => &[
            "tx_send_sys_enter_raw",
            "tx_send_tcp_kprobe",
            "tx_send_end4_kprobe",
            "tx_send_end4_kretprobe",
            "tx_send_end6_kprobe",
            "tx_send_end6_kretprobe",
        ],
        ("tx_transport", Netfilter) => &["tx_transport_nf"],
        ("tx_transport", Fentry) => &["tx_transport4_fentry", "tx_transport6_fentry"],
        ("tx_transport", Kprobe) => &["tx_transport4_kprobe", "tx_transport6_kprobe"],
        ("tx_nf_done", Netfilter) => &["tx_nf_done_nf"],
        ("tx_nf_done", Fentry) => &["tx_nf_done4_fentry", "tx_nf_done6_fentry"],
        ("tx_nf_done", Kprobe) => &["tx_nf_done4_kprobe", "tx_nf_done6_kprobe"],
        ("tx_qdisc_enq", TpBtf) => &["tx_qdisc_enq_queue", "tx_qdisc_enq_qdisc"],
        ("tx_qdisc_enq", RawTp) => &["tx_qdisc_enq_queue_raw", "tx_qdisc_enq_qdisc_raw"],
        ("tx_qdisc_deq", TpBtf) => &["tx_qdisc_deq_qdisc"],
        ("tx_qdisc_deq", RawTp) => &["tx_qdisc_deq_qdisc_raw"],
        ("tx_driver", TpBtf) => &["tx_driver_start"],
        ("tx_driver", RawTp) => &["tx_driver_start_raw"],
        ("tx_done", TpBtf) => &["tx_done_xmit"],
        ("tx_done", RawTp) => &["tx_done_xmit_raw"],
        ("tx_free", TpBtf) => &["tx_free_consume", "tx_free_kfree"],
        ("tx_free", RawTp) => &["tx_free_consume_raw", "tx_free_kfree_raw"],
        _ => &[],
    }
}

/// Driver-level tracepoint that a program of rx_driver needs.
fn driver_tracepoint(prog: &str) -> &'static str {
    if prog.contains("gro") {
        "napi_gro_receive_entry"
    } else if prog.contains("receive_entry") {
        "netif_receive_skb_entry"
    } else {
        "netif_rx"
    }
}

/// The programs to load: exactly those of the chosen hook per point.
fn chosen_programs(plan: &[PointPlan]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for p in plan {
        let Some(kind) = p.kind else { continue };
        for &prog in programs_for(p.point, kind) {
            if p.point == "rx_driver" && !p.hooks.iter().any(|h| h == driver_tracepoint(prog)) {
                continue;
            }
            out.push(prog);
        }
        // A TCP socket's close ends its read-join state: beside rx_read, on the state-change
        // tracepoint every supported kernel has.
        if p.point == "rx_read" {
            out.push(if kind == HookKind::TpBtf {
                "rx_close_tp_btf"
            } else {
                "rx_close_raw"
            });
        }
        // A TCP socket's close ends its write state, beside tx_send (same tracepoint).
        if p.point == "tx_send" {
            out.push(if kind == HookKind::TpBtf {
                "tx_close_tp_btf"
            } else {
                "tx_close_raw"
            });
        }
        // TCP segments the TCP backlog delays come back to their chain at tcp_probe.
        if p.point == "rx_sockq" {
            out.push(if kind == HookKind::TpBtf {
                "rx_backlog_tp_btf"
            } else {
                "rx_backlog_raw"
            });
        }
    }
    out
}

/// The programs that split the netfilter stretch of a point served by netfilter links: the
/// other end of each hook, as (point, program, hook, priority).
const NF_SPLIT: [(&str, &str, i32, i32); 4] = [
    (
        "rx_ip",
        "rx_nf_pre_done_nf",
        libbpf_rs::NF_INET_PRE_ROUTING,
        NF_LAST,
    ),
    (
        "rx_transport",
        "rx_nf_in_nf",
        libbpf_rs::NF_INET_LOCAL_IN,
        NF_FIRST,
    ),
    (
        "tx_transport",
        "tx_nf_out_done_nf",
        libbpf_rs::NF_INET_LOCAL_OUT,
        NF_LAST,
    ),
    (
        "tx_nf_done",
        "tx_nf_post_nf",
        libbpf_rs::NF_INET_POST_ROUTING,
        NF_FIRST,
    ),
];

fn split_programs(plan: &[PointPlan]) -> Vec<&'static str> {
    NF_SPLIT
        .iter()
        .filter(|(point, ..)| {
            plan.iter()
                .any(|p| p.point == *point && p.kind == Some(HookKind::Netfilter))
        })
        .map(|(_, prog, ..)| *prog)
        .collect()
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
pub fn now_monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC is what bpf_ktime_get_ns reads.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sum_counter(skel: &RxSkel<'_>, idx: u32) -> u64 {
    skel.maps
        .counters
        .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map(|cpus| {
            cpus.iter()
                .filter_map(|v| {
                    v.get(..8)
                        .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
                })
                .sum()
        })
        .unwrap_or(0)
}

fn read_counters(skel: &RxSkel<'_>) -> KernelCounters {
    use types::counter as c;
    KernelCounters {
        lost_events: sum_counter(skel, c::CNT_LOST.0),
        events: 0, // counted by the reader (PerCpuRings::received)
        driver_miss: sum_counter(skel, c::CNT_DRV_MISS.0),
        sockq_unjoined: sum_counter(skel, c::CNT_SOCKQ_UNJOINED.0),
        chains_without_socket: sum_counter(skel, c::CNT_CHAIN_FLUSHED.0),
        filtered: sum_counter(skel, c::CNT_FILTERED.0),
        tx_evicted: sum_counter(skel, c::CNT_TX_EVICTED.0),
        tx_dropped: sum_counter(skel, c::CNT_TX_DROPPED.0),
        tx_filtered: sum_counter(skel, c::CNT_TX_FILTERED.0),
        tx_park_full: sum_counter(skel, c::CNT_TX_PARK_FULL.0),
        rx_evicted: sum_counter(skel, c::CNT_RX_EVICTED.0),
        sockq_repeated: sum_counter(skel, c::CNT_SOCKQ_DUP.0),
        tx_xmit_failed: sum_counter(skel, c::CNT_TX_XMIT_FAIL.0),
        rx_backlog: sum_counter(skel, c::CNT_RX_BACKLOG.0),
        rx_backlog_taken: sum_counter(skel, c::CNT_RX_BACKLOG_TAKEN.0),
        series_full: sum_counter(skel, c::CNT_AGG_FULL.0),
        fifo_full: sum_counter(skel, c::CNT_FIFO_FULL.0),
        rx_chains: sum_counter(skel, c::CNT_RX_CHAINS.0),
        tx_chains: sum_counter(skel, c::CNT_TX_CHAINS.0),
        reads: sum_counter(skel, c::CNT_READS.0),
        reads_unmatched: sum_counter(skel, c::CNT_READS_UNMATCHED.0),
        unread: sum_counter(skel, c::CNT_UNREAD.0),
        tx_writes: sum_counter(skel, c::CNT_TX_WRITES.0),
        tx_retransmits: sum_counter(skel, c::CNT_TX_RETRANS.0),
        tx_unattributed: sum_counter(skel, c::CNT_TX_UNATTRIBUTED.0),
        tx_writes_evicted: sum_counter(skel, c::CNT_TX_WRITES_EVICTED.0),
        ..KernelCounters::default()
    }
}

/// A backlog is processed when its reader releases the socket, within milliseconds: a
/// handed-over chain older than this was merged into the segment before it, or dropped.
const BACKLOG_STALE_NS: u64 = 1_000_000_000;

/// Remove chains handed over to the TCP backlog that no CPU took up within
/// BACKLOG_STALE_NS: while any are left, every TCP segment pays BPF a lookup.
fn sweep_backlog(skel: &mut RxSkel<'_>, now: u64) -> u64 {
    let mut removed = 0;
    let keys: Vec<Vec<u8>> = skel.maps.rx_backlog.keys().collect();
    for key in keys {
        let Ok(Some(v)) = skel.maps.rx_backlog.lookup(&key, MapFlags::ANY) else {
            continue;
        };
        let mut e = types::rx_chain_event::default();
        if plain::copy_from_bytes(&mut e, &v).is_err() {
            continue;
        }
        let last = e.ts.iter().copied().max().unwrap_or(0);
        if now.saturating_sub(last) > BACKLOG_STALE_NS && skel.maps.rx_backlog.delete(&key).is_ok()
        {
            removed += 1;
            if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
                // SAFETY: the mmapped .bss word BPF updates with atomic adds.
                let n = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut bss.backlog_n) };
                let _ = n.fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |x| x.checked_sub(1),
                );
            }
        }
    }
    removed
}

/// The kernel counters with the TX chains in flight (parked, cached) and removed stale.
fn counters_now(skel: &RxSkel<'_>, in_flight: (u64, u64), stale: (u64, u64)) -> KernelCounters {
    KernelCounters {
        tx_parked: in_flight.0,
        tx_cached: in_flight.1,
        tx_stale: stale.0,
        rx_backlog_stale: stale.1,
        ..read_counters(skel)
    }
}

/// Chains still in the per-CPU chain caches when we stop: they passed every point they will.
fn drain_slots(skel: &RxSkel<'_>, corr: &mut Correlator) {
    let mut chains = Vec::new();
    for set in 0..types::rx_cache_size::RX_SETS.0 {
        let Ok(sets) =
            crate::bpf::percpu::<types::rx_set>(&skel.maps.rx_chains, &set.to_ne_bytes())
        else {
            return;
        };
        for slot in sets.iter().flat_map(|s| s.w.iter()) {
            if slot.state == types::slot_state::SLOT_PASS.0
                && slot.ev.ts[types::rx_point::RX_IP.0 as usize] != 0
            {
                let mut chain = events::Chain::from(&slot.ev);
                chain.flags |= events::CHAIN_AT_EXIT;
                chains.push(chain);
            }
        }
    }
    // In time order, as the join expects.
    chains.sort_by_key(|c| c.ts[events::RX_NETIF].max(c.ts[events::RX_IP]));
    corr.stats.rx_at_exit += chains.len() as u64;
    for c in &chains {
        corr.on_chain(c);
    }
}

/// A parked TX chain this much older than its last point is gone from the kernel (freed
/// where no hook saw it, e.g. a race with a CPU move): no qdisc or completion waits 10 s.
const STALE_NS: u64 = 10_000_000_000;

/// The TX chains in flight now, after removing parked ones older than STALE_NS: (parked,
/// cached, removed).
fn tx_in_flight(skel: &mut TxSkel<'_>, now: u64) -> (u64, u64, u64) {
    use crate::bpf::tx::types as t;
    let (mut parked, mut stale) = (0, 0);
    let keys: Vec<Vec<u8>> = skel.maps.tx_parked.keys().collect();
    for key in keys {
        let Ok(Some(v)) = skel.maps.tx_parked.lookup(&key, MapFlags::ANY) else {
            continue;
        };
        let mut e = t::tx_chain_event::default();
        if plain::copy_from_bytes(&mut e, &v).is_err() {
            continue;
        }
        let last = e.ts.iter().copied().max().unwrap_or(0);
        if now.saturating_sub(last) > STALE_NS && skel.maps.tx_parked.delete(&key).is_ok() {
            stale += 1;
            // BPF counts parked chains to skip lookups while none are: keep it true.
            if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
                // SAFETY: the mmapped .bss word BPF updates with atomic adds.
                let n = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut bss.parked_n) };
                let _ = n.fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |x| x.checked_sub(1),
                );
            }
        } else {
            parked += 1;
        }
    }
    let cached = skel
        .maps
        .tx_cpu
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map_or(0, |cpus| {
            let size = std::mem::size_of::<t::tx_chain_event>();
            cpus.iter()
                .flat_map(|raw| raw.chunks_exact(size).take(64))
                .filter(|c| {
                    let mut e = t::tx_chain_event::default();
                    plain::copy_from_bytes(&mut e, c).is_ok() && e.skb != 0
                })
                .count() as u64
        });
    (parked, cached, stale)
}

/// TX chains still parked (in a qdisc, awaiting completion) or in a per-CPU cache when we
/// stop: reported with the points they passed.
fn drain_tx(skel: &TxSkel<'_>, corr: &mut Correlator) {
    use crate::bpf::tx::types as t;
    let mut chains = Vec::new();
    for key in skel.maps.tx_parked.keys() {
        if let Ok(Some(v)) = skel.maps.tx_parked.lookup(&key, MapFlags::ANY) {
            let mut e = t::tx_chain_event::default();
            if plain::copy_from_bytes(&mut e, &v).is_ok() {
                chains.push(e);
            }
        }
    }
    if let Ok(Some(cpus)) = skel
        .maps
        .tx_cpu
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
    {
        let size = std::mem::size_of::<t::tx_chain_event>();
        for raw in cpus {
            for chunk in raw.chunks_exact(size).take(64) {
                let mut e = t::tx_chain_event::default();
                if plain::copy_from_bytes(&mut e, chunk).is_ok() && e.skb != 0 {
                    chains.push(e);
                }
            }
        }
    }
    for e in chains {
        let mut c = events::TxChain::from(&e);
        c.flags |= events::TXF_AT_EXIT;
        corr.on_tx_chain(&c);
    }
}

/// The first and last priorities a netfilter BPF link may take: stamps there bracket
/// every other netfilter hook (conntrack, NAT, iptables, nftables).
pub const NF_FIRST: i32 = i32::MIN + 1;
pub const NF_LAST: i32 = i32::MAX - 1;

/// Priorities tried, stepping inwards, when another BPF link holds the wanted one.
const NF_PRIORITY_TRIES: i32 = 64;

/// Attach a netfilter program to one hook and family, in this thread's namespace, at
/// `priority` or, when another BPF link already holds it (the kernel allows one BPF program
/// per priority and hook: EBUSY, e.g. a `trace` and a `netfilter` run at once), the nearest
/// free one towards the middle, so the bracket stays outside every other hook function.
pub fn attach_nf_link(
    prog: &libbpf_rs::ProgramMut<'_>,
    pf: i32,
    hooknum: i32,
    priority: i32,
    what: &str,
) -> Result<Link> {
    let step = if priority < 0 { 1 } else { -1 };
    for k in 0..NF_PRIORITY_TRIES {
        let opts = NetfilterOpts {
            protocol_family: pf,
            hooknum,
            priority: priority + step * k,
            ..Default::default()
        };
        match prog.attach_netfilter_with_opts(opts) {
            Ok(link) => return Ok(link),
            Err(e) if is_busy(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("attaching {what} to netfilter")),
        }
    }
    Err(UserError::new(format!(
        "cannot attach {what} to netfilter: {NF_PRIORITY_TRIES} priorities next to {priority} are all held by other BPF programs: \
         find them with `bpftool link show` (type netfilter) and stop what holds them"
    ))
    .into())
}

/// EBUSY: libbpf-rs keeps the OS error as the innermost cause of its context chain, which
/// only the alternate form prints.
fn is_busy(e: &libbpf_rs::Error) -> bool {
    format!("{e:#}").contains(&std::io::Error::from_raw_os_error(libc::EBUSY).to_string())
}

/// Attach a netfilter program to one hook for IPv4 and IPv6, in this thread's namespace.
pub fn attach_netfilter(
    prog: &libbpf_rs::ProgramMut<'_>,
    hooknum: i32,
    priority: i32,
    what: &str,
) -> Result<[Link; 2]> {
    Ok([
        attach_nf_link(prog, libc::NFPROTO_IPV4, hooknum, priority, what)?,
        attach_nf_link(prog, libc::NFPROTO_IPV6, hooknum, priority, what)?,
    ])
}

/// The programs that are not netfilter links: tracepoints and functions, global.
fn attach_global(skel: &mut RxSkel<'_>, tx: &mut TxSkel<'_>, chosen: &[&str]) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for prog in skel.object().progs_mut().chain(tx.object().progs_mut()) {
        let name = prog.name().to_string_lossy().to_string();
        if !chosen.contains(&name.as_str()) || name.ends_with("_nf") {
            continue;
        }
        links.push(
            prog.attach()
                .with_context(|| format!("attaching BPF program {name}"))?,
        );
    }
    Ok(links)
}

/// Netfilter hooks belong to a network namespace: the links of the one this thread is in
/// (the namespace watch calls it inside each).
fn attach_nf_in_netns(
    skel: &RxSkel<'_>,
    tx: &TxSkel<'_>,
    plan: &[PointPlan],
    chosen: &[&str],
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    attach_nf_here(skel, tx, plan, &mut links)?;
    for &(_, name, hooknum, priority) in &NF_SPLIT {
        if !chosen.contains(&name) {
            continue;
        }
        let prog = match name {
            "rx_nf_pre_done_nf" => &skel.progs.rx_nf_pre_done_nf,
            "rx_nf_in_nf" => &skel.progs.rx_nf_in_nf,
            "tx_nf_out_done_nf" => &tx.progs.tx_nf_out_done_nf,
            _ => &tx.progs.tx_nf_post_nf,
        };
        links.extend(attach_netfilter(prog, hooknum, priority, name)?);
    }
    Ok(links)
}

fn attach_nf_here(
    skel: &RxSkel<'_>,
    tx: &TxSkel<'_>,
    plan: &[PointPlan],
    links: &mut Vec<Link>,
) -> Result<()> {
    for p in plan.iter().filter(|p| p.kind == Some(HookKind::Netfilter)) {
        let (prog, hooknum, priority) = match p.point {
            "rx_ip" => (
                &skel.progs.rx_ip_nf,
                libbpf_rs::NF_INET_PRE_ROUTING,
                NF_FIRST,
            ),
            "rx_transport" => (
                &skel.progs.rx_transport_nf,
                libbpf_rs::NF_INET_LOCAL_IN,
                NF_LAST,
            ),
            "tx_transport" => (
                &tx.progs.tx_transport_nf,
                libbpf_rs::NF_INET_LOCAL_OUT,
                NF_FIRST,
            ),
            "tx_nf_done" => (
                &tx.progs.tx_nf_done_nf,
                libbpf_rs::NF_INET_POST_ROUTING,
                NF_LAST,
            ),
            _ => continue,
        };
        links.extend(attach_netfilter(prog, hooknum, priority, p.point)?);
    }
    Ok(())
}

/// In-kernel aggregation: the span histograms and the counts the kernel kept in place of
/// the frontend's join, put where the exporter (and a summary) read them.
fn kernel_spans(
    skel: &RxSkel<'_>,
    tx: &TxSkel<'_>,
    corr: &mut Correlator,
    k: &KernelCounters,
    live: &Names,
) -> Result<()> {
    let mut series = rustc_hash::FxHashMap::default();
    kernel_spans::read(&skel.maps.agg_hist, &mut series)?;
    kernel_spans::read(&tx.maps.agg_hist, &mut series)?;
    // The kernel's table keeps the series of namespaces gone: shown only while covered.
    crate::join::rx::retain_netns(&mut series, |n| live.contains_key(&n));
    corr.labelled = Some(series);
    let st = &mut corr.stats;
    st.chains = k.rx_chains;
    st.tx_chains = k.tx_chains;
    st.reads = k.reads;
    st.reads_unmatched = k.reads_unmatched;
    st.unread = k.unread;
    st.queue_evicted = k.fifo_full + k.tx_writes_evicted;
    st.tx_writes = k.tx_writes;
    st.tx_retransmits = k.tx_retransmits;
    st.tx_unattributed = k.tx_unattributed;
    Ok(())
}

/// serve's last words: what it counted and every place a span was not recorded.
pub fn in_kernel_line(st: &crate::join::rx::JoinStats, k: &KernelCounters) -> String {
    format!(
        "in-kernel totals: {} RX and {} TX packets, {} reads ({} found no queued data), \
         {} TCP writes; not recorded: {} spans (series table full, raise --max-series), \
         {} reads (socket FIFO full), {} unread at close, {} TX segments without their \
         write, {} retransmits, {} lost events",
        st.chains,
        st.tx_chains,
        st.reads,
        st.reads_unmatched,
        st.tx_writes,
        k.series_full,
        k.fifo_full,
        st.unread,
        st.tx_unattributed,
        st.tx_retransmits,
        k.lost_events
    )
}

fn publish(
    x: &Export<'_>,
    corr: &Correlator,
    k: &KernelCounters,
    events_per_s: f64,
    objs: &[&libbpf_rs::Object],
    watch: &NsWatch<'_>,
) -> Result<()> {
    let names = watch.names();
    let coverage = watch.coverage();
    let mut trace = families::trace_families(
        corr,
        k,
        events_per_s,
        x.per_connection_top,
        &names,
        &watch.pods(),
    );
    x.exporter
        .publish("netns", families::netns_families(&coverage));
    x.exporter.set_health(coverage.problems());
    trace.extend(registry::bpf_families(&prog_stats(objs)));
    x.exporter.publish("trace", trace);
    for s in &x.sources {
        x.exporter.publish(s.part(), s.families()?);
    }
    let health: Vec<(&str, Option<&str>)> = std::iter::once(("trace", None))
        .chain(x.health.iter().map(|(p, e)| (*p, e.as_deref())))
        .collect();
    x.exporter
        .publish("health", families::health_families(&health));
    Ok(())
}

/// One ring buffer per possible CPU, consumed into a reorder stage (see reorder.rs).
struct PerCpuRings<'a> {
    rb: libbpf_rs::RingBuffer<'a>,
    held: Rc<RefCell<Reorder>>,
    decode_errors: Rc<RefCell<u64>>,
    received: Rc<std::cell::Cell<u64>>,
    _maps: Vec<MapHandle>,
}

impl<'a> PerCpuRings<'a> {
    fn install(skel: &RxSkel<'_>) -> Result<PerCpuRings<'a>> {
        let ncpu = libbpf_rs::num_possible_cpus()?;
        let held = Rc::new(RefCell::new(Reorder::new(ncpu)));
        let decode_errors = Rc::new(RefCell::new(0u64));
        let received = Rc::new(std::cell::Cell::new(0u64));
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut maps = Vec::with_capacity(ncpu);
        for cpu in 0..ncpu as u32 {
            let m = MapHandle::create(
                MapType::RingBuf,
                Some(format!("nsl_rb{cpu}")),
                0,
                0,
                ring_bytes(ncpu),
                &opts,
            )
            .context("creating a per-CPU ring buffer")?;
            let fd = m.as_fd().as_raw_fd();
            skel.maps
                .events
                .update(&cpu.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
                .context("installing a per-CPU ring buffer")?;
            maps.push(m);
        }
        let mut b = RingBufferBuilder::new();
        for (ring, m) in maps.iter().enumerate() {
            let held = Rc::clone(&held);
            let errs = Rc::clone(&decode_errors);
            let got = Rc::clone(&received);
            b.add(m, move |data| {
                got.set(got.get() + 1);
                match events::decode(data) {
                    Ok(ev) => held.borrow_mut().push(ring, ev),
                    Err(_) => *errs.borrow_mut() += 1,
                }
                0
            })?;
        }
        let rb = b.build()?;
        Ok(PerCpuRings {
            rb,
            held,
            decode_errors,
            received,
            _maps: maps,
        })
    }

    /// Wait for a batch (BPF wakes us per batch, not per event), then read every ring.
    fn poll(&self, wait: Duration) -> Result<()> {
        if !wait.is_zero() {
            let _ = self.rb.poll(wait);
        }
        self.rb.consume().context("reading the ring buffers")?;
        Ok(())
    }

    fn release(&self, watermark: u64, corr: &mut Correlator) {
        self.held
            .borrow_mut()
            .release(watermark, |ev| corr.on_event(&ev));
    }

    /// Records read so far: the events BPF delivered.
    fn received(&self) -> u64 {
        self.received.get()
    }

    fn decode_errors(&self) -> u64 {
        *self.decode_errors.borrow()
    }
}

/// `--events` output: completed timelines, one JSON line each, keeping 1 in `sample`.
struct TimelineWriter {
    sample: u64,
    seen: u64,
    /// Namespace names, refreshed by the run loop as namespaces come and go.
    names: Names,
}

impl TimelineWriter {
    fn new(sample: u64) -> Self {
        TimelineWriter {
            sample,
            seen: 0,
            names: Names::new(),
        }
    }

    fn write(&mut self, out: &mut impl Write, corr: &mut Correlator) -> Result<()> {
        for t in corr
            .timelines
            .as_mut()
            .map(std::mem::take)
            .into_iter()
            .flatten()
        {
            self.seen += 1;
            if (self.seen - 1) % self.sample == 0 {
                writeln!(out, "{}", trace_report::timeline_json(&t, &self.names))?;
            }
        }
        Ok(())
    }
}

/// Bytes per CPU ring buffer: a 16 MiB budget over the CPUs, 1 to 8 MiB each, a power of
/// two (the kernel's rule). A CPU flooded at ~500k events/s fills 1 MiB in ~15 ms.
pub fn ring_bytes(ncpu: usize) -> u32 {
    let share = (16usize << 20) / ncpu.max(1);
    let pow2 = if share.is_power_of_two() {
        share
    } else {
        share.next_power_of_two() / 2
    };
    pow2.clamp(1 << 20, 8 << 20) as u32
}

/// A part that publishes its own maps to the exporter beside `trace` (softirq and
/// netfilter in `serve`).
pub trait Source {
    fn part(&self) -> &'static str;
    fn families(&self) -> Result<Vec<Family>>;
    /// Links this part needs in the namespace this thread is in (netfilter hooks are per
    /// namespace); called once in each namespace covered.
    fn attach_in_netns(&self) -> Result<Vec<Link>> {
        Ok(Vec::new())
    }
}

/// Exporting from the run loop: the exporter, what to add, and whether stdout stays quiet.
pub struct Export<'a> {
    pub exporter: Arc<Exporter>,
    pub per_connection_top: usize,
    pub quiet: bool,
    pub sources: Vec<&'a dyn Source>,
    /// Parts and why they do not run (None: running), for netstack_lat_part_up.
    pub health: Vec<(&'static str, Option<String>)>,
}

/// How often the run loop republishes its metrics.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

pub fn run(args: &TraceArgs) -> Result<()> {
    require_root()?;
    match &args.prometheus {
        Some(listen) => {
            let exporter = Exporter::new();
            // Bound before any BPF is loaded: a bad address is a one-line error.
            let endpoint = Endpoint::start(listen, Arc::clone(&exporter))?;
            eprintln!(
                "netstack-lat: serving Prometheus metrics on http://{}/metrics",
                endpoint.addr
            );
            run_with(
                args,
                Some(Export {
                    exporter,
                    per_connection_top: args.per_connection_top,
                    quiet: false,
                    sources: Vec::new(),
                    health: Vec::new(),
                }),
            )
        }
        None => run_with(args, None),
    }
}

/// run_time_ns and run_cnt of every program of these BPF objects, by name.
pub fn prog_stats(objs: &[&libbpf_rs::Object]) -> Vec<(String, u64, u64)> {
    objs.iter()
        .flat_map(|o| o.progs())
        .filter_map(|p| {
            let (t, c) = registry::prog_run_stats(p.as_fd())?;
            Some((p.name().to_string_lossy().to_string(), t, c))
        })
        .collect()
}

pub fn run_with(args: &TraceArgs, export: Option<Export<'_>>) -> Result<()> {
    require_root()?;
    let btf = probes::btf_path(args.btf.as_deref());
    probes::require_btf(&btf)?;
    if !args.verbose {
        libbpf_rs::set_print(None);
    }
    let filters = {
        // Interface names are looked up where they live: in the (single) traced namespace.
        let _inside = args
            .packet
            .netns
            .first()
            .map(|p| netns::Entered::enter(p))
            .transpose()?;
        resolve_filters(args)?
    };
    let pods = crate::kernel::k8s::Pods::new(args.k8s.pods_dir.as_deref(), args.k8s.no_k8s)?;
    let families = probes::families(args.hooks.as_deref())?;
    let mut facts = probes::gather(&btf)?;
    facts.families = families;
    let (want_rx, want_tx) = (!args.tx, !args.rx);
    let mut plan = Vec::new();
    if want_rx {
        plan.extend(
            probes::plan_rx(&facts)
                .into_iter()
                .filter(|p| !(args.no_softirq_context && p.point == "rx_softirq")),
        );
    }
    if want_tx {
        plan.extend(
            probes::plan_tx(&facts)
                .into_iter()
                .filter(|p| !(args.no_tx_free && p.point == "tx_free")),
        );
    }
    let served = |point: &str| plan.iter().any(|p| p.point == point && p.kind.is_some());
    if want_rx && !served("rx_sockq") {
        return Err(UserError::new(
            "no hook for the socket-queue point here (sock:sk_data_ready, or sock_def_readable by \
             fentry or kprobe): see `netstack-lat probes` for what is missing or excluded by --hooks",
        )
        .into());
    }
    if want_tx && !served("tx_transport") {
        return Err(UserError::new(
            "no hook for tx_transport here (netfilter BPF link, Linux 6.4+, or ip_output by fentry \
             or kprobe): see `netstack-lat probes` for what is missing or excluded by --hooks",
        )
        .into());
    }

    // After the fatal checks: an error stays the one line it should be.
    for p in plan.iter().filter(|p| p.kind.is_none()) {
        eprintln!(
            "netstack-lat: {} is not traced: {}",
            p.point,
            p.reason.as_deref().unwrap_or("no hook")
        );
    }
    // Both objects load (a direction not traced loads no programs); TX writes into RX's
    // ring buffers and counters, so one reader and one set of counters serve both.
    let mut chosen = chosen_programs(&plan);
    if args.no_send_syscall {
        chosen.retain(|p| !p.starts_with("tx_send_sys_enter"));
    }
    if !args.no_netfilter_split {
        chosen.extend(split_programs(&plan));
    }
    let mut obj = MaybeUninit::uninit();
    let mut builder = RxSkelBuilder::default();
    if btf != Path::new(probes::DEFAULT_BTF) {
        builder.obj_builder.btf_custom_path(&btf)?;
    }
    let mut open = builder
        .open(&mut obj)
        .context("opening the RX BPF object")?;
    let ro = set_filters!(open, &filters);
    ro.has_cast = facts.has_cast;
    ro.cookie_helper = probes::socket_cookie_helper();
    let series = kernel_spans::table_size(args.max_series);
    (ro.f_agg, (ro.agg_mask, ro.agg_bounds, ro.agg_first)) =
        (args.in_kernel, kernel_spans::rodata(series));
    open.maps
        .events
        .set_max_entries(libbpf_rs::num_possible_cpus()? as u32)?;
    // Tables and socket FIFOs only where the kernel aggregates.
    let (table, fifos) = if args.in_kernel {
        (series, 8192)
    } else {
        (1, 64)
    };
    open.maps.agg_hist.set_max_entries(table)?;
    open.maps.rx_fifo.set_max_entries(fifos)?;
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().to_string();
        prog.set_autoload(chosen.contains(&name.as_str()));
    }
    let mut skel = open.load().context("loading the RX BPF programs")?;
    fill_netns!(skel, filters);

    let mut tx_obj = MaybeUninit::uninit();
    let mut tx_builder = TxSkelBuilder::default();
    if btf != Path::new(probes::DEFAULT_BTF) {
        tx_builder.obj_builder.btf_custom_path(&btf)?;
    }
    let mut tx_open = tx_builder
        .open(&mut tx_obj)
        .context("opening the TX BPF object")?;
    let ro = set_filters!(tx_open, &filters);
    ro.has_cast = facts.has_cast;
    ro.cookie_helper = probes::socket_cookie_helper();
    ro.has_tx_free = plan
        .iter()
        .any(|p| p.point == "tx_free" && p.kind.is_some());
    (ro.f_agg, (ro.agg_mask, ro.agg_bounds, ro.agg_first)) =
        (args.in_kernel, kernel_spans::rodata(series));
    if plan
        .iter()
        .any(|p| p.point == "tx_transport" && p.kind == Some(HookKind::Netfilter))
    {
        ro.nf_helpers = probes::netfilter_task_helpers();
    }
    // c_long is i32 on 32-bit targets, where this conversion is not a no-op.
    #[allow(clippy::useless_conversion)]
    for (d, nr) in ro.sys_nr.iter_mut().zip(SEND_SYSCALLS) {
        *d = i64::from(nr);
    }
    tx_open.maps.agg_hist.set_max_entries(table)?;
    tx_open
        .maps
        .events
        .reuse_fd(skel.maps.events.as_fd())
        .context("sharing the ring buffers with the TX object")?;
    tx_open
        .maps
        .counters
        .reuse_fd(skel.maps.counters.as_fd())
        .context("sharing the counters with the TX object")?;
    for mut prog in tx_open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().to_string();
        prog.set_autoload(chosen.contains(&name.as_str()));
    }
    let mut tx = tx_open.load().context("loading the TX BPF programs")?;
    fill_netns!(tx, filters);
    // Rings first: a program attached before its ring exists would count events as lost.
    let rings = PerCpuRings::install(&skel)?;
    let links = attach_global(&mut skel, &mut tx, &chosen)?;
    let sources: Vec<&dyn Source> = export.as_ref().map_or(Vec::new(), |x| x.sources.clone());
    let each_netns = |skel: &RxSkel<'_>, tx: &TxSkel<'_>| -> Result<Vec<Link>> {
        let mut l = attach_nf_in_netns(skel, tx, &plan, &chosen)?;
        for s in &sources {
            l.extend(s.attach_in_netns()?);
        }
        Ok(l)
    };
    let mut ns_obj = MaybeUninit::uninit();
    let mut watch = NsWatch::start(
        &mut ns_obj,
        &btf,
        &watched_netns(&args.packet)?,
        pods,
        &mut || each_netns(&skel, &tx),
    )?;
    let hooks: Vec<String> = plan
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.point,
                p.kind.map_or("none".into(), |k| k.to_string())
            )
        })
        .collect();
    let what = match (want_rx, want_tx) {
        (true, true) => "RX+TX",
        (true, false) => "RX",
        _ => "TX",
    };
    eprintln!(
        "netstack-lat: tracing {what} ({}); stop with Ctrl-C",
        hooks.join(" ")
    );

    let run = RunLoop::start(args.duration)?;

    let mut corr = Correlator::new(filters.by_owner(), Limits::default(), args.events);
    if export.is_some() {
        corr.keep_labelled();
    }
    let mut published = (std::time::Instant::now(), 0u64);
    let started = run.started();
    let ticker = crossbeam_channel::tick(args.interval);
    let mut out = std::io::stdout().lock();
    let mut last = IntervalReport::default();
    let mut timelines = TimelineWriter::new(args.sample);
    timelines.names = watch.names();
    let (mut in_flight, mut stale, mut backlog_stale) = ((0, 0), 0, 0);
    let interrupted = loop {
        let wait = match run.step() {
            Step::Wait(w) => w,
            Step::Done => break false,
            Step::Interrupted => break true,
        };
        rings.poll(wait)?;
        // The loop turns at every ring wake-up under load: names only when they changed.
        if watch.tick(&mut || each_netns(&skel, &tx))? {
            timelines.names = watch.names();
            corr.forget_netns(&watch.take_departed());
        }
        let now = now_monotonic_ns();
        rings.release(now.saturating_sub(reorder::HOLD_NS), &mut corr);
        timelines.write(&mut out, &mut corr)?;
        if let Some(x) = export
            .as_ref()
            .filter(|_| published.0.elapsed() >= PUBLISH_EVERY)
        {
            let k = KernelCounters {
                events: rings.received(),
                ..counters_now(&skel, in_flight, (stale, backlog_stale))
            };
            if args.in_kernel {
                kernel_spans(&skel, &tx, &mut corr, &k, &watch.names())?;
            }
            let secs = published.0.elapsed().as_secs_f64();
            let rate = k.events.saturating_sub(published.1) as f64 / secs;
            publish(x, &corr, &k, rate, &[skel.object(), tx.object()], &watch)?;
            published = (std::time::Instant::now(), k.events);
        }
        let quiet = export.as_ref().is_some_and(|x| x.quiet);
        let ticked = ticker.try_recv().is_ok();
        if ticked {
            // Also in serve (quiet): state of sockets gone idle must not pile up.
            corr.expire(now.saturating_sub(reorder::HOLD_NS));
            let (parked, cached, removed) = tx_in_flight(&mut tx, now);
            in_flight = (parked, cached);
            stale += removed;
            backlog_stale += sweep_backlog(&mut skel, now);
        }
        if ticked && !quiet {
            let k = KernelCounters {
                events: rings.received(),
                ..counters_now(&skel, in_flight, (stale, backlog_stale))
            };
            let cur = IntervalReport::new(started.elapsed(), &corr.stats, &k);
            let line = cur.delta(&last, args.interval).traced(want_rx, want_tx);
            if args.json {
                writeln!(out, "{}", line.to_json())?;
            } else {
                writeln!(out, "{}", line.human())?;
            }
            out.flush()?;
            last = cur;
        }
    };
    rings.poll(Duration::ZERO)?;
    rings.release(u64::MAX, &mut corr);
    let (parked, cached, removed) = tx_in_flight(&mut tx, now_monotonic_ns());
    if !args.in_kernel {
        drain_slots(&skel, &mut corr);
        drain_tx(&tx, &mut corr);
    }
    let counters = KernelCounters {
        events: rings.received(),
        ..counters_now(&skel, (parked, cached), (stale + removed, backlog_stale))
    };
    if args.in_kernel {
        kernel_spans(&skel, &tx, &mut corr, &counters, &watch.names())?;
        eprintln!("netstack-lat: {}", in_kernel_line(&corr.stats, &counters));
    }
    let names = watch.names();
    let coverage = watch.coverage();
    let pods_now = watch.pods();
    watch.release();
    drop(links);
    corr.finish();
    timelines.write(&mut out, &mut corr)?;
    if export.as_ref().is_some_and(|x| x.quiet) {
        return Ok(());
    }
    let c = &corr;
    let summary = Summary::build(
        started.elapsed(),
        c,
        counters,
        rings.decode_errors(),
        &plan,
        args.top,
        interrupted,
    )
    .with_namespaces(coverage, &names)
    .with_pods(&pods_now, &mut |pid| watch.pod_of(pid));
    trace_report::print_report(&mut out, args.json, &summary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::probes::{plan_rx, plan_tx, Facts};

    #[test]
    fn only_the_chosen_hooks_load() {
        let facts = Facts {
            tracepoints: [
                "netif_rx",
                "netif_receive_skb",
                "sk_data_ready",
                "sock_recv_length",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            netfilter_link: true,
            fentry: Err("EPERM".into()),
            kprobe: Err("no".into()),
            ..Facts::default()
        };
        let progs = chosen_programs(&plan_rx(&facts));
        assert_eq!(
            progs,
            vec![
                "rx_driver_netif_rx",
                "rx_netif_tp_btf",
                "rx_ip_nf",
                "rx_transport_nf",
                "rx_sockq_tp_btf",
                "rx_backlog_tp_btf",
                "rx_read_tp_btf",
                "rx_close_tp_btf"
            ]
        );
    }

    #[test]
    fn ring_sizes_are_bounded_powers_of_two() {
        assert_eq!(ring_bytes(1), 8 << 20);
        assert_eq!(ring_bytes(2), 8 << 20);
        assert_eq!(ring_bytes(3), 4 << 20);
        assert_eq!(ring_bytes(16), 1 << 20);
        assert_eq!(ring_bytes(256), 1 << 20);
    }

    #[test]
    fn owner_filters_are_detected() {
        assert!(!Filters::default().by_owner());
        let f = Filters {
            tgid: 5,
            ..Filters::default()
        };
        assert!(f.by_owner());
    }

    #[test]
    fn tx_programs_follow_the_plan() {
        let facts = Facts {
            tracepoints: [
                "sys_enter",
                "tcp_sendmsg_locked",
                "sock_send_length",
                "net_dev_queue",
                "qdisc_enqueue",
                "qdisc_dequeue",
                "net_dev_start_xmit",
                "net_dev_xmit",
                "consume_skb",
                "kfree_skb",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            netfilter_link: false,
            fentry: Ok(()),
            funcs: [
                "ip_output",
                "ip6_output",
                "ip_finish_output2",
                "ip6_finish_output2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            kprobe: Err("no".into()),
            ..Facts::default()
        };
        let progs = chosen_programs(&plan_tx(&facts));
        assert_eq!(
            progs,
            vec![
                "tx_send_sys_enter",
                "tx_send_tcp",
                "tx_send_end",
                "tx_close_tp_btf",
                "tx_transport4_fentry",
                "tx_transport6_fentry",
                "tx_nf_done4_fentry",
                "tx_nf_done6_fentry",
                "tx_qdisc_enq_queue",
                "tx_qdisc_enq_qdisc",
                "tx_qdisc_deq_qdisc",
                "tx_driver_start",
                "tx_done_xmit",
                "tx_free_consume",
                "tx_free_kfree",
            ]
        );
    }

    /// Every program name the planner can choose exists in the BPF objects (no root: the
    /// objects are only opened, not loaded).
    #[test]
    fn every_planned_program_exists() {
        use crate::kernel::probes::{RX_PLAN_POINTS, TX_PLAN_POINTS};
        let mut names = Vec::new();
        let mut rx_obj = MaybeUninit::uninit();
        let rx = RxSkelBuilder::default().open(&mut rx_obj).unwrap();
        for p in rx.open_object().progs() {
            names.push(p.name().to_string_lossy().to_string());
        }
        let mut tx_obj = MaybeUninit::uninit();
        let tx = TxSkelBuilder::default().open(&mut tx_obj).unwrap();
        for p in tx.open_object().progs() {
            names.push(p.name().to_string_lossy().to_string());
        }
        use HookKind::*;
        for point in RX_PLAN_POINTS.iter().chain(TX_PLAN_POINTS.iter()) {
            let mut any = false;
            for kind in [TpBtf, RawTp, Netfilter, Fentry, Kprobe] {
                for prog in programs_for(point, kind) {
                    any = true;
                    assert!(names.iter().any(|n| n == prog), "{point}/{kind}: {prog}");
                }
            }
            assert!(any, "{point} has no programs");
        }
    }
}
