//! Command line: clap definitions and the small parsers behind them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::kernel::names::{NF_HOOK_NAMES, VECTORS};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "netstack-lat",
    version,
    about = "Where time goes inside the Linux network stack: per packet, per stage, per connection",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, the options of `trace` (so `netstack-lat --json` is `trace --json`).
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace receive and transmit latency per stage and per connection
    Trace(TraceArgs),
    /// Softirq raise->entry delay and run time per CPU and vector, NAPI batch sizes
    Softirq(SoftirqArgs),
    /// Time spent in netfilter per hook and family (conntrack, NAT, iptables, nftables), with
    /// drop verdicts
    Netfilter(NetfilterArgs),
    /// Prometheus exporter: trace, softirq and netfilter together, served on /metrics
    Serve(ServeArgs),
    /// Show which kernel hook serves each point on this kernel, or why none can
    Probes(ProbesArgs),
    /// Every dropped packet with the kernel's drop reason and where it was dropped
    Drops(DropsArgs),
    /// Congestion signals per interval: bytes sent, drops by reason, send-buffer pressure,
    /// softirq time, qdisc backlog, retransmits
    Signals(SignalsArgs),
    /// Check this kernel's hooks against known delays, once per hook family (tracepoint,
    /// raw_tp, fentry, kprobe): does netstack-lat measure right here?
    Selftest(SelftestArgs),
    /// Find an application marker (an SSE/JSON `interval_id`) in TCP payloads at TC capture
    /// points and record when each one passed: CSV or JSON lines, live T2 - T1 per pair
    Marker(MarkerArgs),
    /// Join two marker captures by interval_id: T2 - T1 per interval, percentiles, missing
    /// and out-of-order intervals
    Correlate(CorrelateArgs),
    /// Benchmark helpers used by `make bench`
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Attach do-nothing programs on the hooks `trace` uses: the cost floor for bpf_stats
    Empty {
        /// How long to stay attached
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        duration: Duration,
        /// Network namespace for the netfilter hooks (e.g. /run/netns/NAME); repeatable
        #[arg(long)]
        netns: Vec<PathBuf>,
        /// Whose hooks: `trace` (RX and TX) or `softirq`
        #[arg(long, value_enum, default_value = "trace")]
        hooks: EmptyHooks,
        /// With --hooks marker: the capture points, as marker's --iface (at most 2)
        #[arg(long = "iface", value_name = "IFACE:DIR[@NETNS]", value_parser = parse_point)]
        points: Vec<PointSpec>,
    },
    /// Spin in net_dev_xmit of one device for a known time per packet: a controlled delay
    /// of the softirqs the transmit raises (ground truth for tests)
    Spin {
        /// Network namespace of the device (e.g. /run/netns/NAME)
        #[arg(long)]
        netns: Option<PathBuf>,
        /// The device, by name in that namespace
        #[arg(long)]
        iface: String,
        /// Microseconds per packet (at most 20000)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=20000))]
        us: u64,
        /// How long to stay attached
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        duration: Duration,
    },
    /// Sweep rule counts and backends (iptables-legacy, iptables-nft, nftables) with
    /// kube-proxy-shaped rules in namespaces of its own; table, CSV and SVG of the latency
    Netfilter(NfBenchArgs),
    /// Decode and correlate synthetic events in memory; prints events/s
    Frontend {
        /// Number of synthetic events
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Also keep the exporter's labelled span histograms (what --prometheus costs), and
        /// time one rendering of /metrics
        #[arg(long)]
        prometheus: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmptyHooks {
    Trace,
    Softirq,
    /// The first and last netfilter priority of every hook, IPv4 and IPv6, and kfree_skb
    /// (as `netfilter`)
    Netfilter,
    /// TC programs at marker's capture points (--iface)
    Marker,
    /// `serve`'s default hooks: trace's without the netfilter split, softirq context and
    /// tx_free, plus the softirq and netfilter parts
    Serve,
}

#[derive(Args, Debug, Clone)]
pub struct NfBenchArgs {
    /// Service rules ahead of the probed service, comma-separated (e.g. 0,100,1000,5000,10000)
    #[arg(long, value_parser = parse_rule_counts, default_value = "0,100,1000,5000,10000")]
    pub rules: RuleCounts,
    /// Backends, comma-separated: iptables-legacy, iptables-nft, nftables-map, nftables-linear
    #[arg(
        long,
        value_parser = parse_backends,
        default_value = "iptables-legacy,iptables-nft,nftables-map"
    )]
    pub backend: Backends,
    /// Packets per second sent to the probed service in each step
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Traffic time per step (e.g. 10, 10s, 500ms)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Write the results as CSV (backend,rules,count,avg_us,p50_us,p99_us,...)
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw latency against rule count, one line per backend, as SVG
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// One JSON line per step and a summary line, instead of the table
    #[arg(long)]
    pub json: bool,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
}

/// `--rules` after parsing (a newtype, so clap keeps the list whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounts(pub Vec<u32>);

