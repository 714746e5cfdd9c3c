//! Which hook serves each point on this kernel, decided by probing, never assumed.
//!
//! Facts are gathered once (BTF types, a test load of an fentry program, the kprobe PMU);
//! `plan_rx` is a pure function of those facts, so the choice is unit-tested without root.

use std::collections::BTreeSet;
use std::fmt;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use libbpf_rs::btf::types::{Func, Struct, Typedef};
use libbpf_rs::btf::Btf;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use serde::Serialize;

use crate::bpf::probe::ProbeSkelBuilder;
use crate::error::UserError;

pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    TpBtf,
    RawTp,
    Netfilter,
    Fentry,
    Kprobe,
}

impl HookKind {
    /// The kind of a name as `probes` and the trace summary print it.
    pub fn from_name(s: &str) -> Option<HookKind> {
        Some(match s {
            "tp_btf" => HookKind::TpBtf,
            "raw_tp" => HookKind::RawTp,
            "netfilter" => HookKind::Netfilter,
            "fentry" => HookKind::Fentry,
            "kprobe" => HookKind::Kprobe,
            _ => return None,
        })
    }

    pub fn family(self) -> Family {
        match self {
            HookKind::TpBtf => Family::Tracepoint,
            HookKind::RawTp => Family::RawTp,
            HookKind::Netfilter => Family::Netfilter,
            HookKind::Fentry => Family::Fentry,
            HookKind::Kprobe => Family::Kprobe,
        }
    }
}

/// Hook families, the unit of `--hooks`: tracepoint (tp_btf), raw_tp (the same tracepoints
/// untyped), netfilter (BPF link), fentry (fentry, fexit), kprobe (kprobe, kretprobe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Tracepoint,
    RawTp,
    Netfilter,
    Fentry,
    Kprobe,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Tracepoint,
        Family::RawTp,
        Family::Netfilter,
        Family::Fentry,
        Family::Kprobe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Tracepoint => "tracepoint",
            Family::RawTp => "raw_tp",
            Family::Netfilter => "netfilter",
            Family::Fentry => "fentry",
            Family::Kprobe => "kprobe",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where `--hooks` may come from when the flag is absent.
pub const HOOKS_ENV: &str = "NETSTACK_LAT_HOOKS";

/// Parse a `--hooks` list (`kprobe,tracepoint`): the families allowed, in order of
/// preference. Each point takes its first working hook of the first listed family that has
/// one; points none can serve are not traced (`probes` says why).
pub fn parse_families(s: &str) -> Result<Vec<Family>, String> {
    let mut out = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let f = match w {
            "tracepoint" | "tp" | "tp_btf" => Family::Tracepoint,
            "raw_tp" | "raw_tracepoint" => Family::RawTp,
            "netfilter" | "nf" => Family::Netfilter,
            "fentry" | "fexit" => Family::Fentry,
            "kprobe" | "kretprobe" => Family::Kprobe,
            "all" => {
                out.extend(Family::ALL);
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown hook family '{w}': give a comma-separated list of tracepoint, raw_tp, netfilter, fentry, kprobe (or all)"
                ))
            }
        };
        out.push(f);
    }
    if out.is_empty() {
        return Err(
            "empty hook family list: give tracepoint, raw_tp, netfilter, fentry or kprobe".into(),
        );
    }
    let mut seen = Vec::new();
    out.retain(|f| {
        let first = !seen.contains(f);
        seen.push(*f);
        first
    });
    Ok(out)
}

/// The families allowed: the flag, else $NETSTACK_LAT_HOOKS, else all.
pub fn families(flag: Option<&str>) -> Result<Vec<Family>, UserError> {
    let env = std::env::var(HOOKS_ENV).ok();
    match flag.or(env.as_deref()) {
        None => Ok(Family::ALL.to_vec()),
        Some(s) => parse_families(s).map_err(|e| {
            let from = if flag.is_some() {
                "--hooks".to_string()
            } else {
                format!("${HOOKS_ENV}")
            };
            UserError::new(format!("{from}: {e}"))
        }),
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookKind::TpBtf => "tp_btf",
            HookKind::RawTp => "raw_tp",
            HookKind::Netfilter => "netfilter",
            HookKind::Fentry => "fentry",
            HookKind::Kprobe => "kprobe",
        })
    }
}

