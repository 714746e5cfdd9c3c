//! Shared helpers for the privileged tests: namespaces joined by veth, the tool and the
//! traffic generator as child processes, and cleanup that runs even when a test fails.
#![allow(dead_code)]

pub mod opts;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOOL: &str = env!("CARGO_BIN_EXE_netstack-lat");
pub const LOAD: &str = env!("CARGO_BIN_EXE_nsl-load");

/// Privileged tests are `#[ignore = "needs root ..."]`, so a plain `cargo test` lists them as
/// ignored; `make test` runs them with `--include-ignored`, and then not being root is a failure,
/// never a silent pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (CAP_BPF, CAP_NET_ADMIN): run `sudo make test`"
    );
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces, `a` (client, 10.x.0.1 / fdxx::1) and `b` (server, .2 / ::2), joined by
/// a veth pair. Dropping it deletes both namespaces, which removes the veth pair too.
pub struct Topo {
    pub a: String,
    pub b: String,
    /// The veth ends inside `a` and `b`.
    pub va: String,
    pub vb: String,
    pub a4: String,
    pub b4: String,
    pub a6: String,
    pub b6: String,
}

impl Topo {
    pub fn new() -> Topo {
        Topo::build(None)
    }

    /// Like `new`, with the veth ends at ifindex `base` (in `a`) and `base + 1` (in `b`):
    /// an index no host device has, for output keyed by ifindex alone.
    pub fn with_ifindex(base: u32) -> Topo {
        Topo::build(Some(base))
    }

    fn build(index: Option<u32>) -> Topo {
        let n = std::process::id() % 10000 * 10 + SEQ.fetch_add(1, Ordering::Relaxed);
        let octet = 1 + n % 200;
        let t = Topo {
            a: format!("nslt-a-{n}"),
            b: format!("nslt-b-{n}"),
            va: format!("va{n}"),
            vb: format!("vb{n}"),
            a4: format!("10.201.{octet}.1"),
            b4: format!("10.201.{octet}.2"),
            a6: format!("fd77:{octet:x}::1"),
            b6: format!("fd77:{octet:x}::2"),
        };
        let (va, vb) = (format!("va{n}"), format!("vb{n}"));
        let mac = |side: u32| format!("02:00:{:02x}:{:02x}:00:{side:02x}", n >> 8 & 0xff, n & 0xff);
        let (ma, mb) = (mac(1), mac(2));
        sh(&["ip", "netns", "add", &t.a]);
        sh(&["ip", "netns", "add", &t.b]);
        let (ia, ib) = index.map_or((String::new(), String::new()), |i| {
            (i.to_string(), (i + 1).to_string())
        });
        let mut add = vec!["ip", "link", "add", &va, "address", &ma, "netns", &t.a];
        if index.is_some() {
            add.extend(["index", &ia]);
        }
        add.extend([
            "type", "veth", "peer", "name", &vb, "address", &mb, "netns", &t.b,
        ]);
        if index.is_some() {
            add.extend(["index", &ib]);
        }
        sh(&add);
        for (ns, dev, v4, v6) in [(&t.a, &va, &t.a4, &t.a6), (&t.b, &vb, &t.b4, &t.b6)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Permanent neighbours: no ARP/ND wait, which would queue the first packets and
        // release them as a burst (a real delay, but not the one a test controls).
        for (ns, dev, peer4, peer6, peer_mac) in [
            (&t.a, &va, &t.b4, &t.b6, &mb),
            (&t.b, &vb, &t.a4, &t.a6, &ma),
        ] {
            for addr in [peer4, peer6] {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        t
    }

    pub fn netns_path(&self, ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    /// The server's address for IPv4 or IPv6, as IP:PORT.
    pub fn server(&self, v6: bool, port: u16) -> String {
        if v6 {
            format!("[{}]:{port}", self.b6)
        } else {
            format!("{}:{port}", self.b4)
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed on drop, so a failing assertion leaves nothing running.
pub struct Proc {
    pub child: Child,
    pub what: String,
    /// stdout read as it comes (the tool's --events output can outgrow a pipe buffer).
    pub out: Option<std::thread::JoinHandle<String>>,
    /// stderr, when a thread reads it (tool watches it for the start line).
    pub err: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for exit (bounded) and return (status code, stdout, stderr).
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = self.child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                if let Some(h) = self.out.take() {
                    out = h.join().unwrap_or_default();
                }
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                if let Some(h) = self.err.take() {
                    err = h.join().unwrap_or_default();
                }
                return (st.code(), out, err);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the generator inside a namespace; `ip netns exec` execs, so the pid is the generator's.
pub fn load_in(ns: &str, args: &[&str]) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, LOAD])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nsl-load");
    Proc {
        child,
        what: format!("nsl-load {args:?}"),
        out: None,
        err: None,
    }
}

/// Wait until a child prints `READY` (servers print it once bound).
pub fn wait_ready(p: &mut Proc) {
    let out = p.child.stdout.take().expect("piped stdout");
    let mut r = BufReader::new(out);
    let mut line = String::new();
    r.read_line(&mut line).expect("read READY");
    assert_eq!(line.trim(), "READY", "{} did not start", p.what);
    // The rest of stdout goes to finish().
    p.child.stdout = None;
    p.out = Some(std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        rest
    }));
}

/// Start `netstack-lat` with args and wait until it says it is tracing (or fail with its stderr).
pub fn tool(args: &[&str]) -> Proc {
    let mut child = Command::new(TOOL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netstack-lat");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut all = String::new();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("tracing") {
                let _ = tx.send(Ok(()));
            }
            all.push_str(&line);
            line.clear();
        }
        let _ = tx.send(Err(all.clone()));
        all
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => panic!("netstack-lat exited before tracing: {stderr}"),
        Err(_) => panic!("netstack-lat did not start tracing within 60 s"),
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    Proc {
        child,
        what: format!("netstack-lat {args:?}"),
        out: Some(out),
        err: Some(err_reader),
    }
}

/// Stop the tool with SIGINT and return its summary line.
pub fn stop_summary(p: Proc) -> Value {
    p.signal(libc::SIGINT);
    let (code, out, _) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "netstack-lat exit status; stdout: {out}");
    summary_of(&out)
}

pub fn summary_of(out: &str) -> Value {
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no summary line in: {out}"));
    serde_json::from_str(last).expect("summary is JSON")
}

pub fn span<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

pub fn span_count(v: &Value, name: &str) -> u64 {
    span(v, name).and_then(|s| s["count"].as_u64()).unwrap_or(0)
}

/// `kernel.bpf_stats_enabled=1` while alive; the old value comes back on drop.
pub struct BpfStats(String);

impl BpfStats {
    pub fn enable() -> BpfStats {
        let old = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .unwrap_or_else(|_| "0".into());
        sh(&["sysctl", "-qw", "kernel.bpf_stats_enabled=1"]);
        BpfStats(old.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("kernel.bpf_stats_enabled={}", self.0)])
            .status();
    }
}

