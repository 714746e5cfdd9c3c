//! `netstack-lat selftest`: prove this kernel's hooks against a ground truth the test
//! controls, once per hook family (tracepoint, raw_tp, fentry, kprobe) the kernel supports.
//!
//! 1. Every RX and TX point has a hook (the plan `probes` shows).
//! 2. Per family, forced with `trace --hooks FAMILY`: a reader that leaves each message in
//!    its socket queue for D before reading it, over UDP and TCP on 127.0.0.1; the traced
//!    `rx_sockq->rx_read` median must lie in [0.9 D, 1.3 D].
//!    The trace prefers FAMILY, with tracepoints (or, for tracepoint, the netfilter link)
//!    for the points FAMILY has no hook for; every point FAMILY can serve must be served
//!    by it.
//! 3. Per family, TX: writes held by MSG_MORE for D before the rest follows; the held
//!    data's `tx_send->tx_transport` median must lie in [0.9 D, 1.3 D].
//! 4. The trace leaves no BPF program or link behind.
//!
//! The trace runs as a child (this same binary), exactly as a user would run it. The same
//! checks run on the host in the test suite and in each kernel of `make test-vm`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::SelftestArgs;
use crate::error::{require_root, UserError};
use crate::kernel::probes::{self, Facts, Family, PointPlan};
use crate::traffic::loopback::{self, Pair};

/// The span whose median the delayed reader sets.
pub const SPAN: &str = "rx_sockq->rx_read";

/// Accepted medians, as fractions of the delay.
pub const LOW: f64 = 0.9;
pub const HIGH: f64 = 1.3;

/// One check's outcome; `ok: None` is a skip (the kernel cannot run it), with `detail` why.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
    pub ok: Option<bool>,
    pub detail: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Check {
    fn new(check: &'static str, ok: Option<bool>, detail: impl Into<String>) -> Check {
        Check {
            check,
            family: None,
            proto: None,
            ok,
            detail: detail.into(),
            data: Value::Null,
        }
    }
}

/// Points of the plan without a hook.
pub fn unserved(plan: &[PointPlan]) -> Vec<String> {
    plan.iter()
        .filter(|p| p.kind.is_none())
        .map(|p| format!("{}: {}", p.point, p.reason.as_deref().unwrap_or("no hook")))
        .collect()
}

/// Why `family` alone cannot serve the delayed-reader points here, if it cannot.
pub fn family_gap(facts: &Facts, family: Family) -> Option<String> {
    let mut f = facts.clone();
    f.families = vec![family];
    let plan = probes::plan_rx(&f);
    let gaps: Vec<String> = plan
        .iter()
        .filter(|p| matches!(p.point, "rx_sockq" | "rx_read") && p.kind.is_none())
        .map(|p| {
            let why = p
                .alternatives
                .iter()
                .filter(|a| a.family == family)
                .filter_map(|a| a.unavailable.clone())
                .next()
                .unwrap_or_else(|| format!("no {family} hook for this point"));
            format!("{}: {why}", p.point)
        })
        .collect();
    (!gaps.is_empty()).then(|| gaps.join("; "))
}

/// The verdict on a median, in ns, for a delay of `delay_ns`.
pub fn median_ok(p50_ns: f64, delay_ns: f64) -> bool {
    p50_ns >= LOW * delay_ns && p50_ns <= HIGH * delay_ns
}

/// The connection row of `direction` and `proto` from port `sport` to port `dport` in a
/// trace summary.
pub fn connection<'a>(
    summary: &'a Value,
    direction: &str,
    proto: &str,
    sport: u16,
    dport: u16,
) -> Option<&'a Value> {
    summary["connections"].as_array()?.iter().find(|c| {
        c["direction"] == direction
            && c["proto"] == proto
            && c["sport"].as_u64() == Some(sport.into())
            && c["dport"].as_u64() == Some(dport.into())
    })
}