/// `--backend` after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends(pub Vec<crate::kernel::nfrules::Backend>);

/// Most service rules one step installs: the service addresses come from a /16.
pub const MAX_RULES: u32 = 60_000;

/// "0,100,1000" -> [0, 100, 1000]; every count within 0..=MAX_RULES, no duplicates.
pub fn parse_rule_counts(s: &str) -> Result<RuleCounts, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "empty rule count in '{s}': give counts like 0,100,1000"
            ));
        }
        let n: u32 = part.parse().map_err(|_| {
            format!("rule count '{part}' is not a whole number from 0 to {MAX_RULES}")
        })?;
        if n > MAX_RULES {
            return Err(format!("rule count {n} is above the maximum {MAX_RULES}"));
        }
        if out.contains(&n) {
            return Err(format!("rule count {n} is given twice"));
        }
        out.push(n);
    }
    Ok(RuleCounts(out))
}

/// "iptables-legacy,nftables-map" -> backends, in the order given, no duplicates.
pub fn parse_backends(s: &str) -> Result<Backends, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "empty backend in '{s}': use iptables-legacy, iptables-nft, nftables-map or nftables-linear"
            ));
        }
        let b = crate::kernel::nfrules::Backend::parse(part)?;
        if out.contains(&b) {
            return Err(format!("backend {part} is given twice"));
        }
        out.push(b);
    }
    Ok(Backends(out))
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address of the /metrics and /healthz endpoint
    #[arg(long, default_value = "0.0.0.0:2112")]
    pub listen: String,
    /// Also export the spans of the N busiest connections, labelled by address and port
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub per_connection_top: usize,
    /// Leave out the softirq part (netstack_lat_softirq_*)
    #[arg(long)]
    pub no_softirq: bool,
    /// Leave out the netfilter part (netstack_lat_netfilter_*)
    #[arg(long)]
    pub no_netfilter: bool,
    /// Also export the netfilter split spans (per hook, and routing between): one more
    /// netfilter program per hook and packet
    #[arg(long)]
    pub netfilter_split: bool,
    /// Also export the softirq context span (rx_softirq_raise->rx_softirq_entry): two more
    /// programs on every softirq raise and entry
    #[arg(long)]
    pub softirq_context: bool,
    /// Also trace transmit completion (tx_free): two more programs on every skb the host
    /// frees; without it, chains end when the driver's xmit returns
    #[arg(long)]
    pub tx_free: bool,
    /// Also hook the send syscalls' entry (raw_syscalls:sys_enter, one more program on
    /// every syscall the host makes): UDP datagrams get their tx_send spans, and TCP
    /// writes are timed from the syscall's start rather than from tcp_sendmsg_locked
    #[arg(long)]
    pub send_syscall: bool,
    /// Series (span x protocol x interface x namespace) each CPU's in-kernel table holds:
    /// N x 208 bytes per CPU, for RX and for TX. Spans of series beyond it are counted in
    /// netstack_lat_spans_unrecorded{why="series_full"}
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SERIES,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_series: u32,
    /// Send every packet's chain to user space and join it there, as `trace` does, instead
    /// of keeping the histograms in the kernel (costs more per packet; implied by
    /// --per-connection-top, which needs the rows)
    #[arg(long)]
    pub user_space_join: bool,
    /// Stop after this long; default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub packet: PacketFilterArgs,
    #[command(flatten)]
    pub k8s: K8sArgs,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
    /// Print libbpf's own messages
    #[arg(long, short)]
    pub verbose: bool,
}

/// Series each CPU's in-kernel span table holds by default (serve --max-series): 4096 x 208
/// bytes = 832 KiB per CPU, for RX and for TX.
pub const DEFAULT_SERIES: u32 = 4096;

/// Kubernetes pod labels (trace, serve).
#[derive(Args, Debug, Clone, Default)]
pub struct K8sArgs {
    /// The kubelet's pod log directory: its <namespace>_<pod>_<uid> entries name the pods
    /// that processes' cgroups point to (labels k8s_namespace, k8s_pod, container_id).
    /// Default /var/log/pods, used when present
    #[arg(long, value_name = "DIR")]
    pub pods_dir: Option<PathBuf>,
    /// No Kubernetes pod labels
    #[arg(long)]
    pub no_k8s: bool,
}

/// "LOCAL_OUT,prerouting,INPUT" -> a bit mask of hook numbers (iptables chain names too).
pub fn parse_nf_hooks(s: &str) -> Result<u32, String> {
    let mut mask = 0u32;
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let upper = name.to_ascii_uppercase().replace('-', "_");
        let i = match upper.as_str() {
            "PREROUTING" | "PRE_ROUTING" => 0,
            "INPUT" | "LOCAL_IN" => 1,
            "FORWARD" => 2,
            "OUTPUT" | "LOCAL_OUT" => 3,
            "POSTROUTING" | "POST_ROUTING" => 4,
            _ => {
                return Err(format!(
                    "unknown netfilter hook '{name}': use one of {}",
                    NF_HOOK_NAMES.join(", ")
                ))
            }
        };
        mask |= 1 << i;
    }
    if mask == 0 {
        return Err("no netfilter hook given: use e.g. LOCAL_OUT,PRE_ROUTING".into());
    }
    Ok(mask)
}

