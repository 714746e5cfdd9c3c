//! Kernel reach on the host: `netstack-lat selftest` (the checks `make test-vm` runs inside
//! Debian's 6.1 and 6.12 kernels) against this kernel, and its result against what the
//! kernel's BTF offers (tests/data/kernels.json, via scripts/kernel-check.py).

mod common;

use std::process::Command;

use common::{assert_no_new_bpf, bpf_state, TOOL};
use serde_json::Value;

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn selftest_passes_on_this_kernel() {
    common::require_root();
    let before = bpf_state();
    let out = Command::new(TOOL)
        .args(["selftest", "--json"])
        .output()
        .expect("spawn netstack-lat selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "selftest JSON ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "selftest failed: {v:#}");
    assert_eq!(v["ok"], true, "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    // The delayed reader ran (not skipped) for at least one family, over UDP and TCP.
    for proto in ["udp", "tcp"] {
        assert!(
            checks
                .iter()
                .any(|c| c["check"] == "delayed_reader" && c["proto"] == proto && c["ok"] == true),
            "no passing {proto} delayed-reader check: {v:#}"
        );
    }
    for name in [
        "softirq_net_rx",
        "netfilter_hooks",
        "marker_capture",
        "clean_exit",
    ] {
        assert!(
            checks.iter().any(|c| c["check"] == name && c["ok"] == true),
            "{name}: {v:#}"
        );
    }
    // Skips name the reason.
    for c in checks.iter().filter(|c| c["ok"].is_null()) {
        assert!(
            c["detail"].as_str().is_some_and(|d| d.len() > 10),
            "a skip without a reason: {c}"
        );
    }
    assert_no_new_bpf(&before, "selftest");

    // docs/selftest.md's table row for this kernel comes from this file.
    std::fs::create_dir_all("target/vm").unwrap();
    std::fs::write("target/vm/host.json", stdout.as_bytes()).unwrap();
    let check = Command::new("python3")
        .args(["scripts/kernel-check.py", "--table", "target/vm/host.json"])
        .output()
        .expect("run scripts/kernel-check.py");
    assert!(
        check.status.success(),
        "kernel-check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!("{}", String::from_utf8_lossy(&check.stdout));

    // The checker can fail: a point served otherwise than the kernel's BTF says, and a
    // failed check, are both named.
    let mut bad = v.clone();
    let series: String = v["kernel"]
        .as_str()
        .unwrap()
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    bad["points"][4]["hook"] = "kprobe".into();
    bad["ok"] = false.into();
    std::fs::write("target/vm/host-bad.json", bad.to_string()).unwrap();
    let check = Command::new("python3")
        .args(["scripts/kernel-check.py", "target/vm/host-bad.json"])
        .output()
        .expect("run scripts/kernel-check.py");
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(err.contains("selftest failed"), "{err}");
    let known = std::fs::read_to_string("tests/data/kernels.json").unwrap();
    if known.contains(&format!("\"{series}\"")) {
        let point = v["points"][4]["point"].as_str().unwrap();
        assert!(err.contains(&format!("{point} served by kprobe")), "{err}");
    }
    let _ = std::fs::remove_file("target/vm/host-bad.json");
}