/// The `--hooks` list of a run forcing `family`: it first, then what serves the points it
/// has no hook for.
pub fn preference(family: Family) -> Vec<Family> {
    match family {
        Family::Tracepoint | Family::RawTp => vec![family, Family::Netfilter],
        f => vec![f, Family::Tracepoint],
    }
}

/// Points `family` alone can serve that the trace (per its summary's `hooks`) served by
/// another family: each as "point=kind".
pub fn not_forced(facts: &Facts, family: Family, summary_hooks: &Value) -> Vec<String> {
    let mut f = facts.clone();
    f.families = vec![family];
    let mut plan = probes::plan_rx(&f);
    plan.extend(probes::plan_tx(&f));
    plan.iter()
        .filter(|p| p.kind.is_some())
        .filter_map(|p| {
            let got = summary_hooks[p.point].as_str().unwrap_or("none");
            let fam = probes::HookKind::from_name(got).map(|k| k.family());
            (fam != Some(family)).then(|| format!("{}={got}", p.point))
        })
        .collect()
}

/// A span of a summary or connection object.
pub fn span<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

/// The hook kind per point from a trace summary's `hooks` array.
pub fn hooks_of(summary: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for h in summary["hooks"].as_array().into_iter().flatten() {
        if let Some(p) = h["point"].as_str() {
            m.insert(p.to_string(), h["hook"].clone());
        }
    }
    Value::Object(m)
}

/// Ids of every loaded BPF program and link.
pub fn bpf_ids() -> BTreeSet<(char, u32)> {
    let mut out = BTreeSet::new();
    for (tag, next) in [
        (
            'p',
            libbpf_rs::libbpf_sys::bpf_prog_get_next_id
                as unsafe extern "C" fn(u32, *mut u32) -> i32,
        ),
        ('l', libbpf_rs::libbpf_sys::bpf_link_get_next_id),
    ] {
        let mut id = 0u32;
        loop {
            let mut n = 0u32;
            // SAFETY: plain syscall wrapper writing one u32 through a valid pointer.
            if unsafe { next(id, &mut n) } != 0 {
                break;
            }
            out.insert((tag, n));
            id = n;
        }
    }
    out
}

/// Programs and links loaded since `before` that are still there after up to 5 s: the
/// kernel frees an exited process's programs (netfilter links after an RCU grace period)
/// a moment later.
fn left_since(before: &BTreeSet<(char, u32)>) -> Vec<(char, u32)> {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = bpf_ids().difference(before).copied().collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    left
}

/// A running netstack-lat child (`trace`, `softirq`, `netfilter`), killed if dropped
/// before it is stopped.
struct Tracer {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: mpsc::Receiver<String>,
}

impl Tracer {
    /// `trace` forcing `family`, on one port.
    fn trace(family: Family, port: u16, btf: Option<&std::path::Path>) -> Result<Tracer> {
        let hooks: Vec<&str> = preference(family).iter().map(|f| f.name()).collect();
        let hooks = hooks.join(",");
        let port = port.to_string();
        Tracer::start(
            &["trace", "--hooks", &hooks, "--port", &port],
            btf,
            &format!("trace --hooks {hooks}"),
        )
    }

    /// This binary with `args` (and JSON output until SIGINT), once it says it is tracing.
    fn start(args: &[&str], btf: Option<&std::path::Path>, what: &str) -> Result<Tracer> {
        Tracer::spawn(&[args, &["--interval", "1h"]].concat(), btf, what)
    }