#[derive(Args, Debug, Clone, Default)]
pub struct NetfilterArgs {
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a live line every interval
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// JSON lines on stdout: {"type":"interval"} per interval, {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Hooks to bracket, comma-separated (PRE_ROUTING, LOCAL_IN, FORWARD, LOCAL_OUT,
    /// POST_ROUTING; iptables' chain names work too) [default: all]
    #[arg(long, value_parser = parse_nf_hooks)]
    pub hook: Option<u32>,
    #[command(flatten)]
    pub packet: PacketFilterArgs,
    /// Bin width of the linear histogram, in microseconds
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub linear_us: u64,
    /// Upper end of the linear histogram, in microseconds (the last bin holds the rest)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub linear_max_us: u64,
    /// Also serve Prometheus metrics on this address (e.g. 127.0.0.1:2112): /metrics, /healthz
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
    /// Print libbpf's own messages
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The packet filters of `trace` and `netfilter`, applied in BPF.
#[derive(Args, Debug, Clone, Default)]
pub struct PacketFilterArgs {
    /// Only packets with this source or destination port
    #[arg(long)]
    pub port: Option<u16>,
    /// Only packets with a source or destination address in this CIDR (10.0.0.0/8, fd00::/64)
    #[arg(long, value_parser = parse_cidr)]
    pub addr: Option<Cidr>,
    /// Only packets received or sent on this interface (name, in the namespace of --netns)
    #[arg(long)]
    pub iface: Option<String>,
    /// Only this network namespace (/run/netns/NAME, a bare NAME, or /proc/PID/ns/net);
    /// repeatable. Default: every namespace of the host, including ones created later
    #[arg(long, value_parser = parse_netns)]
    pub netns: Vec<PathBuf>,
    /// Only this transport protocol
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,
    /// Only IPv4
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6
    #[arg(short = '6')]
    pub ipv6: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct TraceArgs {
    /// Trace the receive path only
    #[arg(long, conflicts_with = "tx")]
    pub rx: bool,
    /// Trace the transmit path only
    #[arg(long)]
    pub tx: bool,
    /// Leave out the per-packet softirq context (span rx_softirq_raise->rx_softirq_entry),
    /// which costs two more hooks on every softirq raise and entry
    #[arg(long)]
    pub no_softirq_context: bool,
    /// Leave out the netfilter split of rx_ip->rx_transport and tx_transport->tx_nf_done
    /// (spans per netfilter hook and the routing between), which costs one more netfilter
    /// program per hook and packet
    #[arg(long)]
    pub no_netfilter_split: bool,
    /// Leave out the transmit completion point (tx_free: consume_skb and kfree_skb, which
    /// run for every skb the host frees): chains end when the driver's xmit returns, and
    /// a drop before the driver is no longer seen (such a chain ages out, counted stale)
    #[arg(long)]
    pub no_tx_free: bool,
    /// Leave out the send syscall's entry (raw_syscalls:sys_enter, which runs for every
    /// syscall on the host): UDP datagrams get no tx_send and no sender, and a TCP write
    /// is timed from its first tcp_sendmsg_locked call instead of the syscall's start
    #[arg(long)]
    pub no_send_syscall: bool,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a live line every interval
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// JSON lines on stdout: {"type":"interval"} per interval, {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Also print one JSON line per packet timeline ({"type":"event"})
    #[arg(long)]
    pub events: bool,
    /// With --events, keep one timeline in N
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: u64,
    /// Only sockets read or written by this process (thread group id)
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only sockets read or written by processes with this command name (up to 15 characters)
    #[arg(long)]
    pub comm: Option<String>,
    /// Only sockets read or written by processes in this cgroup v2 directory
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    #[command(flatten)]
    pub packet: PacketFilterArgs,
    /// Connections shown in the summary, busiest first
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also serve Prometheus metrics on this address (e.g. 127.0.0.1:2112): /metrics, /healthz
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// With --prometheus: also export the spans of the N busiest connections, labelled by
    /// address and port (off by default: it multiplies the series)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub per_connection_top: usize,
    /// Hook families allowed, in order of preference (comma-separated: tracepoint (tp_btf),
    /// raw_tp, netfilter, fentry, kprobe; default: all, in that order; also $NETSTACK_LAT_HOOKS).
    /// Each point takes its first working hook; forces fallbacks, e.g. --hooks kprobe,tracepoint
    #[arg(long, value_name = "LIST")]
    pub hooks: Option<String>,
    #[command(flatten)]
    pub k8s: K8sArgs,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
    /// Print libbpf's own messages
    #[arg(long, short)]
    pub verbose: bool,
    /// Set by `serve`: span histograms kept in the kernel, no ring record per packet (so
    /// no per-connection rows)
    #[arg(skip)]
    pub in_kernel: bool,
    /// With in_kernel: series each CPU's table holds
    #[arg(skip)]
    pub max_series: u32,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SoftirqArgs {
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a live line every interval
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// JSON lines on stdout: {"type":"interval"} per interval, {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Every softirq vector, not only NET_RX and NET_TX
    #[arg(long, conflicts_with = "vector")]
    pub all: bool,
    /// Vectors to follow, comma-separated (HI, TIMER, NET_TX, NET_RX, BLOCK, IRQ_POLL,
    /// TASKLET, SCHED, HRTIMER, RCU) [default: NET_RX,NET_TX]
    #[arg(long, value_parser = parse_vectors)]
    pub vector: Option<u32>,
    /// Only this CPU
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Bin width of the linear histogram view, in microseconds
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub linear_us: u64,
    /// Also serve Prometheus metrics on this address (e.g. 127.0.0.1:2112): /metrics, /healthz
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
    /// Print libbpf's own messages
    #[arg(long, short)]
    pub verbose: bool,
}

/// "NET_RX,TIMER" -> a bit mask of vector numbers.
pub fn parse_vectors(s: &str) -> Result<u32, String> {
    let mut mask = 0u32;
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let upper = name.to_ascii_uppercase();
        let i = VECTORS.iter().position(|v| *v == upper).ok_or_else(|| {
            format!(
                "unknown softirq vector '{name}': use one of {}",
                VECTORS.join(", ")
            )
        })?;
        mask |= 1 << i;
    }
    if mask == 0 {
        return Err("no softirq vector given: use e.g. NET_RX,NET_TX".into());
    }
    Ok(mask)
}

#[derive(Args, Debug, Clone, Default)]
pub struct ProbesArgs {
    /// One JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Hook families allowed, in order of preference (comma-separated: tracepoint (tp_btf),
    /// raw_tp, netfilter, fentry, kprobe; default: all, in that order; also $NETSTACK_LAT_HOOKS).
    /// Each point takes its first working hook; forces fallbacks, e.g. --hooks kprobe,tracepoint
    #[arg(long, value_name = "LIST")]
    pub hooks: Option<String>,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
}

/// An address prefix; `addr` is already masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// The 16-byte form the BPF filter compares (IPv4 in the first four bytes).
    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        match self.addr {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b = a.octets(),
        }
        b
    }
}

