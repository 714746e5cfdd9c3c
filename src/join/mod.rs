//! Events into spans: the RX join (`rx`), the TX join (`tx`, `txsock`), the reorder window
//! that puts per-CPU ring buffers back in time order (`reorder`) and the span histograms the
//! kernel keeps itself (`kernel_spans`).

pub mod kernel_spans;
pub mod reorder;
pub mod rx;
pub mod tx;
pub mod txsock;
