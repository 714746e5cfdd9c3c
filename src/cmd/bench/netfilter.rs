//! `netstack-lat bench netfilter`: does netfilter cost O(rules)? For each backend and rule
//! count it builds two namespaces joined by a veth (a client and a "node"), installs
//! kube-proxy-shaped NAT rules in the node through the real iptables/nft tools, sends UDP
//! to the last service from the client at a fixed rate with randomized source ports, and
//! times the node's PRE_ROUTING traversal with the netfilter bracket. Then it removes the
//! namespaces (and with them every rule and table) and takes the next step.
//!
//! The service endpoints are routed to a blackhole in the node, so a packet is dropped
//! right after PRE_ROUTING, before conntrack confirms its entry: every packet is a new
//! connection to NAT, and the conntrack table never fills, whatever the rate.

use std::fmt::Write as _;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::cli::NfBenchArgs;
use crate::cmd::netfilter::{Bracket, HookStat};
use crate::cmd::trace::Filters;
use crate::error::{require_root, UserError};
use crate::events::IPPROTO_UDP;
use crate::kernel::leftovers::{self, Object};
use crate::kernel::netns;
use crate::kernel::nfrules::{self, Backend, Layout};
use crate::kernel::probes;
use crate::runloop::{RunLoop, Step};
use crate::sink::plot;

/// Namespace names start with this, then the pid; the run record (leftovers.rs) lets a
/// later start remove those of a killed run.
const NS_PREFIX: &str = "nslnfb-";
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Service addresses: the dummies' /16 and the probed service's, routed to the node.
const SERVICE_ROUTE: &str = "172.30.0.0/15";
const PROBE_VIP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
const PROBE_PORT: u16 = 80;
/// Pod addresses: routed to a blackhole in the node (see the module docs).
const POD_ROUTE: &str = "10.232.0.0/16";
const PNF_PRE_ROUTING: u32 = 1 << 0;
/// Source ports cycle through 1024..65536 in a scrambled order.
const PORT_BASE: u32 = 1024;
const PORT_SPAN: u32 = 65536 - PORT_BASE;
/// Odd and prime to 3 and 7, so stepping by it visits every port of PORT_SPAN once.
const PORT_STEP: u32 = 40_499;

/// One (backend, rule count) measurement.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub backend: &'static str,
    pub rules: u32,
    /// Traversals measured (the bracket closed).
    pub count: u64,
    pub avg_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    /// Packets the generator sent.
    pub sent: u64,
    pub drops: u64,
    /// Rules the ruleset holds in all (service, endpoint and infrastructure chains).
    pub installed_rules: usize,
    pub install_s: f64,
}

pub const CSV_HEADER: &str =
    "backend,rules,count,avg_us,p50_us,p99_us,p90_us,min_us,max_us,sent,drops,installed_rules";

/// A row of `--csv`: serde names the columns of CSV_HEADER, in its order; times keep three
/// decimals (µs to the ns).
#[derive(Serialize)]
struct CsvRow<'a> {
    backend: &'a str,
    rules: u32,
    count: u64,
    avg_us: String,
    p50_us: String,
    p99_us: String,
    p90_us: String,
    min_us: String,
    max_us: String,
    sent: u64,
    drops: u64,
    installed_rules: usize,
}

impl<'a> From<&'a StepResult> for CsvRow<'a> {
    fn from(r: &'a StepResult) -> CsvRow<'a> {
        let us = |v: f64| format!("{v:.3}");
        CsvRow {
            backend: r.backend,
            rules: r.rules,
            count: r.count,
            avg_us: us(r.avg_us),
            p50_us: us(r.p50_us),
            p99_us: us(r.p99_us),
            p90_us: us(r.p90_us),
            min_us: us(r.min_us),
            max_us: us(r.max_us),
            sent: r.sent,
            drops: r.drops,
            installed_rules: r.installed_rules,
        }
    }
}