/// `--netns`: a path, or a bare name under /run/netns.
pub fn parse_netns(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty: give /run/netns/NAME, a bare NAME, or /proc/PID/ns/net".into());
    }
    Ok(crate::kernel::netns::given_path(std::ffi::OsStr::new(s)))
}

pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let bad = || {
        format!("'{s}' is not an address or CIDR (examples: 10.0.0.0/24, fd00::/64, 192.168.1.5)")
    };
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(format!(
            "prefix length {len} is too long for {a} (at most {max})"
        ));
    }
    let masked = match addr {
        IpAddr::V4(v) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v) & m).into())
        }
    };
    Ok(Cidr { addr: masked, len })
}

/// Longest duration taken: about 31 years.
pub const MAX_DURATION_S: u64 = 1_000_000_000;

/// "10s", "250ms", "2m", "1h", "1.5" (seconds), "900us". Decimal arithmetic, so "0.3s" is
/// 300 ms exactly; digits below a nanosecond are dropped, and what rounds to zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let not = || format!("'{s}' is not a duration (examples: 10s, 500ms, 2m)");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(not());
    }
    let unit_ns: u128 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" => 1_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}' (use us, ms, s, m or h)"
            ))
        }
    };
    let max_ns = u128::from(MAX_DURATION_S) * 1_000_000_000;
    let too_long = || format!("'{s}' is too long: at most {MAX_DURATION_S}s");
    // Past 20 digits the whole part is beyond the maximum whatever the unit (leading zeros
    // aside, which are dropped first).
    let int = int.trim_start_matches('0');
    if int.len() > 20 {
        return Err(too_long());
    }
    let whole: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| not())?
    };
    // 18 fraction digits are below a nanosecond even in hours.
    let frac = &frac[..frac.len().min(18)];
    let part: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| not())?
    };
    let ns = whole * unit_ns + part * unit_ns / 10u128.pow(frac.len() as u32);
    if ns == 0 {
        return Err(format!("'{s}' must be a positive duration (1ns or more)"));
    }
    if ns > max_ns {
        return Err(too_long());
    }
    Ok(Duration::new(
        (ns / 1_000_000_000) as u64,
        (ns % 1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn duration_regressions_from_fuzzing() {
        // Decimal, not binary: 0.3s is 300 ms, not 299.999999 ms.
        assert_eq!(parse_duration("0.3").unwrap(), Duration::from_millis(300));
        assert_eq!(
            parse_duration("1.001ms").unwrap(),
            Duration::from_micros(1001)
        );
        // Below a nanosecond was taken as a zero duration.
        assert!(parse_duration("0.0000001us")
            .unwrap_err()
            .contains("positive"));
        assert!(parse_duration("2000000000s")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration(".").is_err());
        assert_eq!(parse_duration(".5").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn points_and_their_labels() {
        let p = parse_point("veth0:egress@ns-a").unwrap();
        assert_eq!(p.label(), "veth0:egress@ns-a");
        assert_eq!(p.netns, Some(PathBuf::from("/run/netns/ns-a")));
        assert_eq!(
            parse_point("eth0:IN").unwrap().direction,
            Direction::Ingress
        );
        // Regressions from fuzzing: labels are CSV fields, and the kernel refuses these names.
        assert!(parse_point("a,b:in").unwrap_err().contains("comma"));
        assert!(parse_point("eth0:in@ns,x").unwrap_err().contains("comma"));
        assert!(parse_point("eth0:in@n\ns").unwrap_err().contains("control"));
        assert!(parse_point("a:b:in")
            .unwrap_err()
            .contains("interface name"));
        assert!(parse_point("..:in").unwrap_err().contains("interface name"));
        assert!(parse_point("e\tth0:in").is_err());
        assert!(parse_point("eth0").unwrap_err().contains("no direction"));
    }

    #[test]
    fn cidrs() {
        let c = parse_cidr("10.1.2.3/16").unwrap();
        assert_eq!(c.addr.to_string(), "10.1.0.0");
        assert_eq!(c.len, 16);
        assert_eq!(&c.bytes()[..4], &[10, 1, 0, 0]);
        assert_eq!(parse_cidr("192.168.1.5").unwrap().len, 32);
        let v6 = parse_cidr("fd00::1/64").unwrap();
        assert_eq!(v6.addr.to_string(), "fd00::");
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("too long"));
        assert!(parse_cidr("10.0.0/8")
            .unwrap_err()
            .contains("not an address"));
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().len, 0);
    }

    #[test]
    fn bare_json_means_trace() {
        let cli = Cli::try_parse_from(["netstack-lat", "--json", "--duration", "3s"]).unwrap();
        assert!(cli.command.is_none());
        assert!(cli.trace.json);
        let cli = Cli::try_parse_from(["netstack-lat", "trace", "--port", "9000", "-6"]).unwrap();
        let Some(Command::Trace(t)) = cli.command else {
            panic!("trace expected")
        };
        assert_eq!((t.packet.port, t.packet.ipv6), (Some(9000), true));
        assert!(Cli::try_parse_from(["netstack-lat", "trace", "-4", "-6"]).is_err());
    }
}

#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// One JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Hook families to force in turn (comma-separated: tracepoint, raw_tp, fentry, kprobe,
    /// netfilter); those this kernel cannot use for the socket points are skipped
    #[arg(
        long,
        value_name = "LIST",
        default_value = "tracepoint,raw_tp,fentry,kprobe"
    )]
    pub families: String,
    /// The reader's delay D: the traced median must lie in [0.9 D, 1.3 D]
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub delay_ms: u64,
    /// Messages per protocol and family
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct SignalsArgs {
    /// Length of each interval (e.g. 200ms, 1s)
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Stop after this long; default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON object per interval ({"type":"interval"}) and a {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Only sends of this process (thread group id); drops are then not counted
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only sends of processes in this cgroup v2 directory; drops are then not counted
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Only sockets, drops and retransmits with this local or remote port
    #[arg(long)]
    pub port: Option<u16>,
    /// Only drops and qdisc backlog of this interface
    #[arg(long)]
    pub iface: Option<String>,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DropsArgs {
    /// Stop after this long; default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// JSON lines: {"type":"drop"} per drop, {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Only the summary by reason and location, no line per drop
    #[arg(long)]
    pub summary: bool,
    /// Also the kernel stack of each drop
    #[arg(long)]
    pub stack: bool,
    #[command(flatten)]
    pub packet: PacketFilterArgs,
    /// Kernel BTF to use (default /sys/kernel/btf/vmlinux, or $NETSTACK_LAT_BTF)
    #[arg(long)]
    pub btf: Option<PathBuf>,
}

/// Which way packets cross a capture point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One `--iface IFACE:DIRECTION[@NETNS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointSpec {
    pub iface: String,
    pub direction: Direction,
    /// A netns file (a bare name means /run/netns/NAME); none: this process's namespace.
    pub netns: Option<PathBuf>,
}

impl PointSpec {
    /// The label rows carry: `IFACE:DIRECTION`, with `@NETNS` (its name) when given.
    pub fn label(&self) -> String {
        let base = format!("{}:{}", self.iface, self.direction.name());
        match &self.netns {
            Some(p) => {
                let name = p
                    .strip_prefix("/run/netns")
                    .ok()
                    .and_then(|n| n.to_str())
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| p.display().to_string(), str::to_string);
                format!("{base}@{name}")
            }
            None => base,
        }
    }
}

