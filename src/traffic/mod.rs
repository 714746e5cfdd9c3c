//! Traffic with a known ground truth, for `selftest` and the nsl-load generator.

pub mod loopback;