/// `--csv`: the header (also with no rows) and one line per step.
pub fn csv(results: &[StepResult]) -> Result<String> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(CSV_HEADER.split(','))?;
    for r in results {
        w.serialize(CsvRow::from(r))?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Rows: rule counts; columns: avg / p50 / p99 per backend, in µs.
pub fn table(results: &[StepResult], rules: &[u32], backends: &[Backend]) -> String {
    let mut s = format!("{:>8}", "rules");
    for b in backends {
        let _ = write!(s, " | {:^26}", b.name());
    }
    s.push('\n');
    let _ = write!(s, "{:>8}", "");
    for _ in backends {
        let _ = write!(s, " | {:>8} {:>8} {:>8}", "avg us", "p50 us", "p99 us");
    }
    s.push('\n');
    for &n in rules {
        let _ = write!(s, "{n:>8}");
        for b in backends {
            match results
                .iter()
                .find(|r| r.rules == n && r.backend == b.name())
            {
                Some(r) => {
                    let _ = write!(
                        s,
                        " | {:>8.2} {:>8.2} {:>8.2}",
                        r.avg_us, r.p50_us, r.p99_us
                    );
                }
                None => {
                    let _ = write!(s, " | {:>8} {:>8} {:>8}", "-", "-", "-");
                }
            }
        }
        s.push('\n');
    }
    s
}

pub fn chart(results: &[StepResult], backends: &[Backend], rate: u32) -> String {
    let series: Vec<plot::Series> = backends
        .iter()
        .map(|b| plot::Series {
            name: b.name().to_string(),
            points: results
                .iter()
                .filter(|r| r.backend == b.name() && r.count > 0)
                .map(|r| (f64::from(r.rules), r.avg_us))
                .collect(),
        })
        .collect();
    let title = format!("netfilter PRE_ROUTING time per packet (avg), UDP at {rate}/s");
    plot::svg(&plot::Chart {
        title: &title,
        x_label: "service rules ahead of the probed service",
        y_label: "avg latency (µs)",
        series: &series,
    })
}

/// The i-th source port of a step that starts at `offset`: every port once per cycle,
/// in an order that looks random to conntrack and to the NAT rules.
pub fn source_port(offset: u32, i: u64) -> u16 {
    let k = ((u64::from(offset) + i) % u64::from(PORT_SPAN)) as u32;
    (PORT_BASE + (u64::from(k) * u64::from(PORT_STEP) % u64::from(PORT_SPAN)) as u32) as u16
}

/// An IPv4/UDP packet for a raw socket: the kernel fills in the IP checksum, id and
/// length; a zero UDP checksum means "none" in IPv4.
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let total = 20 + 8 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    p
}

/// Packets due after `elapsed` at `rate` per second.
pub fn due(rate: u32, elapsed: Duration) -> u64 {
    (f64::from(rate) * elapsed.as_secs_f64()) as u64
}

/// Two namespaces and a veth; dropping it deletes them, and with them every rule.
struct Topology {
    client: String,
    node: String,
}

impl Topology {
    fn create(step: usize) -> Result<Topology> {
        let pid = std::process::id();
        let t = Topology {
            client: format!("{NS_PREFIX}{pid}-{step}-c"),
            node: format!("{NS_PREFIX}{pid}-{step}-n"),
        };
        // Noted before they exist, so a kill at any point leaves a record of them.
        for name in [&t.client, &t.node] {
            leftovers::note(
                "bench netfilter",
                Object::Netns {
                    name: name.to_string(),
                },
            );
        }
        ip(&["netns", "add", &t.client])?;
        // From here on, Drop cleans up whatever was made.
        let t = t;
        ip(&["netns", "add", &t.node])?;
        let (c, n) = (t.client.as_str(), t.node.as_str());
        ip(&[
            "-n", c, "link", "add", "nfb0", "type", "veth", "peer", "name", "nfb1", "netns", n,
        ])?;
        for (ns, dev, addr) in [(c, "nfb0", CLIENT_ADDR), (n, "nfb1", NODE_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            c,
            "route",
            "add",
            SERVICE_ROUTE,
            "via",
            &NODE_ADDR.to_string(),
        ])?;
        ip(&["-n", n, "route", "add", "blackhole", POD_ROUTE])?;
        Ok(t)
    }

    fn path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.node] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            if !Topology::path(ns).exists() {
                leftovers::forget(&Object::Netns {
                    name: ns.to_string(),
                });
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| UserError::new(format!("cannot run `ip` ({e}): install iproute2")))?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `prog` is an executable on PATH.
fn on_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| {
        let p = d.join(prog);
        p.metadata()
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// Every backend's loader must exist before the sweep starts.
fn check_tools(backends: &[Backend]) -> Result<(), UserError> {
    for b in backends {
        let (prog, _) = b.loader();
        if !on_path(prog) {
            let pkg = if prog == "nft" {
                "nftables"
            } else {
                "iptables"
            };
            return Err(UserError::new(format!(
                "backend {} needs `{prog}`, which is not installed: install the {pkg} package (apt-get install {pkg})",
                b.name()
            )));
        }
    }
    Ok(())
}

fn install(backend: Backend, layout: &Layout, node: &str) -> Result<()> {
    let (prog, args) = backend.loader();
    let mut child = Command::new("ip")
        .args(["netns", "exec", node, prog])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {prog}"))?;
    let text = nfrules::ruleset(backend, layout);
    // A loader that fails early closes its stdin: its stderr says why.
    let _ = child
        .stdin
        .take()
        .context("loader stdin")?
        .write_all(text.as_bytes());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{prog} could not install the {} rules of {}: {}",
            layout.services,
            backend.name(),
            err.lines().next().unwrap_or("no message")
        );
    }
    Ok(())
}

