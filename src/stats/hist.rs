//! Latency histogram of `u64` nanosecond values.
//!
//! Two bucketings are kept side by side:
//! - fine log-linear buckets (16 sub-buckets per power of two, relative
//!   width <= 1/16) used for percentiles;
//! - bpftrace-style log2 buckets used for the JSON `log2_buckets` array and
//!   for [`Hist::render_log2`].

use std::fmt::Write as _;

/// Sub-buckets per power of two (must be a power of two).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Number of log2 buckets: index 0 for zero, 1..=64 for each bit length.
const LOG2_LEN: usize = 65;
/// Bar width of the rendered log2 histogram (as in bpftrace).
const BAR_WIDTH: u64 = 52;

/// Latency histogram; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    count: u64,
    sum: u128,
    /// `u64::MAX` while empty.
    min: u64,
    max: u64,
    /// Fine log-linear buckets, grown lazily to the highest index used.
    fine: Vec<u64>,
    /// log2 buckets of the nanosecond values.
    log2: [u64; LOG2_LEN],
    /// log2 buckets of the values divided by 1000 (for [`Unit::Us`]).
    log2_us: [u64; LOG2_LEN],
}

/// Summary statistics, as serialized in the JSON output.
///
/// `log2_buckets[0]` counts values equal to 0 and `log2_buckets[k]` (k >= 1)
/// counts values with `2^(k-1) <= v < 2^k` nanoseconds; trailing zero buckets
/// are trimmed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub count: u64,
    pub min_ns: u64,
    pub avg_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub log2_buckets: Vec<u64>,
}

/// Unit of the ranges printed by [`Hist::render_log2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds.
    Ns,
    /// Microseconds (values divided by 1000, like `hist(ns / 1000)`).
    Us,
}

/// Fine bucket index of `v`.
fn fine_index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    ((e + 1 - SUB_BITS) as usize) * SUB as usize + sub as usize
}

/// Smallest value falling into fine bucket `i` (`i` must be a valid index).
fn fine_lower(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = i % SUB;
    (SUB + sub) << (e - SUB_BITS)
}

/// Largest value falling into fine bucket `i` (inclusive).
fn fine_upper(i: usize) -> u64 {
    if (i as u64) < SUB {
        return i as u64;
    }
    let e = (i as u64 / SUB) as u32 + SUB_BITS - 1;
    fine_lower(i) + ((1u64 << (e - SUB_BITS)) - 1)
}

