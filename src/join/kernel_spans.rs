//! Span histograms kept in the kernel (bpf/agg.bpf.h), serve's default: each CPU has an
//! open-addressed table of series (span and labels) with a Prometheus histogram each. This
//! module reads the tables of an object and sums the series over CPUs.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::rx::types;
use crate::join::rx::LabelKey;
use crate::stats::prom_hist::{PromHist, BOUNDS_NS};
use rustc_hash::FxHashMap;

/// The table size for `--max-series N`: the next power of two (the BPF side masks).
pub fn table_size(max_series: u32) -> u32 {
    max_series.clamp(1, 1 << 20).next_power_of_two()
}

/// The rodata values of agg.bpf.h: the index mask, the bucket bounds (padded with the
/// largest value), and per power of two 2^m the first bucket whose bound is at or above it.
pub fn rodata(size: u32) -> (u32, [u64; 32], [u8; 64]) {
    let mut b = [u64::MAX; 32];
    b[..BOUNDS_NS.len()].copy_from_slice(&BOUNDS_NS);
    let first = std::array::from_fn(|m| BOUNDS_NS.partition_point(|&x| x < 1u64 << m) as u8);
    (size - 1, b, first)
}

/// The bucket of v as agg.bpf.h's prom_bucket finds it: agg_first of v's power of two, or
/// the next one.
pub fn bucket_by_table(v: u64, bounds: &[u64; 32], first: &[u8; 64]) -> usize {
    let m = if v == 0 {
        0
    } else {
        63 - v.leading_zeros() as usize
    };
    let b = first[m] as usize;
    if b < BOUNDS_NS.len() && bounds[b] < v {
        b + 1
    } else {
        b
    }
}

/// One table entry as Rust sees it: its series (None: free) and histogram.
pub fn decode(raw: &[u8]) -> Option<(LabelKey, PromHist)> {
    let mut e = types::agg_entry::default();
    plain::copy_from_bytes(&mut e, raw).ok()?;
    if e.key.to == 0 {
        return None;
    }
    let key = (
        (usize::from(e.key.from), usize::from(e.key.to)),
        e.key.proto,
        e.key.ifindex,
        e.key.netns,
    );
    let mut h = PromHist::default();
    h.counts.copy_from_slice(&e.b);
    h.sum_ns = u128::from(e.sum);
    Some((key, h))
}

/// Sum entries into one histogram per series (a series has an entry on each CPU that saw it).
pub fn merge(
    into: &mut FxHashMap<LabelKey, PromHist>,
    entries: impl IntoIterator<Item = (LabelKey, PromHist)>,
) {
    for (k, h) in entries {
        let t = into.entry(k).or_default();
        for (a, b) in t.counts.iter_mut().zip(h.counts) {
            *a += b;
        }
        t.sum_ns += h.sum_ns;
    }
}

/// Every series of one object's agg_hist: one batched read of all CPUs' tables (arrays
/// support batch lookups since Linux 5.6), else one lookup per index.
pub fn read(map: &dyn MapCore, into: &mut FxHashMap<LabelKey, PromHist>) -> Result<()> {
    let ncpu = libbpf_rs::num_possible_cpus()?;
    let size = map.max_entries();
    let vsz = (map.value_size() as usize).next_multiple_of(8);
    match read_batch(map, size, ncpu, vsz) {
        Ok(buf) => merge(into, buf.chunks_exact(vsz).filter_map(decode)),
        Err(_) => {
            for i in 0..size {
                let Some(cpus) = map
                    .lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY)
                    .context("reading the in-kernel histograms")?
                else {
                    continue;
                };
                merge(into, cpus.iter().filter_map(|v| decode(v)));
            }
        }
    }
    Ok(())
}

