//! Where results go: trace's text and JSON report (`trace_report`), the SVG chart of
//! `bench netfilter` (`plot`) and the Prometheus exporter (`prom`).

pub mod plot;
pub mod prom;
pub mod trace_report;