/// "veth0:egress", "eth0:ingress@ns-a", "eth0:in@/proc/42/ns/net".
pub fn parse_point(s: &str) -> Result<PointSpec, String> {
    // The label goes into CSV rows and Prometheus labels unquoted.
    if s.contains(',') || s.chars().any(char::is_control) {
        return Err(format!(
            "'{}' holds a comma or a control character: give the interface and netns without",
            s.escape_debug()
        ));
    }
    let (main, netns) = match s.split_once('@') {
        Some((m, n)) if !n.is_empty() => (m, Some(n)),
        Some(_) => {
            return Err(format!(
                "'{s}': nothing after '@' (give a netns name or path)"
            ))
        }
        None => (s, None),
    };
    let Some((iface, dir)) = main.rsplit_once(':') else {
        return Err(format!(
            "'{s}' has no direction: write IFACE:ingress or IFACE:egress (e.g. veth0:egress)"
        ));
    };
    let direction = match dir.to_ascii_lowercase().as_str() {
        "ingress" | "in" => Direction::Ingress,
        "egress" | "out" => Direction::Egress,
        _ => {
            return Err(format!(
                "unknown direction '{dir}' in '{s}': use ingress or egress"
            ))
        }
    };
    // The kernel's own rule (dev_valid_name): 1 to 15 bytes, not . or .., no '/', ':' or
    // white space.
    if iface.is_empty()
        || iface.len() > 15
        || iface == "."
        || iface == ".."
        || iface.contains(['/', ':'])
        || iface.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "'{iface}' is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
        ));
    }
    let netns = netns.map(|n| {
        if n.starts_with('/') {
            PathBuf::from(n)
        } else {
            PathBuf::from("/run/netns").join(n)
        }
    });
    Ok(PointSpec {
        iface: iface.to_string(),
        direction,
        netns,
    })
}

