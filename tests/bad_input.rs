//! Bad input: one line on stderr naming the problem and the fix, exit code 2, no panic.

mod common;

use std::process::Command;

use common::TOOL;

fn expect_user_error(cmd: &mut Command, needle: &str) {
    let out = cmd.output().expect("spawn netstack-lat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {cmd:?}; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected for {cmd:?}, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn tool(args: &[&str]) -> Command {
    let mut c = Command::new(TOOL);
    c.args(args);
    c
}

#[test]
fn malformed_flags_need_no_root() {
    expect_user_error(&mut tool(&["trace", "--addr", "10.0.0.0/33"]), "too long");
    expect_user_error(
        &mut tool(&["trace", "--addr", "not-an-ip"]),
        "not an address",
    );
    expect_user_error(
        &mut tool(&["trace", "--duration", "soon"]),
        "not a duration",
    );
    expect_user_error(&mut tool(&["trace", "--proto", "sctp"]), "sctp");
    expect_user_error(&mut tool(&["trace", "-4", "-6"]), "cannot be used");
    expect_user_error(&mut tool(&["trace", "--rx", "--tx"]), "cannot be used");
    expect_user_error(
        &mut tool(&["softirq", "--vector", "NET_RX,BOGUS"]),
        "unknown softirq vector 'BOGUS'",
    );
    expect_user_error(
        &mut tool(&["softirq", "--all", "--vector", "NET_RX"]),
        "cannot be used",
    );
    expect_user_error(&mut tool(&["--no-such-flag"]), "--no-such-flag");
    expect_user_error(
        &mut tool(&["netfilter", "--hook", "OUTPUT,SIDEWAYS"]),
        "unknown netfilter hook 'SIDEWAYS'",
    );
    let bench = |extra: &[&str]| {
        let mut c = tool(&["bench", "netfilter"]);
        c.args(extra);
        c
    };
    expect_user_error(
        &mut bench(&["--backend", "iptables-legacy,ipchains"]),
        "unknown backend 'ipchains'",
    );
    expect_user_error(&mut bench(&["--rules", "100,-5"]), "rule count '-5'");
    expect_user_error(&mut bench(&["--rules", ""]), "empty rule count");
    expect_user_error(&mut bench(&["--rules", "100,,1000"]), "empty rule count");
    expect_user_error(&mut bench(&["--rules", "70000"]), "above the maximum");
    expect_user_error(&mut bench(&["--rate", "0"]), "--rate");
    expect_user_error(
        &mut tool(&["marker", "--iface", "lo:sideways", "--port", "8000"]),
        "unknown direction 'sideways'",
    );
    expect_user_error(
        &mut tool(&["marker", "--iface", "lo", "--port", "8000"]),
        "has no direction",
    );
    expect_user_error(&mut tool(&["marker", "--iface", "lo:egress"]), "--port");
    expect_user_error(
        &mut tool(&["marker", "--iface", "lo:egress", "--port", "8000,0"]),
        "'0' is not a port",
    );
    expect_user_error(
        &mut tool(&[
            "marker",
            "--iface",
            "lo:egress",
            "--port",
            "1,2,3,4,5,6,7,8,9",
        ]),
        "at most 8",
    );
    expect_user_error(
        &mut tool(&[
            "marker",
            "--iface",
            "lo:egress",
            "--port",
            "1",
            "--key",
            "a b",
        ]),
        "not a usable field name",
    );
    expect_user_error(&mut tool(&["correlate"]), "A.csv");
    expect_user_error(
        &mut tool(&["correlate", "/nonexistent/a.csv"]),
        "cannot read /nonexistent/a.csv",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn not_root() {
    common::require_root();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        TOOL,
        "trace",
    ]);
    expect_user_error(&mut c, "must run as root");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn unknown_interface_pid_netns_and_missing_btf() {
    common::require_root();
    expect_user_error(
        &mut tool(&["trace", "--iface", "nosuch0", "--duration", "1"]),
        "unknown interface 'nosuch0'",
    );
    expect_user_error(
        &mut tool(&["trace", "--pid", "999999999", "--duration", "1"]),
        "unknown pid 999999999",
    );
    expect_user_error(
        &mut tool(&["trace", "--netns", "/run/netns/nosuch", "--duration", "1"]),
        "cannot open network namespace",
    );
    expect_user_error(
        &mut tool(&[
            "trace",
            "--cgroup",
            "/sys/fs/cgroup/nosuch",
            "--duration",
            "1",
        ]),
        "cgroup",
    );
    expect_user_error(
        &mut tool(&["softirq", "--cpu", "4096", "--duration", "1"]),
        "unknown CPU 4096",
    );
    let me = "/proc/self/ns/net";
    expect_user_error(
        &mut tool(&[
            "trace",
            "--tx",
            "--netns",
            me,
            "--netns",
            me,
            "--iface",
            "lo",
            "--duration",
            "1",
        ]),
        "single --netns",
    );
    expect_user_error(
        &mut tool(&["trace", "--netns", "/etc/hostname", "--duration", "1"]),
        "/etc/hostname is not a network namespace",
    );
    expect_user_error(
        &mut tool(&["trace", "--netns", "nosuch17", "--duration", "1"]),
        "cannot open network namespace /run/netns/nosuch17",
    );
    expect_user_error(
        &mut tool(&["serve", "--pods-dir", "/etc/hostname", "--duration", "1"]),
        "--pods-dir /etc/hostname is not a directory",
    );
    expect_user_error(
        &mut tool(&["serve", "--max-series", "0", "--duration", "1"]),
        "--max-series",
    );
    expect_user_error(
        &mut tool(&["trace", "--sample", "0", "--duration", "1"]),
        "invalid value '0' for '--sample",
    );
    // A misspelt hook-set flag.
    expect_user_error(
        &mut tool(&["serve", "--softirq-contxt", "--duration", "1"]),
        "unexpected argument '--softirq-contxt'",
    );
    expect_user_error(
        &mut tool(&["netfilter", "--iface", "nosuch0", "--duration", "1"]),
        "unknown interface 'nosuch0'",
    );
    let marker = |iface: &str, extra: &[&str]| {
        let mut c = tool(&[
            "marker",
            "--iface",
            iface,
            "--port",
            "8000",
            "--duration",
            "1",
        ]);
        c.args(extra);
        c
    };
    expect_user_error(
        &mut marker("nosuch0:egress", &[]),
        "unknown interface 'nosuch0'",
    );
    expect_user_error(
        &mut marker("lo:egress@nosuch", &[]),
        "cannot open network namespace /run/netns/nosuch",
    );
    expect_user_error(
        &mut marker("lo:egress", &["--iface", "lo:egress"]),
        "--iface lo:egress is given twice",
    );
    expect_user_error(
        &mut marker("lo:egress", &["--key", "position"]),
        "--key and --position-key are both",
    );
    expect_user_error(
        &mut marker("lo:egress", &["--csv", "/nonexistent/dir/a.csv"]),
        "cannot create /nonexistent/dir/a.csv",
    );
    // A machine without iptables: the sweep stops before it changes anything.
    let mut c = tool(&["bench", "netfilter", "--backend", "iptables-legacy"]);
    c.env("PATH", "/nonexistent");
    expect_user_error(&mut c, "install the iptables package");
    let mut c = tool(&["bench", "netfilter", "--backend", "nftables-map"]);
    c.env("PATH", "/nonexistent");
    expect_user_error(&mut c, "install the nftables package");
    expect_user_error(
        &mut tool(&["serve", "--listen", "300.1.2.3:2112"]),
        "invalid --listen address '300.1.2.3:2112'",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    expect_user_error(
        &mut tool(&["trace", "--prometheus", &busy_addr, "--duration", "1"]),
        "cannot listen on",
    );
    let mut c = tool(&["trace", "--duration", "1"]);
    c.env("NETSTACK_LAT_BTF", "/nonexistent/vmlinux");
    expect_user_error(&mut c, "BTF not found");
    expect_user_error(
        &mut tool(&["probes", "--btf", "/nonexistent/vmlinux"]),
        "BTF not found",
    );
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn hook_families() {
    common::require_root();
    expect_user_error(
        &mut tool(&["trace", "--hooks", "tracepoint,bogus", "--duration", "1"]),
        "--hooks: unknown hook family 'bogus'",
    );
    let mut c = tool(&["probes"]);
    c.env("NETSTACK_LAT_HOOKS", "kprobes");
    expect_user_error(&mut c, "$NETSTACK_LAT_HOOKS: unknown hook family 'kprobes'");
    expect_user_error(
        &mut tool(&["selftest", "--families", "fentry,nope"]),
        "--families: unknown hook family 'nope'",
    );
    // Netfilter links alone cannot see a socket queue: the run stops before loading.
    expect_user_error(
        &mut tool(&["trace", "--rx", "--hooks", "netfilter", "--duration", "1"]),
        "excluded by --hooks",
    );
}
