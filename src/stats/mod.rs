//! Numbers over events: log-linear histograms (`hist`), histograms in Prometheus's buckets
//! (`prom_hist`), the kernel-side counters (`counters`) and the netfilter hooks' bracket
//! statistics (`nf_hooks`).

pub mod counters;
pub mod hist;
pub mod nf_hooks;
pub mod prom_hist;
