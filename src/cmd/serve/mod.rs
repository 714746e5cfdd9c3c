//! `netstack-lat serve`: the Prometheus exporter. `trace` (RX and TX) runs quietly with the
//! softirq and netfilter parts beside it; each publishes its metrics to one endpoint.

use std::mem::MaybeUninit;
use std::sync::Arc;

use anyhow::Result;

use crate::cli::{ServeArgs, TraceArgs};
use crate::cmd::netfilter::{self, Bracket};
use crate::cmd::softirq;
use crate::cmd::trace::{self, Export, Source};
use crate::error::require_root;
use crate::kernel::probes;
use crate::sink::prom::registry::{Endpoint, Exporter};

pub fn run(a: &ServeArgs) -> Result<()> {
    require_root()?;
    // Bad input is one line before anything starts.
    crate::kernel::k8s::Pods::new(a.k8s.pods_dir.as_deref(), a.k8s.no_k8s)?;
    let exporter = Exporter::new();
    let endpoint = Endpoint::start(&a.listen, Arc::clone(&exporter))?;
    let btf = probes::btf_path(a.btf.as_deref());
    probes::require_btf(&btf)?;
    if !a.verbose {
        libbpf_rs::set_print(None);
    }
    let mut health = Vec::new();
    // The extra parts degrade alone: a kernel without them still gets trace's metrics.
    let mut sobj = MaybeUninit::uninit();
    let soft = if a.no_softirq {
        None
    } else {
        match softirq::Source::load(&mut sobj, &btf) {
            Ok(s) => {
                health.push(("softirq", None));
                Some(s)
            }
            Err(e) => {
                eprintln!("netstack-lat: softirq part not running: {e:#}");
                health.push(("softirq", Some(format!("{e:#}"))));
                None
            }
        }
    };
    let mut nobj = MaybeUninit::uninit();
    let nf = if a.no_netfilter {
        None
    } else {
        match netfilter::bracket_everything(&mut nobj, &btf, &a.packet) {
            Ok(b) => {
                health.push(("netfilter", None));
                Some(b)
            }
            Err(e) => {
                eprintln!("netstack-lat: netfilter part not running: {e:#}");
                health.push(("netfilter", Some(format!("{e:#}"))));
                None
            }
        }
    };
    let mut sources: Vec<&dyn Source> = Vec::new();
    if let Some(s) = &soft {
        sources.push(s);
    }
    if let Some(b) = &nf {
        sources.push(b as &Bracket<'_>);
    }
    eprintln!(
        "netstack-lat: serving Prometheus metrics on http://{}/metrics (and /healthz)",
        endpoint.addr
    );
    let targs = TraceArgs {
        duration: a.duration,
        packet: a.packet.clone(),
        btf: a.btf.clone(),
        verbose: a.verbose,
        per_connection_top: a.per_connection_top,
        interval: std::time::Duration::from_secs(1),
        top: 0,
        sample: 1,
        // Lean by default: only the hooks the exported spans need; the rest opt-in.
        no_netfilter_split: !a.netfilter_split,
        no_softirq_context: !a.softirq_context,
        no_tx_free: !a.tx_free,
        no_send_syscall: !a.send_syscall,
        k8s: a.k8s.clone(),
        // Rows need every chain in user space.
        in_kernel: !a.user_space_join && a.per_connection_top == 0,
        max_series: a.max_series,
        ..TraceArgs::default()
    };
    trace::run_with(
        &targs,
        Some(Export {
            exporter,
            per_connection_top: a.per_connection_top,
            quiet: true,
            sources,
            health,
        }),
    )?;
    drop(endpoint);
    Ok(())
}