/// log2 bucket index of `v`: 0 for 0, else the bit length of `v`.
fn log2_index(v: u64) -> usize {
    (64 - v.leading_zeros()) as usize
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    /// Empty histogram.
    pub fn new() -> Self {
        Hist {
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
            fine: Vec::new(),
            log2: [0; LOG2_LEN],
            log2_us: [0; LOG2_LEN],
        }
    }

    /// Record one value in nanoseconds.
    pub fn record(&mut self, v: u64) {
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(u128::from(v));
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let i = fine_index(v);
        if i >= self.fine.len() {
            self.fine.resize(i + 1, 0);
        }
        self.fine[i] = self.fine[i].saturating_add(1);
        let l = &mut self.log2[log2_index(v)];
        *l = l.saturating_add(1);
        let l = &mut self.log2_us[log2_index(v / 1000)];
        *l = l.saturating_add(1);
    }

    /// Record `v` `n` times.
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.count = self.count.saturating_add(n);
        self.sum = self.sum.saturating_add(u128::from(v) * u128::from(n));
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let i = fine_index(v);
        if i >= self.fine.len() {
            self.fine.resize(i + 1, 0);
        }
        self.fine[i] = self.fine[i].saturating_add(n);
        let l = &mut self.log2[log2_index(v)];
        *l = l.saturating_add(n);
        let l = &mut self.log2_us[log2_index(v / 1000)];
        *l = l.saturating_add(n);
    }

    /// A histogram counted elsewhere (the BPF side) in the same fine buckets, with its
    /// exact sum, min and max. Values beyond the last bucket were counted in it; the
    /// log2 view puts each bucket's values at the bucket's lower bound (a fine bucket
    /// never straddles a power of two; the microsecond view may be off by one bucket).
    pub fn from_fine(buckets: &[u64], sum: u128, min: u64, max: u64) -> Hist {
        let mut h = Hist::new();
        for (i, &n) in buckets.iter().enumerate().filter(|(_, &n)| n != 0) {
            let lo = fine_lower(i);
            h.count = h.count.saturating_add(n);
            let l = &mut h.log2[log2_index(lo)];
            *l = l.saturating_add(n);
            let l = &mut h.log2_us[log2_index(lo / 1000)];
            *l = l.saturating_add(n);
        }
        h.fine = buckets.to_vec();
        if let Some(last) = h.fine.iter().rposition(|&n| n != 0) {
            h.fine.truncate(last + 1);
        } else {
            h.fine.clear();
        }
        if h.count > 0 {
            h.sum = sum;
            h.min = min;
            h.max = max;
        }
        h
    }

    /// Like [`Hist::from_fine`] for counts without a known min and max (e.g. the difference
    /// of two snapshots): they are taken from the first and last non-empty buckets.
    pub fn from_fine_counts(buckets: &[u64], sum: u128) -> Hist {
        let first = buckets.iter().position(|&n| n != 0);
        let last = buckets.iter().rposition(|&n| n != 0);
        match (first, last) {
            (Some(f), Some(l)) => Hist::from_fine(buckets, sum, fine_lower(f), fine_upper(l)),
            _ => Hist::new(),
        }
    }

    /// Linear view: counts in `bins` bins of `width` from 0, the last one also holding
    /// everything above. Each fine bucket goes to the bin of its midpoint.
    pub fn linear(&self, width: u64, bins: usize) -> Vec<u64> {
        let mut out = vec![0u64; bins.max(1)];
        let width = width.max(1);
        for (i, &n) in self.fine.iter().enumerate().filter(|(_, &n)| n != 0) {
            let lo = fine_lower(i);
            let mid = lo + (fine_upper(i) - lo) / 2;
            let b = ((mid.clamp(self.min(), self.max) / width) as usize).min(out.len() - 1);
            out[b] = out[b].saturating_add(n);
        }
        out
    }

    /// Counts per bucket for ascending upper bounds (inclusive), not cumulative, with one
    /// more bucket for everything above the last bound. Each fine bucket goes where its
    /// midpoint falls, as in [`Hist::linear`].
    pub fn bucket_counts(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds.len() + 1];
        for (i, &n) in self.fine.iter().enumerate().filter(|(_, &n)| n != 0) {
            let lo = fine_lower(i);
            let mid = (lo + (fine_upper(i) - lo) / 2).clamp(self.min(), self.max);
            let b = bounds.partition_point(|&le| le < mid);
            out[b] = out[b].saturating_add(n);
        }
        out
    }

    /// Add all values of `other` to `self`.
    pub fn merge(&mut self, other: &Hist) {
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.fine.len() > self.fine.len() {
            self.fine.resize(other.fine.len(), 0);
        }
        for (a, b) in self.fine.iter_mut().zip(&other.fine) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.log2.iter_mut().zip(&other.log2) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.log2_us.iter_mut().zip(&other.log2_us) {
            *a = a.saturating_add(*b);
        }
    }

    /// The fine log-linear buckets (the BPF side's layout), up to the last non-empty one.
    pub fn fine_buckets(&self) -> &[u64] {
        &self.fine
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value, 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value, 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Integer mean, 0 when empty.
    pub fn avg(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // The mean never exceeds `max`, so it fits in u64.
        u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX)
    }

    /// Approximate `q`-th percentile (`q` in [0, 100], clamped; NaN acts as
    /// 0). Returns the midpoint of the fine bucket holding the rank
    /// `ceil(q/100 * count)`, clamped to [min, max]; exact for q = 0 and 100.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q.is_nan() || q <= 0.0 {
            return self.min();
        }
        if q >= 100.0 {
            return self.max;
        }
        // f64 -> u64 casts saturate, so this cannot panic.
        let rank = ((q / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut cum = 0u64;
        for (i, &n) in self.fine.iter().enumerate() {
            cum = cum.saturating_add(n);
            if cum >= rank {
                let lo = fine_lower(i);
                let mid = lo + (fine_upper(i) - lo) / 2;
                return mid.clamp(self.min(), self.max);
            }
        }
        self.max
    }

    /// log2 buckets with trailing zeros trimmed: index 0 counts `v == 0`,
    /// index k (k >= 1) counts `2^(k-1) <= v < 2^k` nanoseconds.
    pub fn log2_buckets(&self) -> Vec<u64> {
        trimmed(&self.log2)
    }

    /// All statistics at once.
    pub fn summary(&self) -> Stats {
        Stats {
            count: self.count,
            min_ns: self.min(),
            avg_ns: self.avg(),
            p50_ns: self.percentile(50.0),
            p90_ns: self.percentile(90.0),
            p99_ns: self.percentile(99.0),
            max_ns: self.max(),
            log2_buckets: self.log2_buckets(),
        }
    }

    /// bpftrace-style log2 histogram text, one line per bucket from the
    /// first to the last non-empty one; empty string when empty.
    pub fn render_log2(&self, unit: Unit) -> String {
        let buckets = match unit {
            Unit::Ns => &self.log2,
            Unit::Us => &self.log2_us,
        };
        let Some(first) = buckets.iter().position(|&n| n != 0) else {
            return String::new();
        };
        let last = buckets.iter().rposition(|&n| n != 0).unwrap_or(first);
        let peak = buckets.iter().copied().max().unwrap_or(1).max(1);
        let mut out = String::new();
        for (k, &n) in buckets.iter().enumerate().take(last + 1).skip(first) {
            let label = match k {
                0 => "[0]".to_string(),
                1 => "[1]".to_string(),
                _ => format!("[{}, {})", pow2_label(k as u32 - 1), pow2_label(k as u32)),
            };
            let bar = (u128::from(n) * u128::from(BAR_WIDTH) / u128::from(peak)) as usize;
            let _ = writeln!(
                out,
                "{label:<16}{n:>8} |{:<width$}|",
                "@".repeat(bar),
                width = BAR_WIDTH as usize
            );
        }
        out
    }
}

