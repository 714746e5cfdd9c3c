//! The Prometheus exporter: metric families and histograms (`registry`), the families each
//! command exports (`families`) and the /metrics HTTP server (`http`).

pub mod families;
pub mod http;
pub mod registry;