/// What the running kernel offers, as far as the RX programs care.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Tracepoints with a `btf_trace_<name>` type (usable by tp_btf and raw_tp).
    pub tracepoints: BTreeSet<String>,
    /// Kernel functions present in BTF (fentry/kprobe targets).
    pub funcs: BTreeSet<String>,
    /// The netfilter BPF link (struct bpf_nf_ctx, Linux 6.4+).
    pub netfilter_link: bool,
    /// Ok, or why an fentry program cannot load here.
    pub fentry: Result<(), String>,
    /// Ok, or why kprobes cannot be used here.
    pub kprobe: Result<(), String>,
    /// bpf_rdonly_cast (Linux 6.2+): BPF reads fields with plain loads, else probe reads.
    pub has_cast: bool,
    /// The families the user allows (`--hooks`, $NETSTACK_LAT_HOOKS); all by default.
    pub families: Vec<Family>,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            tracepoints: BTreeSet::new(),
            funcs: BTreeSet::new(),
            netfilter_link: false,
            fentry: Err("not probed".into()),
            kprobe: Err("not probed".into()),
            has_cast: true,
            families: Family::ALL.to_vec(),
        }
    }
}

/// The hook chosen for one point (or why there is none), with the alternatives considered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PointPlan {
    pub point: &'static str,
    pub kind: Option<HookKind>,
    pub family: Option<Family>,
    pub hooks: Vec<String>,
    pub reason: Option<String>,
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alternative {
    pub kind: HookKind,
    pub family: Family,
    pub hooks: Vec<String>,
    /// None when this alternative would work too.
    pub unavailable: Option<String>,
}

struct Candidate {
    kind: HookKind,
    /// Hooks of this candidate; `need_all` says whether each is required or any one suffices.
    hooks: &'static [&'static str],
    need_all: bool,
    /// Tracepoints a function-based candidate needs as well (raw_tp, any kernel).
    tps: &'static [&'static str],
}

const fn c(kind: HookKind, hooks: &'static [&'static str], need_all: bool) -> Candidate {
    Candidate {
        kind,
        hooks,
        need_all,
        tps: &[],
    }
}

/// An fentry and a kprobe candidate on the same kernel functions.
fn functions(hooks: &'static [&'static str]) -> [Candidate; 2] {
    [
        c(HookKind::Fentry, hooks, true),
        c(HookKind::Kprobe, hooks, true),
    ]
}

const DRIVER_TP: &[&str] = &[
    "netif_rx",
    "napi_gro_receive_entry",
    "netif_receive_skb_entry",
];

const TX_SEND_TP: &[&str] = &["sys_enter", "tcp_sendmsg_locked", "sock_send_length"];