/// Send from the client namespace until `duration` passes or `stop` is set; returns the
/// packets sent.
fn send(
    client: &Path,
    rate: u32,
    duration: Duration,
    offset: u32,
    stop: &AtomicBool,
) -> Result<u64> {
    let _inside = netns::Entered::enter(client)?;
    // SAFETY: plain socket call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a raw socket");
    }
    // SAFETY: fd is a fresh socket no one else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = SocketAddrV4::new(PROBE_VIP, 0);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut pkt = udp_packet(CLIENT_ADDR, PROBE_VIP, 0, PROBE_PORT, 18);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let target = due(rate, elapsed);
        while sent < target {
            pkt[20..22].copy_from_slice(&source_port(offset, sent).to_be_bytes());
            // SAFETY: valid buffer and address for the duration of the call.
            let r = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                // A full queue is the rate's problem, not an error: retry next turn.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    break;
                }
                return Err(e).context("sending to the probed service");
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(sent)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn result_of(
    backend: Backend,
    layout: &Layout,
    d: &HookStat,
    sent: u64,
    install_s: f64,
) -> StepResult {
    let h = d.delta_hist();
    StepResult {
        backend: backend.name(),
        rules: layout.services,
        count: h.count(),
        avg_us: us(h.avg()),
        p50_us: us(h.percentile(50.0)),
        p90_us: us(h.percentile(90.0)),
        p99_us: us(h.percentile(99.0)),
        min_us: us(h.min()),
        max_us: us(h.max()),
        sent,
        drops: d.drops,
        installed_rules: nfrules::rule_count(backend, layout),
        install_s,
    }
}

