//! One folder per command: its run loop, report and metrics. The top layer: a command may
//! import every layer below (bpf, kernel, events, join, stats, sink), never another command's
//! internals except through what that command makes `pub`.

pub mod bench;
pub mod correlate;
pub mod drops;
pub mod marker;
pub mod netfilter;
pub mod probes;
pub mod selftest;
pub mod serve;
pub mod signals;
pub mod softirq;
pub mod trace;