fn trimmed(b: &[u64]) -> Vec<u64> {
    let len = b.iter().rposition(|&n| n != 0).map_or(0, |i| i + 1);
    b[..len].to_vec()
}

/// `2^power` with bpftrace's binary suffixes: 512, 1K, 2M, 16E.
fn pow2_label(power: u32) -> String {
    const SUFFIXES: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let s = (power / 10).min(6);
    format!("{}{}", 1u64 << (power - s * 10), SUFFIXES[s as usize])
}

/// Human-readable duration with 3 significant digits: "850ns", "12.3us",
/// "4.56ms", "1.20s" (whole seconds beyond 999s).
pub fn fmt_ns(ns: u64) -> String {
    if ns < 1000 {
        return format!("{ns}ns");
    }
    let ns = u128::from(ns);
    for (div, unit) in [(1_000u128, "us"), (1_000_000, "ms")] {
        for dec in [2u32, 1, 0] {
            let step = div / 10u128.pow(dec);
            let r = (ns + step / 2) / step;
            if r < 1000 {
                return fixed(r, dec, unit);
            }
        }
    }
    for dec in [2u32, 1] {
        let step = 1_000_000_000 / 10u128.pow(dec);
        let r = (ns + step / 2) / step;
        if r < 1000 {
            return fixed(r, dec, "s");
        }
    }
    fixed((ns + 500_000_000) / 1_000_000_000, 0, "s")
}