fn candidates(point: &str) -> Vec<Candidate> {
    use HookKind::*;
    match point {
        "rx_driver" => vec![c(TpBtf, DRIVER_TP, false), c(RawTp, DRIVER_TP, false)],
        "rx_netif" => vec![
            c(TpBtf, &["netif_receive_skb"], true),
            c(RawTp, &["netif_receive_skb"], true),
        ],
        "rx_ip" => [c(
            Netfilter,
            &["ipv4 PRE_ROUTING first", "ipv6 PRE_ROUTING first"],
            true,
        )]
        .into_iter()
        .chain(functions(&[
            "ip_rcv",
            "ipv6_rcv",
            "ip_list_rcv",
            "ipv6_list_rcv",
        ]))
        .collect(),
        "rx_transport" => [c(
            Netfilter,
            &["ipv4 LOCAL_IN last", "ipv6 LOCAL_IN last"],
            true,
        )]
        .into_iter()
        .chain(functions(&[
            "tcp_v4_rcv",
            "tcp_v6_rcv",
            "udp_rcv",
            "udpv6_rcv",
        ]))
        .collect(),
        // sock_def_readable is the sk_data_ready the tracepoint precedes.
        "rx_sockq" => [
            c(TpBtf, &["sk_data_ready"], true),
            c(RawTp, &["sk_data_ready"], true),
        ]
        .into_iter()
        .chain(functions(&["sock_def_readable"]))
        .collect(),
        // The return of sock_recvmsg, where sock_recv_length fires.
        "rx_read" => [
            c(TpBtf, &["sock_recv_length"], true),
            c(RawTp, &["sock_recv_length"], true),
        ]
        .into_iter()
        .chain(functions(&["sock_recvmsg"]))
        .collect(),
        "rx_softirq" => vec![
            c(TpBtf, &["softirq_raise", "softirq_entry"], true),
            c(RawTp, &["softirq_raise", "softirq_entry"], true),
        ],
        // Without its tracepoints: the entry of tcp_sendmsg_locked and the return of
        // inet(6)_sendmsg; the syscall's start still comes from raw_syscalls:sys_enter.
        "tx_send" => [c(TpBtf, TX_SEND_TP, true), c(RawTp, TX_SEND_TP, true)]
            .into_iter()
            .chain(
                functions(&["tcp_sendmsg_locked", "inet_sendmsg", "inet6_sendmsg"]).map(|k| {
                    Candidate {
                        tps: &["sys_enter"],
                        ..k
                    }
                }),
            )
            .collect(),
        "tx_transport" => [c(
            Netfilter,
            &["ipv4 LOCAL_OUT first", "ipv6 LOCAL_OUT first"],
            true,
        )]
        .into_iter()
        .chain(functions(&["ip_output", "ip6_output"]))
        .collect(),
        "tx_nf_done" => [c(
            Netfilter,
            &["ipv4 POST_ROUTING last", "ipv6 POST_ROUTING last"],
            true,
        )]
        .into_iter()
        .chain(functions(&["ip_finish_output2", "ip6_finish_output2"]))
        .collect(),
        // A parked chain must be picked up again: enqueue and dequeue come together.
        "tx_qdisc_enq" => vec![
            c(
                TpBtf,
                &["net_dev_queue", "qdisc_enqueue", "qdisc_dequeue"],
                true,
            ),
            c(
                RawTp,
                &["net_dev_queue", "qdisc_enqueue", "qdisc_dequeue"],
                true,
            ),
        ],
        "tx_qdisc_deq" => vec![
            c(TpBtf, &["qdisc_dequeue"], true),
            c(RawTp, &["qdisc_dequeue"], true),
        ],
        "tx_driver" => vec![
            c(TpBtf, &["net_dev_start_xmit"], true),
            c(RawTp, &["net_dev_start_xmit"], true),
        ],
        "tx_done" => vec![
            c(TpBtf, &["net_dev_xmit"], true),
            c(RawTp, &["net_dev_xmit"], true),
        ],
        "tx_free" => vec![
            c(TpBtf, &["consume_skb", "kfree_skb"], true),
            c(RawTp, &["consume_skb", "kfree_skb"], true),
        ],
        _ => Vec::new(),
    }
}

pub const RX_PLAN_POINTS: [&str; 7] = [
    "rx_driver",
    "rx_netif",
    "rx_ip",
    "rx_transport",
    "rx_sockq",
    "rx_read",
    // Context: the NET_RX run's raise and entry (span rx_softirq_raise->rx_softirq_entry).
    "rx_softirq",
];

pub const TX_PLAN_POINTS: [&str; 8] = [
    "tx_send",
    "tx_transport",
    "tx_nf_done",
    "tx_qdisc_enq",
    "tx_qdisc_deq",
    "tx_driver",
    "tx_done",
    "tx_free",
];

