//! The kernel-side counters of `trace` and `serve`, summed over CPUs: where chains were
//! lost, left out or are still in flight. Read by cmd/trace, shown by sink/trace_report.rs and
//! exported by sink/prom/families.rs.

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct KernelCounters {
    pub lost_events: u64,
    pub events: u64,
    /// rx_netif saw an skb with no cached rx_driver stamp (RPS to another CPU, cache slot
    /// reused, or a path without a driver tracepoint).
    pub driver_miss: u64,
    pub sockq_unjoined: u64,
    pub chains_without_socket: u64,
    pub filtered: u64,
    /// TX chains pushed out of the per-CPU cache before they completed.
    pub tx_evicted: u64,
    pub tx_dropped: u64,
    pub tx_filtered: u64,
    /// TX chains that could not be parked (qdisc or completion wait): emitted early.
    pub tx_park_full: u64,
    /// RX chains pushed out of the per-CPU chain cache before they reached the transport
    /// layer (more skbs in flight on one CPU than its ways hold).
    pub rx_evicted: u64,
    /// sk_data_ready calls for TCP data already reported (kTLS and psock wrappers).
    pub sockq_repeated: u64,
    /// Traced skbs the driver refused or dropped (NET_XMIT_DROP or NET_XMIT_CN).
    pub tx_xmit_failed: u64,
    /// Now (gauges): TX chains parked for a qdisc or a completion, and held in the per-CPU
    /// caches between LOCAL_OUT and the driver.
    pub tx_parked: u64,
    pub tx_cached: u64,
    /// Parked TX chains removed unfinished after STALE_NS: their skb left unseen.
    pub tx_stale: u64,
    /// RX chains handed to the TCP backlog that no CPU took up (the backlog merged or
    /// dropped their segment), removed after BACKLOG_STALE_NS.
    pub rx_backlog_stale: u64,
    /// RX chains of TCP segments that waited in a socket's backlog: handed over, and taken
    /// up again where the backlog was processed.
    pub rx_backlog: u64,
    pub rx_backlog_taken: u64,
    /// In-kernel aggregation (serve): spans not recorded for want of a free series, and
    /// queued data whose read is not timed (socket FIFO full); then what the kernel
    /// counted in place of the frontend's join. Zero in trace.
    #[serde(skip)]
    pub series_full: u64,
    #[serde(skip)]
    pub fifo_full: u64,
    #[serde(skip)]
    pub rx_chains: u64,
    #[serde(skip)]
    pub tx_chains: u64,
    #[serde(skip)]
    pub reads: u64,
    #[serde(skip)]
    pub reads_unmatched: u64,
    #[serde(skip)]
    pub unread: u64,
    #[serde(skip)]
    pub tx_writes: u64,
    #[serde(skip)]
    pub tx_retransmits: u64,
    #[serde(skip)]
    pub tx_unattributed: u64,
    #[serde(skip)]
    pub tx_writes_evicted: u64,
}
