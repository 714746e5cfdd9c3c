//! Numbers over events: log2 histograms (`hist`), the kernel-side counters (`counters`) and
//! the netfilter hooks' bracket statistics (`nf_hooks`).

pub mod counters;
pub mod hist;
pub mod nf_hooks;
