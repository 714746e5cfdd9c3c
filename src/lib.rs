//! netstack-lat: where time goes inside the Linux network stack.
//!
//! CO-RE BPF programs (bpf/) stamp packets at each stage; this library loads them,
//! joins their events into per-stage latencies and prints them. `main.rs` is a thin CLI.

#[macro_use]
mod macros;

pub mod bench;
pub mod bpf;
pub mod cli;
pub mod correlate;
pub mod counters;
pub mod drops;
pub mod error;
pub mod events;
pub mod exchange;
pub mod export;
pub mod hist;
pub mod http;
pub mod k8s;
pub mod kagg;
pub mod leftovers;
pub mod marker;
pub mod metrics;
pub mod netfilter;
pub mod netns;
pub mod nfbench;
pub mod nfrules;
pub mod nfstat;
pub mod nswatch;
pub mod output;
pub mod plot;
pub mod probes;
pub mod reorder;
pub mod runloop;
pub mod selftest;
pub mod serve;
pub mod signals;
pub mod softirq;
pub mod trace;
pub mod txjoin;
pub mod txsock;

use cli::{Cli, Command};

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // What killed runs left (TC filters, clsact qdiscs, namespaces) goes at every start as root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for line in leftovers::sweep() {
            eprintln!("{line}");
        }
    }
    match cli.command {
        Some(Command::Trace(a)) => trace::run(&a),
        Some(Command::Softirq(a)) => softirq::run(&a),
        Some(Command::Netfilter(a)) => netfilter::run(&a),
        Some(Command::Probes(a)) => probes::run(&a),
        Some(Command::Serve(a)) => serve::run(&a),
        Some(Command::Selftest(a)) => selftest::run(&a),
        Some(Command::Signals(a)) => signals::run(&a),
        Some(Command::Drops(a)) => drops::run(&a),
        Some(Command::Marker(a)) => marker::run(&a),
        Some(Command::Correlate(a)) => marker::pair::run(&a),
        Some(Command::Bench(b)) => bench::run(&b),
        None => trace::run(&cli.trace),
    }
}