/// Why a candidate cannot serve here, or the hooks it would use.
fn check(f: &Facts, cand: &Candidate) -> Result<Vec<String>, String> {
    let family = cand.kind.family();
    if !f.families.contains(&family) {
        let allowed: Vec<&str> = f.families.iter().map(|x| x.name()).collect();
        return Err(format!(
            "{family} hooks not chosen (--hooks {})",
            allowed.join(",")
        ));
    }
    if let Some(tp) = cand.tps.iter().find(|t| !f.tracepoints.contains(**t)) {
        return Err(format!("tracepoint {tp} not in this kernel"));
    }
    let present: Vec<&str> = match cand.kind {
        HookKind::TpBtf | HookKind::RawTp => cand
            .hooks
            .iter()
            .copied()
            .filter(|h| f.tracepoints.contains(*h))
            .collect(),
        HookKind::Netfilter => {
            if !f.netfilter_link {
                return Err("no netfilter BPF link in this kernel (needs Linux 6.4+)".into());
            }
            cand.hooks.to_vec()
        }
        HookKind::Fentry | HookKind::Kprobe => {
            let gate = if cand.kind == HookKind::Fentry {
                &f.fentry
            } else {
                &f.kprobe
            };
            if let Err(e) = gate {
                return Err(e.clone());
            }
            cand.hooks
                .iter()
                .copied()
                .filter(|h| f.funcs.contains(*h))
                .collect()
        }
    };
    let missing: Vec<&str> = cand
        .hooks
        .iter()
        .copied()
        .filter(|h| !present.contains(h))
        .collect();
    let what = match cand.kind {
        HookKind::TpBtf | HookKind::RawTp => "tracepoint",
        _ => "kernel function",
    };
    if present.is_empty() || (cand.need_all && !missing.is_empty()) {
        return Err(format!("{what} {} not in this kernel", missing.join(", ")));
    }
    Ok(present.iter().map(|s| s.to_string()).collect())
}

/// The receive points' plan.
pub fn plan_rx(f: &Facts) -> Vec<PointPlan> {
    plan_points(f, &RX_PLAN_POINTS)
}

/// The transmit points' plan.
pub fn plan_tx(f: &Facts) -> Vec<PointPlan> {
    plan_points(f, &TX_PLAN_POINTS)
}

/// Choose the first working candidate per point, in the order tracepoints, netfilter, fentry.
pub fn plan_points(f: &Facts, points: &[&'static str]) -> Vec<PointPlan> {
    points
        .iter()
        .map(|&point| {
            let mut plan = PointPlan {
                point,
                kind: None,
                family: None,
                hooks: Vec::new(),
                reason: None,
                alternatives: Vec::new(),
            };
            let mut reasons = Vec::new();
            let mut cands = candidates(point);
            // Stable: within a family, the built-in order (tp_btf before raw_tp) stays.
            cands.sort_by_key(|c| {
                f.families
                    .iter()
                    .position(|x| *x == c.kind.family())
                    .unwrap_or(usize::MAX)
            });
            for cand in cands {
                match check(f, &cand) {
                    Ok(hooks) if plan.kind.is_none() => {
                        plan.kind = Some(cand.kind);
                        plan.family = Some(cand.kind.family());
                        plan.hooks = hooks;
                    }
                    Ok(hooks) => plan.alternatives.push(Alternative {
                        kind: cand.kind,
                        family: cand.kind.family(),
                        hooks,
                        unavailable: None,
                    }),
                    Err(why) => {
                        reasons.push(format!("{}: {why}", cand.kind));
                        plan.alternatives.push(Alternative {
                            kind: cand.kind,
                            family: cand.kind.family(),
                            hooks: cand.hooks.iter().map(|s| s.to_string()).collect(),
                            unavailable: Some(why),
                        });
                    }
                }
            }
            if plan.kind.is_none() {
                plan.reason = Some(reasons.join("; "));
            }
            plan
        })
        .collect()
}

/// Kernel identity for `probes` and error messages.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub btf_path: PathBuf,
    pub btf: bool,
    pub lockdown: String,
    pub tracefs: bool,
}

pub fn kernel_info(btf_path: &Path) -> KernelInfo {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|s| {
            let a = s.find('[')?;
            let b = s.find(']')?;
            Some(s[a + 1..b].to_string())
        })
        .unwrap_or_else(|| "unknown (securityfs not mounted)".into());
    KernelInfo {
        release,
        btf_path: btf_path.to_path_buf(),
        btf: btf_path.is_file(),
        lockdown,
        tracefs: Path::new("/sys/kernel/tracing/events").is_dir(),
    }
}

/// The BTF to run against: an explicit path (flag or NETSTACK_LAT_BTF) or the kernel's own.
pub fn btf_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("NETSTACK_LAT_BTF").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BTF))
}

/// May tracing programs (tp_btf, fentry) call bpf_get_socket_cookie here (Linux 5.12+)?
/// The helper behind it for tracing programs is a kernel symbol from that release on.
pub fn socket_cookie_helper() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|k| k.lines().any(|l| l.ends_with(" bpf_get_socket_ptr_cookie")))
            .unwrap_or(true)
    })
}

