//! Helpers for the option tests (tests/options_*.rs): a cgroup of the test's own, processes
//! started inside it, a routing namespace, runs to completion and JSON lines.

use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{sh, Line3, Proc, LOAD, TOOL};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The cgroup v2 hierarchy: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
/// hybrid one (this machine).
fn cgroup2_root() -> PathBuf {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// An empty cgroup v2 directory of the test's own, removed on drop (once its processes are
/// gone: a test drops its `Proc`s first, or they exited).
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    pub fn new(tag: &str) -> Cgroup {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = cgroup2_root().join(format!("nslt-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup(dir)
    }

    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A child killed a moment ago may still be leaving: retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nsl-load in namespace `ns`, inside cgroup `cg` from its first instruction (it joins
/// before exec, so none of its sends happen outside).
pub fn load_in_cgroup(ns: &str, cg: &Cgroup, args: &[&str]) -> Proc {
    let procs = std::ffi::CString::new(cg.0.join("cgroup.procs").into_os_string().into_vec())
        .expect("cgroup path without NUL");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, LOAD])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (open,
    // write, close) on a path prepared before the fork: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0": the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n == 1 {
                Ok(())
            } else {
                Err(err)
            }
        });
    }
    Proc {
        child: cmd.spawn().expect("spawn nsl-load in a cgroup"),
        what: format!("nsl-load {args:?} in a cgroup"),
        out: None,
        err: None,
    }
}

/// nsl-load in namespace `ns`, pinned to `cpu`.
pub fn load_on_cpu(ns: &str, cpu: u32, args: &[&str]) -> Proc {
    let child = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "ip", "netns", "exec", ns, LOAD])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn taskset nsl-load");
    Proc {
        child,
        what: format!("nsl-load {args:?} on cpu {cpu}"),
        out: None,
        err: None,
    }
}

/// Run the tool to its end (the args bound it, e.g. --duration) and return (exit code,
/// stdout, stderr).
pub fn run_tool(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let child = Command::new(TOOL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netstack-lat");
    Proc {
        child,
        what: format!("netstack-lat {args:?}"),
        out: None,
        err: None,
    }
    .finish(limit)
}

/// Every line of `out` that parses as JSON.
pub fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Make `b` of a Line3 a router between `a` and `c` (IPv4): forwarding on in b, routes in
/// a and c through it. All of it goes with the namespaces.
pub fn route_through_b(t: &Line3) {
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.b,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    sh(&["ip", "-n", &t.a, "route", "add", &t.c4, "via", &t.ba4]);
    sh(&["ip", "-n", &t.c, "route", "add", &t.a4, "via", &t.bc4]);
}

/// One Prometheus sample: the value of the first line of `family` holding every
/// `key="value"` of `labels`, summed over matching lines; None when no line matches.
pub fn sample_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let needles: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut found = None;
    for l in text.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
            && needles.iter().all(|n| l.contains(n))
    }) {
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// Start `netstack-lat` inside namespace `ns` (nsenter: only the network namespace changes,
/// so /sys and tracefs stay the host's) and wait until it says it is tracing.
pub fn tool_in(ns: &str, args: &[&str]) -> Proc {
    use std::io::{BufRead, BufReader, Read};
    let net = format!("--net=/run/netns/{ns}");
    let mut child = Command::new("nsenter")
        .arg(&net)
        .arg(TOOL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nsenter netstack-lat");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut r = BufReader::new(err);
        let (mut all, mut line) = (String::new(), String::new());
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
        Ok(Err(stderr)) => panic!("netstack-lat in {ns} exited before tracing: {stderr}"),
        Err(_) => panic!("netstack-lat in {ns} did not start tracing within 60 s"),
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    Proc {
        child,
        what: format!("netstack-lat {args:?} in {ns}"),
        out: Some(out),
        err: Some(err_reader),
    }
}

/// A field of the namespace's /proc/net/snmp (e.g. "Tcp", "RetransSegs").
pub fn snmp(ns: &str, proto: &str, field: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("read /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{proto}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().expect("header"), rows.next().expect("values"));
    let i = names
        .split_whitespace()
        .position(|n| n == field)
        .unwrap_or_else(|| panic!("no {field} in {names}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}