/// `--port` after parsing: the ports whose payloads are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// Most ports `marker --port` takes (the BPF side's MARKER_PORTS).
pub const MAX_MARKER_PORTS: usize = 8;

/// "8000,8001" -> [8000, 8001]: 1 to 8 ports, each 1..=65535, no duplicates.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let p: u16 = part.parse().ok().filter(|&p| p > 0).ok_or_else(|| {
            format!("'{part}' is not a port (1 to 65535); give e.g. --port 8000,8001")
        })?;
        if out.contains(&p) {
            return Err(format!("port {p} is given twice"));
        }
        out.push(p);
    }
    if out.len() > MAX_MARKER_PORTS {
        return Err(format!(
            "{} ports given: at most {MAX_MARKER_PORTS}",
            out.len()
        ));
    }
    Ok(Ports(out))
}

/// A JSON field name for `--key`/`--position-key`: printable ASCII, no quote or backslash.
pub fn parse_field_name(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(format!(
            "'{s}' is not a usable field name: 1 to 64 printable characters, no quotes, backslashes or spaces"
        ));
    }
    Ok(s.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct MarkerArgs {
    /// Capture point IFACE:DIRECTION[@NETNS] (DIRECTION ingress or egress; NETNS a name under
    /// /run/netns or a netns path); repeat for several, at most 8. Live pairs join each point
    /// with the next one given
    #[arg(long = "iface", value_name = "IFACE:DIR[@NETNS]", required = true, value_parser = parse_point)]
    pub points: Vec<PointSpec>,
    /// TCP ports whose payloads are read (source or destination), comma-separated, at most 8;
    /// no other traffic is looked at
    #[arg(long, required = true, value_parser = parse_ports)]
    pub port: Ports,
    /// JSON field that carries the marker (an integer)
    #[arg(long, default_value = "interval_id", value_parser = parse_field_name)]
    pub key: String,
    /// JSON field of the same object taken along as `position` (an integer)
    #[arg(long, default_value = "position", value_parser = parse_field_name)]
    pub position_key: String,
    /// Write the CSV rows to this file (stdout then gets the summary); default: CSV on stdout
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// JSON lines on stdout: {"type":"marker"} per first sighting, {"type":"summary"} last
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Forget an interval this long after its first sighting (bounds memory in long runs;
    /// a later sighting then counts as new)
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub window: Duration,
    /// Also serve Prometheus metrics on this address (e.g. 127.0.0.1:2112): /metrics, /healthz
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// How to attach at TC: tcx links (kernel 6.6+), a clsact qdisc with a filter, or auto
    /// (tcx where the kernel has it)
    #[arg(long, value_enum, default_value = "auto")]
    pub attach: TcAttach,
    /// Kernel BTF that tells whether tcx exists (default /sys/kernel/btf/vmlinux, or
    /// $NETSTACK_LAT_BTF); the TC programs themselves need none
    #[arg(long)]
    pub btf: Option<PathBuf>,
    /// Print libbpf's own messages
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcAttach {
    Auto,
    Tcx,
    Clsact,
}

#[derive(Args, Debug, Clone)]
pub struct CorrelateArgs {
    /// CSV of the first capture point (T1), as written by `netstack-lat marker`
    #[arg(value_name = "A.csv")]
    pub first: PathBuf,
    /// CSV of the second capture point (T2); omit it to take both points from A.csv
    #[arg(value_name = "B.csv")]
    pub second: Option<PathBuf>,
    /// The capture point (the `point` column) of T1, when its file holds several
    #[arg(long, value_name = "POINT")]
    pub from: Option<String>,
    /// The capture point of T2, when its file holds several
    #[arg(long, value_name = "POINT")]
    pub to: Option<String>,
    /// How far the second host's clock is ahead of the first's, in ns (negative if behind):
    /// latency = (T2 - offset) - T1
    #[arg(
        long,
        value_name = "NS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub offset_ns: i64,
    /// One JSON summary line ({"type":"summary",...}) instead of the table
    #[arg(long)]
    pub json: bool,
    /// The joined rows as CSV on stdout (the table goes to stderr)
    #[arg(long, conflicts_with_all = ["json", "follow"])]
    pub csv: bool,
    /// Follow both files as `marker` writes them (and across rotation or truncation): join
    /// intervals as they arrive, print a line per --interval, stop at Ctrl-C or --duration
    #[arg(long)]
    pub follow: bool,
    /// With --follow: serve the T2 - T1 histogram and the join's counts on this address
    /// (e.g. 0.0.0.0:2113): /metrics, /healthz
    #[arg(long, value_name = "ADDR", requires = "follow")]
    pub prometheus: Option<String>,
    /// With --follow: how often a line is printed (and the metrics updated)
    #[arg(long, value_parser = parse_duration, default_value = "1s", requires = "follow")]
    pub interval: Duration,
    /// With --follow: stop after this long; default: until Ctrl-C or SIGTERM
    #[arg(long, value_parser = parse_duration, requires = "follow")]
    pub duration: Option<Duration>,
    /// With --follow: how long an interval seen on one side waits for the other before it
    /// counts as missing there
    #[arg(long, value_parser = parse_duration, default_value = "5s", requires = "follow")]
    pub grace: Duration,
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Text near what users type for these options, or any text.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-zA-Z.:/@,_ -]{0,24}",
            "[0-9.]{0,30}(us|ms|s|m|min|h|)",
            "[0-9a-f:.]{0,40}(/[0-9]{0,4})?",
            any::<String>(),
        ]
    }

    /// A rejection is a message, one line when the input was.
    fn message(input: &str, e: &str) -> Result<(), TestCaseError> {
        prop_assert!(!e.is_empty());
        if !input.contains(['\n', '\r']) {
            prop_assert!(!e.contains(['\n', '\r']), "{e:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text: a positive duration within the maximum, or a message.
        #[test]
        fn fuzz_cli_duration_any(s in text()) {
            match parse_duration(&s) {
                Ok(d) => prop_assert!(!d.is_zero() && d <= Duration::from_secs(MAX_DURATION_S)),
                Err(e) => message(&s, &e)?,
            }
        }

        /// Written durations read back exactly (decimal, not binary, fractions).
        #[test]
        fn fuzz_cli_duration_exact(
            whole in 0u64..100_000,
            frac in 0u32..1000,
            unit in 0usize..5,
        ) {
            let (name, ns): (&str, u128) = [
                ("us", 1_000),
                ("ms", 1_000_000),
                ("s", 1_000_000_000),
                ("m", 60_000_000_000),
                ("h", 3_600_000_000_000),
            ][unit];
            let s = format!("{whole}.{frac:03}{name}");
            let want = u128::from(whole) * ns + u128::from(frac) * ns / 1000;
            match parse_duration(&s) {
                Ok(d) => prop_assert_eq!(d.as_nanos(), want),
                Err(e) => {
                    prop_assert_eq!(want, 0, "{} refused: {}", s, e);
                }
            }
        }

        /// Any text: a masked prefix no longer than its family allows, or a message.
        #[test]
        fn fuzz_cli_cidr_any(s in text()) {
            match parse_cidr(&s) {
                Ok(c) => {
                    let max = if c.addr.is_ipv4() { 32 } else { 128 };
                    prop_assert!(c.len <= max);
                    // Written back, it reads the same.
                    prop_assert_eq!(parse_cidr(&format!("{}/{}", c.addr, c.len)), Ok(c));
                }
                Err(e) => message(&s, &e)?,
            }
        }

        /// Any address and prefix length: the bits past the prefix are cleared, the others
        /// kept; lengths past the family's are refused.
        #[test]
        fn fuzz_cli_cidr_masks(raw in any::<[u8; 16]>(), v6 in any::<bool>(), len in 0u8..=255) {
            let (addr, max): (IpAddr, u8) = if v6 {
                (raw.into(), 128)
            } else {
                ([raw[0], raw[1], raw[2], raw[3]].into(), 32)
            };
            let got = parse_cidr(&format!("{addr}/{len}"));
            if len > max {
                prop_assert!(got.is_err());
                return Ok(());
            }
            let c = got.map_err(TestCaseError::fail)?;
            prop_assert_eq!(c.len, len);
            let (want, have) = (match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            }, c.bytes());
            for bit in 0..usize::from(max) {
                let w = want[bit / 8] >> (7 - bit % 8) & 1;
                let h = have[bit / 8] >> (7 - bit % 8) & 1;
                prop_assert_eq!(h, if bit < usize::from(len) { w } else { 0 }, "bit {}", bit);
            }
        }

        /// Any text: a point whose label is one CSV field (no comma, no control character)
        /// and parses back to the same point, or a message.
        #[test]
        fn fuzz_cli_point_any(s in text()) {
            match parse_point(&s) {
                Ok(p) => {
                    let label = p.label();
                    prop_assert!(!label.contains(',') && !label.chars().any(char::is_control), "{label:?}");
                    prop_assert!(!p.iface.is_empty() && p.iface.len() <= 15);
                    prop_assert!(!p.iface.contains([':', '/']));
                    prop_assert_eq!(parse_point(&label), Ok(p));
                }
                Err(e) => message(&s, &e)?,
            }
        }

        /// Points written as the help says are read as written.
        #[test]
        fn fuzz_cli_point_valid(
            iface in "[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,14}",
            dir in prop::sample::select(vec!["ingress", "in", "EGRESS", "out", "Egress"]),
            ns in proptest::option::of(prop_oneof!["[a-z0-9_-]{1,20}", "/proc/[0-9]{1,7}/ns/net"]),
        ) {
            let s = match &ns {
                Some(n) => format!("{iface}:{dir}@{n}"),
                None => format!("{iface}:{dir}"),
            };
            let p = parse_point(&s).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&p.iface, &iface);
            let ingress = dir.eq_ignore_ascii_case("ingress") || dir == "in";
            prop_assert_eq!(p.direction == Direction::Ingress, ingress);
            let want = ns.map(|n| if n.starts_with('/') { PathBuf::from(n) } else { PathBuf::from("/run/netns").join(n) });
            prop_assert_eq!(p.netns, want);
        }

        /// Port lists: 1 to MAX_MARKER_PORTS distinct non-zero ports, as written; else a message.
        #[test]
        fn fuzz_cli_ports(
            s in prop_oneof![text(), proptest::collection::vec(0u32..70_000, 0..12).prop_map(|v| {
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            })],
        ) {
            match parse_ports(&s) {
                Ok(Ports(p)) => {
                    prop_assert!(!p.is_empty() && p.len() <= MAX_MARKER_PORTS);
                    prop_assert!(p.iter().all(|&x| x > 0));
                    let want: Vec<u16> = s.split(',').map(|x| x.trim().parse().unwrap_or(0)).collect();
                    prop_assert_eq!(&p, &want);
                }
                Err(e) => message(&s, &e)?,
            }
        }

        /// The other list and name options: a value within their rules, or a message.
        #[test]
        fn fuzz_cli_lists(s in text()) {
            match parse_rule_counts(&s) {
                Ok(RuleCounts(v)) => {
                    prop_assert!(!v.is_empty() && v.iter().all(|&n| n <= MAX_RULES));
                    let mut d = v.clone();
                    d.sort_unstable();
                    d.dedup();
                    prop_assert_eq!(d.len(), v.len());
                }
                Err(e) => message(&s, &e)?,
            }
            match parse_backends(&s) {
                Ok(Backends(v)) => prop_assert!(!v.is_empty()),
                Err(e) => message(&s, &e)?,
            }
            match parse_nf_hooks(&s) {
                Ok(m) => prop_assert!(m != 0 && m < 1 << NF_HOOK_NAMES.len()),
                Err(e) => message(&s, &e)?,
            }
            match parse_vectors(&s) {
                Ok(m) => prop_assert!(m != 0 && m < 1 << VECTORS.len()),
                Err(e) => message(&s, &e)?,
            }
            match parse_field_name(&s) {
                Ok(n) => prop_assert!(!n.is_empty() && n.len() <= 64 && !n.contains(['"', '\\', ' '])),
                Err(e) => message(&s, &e)?,
            }
            match parse_netns(&s) {
                Ok(p) => prop_assert!(!p.as_os_str().is_empty()),
                Err(e) => message(&s, &e)?,
            }
            match crate::kernel::probes::parse_families(&s) {
                Ok(f) => prop_assert!(!f.is_empty()),
                Err(e) => message(&s, &e)?,
            }
        }

        /// Whole command lines from the options' own words: parsed or refused, never a panic.
        #[test]
        fn fuzz_cli_args(words in proptest::collection::vec(prop_oneof![
            prop::sample::select(vec![
                "trace", "serve", "softirq", "netfilter", "bench", "drops", "signals", "marker",
                "correlate", "probes", "selftest", "empty", "frontend", "--json", "--duration",
                "--interval", "--port", "--addr", "--iface", "--netns", "--rules", "--backend",
                "--hooks", "--vectors", "--key", "--offset-ns", "--follow", "--csv", "-4", "-6",
                "--max-series", "--cpu", "--window", "--", "-", "--help",
            ]).prop_map(str::to_string),
            text(),
        ], 0..5)) {
            let mut argv = vec!["netstack-lat".to_string()];
            argv.extend(words);
            let _ = Cli::try_parse_from(argv);
        }
    }
}
