//! One netfilter hook's bracket statistics (bpf/netfilter.bpf.c), summed over CPUs: what
//! `netstack-lat netfilter` prints and what serve's netfilter part exports.

use crate::bpf::netfilter::types;
use crate::stats::hist::Hist;

pub fn family_name(v6: bool) -> &'static str {
    if v6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

/// One hook and family, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookStat {
    pub hook: usize,
    pub v6: bool,
    /// Fine buckets of the bracket time of traversals that went through (accepted).
    pub fine: Vec<u64>,
    pub sum: u128,
    pub min: u64,
    pub max: u64,
    pub drops: u64,
    pub drop_ns: u64,
    pub unfinished: u64,
    pub filtered: u64,
}

impl HookStat {
    pub(crate) fn empty(key: usize) -> HookStat {
        HookStat {
            hook: key / 2,
            v6: key % 2 == 1,
            min: u64::MAX,
            ..HookStat::default()
        }
    }

    pub fn key(&self) -> usize {
        self.hook * 2 + usize::from(self.v6)
    }

    pub fn count(&self) -> u64 {
        self.fine.iter().sum()
    }

    pub(crate) fn add_cpu(&mut self, s: &types::nf_hook_stats) {
        let h = &s.lat;
        if self.fine.len() < h.b.len() {
            self.fine.resize(h.b.len(), 0);
        }
        for (a, b) in self.fine.iter_mut().zip(h.b.iter()) {
            *a += b;
        }
        self.sum += u128::from(h.sum);
        if h.count > 0 {
            self.min = self.min.min(h.min_plus1.saturating_sub(1));
            self.max = self.max.max(h.max);
        }
        self.drops += s.drops;
        self.drop_ns += s.drop_ns;
        self.unfinished += s.unfinished;
        self.filtered += s.filtered;
    }

    /// The whole run: exact min and max.
    pub fn hist(&self) -> Hist {
        if self.count() == 0 {
            return Hist::new();
        }
        Hist::from_fine(&self.fine, self.sum, self.min, self.max)
    }

    /// What happened since `prev` (an earlier snapshot of the same key).
    pub fn since(&self, prev: &HookStat) -> HookStat {
        let fine: Vec<u64> = self
            .fine
            .iter()
            .enumerate()
            .map(|(i, &n)| n.saturating_sub(prev.fine.get(i).copied().unwrap_or(0)))
            .collect();
        HookStat {
            hook: self.hook,
            v6: self.v6,
            fine,
            sum: self.sum.saturating_sub(prev.sum),
            min: 0,
            max: 0,
            drops: self.drops.saturating_sub(prev.drops),
            drop_ns: self.drop_ns.saturating_sub(prev.drop_ns),
            unfinished: self.unfinished.saturating_sub(prev.unfinished),
            filtered: self.filtered.saturating_sub(prev.filtered),
        }
    }

    /// A delta's histogram: min and max from its buckets.
    pub fn delta_hist(&self) -> Hist {
        Hist::from_fine_counts(&self.fine, self.sum)
    }
}