pub fn require_btf(path: &Path) -> Result<(), UserError> {
    if path.is_file() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "kernel BTF not found at {}: netstack-lat needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
         (or pass --btf FILE / NETSTACK_LAT_BTF with this kernel's BTF)",
        path.display()
    )))
}

const FUNCS: &[&str] = &[
    "ip_rcv",
    "ipv6_rcv",
    "ip_list_rcv",
    "ipv6_list_rcv",
    "tcp_v4_rcv",
    "tcp_v6_rcv",
    "udp_rcv",
    "udpv6_rcv",
    "ip_output",
    "ip6_output",
    "ip_finish_output2",
    "ip6_finish_output2",
    "sock_def_readable",
    "sock_recvmsg",
    "inet_sendmsg",
    "inet6_sendmsg",
    "tcp_sendmsg_locked",
    "ipt_do_table",
    "ip6t_do_table",
    "nft_do_chain",
];

/// Gather facts from BTF and from test loads. Needs root for the fentry probe.
pub fn gather(btf_path: &Path) -> anyhow::Result<Facts> {
    let btf = Btf::from_path(btf_path)
        .map_err(|e| UserError::new(format!("cannot read BTF at {}: {e}", btf_path.display())))?;
    let mut facts = Facts::default();
    for &point in RX_PLAN_POINTS.iter().chain(TX_PLAN_POINTS.iter()) {
        for cand in candidates(point) {
            // Tracepoint candidates, and the tracepoints function candidates lean on.
            let tps = match cand.kind {
                HookKind::TpBtf | HookKind::RawTp => cand.hooks,
                _ => cand.tps,
            };
            for &h in tps {
                if btf
                    .type_by_name::<Typedef>(&format!("btf_trace_{h}"))
                    .is_some()
                {
                    facts.tracepoints.insert(h.to_string());
                }
            }
        }
    }
    for &f in FUNCS {
        if btf.type_by_name::<Func>(f).is_some() {
            facts.funcs.insert(f.to_string());
        }
    }
    facts.netfilter_link = btf.type_by_name::<Struct>("bpf_nf_ctx").is_some();
    facts.has_cast = btf.type_by_name::<Func>("bpf_rdonly_cast").is_some();
    facts.fentry = probe_fentry(btf_path);
    facts.kprobe = if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        Ok(())
    } else {
        Err("kernel built without CONFIG_KPROBES (no kprobe PMU)".into())
    };
    Ok(facts)
}

/// Which of these tracepoints the kernel's BTF describes (usable by tp_btf and raw_tp),
/// and whether it has bpf_rdonly_cast (`Facts::has_cast`).
pub fn gather_tracepoints(btf_path: &Path, names: &[&str]) -> anyhow::Result<(Vec<String>, bool)> {
    let btf = Btf::from_path(btf_path)
        .map_err(|e| UserError::new(format!("cannot read BTF at {}: {e}", btf_path.display())))?;
    let present = names
        .iter()
        .filter(|n| {
            btf.type_by_name::<Typedef>(&format!("btf_trace_{n}"))
                .is_some()
        })
        .map(|n| n.to_string())
        .collect();
    Ok((
        present,
        btf.type_by_name::<Func>("bpf_rdonly_cast").is_some(),
    ))
}

/// Which task helpers a netfilter program may call here, as the `nf_helpers` bits of
/// filter.bpf.h (1 pid_tgid, 2 comm, 4 cgroup id); the others are read from the task.
pub fn netfilter_task_helpers() -> u32 {
    use libbpf_rs::libbpf_sys as sys;
    [
        (sys::BPF_FUNC_get_current_pid_tgid, 1),
        (sys::BPF_FUNC_get_current_comm, 2),
        (sys::BPF_FUNC_get_current_cgroup_id, 4),
    ]
    .into_iter()
    // SAFETY: libbpf loads a probe program and reports 1 when the helper is allowed.
    .filter(|(f, _)| unsafe {
        sys::libbpf_probe_bpf_helper(sys::BPF_PROG_TYPE_NETFILTER, *f, std::ptr::null())
    } == 1)
    .map(|(_, bit)| bit)
    .sum()
}