pub fn run(a: &NfBenchArgs) -> Result<()> {
    require_root()?;
    let backends = &a.backend.0;
    let rules = &a.rules.0;
    check_tools(backends)?;
    let btf = probes::btf_path(a.btf.as_deref());
    probes::require_btf(&btf)?;
    libbpf_rs::set_print(None);

    // Only the probe traffic: UDP to the probed service's port (before DNAT rewrites it).
    let filters = Filters {
        proto: IPPROTO_UDP,
        port: PROBE_PORT,
        ..Filters::default()
    };
    let mut obj = MaybeUninit::uninit();
    let mut bracket = Bracket::load(&mut obj, &btf, &filters)?;
    let run = RunLoop::start(None)?;
    let stop = Arc::new(AtomicBool::new(false));
    let total = rules.len() * backends.len();
    let mut results = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut interrupted = false;
    'sweep: for (ri, &n) in rules.iter().enumerate() {
        for (bi, &backend) in backends.iter().enumerate() {
            let step = ri * backends.len() + bi + 1;
            if run.step() == Step::Interrupted {
                interrupted = true;
                break 'sweep;
            }
            let layout = Layout {
                services: n,
                probe_vip: PROBE_VIP,
                probe_port: PROBE_PORT,
                probe_endpoints: vec![
                    SocketAddrV4::new(Ipv4Addr::new(10, 232, 255, 1), 8080),
                    SocketAddrV4::new(Ipv4Addr::new(10, 232, 255, 2), 8080),
                ],
            };
            let what = format!(
                "bench netfilter [{step}/{total}] {}, {n} rules",
                backend.name()
            );
            let topo = Topology::create(step)?;
            let t0 = Instant::now();
            if let Err(e) = install(backend, &layout, &topo.node) {
                if run.step() == Step::Interrupted {
                    interrupted = true;
                    break 'sweep;
                }
                return Err(e);
            }
            let install_s = t0.elapsed().as_secs_f64();
            eprintln!(
                "{what}: installed in {install_s:.1}s; tracing PRE_ROUTING while sending {}/s for {:.1}s",
                a.rate,
                a.duration.as_secs_f64()
            );
            bracket.attach(
                PNF_PRE_ROUTING,
                true,
                false,
                Some(&Topology::path(&topo.node)),
            )?;
            let before = bracket.read()?;
            let sent = std::thread::scope(|s| {
                let client = Topology::path(&topo.client);
                let offset =
                    (Instant::now().elapsed().subsec_nanos() ^ std::process::id()) % PORT_SPAN;
                let stop_ref = &stop;
                let sender = s.spawn(move || send(&client, a.rate, a.duration, offset, stop_ref));
                while !sender.is_finished() {
                    if run.step() == Step::Interrupted {
                        stop.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                sender.join().expect("sender thread does not panic")
            })?;
            // Packets still in the client's veth queue reach the node within microseconds.
            std::thread::sleep(Duration::from_millis(50));
            let after = bracket.read()?;
            bracket.detach();
            drop(topo);
            if stop.load(Ordering::Relaxed) {
                eprintln!("{what}: interrupted");
                interrupted = true;
                break 'sweep;
            }
            let d = after[0].since(&before[0]);
            let r = result_of(backend, &layout, &d, sent, install_s);
            eprintln!(
                "{what}: avg {:.2}us p50 {:.2}us p99 {:.2}us ({} of {} packets measured)",
                r.avg_us, r.p50_us, r.p99_us, r.count, r.sent
            );
            if a.json {
                let mut v = serde_json::to_value(&r)?;
                v["type"] = json!("step");
                writeln!(out, "{v}")?;
                out.flush()?;
            }
            results.push(r);
        }
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv(&results)?)
            .map_err(|e| UserError::new(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &a.plot {
        std::fs::write(path, chart(&results, backends, a.rate))
            .map_err(|e| UserError::new(format!("cannot write {}: {e}", path.display())))?;
    }
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"type": "summary", "interrupted": interrupted, "rate": a.rate,
                   "duration_s": a.duration.as_secs_f64(), "results": results})
        )?;
    } else {
        write!(
            out,
            "\nnetfilter PRE_ROUTING time per packet, UDP at {}/s for {:.1}s per step{}\n\n{}",
            a.rate,
            a.duration.as_secs_f64(),
            if interrupted { " (interrupted)" } else { "" },
            table(&results, rules, backends)
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_cover_the_range_once_per_cycle() {
        let mut seen = vec![false; 65536];
        for i in 0..u64::from(PORT_SPAN) {
            let p = source_port(123, i);
            assert!(u32::from(p) >= PORT_BASE);
            assert!(!seen[p as usize], "port {p} twice");
            seen[p as usize] = true;
        }
        // Consecutive packets do not get neighbouring ports.
        let a = source_port(0, 1);
        let b = source_port(0, 2);
        assert!(a.abs_diff(b) > 1000);
    }

    #[test]
    fn packets_are_ipv4_udp() {
        let p = udp_packet(CLIENT_ADDR, PROBE_VIP, 4242, 80, 18);
        assert_eq!(p.len(), 46);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 46);
        assert_eq!(p[9], 17);
        assert_eq!(&p[16..20], &[172, 31, 0, 1]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 4242);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 80);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 26);
    }

    #[test]
    fn pacing() {
        assert_eq!(due(10_000, Duration::from_millis(250)), 2500);
        assert_eq!(due(1, Duration::from_millis(999)), 0);
    }

    fn r(backend: &'static str, rules: u32, avg: f64) -> StepResult {
        StepResult {
            backend,
            rules,
            count: 100,
            avg_us: avg,
            p50_us: avg,
            p90_us: avg,
            p99_us: avg * 2.0,
            min_us: 0.5,
            max_us: avg * 3.0,
            sent: 100,
            drops: 0,
            installed_rules: 10,
            install_s: 0.1,
        }
    }

    #[test]
    fn csv_has_the_contract_columns_first_and_one_row_per_step() {
        let c = csv(&[r("iptables-legacy", 0, 1.0), r("nftables-map", 100, 1.25)]).unwrap();
        let lines: Vec<&str> = c.lines().collect();
        assert!(lines[0].starts_with("backend,rules,count,avg_us,p50_us,p99_us"));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            "nftables-map,100,100,1.250,1.250,2.500,1.250,0.500,3.750,100,0,10"
        );
    }

    #[test]
    fn csv_header_is_serde_names_and_stays_without_rows() {
        assert_eq!(csv(&[]).unwrap(), format!("{CSV_HEADER}\n"));
        let c = csv(&[r("iptables-legacy", 0, 1.0)]).unwrap();
        let mut rd = csv::Reader::from_reader(c.as_bytes());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(CsvRow::from(&r("x", 1, 1.0))).unwrap();
        let named = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(named.lines().next(), Some(CSV_HEADER));
        assert_eq!(rd.records().count(), 1);
    }

    #[test]
    fn table_marks_missing_steps() {
        let res = [r("iptables-legacy", 0, 1.0)];
        let t = table(
            &res,
            &[0, 100],
            &[Backend::IptablesLegacy, Backend::NftablesMap],
        );
        assert!(t.contains("iptables-legacy") && t.contains("nftables-map"));
        let rows: Vec<&str> = t.lines().collect();
        assert!(rows[2].contains("1.00") && rows[2].contains('-'));
        assert!(rows[3].trim_start().starts_with("100"));
    }
}
