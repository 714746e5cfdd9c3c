//! Histograms in Prometheus's fixed buckets (1 µs to 10 s): what the exporter serves and
//! what the joins fill per span, so they live below both.

use crate::stats::hist::Hist;

/// Histogram bucket bounds, in seconds: a 1-2.5-5 ladder from 1 µs to 10 s.
pub const BUCKETS_S: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for values measured in nanoseconds: spelled out, since
/// `record` runs per span and packet (a test checks they match BUCKETS_S).
pub const BOUNDS_NS: [u64; BUCKETS_S.len()] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A Prometheus histogram in [`BUCKETS_S`]: counts per bucket (not cumulative), the last
/// one for everything above 10 s (+Inf), and the sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct PromHist {
    pub counts: [u64; BUCKETS_S.len() + 1],
    pub sum_ns: u128,
}

impl Default for PromHist {
    fn default() -> Self {
        PromHist {
            counts: [0; BUCKETS_S.len() + 1],
            sum_ns: 0,
        }
    }
}

impl PromHist {
    /// Exact: a value goes to the first bucket whose bound is at or above it.
    pub fn record(&mut self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|&le| le < ns);
        self.counts[i] += 1;
        self.sum_ns += u128::from(ns);
    }

    /// From a histogram kept in fine log-linear buckets: each fine bucket (1/16 of a power
    /// of two wide) goes where its midpoint falls, so a bound is off by at most 3%.
    pub fn from_hist(h: &Hist) -> PromHist {
        let b = h.bucket_counts(&BOUNDS_NS);
        let mut p = PromHist::default();
        p.counts.copy_from_slice(&b);
        p.sum_ns = u128::from(h.avg()) * u128::from(h.count());
        p
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_ns_are_the_bounds_in_seconds() {
        for (s, ns) in BUCKETS_S.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn record_puts_values_at_or_below_each_bound() {
        let mut h = PromHist::default();
        for ns in [0, 1000, 1001, 2500, 7_000_000, 20_000_000_000] {
            h.record(ns);
        }
        assert_eq!(h.counts[0], 2, "0 and exactly 1 us go to le=1e-6");
        assert_eq!(h.counts[1], 2, "1.001 us and 2.5 us go to le=2.5e-6");
        assert_eq!(h.counts[12], 1, "7 ms goes to le=0.01");
        assert_eq!(h.counts[22], 1, "20 s goes to +Inf");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn from_hist_keeps_count_and_lands_near_the_bounds() {
        let mut fine = Hist::new();
        let mut exact = PromHist::default();
        for v in (0..2000u64).map(|i| 500 + i * 997) {
            fine.record(v);
            exact.record(v);
        }
        let p = PromHist::from_hist(&fine);
        assert_eq!(p.count(), 2000);
        // Cumulative counts agree within the fine buckets' width (a few percent).
        let (mut a, mut b) = (0i64, 0i64);
        for i in 0..p.counts.len() {
            a += p.counts[i] as i64;
            b += exact.counts[i] as i64;
            assert!((a - b).abs() <= 2000 / 25, "bucket {i}: {a} vs {b}");
        }
    }
}