/// One program or link as bpftool lists it: id, name (a link: its program's), owning pids.
#[derive(Debug, Clone)]
pub struct BpfObj {
    pub id: u64,
    pub name: String,
    pub pids: Vec<u32>,
    pub run_cnt: u64,
}

fn bpftool_list(kind: &str) -> Vec<Value> {
    let out = Command::new("bpftool")
        .args([kind, "show", "--json"])
        .output()
        .expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array().cloned().unwrap_or_default()
}

/// Which processes hold which programs and links open, from /proc/PID/fdinfo (bpftool's
/// own pid column needs a bpftool built with it): (prog id, pid) and (link id, pid).
/// (object id, pid holding it open)
type Held = Vec<(u64, u32)>;

fn holders() -> (Held, Held) {
    let (mut progs, mut links) = (Vec::new(), Vec::new());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (progs, links);
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            };
            // A link's fdinfo names its program too: the link id decides.
            if let Some(id) = field("link_id:") {
                links.push((id, pid));
            } else if let Some(id) = field("prog_id:") {
                progs.push((id, pid));
            }
        }
    }
    (progs, links)
}

fn pids_of(held: &[(u64, u32)], id: u64) -> Vec<u32> {
    held.iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, p)| *p)
        .collect()
}

/// Programs and links now; a link carries its program's name.
pub fn bpf_objs() -> (Vec<BpfObj>, Vec<BpfObj>) {
    let (held_progs, held_links) = holders();
    let progs: Vec<BpfObj> = bpftool_list("prog")
        .iter()
        .filter_map(|p| {
            Some(BpfObj {
                id: p["id"].as_u64()?,
                name: p["name"].as_str().unwrap_or("").to_string(),
                pids: pids_of(&held_progs, p["id"].as_u64()?),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    let links = bpftool_list("link")
        .iter()
        .filter_map(|l| {
            let prog = l["prog_id"].as_u64();
            Some(BpfObj {
                id: l["id"].as_u64()?,
                name: progs
                    .iter()
                    .find(|p| Some(p.id) == prog)
                    .map_or(String::new(), |p| p.name.clone()),
                pids: pids_of(&held_links, l["id"].as_u64()?),
                run_cnt: 0,
            })
        })
        .collect();
    (progs, links)
}

/// Every name a program of ours can have: the identifiers of bpf/*.bpf.c, also with each
/// `##suffix` its macros paste on, cut to the kernel's 15 characters. A superset (it holds
/// `skb` too), which is fine: it only narrows the leak check to names we could have made.
pub fn our_prog_names() -> std::collections::BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf");
    let mut idents = std::collections::BTreeSet::new();
    let mut suffixes = vec![String::new()];
    for e in std::fs::read_dir(dir).expect("bpf/") {
        let path = e.expect("bpf/ entry").path();
        if !path.to_string_lossy().ends_with(".bpf.c") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read bpf source");
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#')) {
            let mut parts = word.split("##");
            if let Some(head) = parts.next() {
                idents.insert(head.to_string());
            }
            for suffix in parts {
                suffixes.push(suffix.to_string());
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for id in &idents {
        for s in &suffixes {
            names.insert(format!("{id}{s}").chars().take(15).collect::<String>());
        }
    }
    names
}

/// Whether `pid` is this test process or one of its descendants.
fn in_our_tree(pid: u32) -> bool {
    let me = std::process::id();
    let mut p = pid;
    // Bounded: a parent chain is short, and a vanished process ends it.
    for _ in 0..64 {
        if p == me {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let stat = match std::fs::read_to_string(format!("/proc/{p}/stat")) {
            Ok(s) => s,
            Err(_) => return false,
        };
        // The comm field may hold spaces: the ppid is the second field after its ')'.
        p = match stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
        {
            Some(pp) => pp,
            None => return false,
        };
    }
    false
}

/// Program and link ids that exist now: the baseline for `assert_no_new_bpf`.
pub fn bpf_state() -> (Vec<u64>, Vec<u64>) {
    let (p, l) = bpf_objs();
    (
        p.iter().map(|o| o.id).collect(),
        l.iter().map(|o| o.id).collect(),
    )
}

/// The programs and links `pid` holds open now.
pub fn owned_by(pid: u32) -> (Vec<BpfObj>, Vec<BpfObj>) {
    let (p, l) = bpf_objs();
    let mine = |o: &BpfObj| o.pids.contains(&pid);
    (
        p.into_iter().filter(mine).collect(),
        l.into_iter().filter(mine).collect(),
    )
}

/// run_cnt (needs BpfStats), summed over the programs named `name` that this test's processes
/// (the tool it started) hold, so another BPF user's program of that name never counts.
pub fn prog_runs(name: &str) -> u64 {
    bpf_objs()
        .0
        .iter()
        .filter(|p| p.name == name && p.pids.iter().any(|&pid| in_our_tree(pid)))
        .map(|p| p.run_cnt)
        .sum()
}

/// Ids of the programs (`kind` "prog") or links ("link") this test's processes hold now.
pub fn bpf_ids(kind: &str) -> Vec<u64> {
    let (p, l) = bpf_objs();
    let objs = if kind == "link" { l } else { p };
    objs.iter()
        .filter(|o| o.pids.iter().any(|&pid| in_our_tree(pid)))
        .map(|o| o.id)
        .collect()
}

/// Wait (bounded: the kernel frees programs after an RCU grace period) until no program or
/// link of ours exists that was not there `before`, else fail. Ours: new since `before`,
/// named like a program in bpf/, and held by no live process outside this test's process
/// tree, so another BPF user on the host (even another netstack-lat) neither fails the check
/// nor hides a leak; a leaked program or link outlives its process and is held by nobody.
pub fn assert_no_new_bpf(before: &(Vec<u64>, Vec<u64>), what: &str) {
    let names = our_prog_names();
    let ours = |o: &BpfObj, old: &[u64]| {
        !old.contains(&o.id) && names.contains(&o.name) && o.pids.iter().all(|&p| in_our_tree(p))
    };
    let left = || {
        let (p, l) = bpf_objs();
        let p: Vec<String> = p
            .iter()
            .filter(|o| ours(o, &before.0))
            .map(|o| format!("prog {} {}", o.id, o.name))
            .collect();
        let l: Vec<String> = l
            .iter()
            .filter(|o| ours(o, &before.1))
            .map(|o| format!("link {} ({})", o.id, o.name))
            .collect();
        [p, l].concat()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = left();
    while !now.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = left();
    }
    assert!(
        now.is_empty(),
        "{what}: BPF programs/links left behind: {now:?}"
    );
}

/// Send `count` UDP datagrams from namespace `ns` to `to`, `interval_ms` apart; the sender
/// must finish cleanly.
pub fn udp_send(ns: &str, to: &str, count: u64, interval_ms: u64) {
    let (k, gap) = (count.to_string(), interval_ms.to_string());
    let cli = load_in(
        ns,
        &["udp-send", "--to", to, "--count", &k, "--interval-ms", &gap],
    );
    let (code, _, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-send: {err}");
}

/// `count` UDP datagrams from `a` to `server` in `b`, `interval_ms` apart, to a receiver
/// that takes them all; both ends must finish cleanly.
pub fn udp_exchange(t: &Topo, server: &str, count: u64, interval_ms: u64) {
    delayed_exchange(t, "udp", server, count, 0, interval_ms);
}

/// `count` messages (`proto` udp or tcp) from `a` to `server` in `b`, `interval_ms` apart,
/// to a reader that sleeps `delay_ms` before each read (the ground truth of the
/// rx_sockq->rx_read span); both ends must finish cleanly.
pub fn delayed_exchange(
    t: &Topo,
    proto: &str,
    server: &str,
    count: u64,
    delay_ms: u64,
    interval_ms: u64,
) {
    let (k, d, gap) = (
        count.to_string(),
        delay_ms.to_string(),
        interval_ms.to_string(),
    );
    let recv = format!("{proto}-recv");
    let mut args = vec![recv.as_str(), "--bind", server, "--count", &k];
    if delay_ms > 0 {
        args.extend(["--delay-ms", &d]);
    }
    let mut srv = load_in(&t.b, &args);
    wait_ready(&mut srv);
    let send = format!("{proto}-send");
    let cli = load_in(
        &t.a,
        &[&send, "--to", server, "--count", &k, "--interval-ms", &gap],
    );
    let (code, _, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{send}: {err}");
    let (code, _, err) = srv.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{recv} got all {count}: {err}");
}

/// `count` TCP messages of `size` bytes from `a` to `server` in `b`, `interval_ms` apart,
/// each read whole by the server; both ends must finish cleanly. Returns the client's
/// stdout (its JSON line).
pub fn tcp_stream(t: &Topo, server: &str, count: u64, size: u64, interval_ms: u64) -> String {
    let (n, sz, gap) = (count.to_string(), size.to_string(), interval_ms.to_string());
    let mut srv = load_in(
        &t.b,
        &[
            "tcp-recv",
            "--bind",
            server,
            "--count",
            &n,
            "--msg-size",
            &sz,
        ],
    );
    wait_ready(&mut srv);
    let cli = load_in(
        &t.a,
        &[
            "tcp-send",
            "--to",
            server,
            "--count",
            &n,
            "--size",
            &sz,
            "--interval-ms",
            &gap,
        ],
    );
    let (code, out, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-send: {err}");
    let (code, _, err) = srv.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-recv: {err}");
    out
}

/// Three namespaces in a line, `a` - `b` - `c`, each link a veth pair: a source, a relay
/// and a client. Dropping it deletes the namespaces and with them the veths.
pub struct Line3 {
    pub a: String,
    pub b: String,
    pub c: String,
    /// a's end toward b, b's end toward a, b's end toward c, c's end toward b.
    pub va: String,
    pub vba: String,
    pub vbc: String,
    pub vc: String,
    pub a4: String,
    pub ba4: String,
    pub bc4: String,
    pub c4: String,
    pub a6: String,
    pub ba6: String,
}

impl Line3 {
    pub fn new() -> Line3 {
        let n = std::process::id() % 10000 * 10 + SEQ.fetch_add(1, Ordering::Relaxed);
        let o = 1 + n % 200;
        let t = Line3 {
            a: format!("nslm-a-{n}"),
            b: format!("nslm-b-{n}"),
            c: format!("nslm-c-{n}"),
            va: format!("ma{n}"),
            vba: format!("mba{n}"),
            vbc: format!("mbc{n}"),
            vc: format!("mc{n}"),
            a4: format!("10.210.{o}.1"),
            ba4: format!("10.210.{o}.2"),
            bc4: format!("10.211.{o}.1"),
            c4: format!("10.211.{o}.2"),
            a6: format!("fd78:{o:x}::1"),
            ba6: format!("fd78:{o:x}::2"),
        };
        for ns in [&t.a, &t.b, &t.c] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let links = [
            (&t.a, &t.va, &t.a4, &t.b, &t.vba, &t.ba4, 1u32),
            (&t.b, &t.vbc, &t.bc4, &t.c, &t.vc, &t.c4, 2),
        ];
        for (ns1, d1, ip1, ns2, d2, ip2, link) in links {
            let mac = |side: u32| {
                format!(
                    "02:01:{:02x}:{:02x}:{link:02x}:{side:02x}",
                    n >> 8 & 0xff,
                    n & 0xff
                )
            };
            let (m1, m2) = (mac(1), mac(2));
            sh(&[
                "ip", "link", "add", d1, "address", &m1, "netns", ns1, "type", "veth", "peer",
                "name", d2, "address", &m2, "netns", ns2,
            ]);
            for (ns, dev, ip, peer, peer_mac) in
                [(ns1, d1, ip1, ip2, &m2), (ns2, d2, ip2, ip1, &m1)]
            {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    dev,
                ]);
                sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
                // No ARP wait: it would hold the first packets and release them as a burst.
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    peer,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        // IPv6 on the a-b link too, for the v6 header path.
        for (ns, dev, ip, peer, peer_dev) in [
            (&t.a, &t.va, &t.a6, &t.ba6, &t.vba),
            (&t.b, &t.vba, &t.ba6, &t.a6, &t.va),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            let peer_ns = if ns == &t.a { &t.b } else { &t.a };
            let out = Command::new("ip")
                .args(["-n", peer_ns, "link", "show", peer_dev])
                .output()
                .expect("ip link show");
            let text = String::from_utf8_lossy(&out.stdout);
            let mac = text
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .expect("peer MAC")
                .to_string();
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                peer,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        t
    }
}

impl Drop for Line3 {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A free loopback port (the listener is closed before the port is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.0: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// Load `n` iptables-legacy rules that match nothing (sources from a range no test uses) into
/// `chain` of `table` in namespace `ns`.
pub fn unmatched_rules(ns: &str, table: &str, chain: &str, n: u32) {
    use std::io::Write as _;
    let mut text = format!("*{table}\n:{chain} ACCEPT [0:0]\n");
    for i in 0..n {
        text.push_str(&format!(
            "-A {chain} -s 10.99.{}.{}/32 -p udp -j DROP\n",
            i / 250,
            1 + i % 250
        ));
    }
    text.push_str("COMMIT\n");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-legacy-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn iptables-legacy-restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "iptables-legacy-restore");
}

/// The mean in seconds of histogram `family` in a text exposition (`_sum` over `_count`),
/// summed over the label sets holding every `key="value"` of `labels`: exact, where the
/// buckets only bracket a value.
pub fn histogram_mean(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let needles: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let total = |suffix: &str| -> f64 {
        let plain = format!("{family}_{suffix} ");
        let labelled = format!("{family}_{suffix}{{");
        text.lines()
            .filter(|l| {
                (needles.is_empty() && l.starts_with(&plain))
                    || (l.starts_with(&labelled) && needles.iter().all(|n| l.contains(n)))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = total("count");
    assert!(
        count > 0.0,
        "no {family} histogram for {labels:?} in:\n{text}"
    );
    total("sum") / count
}

/// The bucket (lower, upper] in seconds that holds the median of histogram `family` in a
/// text exposition, summed over the label sets holding every `key="value"` of `labels`.
pub fn median_bucket(text: &str, family: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let prefix = format!("{family}_bucket{{");
    let needles: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut cum: Vec<(f64, f64)> = Vec::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with(&prefix) && needles.iter().all(|n| l.contains(n)))
    {
        let le = match l.split("le=\"").nth(1).and_then(|s| s.split('"').next()) {
            Some("+Inf") => f64::INFINITY,
            Some(x) => x.parse().unwrap(),
            None => continue,
        };
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        match cum.iter_mut().find(|(b, _)| *b == le) {
            Some(e) => e.1 += v,
            None => cum.push((le, v)),
        }
    }
    cum.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = cum.last().map_or(0.0, |c| c.1);
    assert!(
        total > 0.0,
        "no {family} histogram for {labels:?} in:\n{text}"
    );
    let mut lower = 0.0;
    for (le, c) in cum {
        if c >= total / 2.0 {
            return (lower, le);
        }
        lower = le;
    }
    unreachable!()
}