fn read_batch(map: &dyn MapCore, size: u32, ncpu: usize, vsz: usize) -> Result<Vec<u8>> {
    let mut keys = vec![0u32; size as usize];
    let mut vals = vec![0u8; size as usize * ncpu * vsz];
    let mut count = size;
    let mut out_batch = 0u32;
    let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    // SAFETY: the buffers hold `size` keys and `size` values of every possible CPU, as the
    // kernel writes them; `count` tells it so.
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            (&mut out_batch as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            vals.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    // ENOENT: the whole array was read in this one batch.
    if ret < 0 && ret != -libc::ENOENT {
        anyhow::bail!("batch lookup failed: {ret}");
    }
    vals.truncate(count as usize * ncpu * vsz);
    Ok(vals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        IPPROTO_UDP, RX_NF_IN, RX_NF_PRE_DONE, RX_READ, RX_SIRQ_ENTRY, RX_SIRQ_RAISE, TX_BASE,
        TX_NF_OUT_DONE, TX_NF_POST,
    };

    fn raw(from: u8, to: u8, netns: u32, ns: u64) -> Vec<u8> {
        let mut e = types::agg_entry::default();
        e.key.from = from;
        e.key.to = to;
        e.key.proto = IPPROTO_UDP;
        e.key.ifindex = 3;
        e.key.netns = netns;
        let mut h = PromHist::default();
        h.record(ns);
        e.b.copy_from_slice(&h.counts);
        e.sum = ns;
        // SAFETY: a plain C struct of integers.
        unsafe { plain::as_bytes(&e) }.to_vec()
    }

    #[test]
    fn span_points_are_the_frontends() {
        use types::span_point as sp;
        assert_eq!(sp::SP_RX_READ.0 as usize, RX_READ);
        assert_eq!(sp::SP_TX.0 as usize, TX_BASE);
        assert_eq!(sp::SP_RX_SIRQ_RAISE.0 as usize, RX_SIRQ_RAISE);
        assert_eq!(sp::SP_RX_SIRQ_ENTRY.0 as usize, RX_SIRQ_ENTRY);
        assert_eq!(sp::SP_RX_NF_PRE_DONE.0 as usize, RX_NF_PRE_DONE);
        assert_eq!(sp::SP_RX_NF_IN.0 as usize, RX_NF_IN);
        assert_eq!(sp::SP_TX_NF_OUT_DONE.0 as usize, TX_NF_OUT_DONE);
        assert_eq!(sp::SP_TX_NF_POST.0 as usize, TX_NF_POST);
        let e = types::agg_entry::default();
        assert_eq!(e.b.len(), crate::stats::prom_hist::BUCKETS_S.len() + 1);
    }

    #[test]
    fn free_entries_decode_to_nothing_and_cpus_sum_per_series() {
        assert!(decode(&vec![0u8; std::mem::size_of::<types::agg_entry>()]).is_none());
        assert!(decode(&[1, 2, 3]).is_none());
        let mut m = FxHashMap::default();
        merge(
            &mut m,
            [
                raw(1, 2, 7, 3_000),
                raw(1, 2, 7, 40_000),
                raw(1, 2, 8, 40_000),
                raw(4, 5, 7, 1),
            ]
            .iter()
            .filter_map(|r| decode(r)),
        );
        assert_eq!(m.len(), 3);
        let h = &m[&((1, 2), IPPROTO_UDP, 3, 7)];
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum_ns, 43_000);
        let mut want = PromHist::default();
        want.record(3_000);
        want.record(40_000);
        assert_eq!(h.counts, want.counts);
        let span_total: u64 = m
            .iter()
            .filter(|(k, _)| k.0 == (1, 2))
            .map(|(_, h)| h.count())
            .sum();
        assert_eq!(span_total, 3);
    }

    #[test]
    fn tables_are_powers_of_two_and_bounds_padded() {
        assert_eq!(table_size(4096), 4096);
        assert_eq!(table_size(3000), 4096);
        assert_eq!(table_size(0), 1);
        let (mask, b, _) = rodata(8);
        assert_eq!(mask, 7);
        assert_eq!(&b[..BOUNDS_NS.len()], &BOUNDS_NS);
        assert!(b[BOUNDS_NS.len()..].iter().all(|&x| x == u64::MAX));
    }

    #[test]
    fn the_table_walk_finds_the_bucket_record_does() {
        let (_, bounds, first) = rodata(8);
        let mut vals: Vec<u64> = vec![0, 1, 999, u64::MAX, u64::MAX - 1];
        for &b in &BOUNDS_NS {
            vals.extend([b - 1, b, b + 1]);
        }
        for m in 0..64 {
            let p = 1u64 << m;
            vals.extend([p - 1, p, p + 1, p.saturating_add(p / 2)]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push(x >> (x % 40));
        }
        for v in vals {
            let mut h = PromHist::default();
            h.record(v);
            let want = h.counts.iter().position(|&c| c == 1).unwrap();
            assert_eq!(bucket_by_table(v, &bounds, &first), want, "v = {v}");
        }
    }
}