    /// As `start`, for commands without an `--interval` (marker).
    fn spawn(args: &[&str], btf: Option<&std::path::Path>, what: &str) -> Result<Tracer> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .args(["--json", "--duration", "10m"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(b) = btf {
            cmd.arg("--btf").arg(b);
        }
        let mut child = cmd.spawn().context("starting netstack-lat trace")?;
        let mut stdout = child.stdout.take().context("trace stdout")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let stderr = child.stderr.take().context("trace stderr")?;
        let (tx, err) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Tracer {
            child,
            out: Some(out),
            err,
        };
        // Loading is slow under emulation (the verifier): allow minutes.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.err.recv_timeout(left) {
                Ok(l) if l.contains("tracing") => return Ok(t),
                Ok(l) => said.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{what} did not start within 180 s")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = t.child.wait();
                    return Err(Refused(said.join(" | ")).into());
                }
            }
        }
    }

    /// SIGINT, then the summary line it prints on the way out.
    fn stop(self) -> Result<Value> {
        Ok(self.stop_lines()?.0)
    }

    /// SIGINT, then the summary line and every JSON line before it.
    fn stop_lines(mut self) -> Result<(Value, Vec<Value>)> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!("trace did not stop within 60 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let err: Vec<String> = self.err.try_iter().collect();
        if !status.success() {
            bail!("exited with {status}: {}", err.join(" | "));
        }
        let mut lines: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let at = lines
            .iter()
            .rposition(|v| v["type"] == "summary")
            .context("no summary line printed")?;
        let summary = lines.remove(at);
        Ok((summary, lines))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child that exited before tracing, with what it said.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exited before tracing: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Packets the softirq and netfilter checks send, 10 ms apart (each its own NET_RX run).
const PACKETS: u32 = 20;

/// `softirq` while PACKETS UDP packets cross loopback: NET_RX must have run (and been
/// raised) at least once per packet.
fn softirq_check(args: &SelftestArgs) -> Check {
    let mut c = Check::new("softirq_net_rx", Some(false), "");
    let run = || -> Result<(Value, loopback::Sent)> {
        let pair = Pair::bind_loopback()?;
        let t = Tracer::start(&["softirq"], args.btf.as_deref(), "softirq")?;
        let sent = loopback::udp_paced(&pair.udp, PACKETS, Duration::from_millis(10))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok((t.stop()?, sent))
    };
    match run() {
        Err(e) => c.detail = format!("{e:#}"),
        Ok((v, sent)) => {
            let rx = v["vectors"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["vector"] == "NET_RX" && r["cpu"] == "all");
            let runs = rx.and_then(|r| r["count"].as_u64()).unwrap_or(0);
            let raised = rx.and_then(|r| r["raised"].as_u64()).unwrap_or(0);
            let n = u64::from(sent.messages);
            c.ok = Some(runs >= n && raised >= n);
            c.detail = format!(
                "NET_RX ran {runs} times, raised {raised}, for {n} packets 10 ms apart (want >= {n} each)"
            );
            c.data = json!({"runs": runs, "raised": raised, "packets": n});
        }
    }
    c
}

/// Events the marker check writes, and the gap between them.
const MARKS: u64 = 10;
const MARK_GAP: Duration = Duration::from_millis(20);

/// `marker` on lo:egress while MARKS server-sent events, MARK_GAP apart, cross a loopback
/// TCP connection, with one malformed event among them: every interval found once with its
/// position, the malformed one counted, and the times between sightings the writer's gap.
fn marker_check(args: &SelftestArgs) -> Check {
    let mut c = Check::new("marker_capture", Some(false), "");
    let run = || -> Result<(Value, Vec<Value>)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("a loopback listener")?;
        let port_n = listener.local_addr()?.port();
        let port = port_n.to_string();
        let t = Tracer::spawn(
            &["marker", "--iface", "lo:egress", "--port", &port],
            args.btf.as_deref(),
            "marker",
        )?;
        let reader = std::thread::spawn(move || -> std::io::Result<usize> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            Ok(all.len())
        });
        let mut w = std::net::TcpStream::connect(("127.0.0.1", port_n))
            .context("connecting to the loopback listener")?;
        w.set_nodelay(true)?;
        use std::io::Write;
        w.write_all(b"data: {\"interval_id\": \"x\"}\n\n")?;
        for i in 1..=MARKS {
            std::thread::sleep(MARK_GAP);
            write!(
                w,
                "data: {{\"interval_id\": {i}, \"position\": {}}}\n\n",
                i * 960
            )?;
        }
        drop(w);
        let _ = reader.join();
        std::thread::sleep(Duration::from_millis(300));
        t.stop_lines()
    };
    match run() {
        Err(e) => c.detail = format!("{e:#}"),
        Ok((s, lines)) => {
            let marks: Vec<&Value> = lines.iter().filter(|v| v["type"] == "marker").collect();
            let ids: Vec<u64> = marks
                .iter()
                .filter_map(|v| v["interval_id"].as_u64())
                .collect();
            let positioned = marks
                .iter()
                .all(|v| v["position"].as_u64() == v["interval_id"].as_u64().map(|i| i * 960));
            let ts: Vec<u64> = marks
                .iter()
                .filter_map(|v| v["timestamp_ns"].as_u64())
                .collect();
            let mut gaps: Vec<u64> = ts.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
            gaps.sort_unstable();
            let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
            let gap = MARK_GAP.as_nanos() as f64;
            let all = ids == (1..=MARKS).collect::<Vec<_>>();
            c.ok = Some(
                all && positioned
                    && s["unparseable"] == 1
                    && s["lost_events"] == 0
                    && median_ok(median as f64, gap),
            );
            c.detail = format!(
                "{} of {MARKS} intervals in order{}, {} unparseable (want 1), {} lost; median gap {:.1} ms (writer: {} ms)",
                ids.len(),
                if all && positioned { "" } else { " (WRONG ids or positions)" },
                s["unparseable"],
                s["lost_events"],
                median as f64 / 1e6,
                MARK_GAP.as_millis()
            );
            c.data =
                json!({"intervals": ids.len(), "median_gap_ns": median, "attach": s["attach"]});
        }
    }
    c
}