/// Format `r / 10^dec` with `dec` decimals followed by `unit`.
fn fixed(r: u128, dec: u32, unit: &str) -> String {
    if dec == 0 {
        return format!("{r}{unit}");
    }
    let p = 10u128.pow(dec);
    format!("{}.{:0w$}{unit}", r / p, r % p, w = dec as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift64* generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        let n = sorted.len() as u64;
        let rank = ((q / 100.0 * n as f64).ceil() as u64).clamp(1, n);
        sorted[(rank - 1) as usize]
    }

    fn check_percentiles(values: &[u64], max_rel: f64) {
        let mut h = Hist::new();
        values.iter().for_each(|&v| h.record(v));
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        for q in [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9] {
            let want = exact(&sorted, q);
            let got = h.percentile(q);
            let rel = (got as f64 - want as f64).abs() / want as f64;
            assert!(rel < max_rel, "q={q} want={want} got={got} rel={rel}");
        }
        assert_eq!(h.percentile(0.0), sorted[0]);
        assert_eq!(h.percentile(100.0), *sorted.last().unwrap());
        assert_eq!(h.min(), sorted[0]);
        assert_eq!(h.max(), *sorted.last().unwrap());
    }

    #[test]
    fn fine_bounds_round_trip() {
        let last = fine_index(u64::MAX);
        assert_eq!(last, 975);
        assert_eq!(fine_upper(last), u64::MAX);
        for i in 0..=last {
            let (lo, hi) = (fine_lower(i), fine_upper(i));
            assert!(lo <= hi);
            assert_eq!(fine_index(lo), i);
            assert_eq!(fine_index(hi), i);
            if i < last {
                assert_eq!(fine_lower(i + 1), hi + 1, "buckets must be contiguous");
            }
            // Relative width <= 1/16.
            if lo >= SUB {
                assert!((hi - lo + 1) * SUB <= lo, "bucket {i} too wide");
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut values: Vec<u64> = (0..10_000).collect();
        for p in 0..64 {
            let b = 1u64 << p;
            values.extend([b - 1, b, b + 1, b | (b >> 1)]);
        }
        values.extend((0..10_000).map(|_| rng.next() >> (rng.next() % 64)));
        values.push(u64::MAX);
        for v in values {
            let i = fine_index(v);
            assert!(fine_lower(i) <= v && v <= fine_upper(i), "v={v} i={i}");
        }
        for v in 0..16 {
            assert_eq!(fine_index(v), v as usize);
        }
    }

    #[test]
    fn percentiles_uniform() {
        let values: Vec<u64> = (1..=1_000_000).collect();
        check_percentiles(&values, 0.07);
    }

    #[test]
    fn percentiles_bimodal() {
        let mut rng = Rng(42);
        let values: Vec<u64> = (0..100_000)
            .map(|_| {
                if rng.next() % 10 < 6 {
                    90 + rng.next() % 21
                } else {
                    49_000_000 + rng.next() % 2_000_001
                }
            })
            .collect();
        check_percentiles(&values, 0.07);
        // Pure two-point distribution.
        let mut values = vec![100u64; 900];
        values.extend(std::iter::repeat_n(50_000_000u64, 100));
        check_percentiles(&values, 0.07);
    }

    #[test]
    fn percentiles_constant() {
        let mut h = Hist::new();
        for _ in 0..1000 {
            h.record(50_000_000);
        }
        let p50 = h.percentile(50.0);
        assert!((p50 as f64 - 50e6).abs() / 50e6 <= 0.0625);
        assert_eq!(h.min(), 50_000_000);
        assert_eq!(h.max(), 50_000_000);
        assert_eq!(h.avg(), 50_000_000);
        let s = h.summary();
        assert_eq!(
            (s.min_ns, s.max_ns, s.count),
            (50_000_000, 50_000_000, 1000)
        );
    }

    #[test]
    fn merge_equals_recording_both() {
        let mut rng = Rng(7);
        let a_vals: Vec<u64> = (0..5000).map(|_| rng.next() >> 40).collect();
        let b_vals: Vec<u64> = (0..3000).map(|_| rng.next() >> 20).collect();
        let (mut a, mut b, mut both) = (Hist::new(), Hist::new(), Hist::new());
        a_vals.iter().for_each(|&v| a.record(v));
        b_vals.iter().for_each(|&v| b.record(v));
        a_vals.iter().chain(&b_vals).for_each(|&v| both.record(v));
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, both);
        assert_eq!(m.summary(), both.summary());
        // The other order, and merging into / from empty.
        let mut m2 = b.clone();
        m2.merge(&a);
        assert_eq!(m2, both);
        let mut e = Hist::new();
        e.merge(&a);
        assert_eq!(e, a);
        let mut a2 = a.clone();
        a2.merge(&Hist::new());
        assert_eq!(a2, a);
    }

    #[test]
    fn log2_placement() {
        let cases = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (1023, 10),
            (1024, 11),
        ];
        for (v, k) in cases {
            let mut h = Hist::new();
            h.record(v);
            let b = h.log2_buckets();
            assert_eq!(b.len(), k + 1, "v={v}");
            assert_eq!(b[k], 1, "v={v}");
            assert_eq!(b.iter().sum::<u64>(), 1);
        }
        let mut h = Hist::new();
        h.record(u64::MAX);
        assert_eq!(h.log2_buckets().len(), 65);
    }

    #[test]
    fn empty_summary_is_zero() {
        let h = Hist::default();
        assert_eq!(h.summary(), Stats::default());
        assert_eq!(h.count(), 0);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.avg(), 0);
        assert_eq!(h.percentile(50.0), 0);
        assert!(h.log2_buckets().is_empty());
        assert_eq!(h.render_log2(Unit::Ns), "");
        assert_eq!(h.render_log2(Unit::Us), "");
    }

    #[test]
    fn extremes_do_not_panic() {
        let mut h = Hist::new();
        h.record(u64::MAX);
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(h.min(), 0);
        assert_eq!(h.avg(), u64::MAX / 3 * 2);
        for q in [f64::NAN, -5.0, 0.0, 33.0, 50.0, 100.0, 150.0, f64::INFINITY] {
            let _ = h.percentile(q);
        }
        assert_eq!(h.percentile(-5.0), 0);
        assert_eq!(h.percentile(f64::NAN), 0);
        assert_eq!(h.percentile(150.0), u64::MAX);
        assert!(h.percentile(50.0) >= fine_lower(975));
        let r = h.render_log2(Unit::Ns);
        assert!(r.starts_with("[0]"));
        assert!(r.contains("[8E, 16E)"));
        let r = h.render_log2(Unit::Us);
        assert!(r.contains("[0]"));
        let _ = fmt_ns(u64::MAX);
    }

    #[test]
    fn render_labels() {
        let mut h = Hist::new();
        for v in [1, 5, 5, 6, 1500] {
            h.record(v);
        }
        let r = h.render_log2(Unit::Ns);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.first().map(|l| &l[..3]), Some("[1]"));
        assert!(lines[1].starts_with("[2, 4)"));
        assert!(r.contains("[4, 8)"));
        assert!(r.contains("[512, 1K)"));
        assert!(lines.last().unwrap().starts_with("[1K, 2K)"));
        assert_eq!(lines.len(), 11); // [1] .. [1K, 2K)
        let four = lines.iter().find(|l| l.starts_with("[4, 8)")).unwrap();
        assert_eq!(
            *four,
            format!("{:<16}{:>8} |{}|", "[4, 8)", 3, "@".repeat(52))
        );
        let zero = lines[1];
        assert_eq!(
            *zero,
            format!("{:<16}{:>8} |{}|", "[2, 4)", 0, " ".repeat(52))
        );
        // One third of the peak -> 17 '@'.
        assert!(lines[0].contains(&format!("|{}{}|", "@".repeat(17), " ".repeat(35))));

        let mut h = Hist::new();
        h.record(0);
        h.record(1_500_000); // 1500 us
        h.record(3_000_000_000); // 3M us
        let r = h.render_log2(Unit::Us);
        assert!(r.starts_with("[0]"));
        assert!(r.contains("[1K, 2K)"));
        assert!(r.contains("[2M, 4M)"));
        let r = h.render_log2(Unit::Ns);
        assert!(r.contains("[1M, 2M)"));
        assert!(r.contains("[2G, 4G)"));
    }

    #[test]
    fn fmt_ns_sig_digits() {
        let cases = [
            (0, "0ns"),
            (850, "850ns"),
            (999, "999ns"),
            (1000, "1.00us"),
            (9_995, "10.0us"),
            (12_345, "12.3us"),
            (999_499, "999us"),
            (999_500, "1.00ms"),
            (4_560_000, "4.56ms"),
            (999_999_999, "1.00s"),
            (1_200_000_000, "1.20s"),
            (12_340_000_000, "12.3s"),
            (123_400_000_000, "123s"),
            (5_000_000_000_000, "5000s"),
        ];
        for (ns, want) in cases {
            assert_eq!(fmt_ns(ns), want, "ns={ns}");
        }
        assert_eq!(fmt_ns(u64::MAX), "18446744074s");
    }

    #[test]
    fn from_fine_matches_recording() {
        let mut a = Hist::new();
        let vals = [0u64, 3, 17, 1000, 1500, 70_000, 5_000_000];
        for v in vals {
            a.record(v);
        }
        let sum: u128 = vals.iter().map(|&v| v as u128).sum();
        let b = Hist::from_fine(&a.fine, sum, 0, 5_000_000);
        assert_eq!(a.summary(), b.summary());
        let mut c = Hist::new();
        c.record_n(1000, 3);
        assert_eq!(c.count(), 3);
        assert_eq!(c.avg(), 1000);
        assert_eq!(Hist::from_fine(&[], 0, 0, 0).summary(), Stats::default());
    }

    #[test]
    fn linear_bins() {
        let mut h = Hist::new();
        for v in [1u64, 5, 12, 14, 1000] {
            h.record(v);
        }
        assert_eq!(h.linear(10, 3), vec![2, 2, 1]);
    }

    #[test]
    fn fine_counts_take_min_and_max_from_buckets() {
        let mut h = Hist::new();
        for v in [900u64, 1000, 5000] {
            h.record(v);
        }
        let d = Hist::from_fine_counts(&h.fine, 6900);
        assert_eq!(d.count(), 3);
        assert_eq!(d.avg(), 2300);
        assert!(d.min() <= 900 && d.max() >= 5000 && d.max() < 5400);
        assert_eq!(Hist::from_fine_counts(&[0, 0], 0).count(), 0);
    }
}
