//! Names of the kernel's numbered things, in the kernel's order: what the command line
//! parses and every report prints.

/// Netfilter hooks, in the kernel's order (index = NF_INET_* number).
pub const NF_HOOK_NAMES: [&str; 5] = [
    "PRE_ROUTING",
    "LOCAL_IN",
    "FORWARD",
    "LOCAL_OUT",
    "POST_ROUTING",
];

/// Softirq vector names, in the kernel's order (index = vector number).
pub const VECTORS: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];