/// `netfilter` while PACKETS UDP packets cross loopback: each IPv4 hook on the way
/// (LOCAL_OUT, POST_ROUTING, PRE_ROUTING, LOCAL_IN) counts each one, all accepted. Before
/// the netfilter link (6.4) the command must refuse with a one-line reason instead.
fn netfilter_check(facts: &Facts, args: &SelftestArgs) -> Check {
    let mut c = Check::new("netfilter_hooks", Some(false), "");
    let run = || -> Result<(Value, loopback::Sent)> {
        let pair = Pair::bind_loopback()?;
        let port = pair.port.to_string();
        let t = Tracer::start(
            &["netfilter", "--proto", "udp", "--port", &port],
            args.btf.as_deref(),
            "netfilter",
        )?;
        let sent = loopback::udp_paced(&pair.udp, PACKETS, Duration::from_millis(10))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok((t.stop()?, sent))
    };
    match run() {
        Err(e) => match (e.downcast_ref::<Refused>(), facts.netfilter_link) {
            (Some(Refused(said)), false) => {
                let clear = said.lines().count() == 1 && said.contains("6.4");
                c.ok = Some(clear);
                c.detail = format!("no netfilter link here; refused with: {said}");
            }
            _ => c.detail = format!("{e:#}"),
        },
        Ok((v, sent)) => {
            let n = u64::from(sent.messages);
            let mut bad = Vec::new();
            let mut counts = serde_json::Map::new();
            for hook in ["LOCAL_OUT", "POST_ROUTING", "PRE_ROUTING", "LOCAL_IN"] {
                let row = v["hooks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["hook"] == hook && r["family"] == "ipv4");
                let count = row.and_then(|r| r["count"].as_u64()).unwrap_or(0);
                let accept = row
                    .and_then(|r| r["verdicts"]["accept"].as_u64())
                    .unwrap_or(0);
                if count != n || accept != n {
                    bad.push(format!("{hook} {count} ({accept} accepted)"));
                }
                counts.insert(hook.into(), json!(count));
            }
            c.ok = Some(bad.is_empty());
            c.detail = if bad.is_empty() {
                format!("LOCAL_OUT, POST_ROUTING, PRE_ROUTING, LOCAL_IN each counted and accepted all {n} packets")
            } else {
                format!("want {n} per hook, got: {}", bad.join(", "))
            };
            c.data = Value::Object(counts);
        }
    }
    c
}

/// The delayed-reader checks of one family, and the clean-exit check after it.
fn run_family(
    facts: &Facts,
    family: Family,
    args: &SelftestArgs,
    out: &mut Vec<Check>,
) -> Result<()> {
    let delay = Duration::from_millis(args.delay_ms);
    // Each message is read before the next arrives: the queue holds one at a time.
    let gap = delay + Duration::from_millis(20);
    let pair = Pair::bind_loopback()?;
    let before = bpf_ids();
    let tracer = Tracer::trace(family, pair.port, args.btf.as_deref())?;
    let sent = [
        (
            "udp",
            loopback::delayed_udp(&pair.udp, args.count, 64, delay, gap),
        ),
        (
            "tcp",
            loopback::delayed_tcp(&pair.tcp, args.count, 64, delay, gap),
        ),
    ];
    let corked = loopback::corked_tcp(&pair.tcp, args.count, 64, delay);
    // Let the last reads reach the frontend before it stops.
    std::thread::sleep(Duration::from_millis(300));
    let summary = tracer.stop()?;
    let hooks = hooks_of(&summary);
    let delay_ns = delay.as_nanos() as f64;
    let want = format!(
        "want {:.0}..{:.0} ms",
        LOW * delay_ns / 1e6,
        HIGH * delay_ns / 1e6
    );
    let stray = not_forced(facts, family, &hooks);
    let mut c = Check::new(
        "forced_hooks",
        Some(stray.is_empty()),
        if stray.is_empty() {
            format!("every point {family} can serve was served by {family}")
        } else {
            format!("served by another family: {}", stray.join(", "))
        },
    );
    c.family = Some(family);
    c.data = hooks.clone();
    out.push(c);
    for (proto, got) in sent {
        let mut c = Check::new("delayed_reader", Some(false), "");
        c.family = Some(family);
        c.proto = Some(proto);
        match got {
            Err(e) => c.detail = format!("traffic failed: {e:#}"),
            Ok(sent) => {
                let n = sent.messages;
                let s = connection(&summary, "rx", proto, sent.from_port, pair.port)
                    .and_then(|v| span(v, SPAN));
                let count = s.and_then(|s| s["count"].as_u64()).unwrap_or(0);
                let p50 = s.and_then(|s| s["p50_ns"].as_f64()).unwrap_or(0.0);
                let ok = count >= u64::from(n) && median_ok(p50, delay_ns);
                c.ok = Some(ok);
                c.detail = format!(
                    "{SPAN} p50 {:.1} ms over {count} reads of {n} ({want})",
                    p50 / 1e6,
                );
                c.data = json!({
                    "reads": count, "messages": n, "p50_ns": p50, "delay_ns": delay_ns,
                });
            }
        }
        out.push(c);
    }
    out.push(held_check(
        facts, family, &summary, pair.port, corked, delay_ns, &want,
    ));
    let left = left_since(&before);
    let mut c = Check::new(
        "clean_exit",
        Some(left.is_empty()),
        if left.is_empty() {
            "no BPF program or link left after the trace".to_string()
        } else {
            format!("left behind (kind, id): {left:?}")
        },
    );
    c.family = Some(family);
    out.push(c);
    Ok(())
}

/// The MSG_MORE writes: the TX row's held data, by reason "cork".
fn held_check(
    facts: &Facts,
    family: Family,
    summary: &Value,
    port: u16,
    corked: Result<loopback::Sent>,
    delay_ns: f64,
    want: &str,
) -> Check {
    let mut c = Check::new("held_writes", Some(false), "");
    c.family = Some(family);
    c.proto = Some("tcp");
    let mut f = facts.clone();
    f.families = preference(family);
    let gaps: Vec<String> = probes::plan_tx(&f)
        .into_iter()
        .filter(|p| matches!(p.point, "tx_send" | "tx_transport") && p.kind.is_none())
        .map(|p| format!("{}: {}", p.point, p.reason.unwrap_or_default()))
        .collect();
    if !gaps.is_empty() {
        c.ok = None;
        c.detail = gaps.join("; ");
        return c;
    }
    let sent = match corked {
        Ok(s) => s,
        Err(e) => {
            c.detail = format!("traffic failed: {e:#}");
            return c;
        }
    };
    let n = sent.messages;
    let held = connection(summary, "tx", "tcp", sent.from_port, port)
        .and_then(|r| r["held"].as_array()?.iter().find(|h| h["reason"] == "cork"));
    let writes = held.and_then(|h| h["writes"].as_u64()).unwrap_or(0);
    let p50 = held
        .and_then(|h| h["wait"]["p50_ns"].as_f64())
        .unwrap_or(0.0);
    c.ok = Some(writes >= u64::from(n) && median_ok(p50, delay_ns));
    c.detail = format!(
        "tx_send->tx_transport of data held by MSG_MORE: p50 {:.1} ms, {writes} of {n} writes held ({want})",
        p50 / 1e6
    );
    // What the frontend joined, to tell a missing write from a missing segment.
    let join = &summary["join"];
    c.data = json!({
        "writes": writes, "rounds": n, "p50_ns": p50, "delay_ns": delay_ns,
        "tx_writes": join["tx_writes"], "tx_chains": join["tx_chains"],
        "tx_held_cork": join["tx_held_cork"], "tx_unattributed": join["tx_unattributed"],
    });
    c
}

pub fn run(args: &SelftestArgs) -> Result<()> {
    require_root()?;
    let btf = probes::btf_path(args.btf.as_deref());
    probes::require_btf(&btf)?;
    libbpf_rs::set_print(None);
    let families = probes::parse_families(&args.families)
        .map_err(|e| UserError::new(format!("--families: {e}")))?;
    let started = Instant::now();
    let at_start = bpf_ids();
    let info = probes::kernel_info(&btf);
    let facts = probes::gather(&btf)?;
    let mut plan = probes::plan_rx(&facts);
    plan.extend(probes::plan_tx(&facts));

    let mut checks = Vec::new();
    let gaps = unserved(&plan);
    checks.push(Check::new(
        "points_served",
        Some(gaps.is_empty()),
        if gaps.is_empty() {
            "every RX and TX point has a hook".to_string()
        } else {
            gaps.join("; ")
        },
    ));
    for family in families {
        if let Some(why) = family_gap(&facts, family) {
            let mut c = Check::new("delayed_reader", None, why);
            c.family = Some(family);
            checks.push(c);
            continue;
        }
        if let Err(e) = run_family(&facts, family, args, &mut checks) {
            let mut c = Check::new("delayed_reader", Some(false), format!("{e:#}"));
            c.family = Some(family);
            checks.push(c);
        }
    }
    checks.push(softirq_check(args));
    checks.push(netfilter_check(&facts, args));
    checks.push(marker_check(args));
    let left = left_since(&at_start);
    checks.push(Check::new(
        "clean_exit",
        Some(left.is_empty()),
        if left.is_empty() {
            "no BPF program or link left after all runs".to_string()
        } else {
            format!("left behind (kind, id): {left:?}")
        },
    ));
    let ok = checks.iter().all(|c| c.ok != Some(false));
    let points: Vec<Value> = plan
        .iter()
        .map(|p| json!({"point": p.point, "family": p.family, "hook": p.kind}))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "type": "selftest",
                "kernel": info.release,
                "fentry": facts.fentry.as_ref().err(),
                "kprobe": facts.kprobe.as_ref().err(),
                "netfilter_link": facts.netfilter_link,
                "rdonly_cast": facts.has_cast,
                "points": points,
                "checks": checks,
                "ok": ok,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        println!("kernel {}", info.release);
        for p in &plan {
            println!(
                "  {:<14} {}",
                p.point,
                p.kind.map_or("none".into(), |k| k.to_string())
            );
        }
        for c in &checks {
            let verdict = match c.ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "SKIP",
            };
            let fam = c.family.map_or(String::new(), |f| format!(" {f}"));
            let proto = c.proto.map_or(String::new(), |p| format!(" {p}"));
            println!("{verdict} {}{fam}{proto}: {}", c.check, c.detail);
        }
        println!(
            "{} in {:.1} s",
            if ok { "PASS" } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
    }
    let failed = checks.iter().filter(|c| c.ok == Some(false)).count();
    if failed > 0 {
        bail!("selftest: {failed} of {} checks failed", checks.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_window() {
        let d = 100e6;
        assert!(median_ok(100e6, d));
        assert!(median_ok(90e6, d));
        assert!(median_ok(130e6, d));
        assert!(!median_ok(89e6, d));
        assert!(!median_ok(131e6, d));
        assert!(!median_ok(0.0, d));
    }

    #[test]
    fn picks_the_rx_row_of_the_port_and_protocol() {
        let s = json!({"connections": [
            {"direction": "tx", "proto": "udp", "sport": 7, "dport": 5000, "spans": []},
            {"direction": "rx", "proto": "tcp", "sport": 7, "dport": 5000,
             "spans": [{"name": SPAN, "count": 5, "p50_ns": 1}]},
            {"direction": "rx", "proto": "tcp", "sport": 8, "dport": 5000,
             "spans": [{"name": SPAN, "count": 5, "p50_ns": 3}]},
            {"direction": "rx", "proto": "udp", "sport": 7, "dport": 5000,
             "spans": [{"name": SPAN, "count": 5, "p50_ns": 2}]},
        ]});
        let c = connection(&s, "rx", "udp", 7, 5000).unwrap();
        assert_eq!(span(c, SPAN).unwrap()["p50_ns"], 2);
        let c = connection(&s, "rx", "tcp", 8, 5000).unwrap();
        assert_eq!(span(c, SPAN).unwrap()["p50_ns"], 3);
        assert!(connection(&s, "rx", "udp", 7, 5001).is_none());
        assert!(connection(&s, "tx", "tcp", 7, 5000).is_none());
    }

    #[test]
    fn a_point_the_family_could_serve_but_did_not_is_named() {
        let f = Facts {
            kprobe: Ok(()),
            funcs: ["sock_def_readable", "sock_recvmsg"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Facts::default()
        };
        let hooks = json!({"rx_sockq": "kprobe", "rx_read": "kprobe", "rx_netif": "tp_btf"});
        assert!(not_forced(&f, Family::Kprobe, &hooks).is_empty());
        let hooks = json!({"rx_sockq": "kprobe", "rx_read": "tp_btf"});
        assert_eq!(not_forced(&f, Family::Kprobe, &hooks), ["rx_read=tp_btf"]);
        assert_eq!(
            preference(Family::Tracepoint),
            [Family::Tracepoint, Family::Netfilter]
        );
        assert_eq!(
            preference(Family::Kprobe),
            [Family::Kprobe, Family::Tracepoint]
        );
    }

    #[test]
    fn a_family_that_cannot_serve_the_reader_is_skipped_with_the_reason() {
        let mut f = Facts {
            tracepoints: ["sk_data_ready"].iter().map(|s| s.to_string()).collect(),
            kprobe: Err("kernel built without CONFIG_KPROBES".into()),
            ..Facts::default()
        };
        let why = family_gap(&f, Family::Tracepoint).unwrap();
        assert!(why.contains("sock_recv_length not in this kernel"), "{why}");
        assert!(!why.contains("rx_sockq"), "{why}");
        let why = family_gap(&f, Family::Kprobe).unwrap();
        assert!(why.contains("CONFIG_KPROBES"), "{why}");
        f.kprobe = Ok(());
        f.funcs = ["sock_def_readable", "sock_recvmsg"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(family_gap(&f, Family::Kprobe), None);
    }
}
