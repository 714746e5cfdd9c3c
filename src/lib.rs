//! netstack-lat: where time goes inside the Linux network stack.
//!
//! CO-RE BPF programs (bpf/) stamp packets at each stage; this library loads them,
//! joins their events into per-stage latencies and prints them. `main.rs` is a thin CLI.
//!
//! The folders are layers, each importing only the ones listed before it (docs/layout.md):
//! `bpf` (skeletons) -> `kernel` (facts, hook planning, namespaces) -> `events` (decoding)
//! -> `join` (events into spans) -> `stats` -> `sink` (text, JSON, Prometheus) -> `cmd`
//! (one folder per command). `traffic` is ground-truth traffic for selftest and nsl-load.

// First: it defines the filter macros the commands use.
#[macro_use]
pub mod bpf;

pub mod cli;
pub mod cmd;
pub mod error;
pub mod events;
pub mod join;
pub mod kernel;
pub mod runloop;
pub mod sink;
pub mod stats;
pub mod traffic;

use cli::{Cli, Command};

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // What killed runs left (TC filters, clsact qdiscs, namespaces) goes at every start as root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for line in kernel::leftovers::sweep() {
            eprintln!("{line}");
        }
    }
    match cli.command {
        Some(Command::Trace(a)) => cmd::trace::run(&a),
        Some(Command::Softirq(a)) => cmd::softirq::run(&a),
        Some(Command::Netfilter(a)) => cmd::netfilter::run(&a),
        Some(Command::Probes(a)) => cmd::probes::run(&a),
        Some(Command::Serve(a)) => cmd::serve::run(&a),
        Some(Command::Selftest(a)) => cmd::selftest::run(&a),
        Some(Command::Signals(a)) => cmd::signals::run(&a),
        Some(Command::Drops(a)) => cmd::drops::run(&a),
        Some(Command::Marker(a)) => cmd::marker::run(&a),
        Some(Command::Correlate(a)) => cmd::correlate::run(&a),
        Some(Command::Bench(b)) => cmd::bench::run(&b),
        None => cmd::trace::run(&cli.trace),
    }
}
