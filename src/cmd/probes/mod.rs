//! `netstack-lat probes`: what the kernel layer found (kernel/probes.rs), printed for a
//! person (a table) or a script (`--json`).

use crate::cli::ProbesArgs;
use crate::kernel::probes::{
    btf_path, families, gather, kernel_info, netfilter_task_helpers, plan_rx, plan_tx, require_btf,
    Family,
};

/// `netstack-lat probes`: the hook per point on this kernel, or why none can serve it.
pub fn run(args: &ProbesArgs) -> anyhow::Result<()> {
    crate::error::require_root()?;
    let btf = btf_path(args.btf.as_deref());
    require_btf(&btf)?;
    libbpf_rs::set_print(None);
    let families = families(args.hooks.as_deref())?;
    let info = kernel_info(&btf);
    let mut facts = gather(&btf)?;
    facts.families = families;
    let mut plan = plan_rx(&facts);
    plan.extend(plan_tx(&facts));
    if args.json {
        // Task helpers a netfilter program may call (the others are read from the task).
        let bits = if facts.netfilter_link {
            netfilter_task_helpers()
        } else {
            0
        };
        let nf_helpers: Vec<&str> = [(1, "pid_tgid"), (2, "comm"), (4, "cgroup_id")]
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        let v = serde_json::json!({
            "kernel": info,
            // null: usable here; else why not.
            "fentry": facts.fentry.as_ref().err(),
            "kprobe": facts.kprobe.as_ref().err(),
            "netfilter_link": facts.netfilter_link,
            "rdonly_cast": facts.has_cast,
            "netfilter_task_helpers": nf_helpers,
            "families": facts.families,
            "points": plan,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "kernel {}  BTF {} ({})  lockdown {}  tracefs {}",
        info.release,
        info.btf_path.display(),
        if info.btf { "present" } else { "missing" },
        info.lockdown,
        if info.tracefs {
            "mounted"
        } else {
            "not mounted"
        }
    );
    let state = |r: &Result<(), String>| match r {
        Ok(()) => "usable".to_string(),
        Err(e) => e.clone(),
    };
    println!(
        "fentry: {}  kprobe: {}  netfilter link: {}  field reads: {}",
        state(&facts.fentry),
        state(&facts.kprobe),
        if facts.netfilter_link {
            "yes"
        } else {
            "no (Linux 6.4+)"
        },
        if facts.has_cast {
            "bpf_rdonly_cast"
        } else {
            "bpf_probe_read_kernel (no bpf_rdonly_cast before Linux 6.2)"
        }
    );
    if facts.families.len() < Family::ALL.len() {
        let f: Vec<&str> = facts.families.iter().map(|x| x.name()).collect();
        println!("hook families allowed: {}", f.join(","));
    }
    println!(
        "{:<14} {:<11} {:<10} hooks / reason",
        "point", "family", "hook"
    );
    for p in &plan {
        match (p.kind, p.family) {
            (Some(k), Some(f)) => println!(
                "{:<14} {:<11} {:<10} {}",
                p.point,
                f.name(),
                k.to_string(),
                p.hooks.join(", ")
            ),
            _ => println!(
                "{:<14} {:<11} {:<10} {}",
                p.point,
                "none",
                "",
                p.reason.as_deref().unwrap_or("")
            ),
        }
        for a in p.alternatives.iter() {
            let state = a.unavailable.as_deref().unwrap_or("available");
            println!("{:<14}   fallback {:<9} {}", "", a.kind.to_string(), state);
        }
    }
    Ok(())
}