/// Load a do-nothing fentry program: the only honest test (lockdown or LSMs may refuse it).
fn probe_fentry(btf_path: &Path) -> Result<(), String> {
    let mut obj = MaybeUninit::uninit();
    let mut builder = ProbeSkelBuilder::default();
    if btf_path != Path::new(DEFAULT_BTF) {
        builder
            .obj_builder
            .btf_custom_path(btf_path)
            .map_err(|e| e.to_string())?;
    }
    let open = builder.open(&mut obj).map_err(|e| e.to_string())?;
    let loaded = open.load().map(drop);
    loaded.map_err(|e| format!("fentry program load refused: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_618() -> Facts {
        Facts {
            tracepoints: [
                "netif_rx",
                "napi_gro_receive_entry",
                "netif_receive_skb_entry",
                "netif_receive_skb",
                "sk_data_ready",
                "sock_recv_length",
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
                "softirq_raise",
                "softirq_entry",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            funcs: FUNCS.iter().map(|s| s.to_string()).collect(),
            netfilter_link: true,
            fentry: Err("fentry program load refused: EPERM".into()),
            kprobe: Err("kernel built without CONFIG_KPROBES".into()),
            ..Facts::default()
        }
    }

    fn kind_of(p: &[PointPlan], point: &str) -> Option<HookKind> {
        p.iter().find(|x| x.point == point).unwrap().kind
    }

    #[test]
    fn tracepoints_and_netfilter_first() {
        let p = plan_rx(&facts_618());
        assert_eq!(kind_of(&p, "rx_driver"), Some(HookKind::TpBtf));
        assert_eq!(kind_of(&p, "rx_ip"), Some(HookKind::Netfilter));
        assert_eq!(kind_of(&p, "rx_transport"), Some(HookKind::Netfilter));
        assert_eq!(kind_of(&p, "rx_read"), Some(HookKind::TpBtf));
        let ip = p.iter().find(|x| x.point == "rx_ip").unwrap();
        assert!(ip.alternatives[0]
            .unavailable
            .as_deref()
            .unwrap()
            .contains("EPERM"));
    }

    #[test]
    fn old_kernel_falls_back_to_fentry_or_says_why() {
        let mut f = facts_618();
        f.netfilter_link = false;
        f.fentry = Ok(());
        f.tracepoints.remove("sk_data_ready");
        let p = plan_rx(&f);
        assert_eq!(kind_of(&p, "rx_ip"), Some(HookKind::Fentry));
        assert_eq!(kind_of(&p, "rx_sockq"), Some(HookKind::Fentry));
        f.fentry = Err("fentry program load refused: EPERM".into());
        let p = plan_rx(&f);
        let sockq = p.iter().find(|x| x.point == "rx_sockq").unwrap();
        assert_eq!(sockq.kind, None);
        assert!(sockq
            .reason
            .as_deref()
            .unwrap()
            .contains("sk_data_ready not in this kernel"));
    }

    #[test]
    fn driver_needs_only_one_of_its_tracepoints() {
        let mut f = facts_618();
        f.tracepoints.remove("napi_gro_receive_entry");
        let p = plan_rx(&f);
        let d = p.iter().find(|x| x.point == "rx_driver").unwrap();
        assert_eq!(d.kind, Some(HookKind::TpBtf));
        assert_eq!(d.hooks, vec!["netif_rx", "netif_receive_skb_entry"]);
    }

    #[test]
    fn no_netfilter_and_no_fentry_means_no_ip_point() {
        let mut f = facts_618();
        f.netfilter_link = false;
        let p = plan_rx(&f);
        let ip = p.iter().find(|x| x.point == "rx_ip").unwrap();
        assert_eq!(ip.kind, None);
        let r = ip.reason.as_deref().unwrap();
        assert!(r.contains("6.4") && r.contains("EPERM"), "{r}");
    }

    #[test]
    fn every_tx_point_is_served_on_618() {
        let p = plan_tx(&facts_618());
        assert_eq!(p.len(), 8);
        for x in &p {
            assert!(x.kind.is_some(), "{} unserved: {:?}", x.point, x.reason);
        }
        assert_eq!(kind_of(&p, "tx_transport"), Some(HookKind::Netfilter));
        assert_eq!(kind_of(&p, "tx_nf_done"), Some(HookKind::Netfilter));
        assert_eq!(kind_of(&p, "tx_free"), Some(HookKind::TpBtf));
    }

    #[test]
    fn hooks_list_is_an_order_of_preference() {
        let mut f = facts_618();
        f.fentry = Ok(());
        f.kprobe = Ok(());
        f.families = parse_families("kprobe,tracepoint").unwrap();
        let p = plan_rx(&f);
        assert_eq!(kind_of(&p, "rx_sockq"), Some(HookKind::Kprobe));
        assert_eq!(kind_of(&p, "rx_ip"), Some(HookKind::Kprobe));
        // No kprobe candidate: the next family in the list.
        assert_eq!(kind_of(&p, "rx_netif"), Some(HookKind::TpBtf));
        f.families = parse_families("fentry").unwrap();
        let p = plan_rx(&f);
        assert_eq!(kind_of(&p, "rx_read"), Some(HookKind::Fentry));
        let netif = p.iter().find(|x| x.point == "rx_netif").unwrap();
        assert_eq!(netif.kind, None);
        assert!(netif.reason.as_deref().unwrap().contains("--hooks fentry"));
        // tx_send's function candidates still take the syscall start from sys_enter.
        let t = plan_tx(&f);
        let send = t.iter().find(|x| x.point == "tx_send").unwrap();
        assert_eq!(send.kind, Some(HookKind::Fentry));
        f.tracepoints.remove("sys_enter");
        let t = plan_tx(&f);
        assert_eq!(kind_of(&t, "tx_send"), None);
    }

    #[test]
    fn parse_families_keeps_order_and_rejects_unknown_names() {
        use Family::*;
        assert_eq!(
            parse_families("kprobe, tp,kprobe").unwrap(),
            vec![Kprobe, Tracepoint]
        );
        assert_eq!(parse_families("all").unwrap(), Family::ALL.to_vec());
        let e = parse_families("kprobes").unwrap_err();
        assert!(e.contains("unknown hook family 'kprobes'"), "{e}");
        assert!(parse_families(" , ").is_err());
    }

    #[test]
    fn on_61_every_point_has_a_fallback() {
        // Debian's 6.1 cloud kernel: no netfilter link, none of the socket tracepoints.
        let mut f = facts_618();
        for tp in [
            "sk_data_ready",
            "sock_recv_length",
            "sock_send_length",
            "tcp_sendmsg_locked",
        ] {
            f.tracepoints.remove(tp);
        }
        f.netfilter_link = false;
        f.fentry = Ok(());
        f.kprobe = Ok(());
        let mut p = plan_rx(&f);
        p.extend(plan_tx(&f));
        for x in &p {
            assert!(x.kind.is_some(), "{} unserved: {:?}", x.point, x.reason);
        }
        for point in ["rx_ip", "rx_sockq", "rx_read", "tx_send", "tx_transport"] {
            assert_eq!(kind_of(&p, point), Some(HookKind::Fentry), "{point}");
        }
        f.fentry = Err("EPERM".into());
        let p = plan_rx(&f);
        assert_eq!(kind_of(&p, "rx_read"), Some(HookKind::Kprobe));
    }

    #[test]
    fn tx_send_says_which_tracepoint_is_missing() {
        let mut f = facts_618();
        f.tracepoints.remove("tcp_sendmsg_locked");
        f.tracepoints.remove("qdisc_dequeue");
        let p = plan_tx(&f);
        let send = p.iter().find(|x| x.point == "tx_send").unwrap();
        assert_eq!(send.kind, None);
        assert!(send
            .reason
            .as_deref()
            .unwrap()
            .contains("tcp_sendmsg_locked not in this kernel"));
        // Enqueue without dequeue would park chains for ever: both or neither.
        assert_eq!(kind_of(&p, "tx_qdisc_enq"), None);
        assert_eq!(kind_of(&p, "tx_driver"), Some(HookKind::TpBtf));
    }
}

#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A small raw BTF file (what /sys/kernel/btf/vmlinux is, only shorter): an int, an
    /// `enum skb_drop_reason` with these members, the `btf_trace_<tp>` typedefs of the
    /// tracepoints given, the `bpf_rdonly_cast` func and `struct tcx_entry`.
    pub(crate) fn btf(reasons: &[(String, u32)], tracepoints: &[&str]) -> Vec<u8> {
        let mut strs = vec![0u8];
        let mut name = |s: &str| {
            let off = strs.len() as u32;
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
            off
        };
        let mut types: Vec<u32> = Vec::new();
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // [1] int: 4 bytes, signed, 32 bits.
        types.extend([name("int"), info(1, 0), 4, (1 << 24) | 32]);
        // [2] void (*)(void): [2] func_proto, [3] pointer to it.
        types.extend([0, info(13, 0), 0]);
        types.extend([0, info(2, 0), 2]);
        // [4] enum skb_drop_reason.
        types.extend([name("skb_drop_reason"), info(6, reasons.len() as u32), 4]);
        for (n, v) in reasons {
            types.extend([name(n), *v]);
        }
        // [5] bpf_rdonly_cast, global; [6] struct tcx_entry (empty).
        types.extend([name("bpf_rdonly_cast"), info(12, 1), 2]);
        types.extend([name("tcx_entry"), info(4, 0), 0]);
        for tp in tracepoints {
            types.extend([name(&format!("btf_trace_{tp}")), info(8, 0), 3]);
        }
        let type_len = (types.len() * 4) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        out.extend_from_slice(&[1, 0]); // version 1, no flags
        for v in [24, 0, type_len, type_len, strs.len() as u32] {
            out.extend_from_slice(&u32::to_ne_bytes(v));
        }
        for t in types {
            out.extend_from_slice(&t.to_ne_bytes());
        }
        out.extend_from_slice(&strs);
        out
    }

    /// A directory for one test's BTF files (in memory where /dev/shm is), removed at the
    /// end also when the test fails.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new(what: &str) -> Scratch {
            let base = Path::new("/dev/shm");
            let base = if base.is_dir() {
                base.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let d = base.join(format!("nsl-fuzz-{what}-{}", std::process::id()));
            std::fs::create_dir_all(&d).expect("creating the scratch directory");
            // libbpf would print its complaint about every corrupt file.
            libbpf_rs::set_print(None);
            Scratch(d)
        }

        pub(crate) fn write(&self, bytes: &[u8]) -> PathBuf {
            let p = self.0.join("btf");
            std::fs::write(&p, bytes).expect("writing the BTF file");
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Byte edits of a file: (where, byte, 0 set / 1 remove / 2 insert), then a cut.
    pub(crate) fn corrupt(
        mut b: Vec<u8>,
        edits: &[(prop::sample::Index, u8, u8)],
        cut: Option<prop::sample::Index>,
    ) -> Vec<u8> {
        for (at, v, op) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 if i < b.len() => b[i] = *v,
                1 if i < b.len() => {
                    b.remove(i);
                }
                _ => b.insert(i, *v),
            }
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len() + 1));
        }
        b
    }

    pub(crate) fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// The tracepoints a BTF file describes, from whole files (exactly those written) and
        /// corrupted ones (an error naming the file, or some answer): never a panic.
        #[test]
        fn fuzz_btf_tracepoints(
            tps in proptest::sample::subsequence(vec!["kfree_skb", "softirq_entry", "net_dev_queue", "tcp_probe"], 0..=4),
            edits in edits(),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let dir = Scratch::new("tp");
            let whole = btf(&[], &tps);
            let asked = ["kfree_skb", "softirq_entry", "net_dev_queue", "tcp_probe", "nope"];
            let clean = edits.is_empty() && cut.is_none();
            let path = dir.write(&corrupt(whole, &edits, cut));
            match gather_tracepoints(&path, &asked) {
                Ok((found, cast)) => {
                    if clean {
                        prop_assert_eq!(found, tps.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                        prop_assert!(cast);
                    }
                }
                Err(e) => {
                    prop_assert!(!clean, "{}", e);
                    let m = e.to_string();
                    prop_assert!(m.starts_with("cannot read BTF at ") && !m.contains('\n'), "{}", m);
                }
            }
        }
    }
}
