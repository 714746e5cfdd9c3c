/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Span histograms kept in the kernel (serve's default; trace --in-kernel): a span goes into
 * the Prometheus histogram of its series where it completes, and user space reads the
 * tables at scrape time. No ring record per packet: the ring copy and the user-space join
 * were most of what serve cost.
 *
 * Each CPU has its own open-addressed table (agg_hist, a per-CPU array): a series is found
 * by hashing its key and probing up to AGG_PROBES entries, and claimed there the first time.
 * No atomics and no hash map: the index is the histogram. A span whose series finds no free
 * entry is counted (CNT_AGG_FULL), never silent.
 */
#ifndef AGG_BPF_H
#define AGG_BPF_H

#include "common.bpf.h"
#include "hist.bpf.h"

#define AGG_PROBES 8

/* Set by Rust: aggregate in the kernel instead of sending ring records. */
const volatile bool f_agg = false;
/* Entries of agg_hist minus 1 (a power of two minus 1); the bucket bounds in ns, padded with
 * ~0; and for each power of two 2^m, the first bucket whose bound is at or above it. */
const volatile __u32 agg_mask = 0;
const volatile __u64 agg_bounds[32] = {};
const volatile __u8 agg_first[64] = {};

struct agg_entry _agg_entry = {};
struct span_key _span_key = {};
enum span_point _span_point = 0;

/* Rust sets max_entries (a power of two) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agg_entry);
} agg_hist SEC(".maps");

/* Index of the first bound at or above v (PROM_BOUNDS: +Inf), as Rust's PromHist::record.
 * Neighbouring bounds are at least 2x apart, so a power of two [2^m, 2^(m+1)) holds at most
 * one: the bucket is agg_first[m] or the next (src/join/kernel_spans.rs tests the same walk). */
static __always_inline __u32 prom_bucket(__u64 v)
{
	__u32 b = agg_first[v ? msb64(v) & 63 : 0];

	if (b < PROM_BOUNDS && agg_bounds[b & 31] < v)
		b++;
	return b;
}

static __always_inline __u32 agg_hash(const struct span_key *k)
{
	__u32 h = k->netns * 0x9e3779b1u;

	h ^= k->ifindex * 0x85ebca6bu;
	h ^= ((__u32)k->from << 16 | (__u32)k->to << 8 | k->proto) * 0xc2b2ae35u;
	return h ^ (h >> 15);
}

static __always_inline bool key_eq(const struct span_key *a, const struct span_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/*
 * Record v ns for span from -> to with its labels (span = from << 16 | to << 8 | proto).
 * A global function: the verifier checks it once, not at each of its ~20 call sites. A
 * program that interrupts this one on the same CPU could claim the same free entry in
 * between; that needs two new series at once on one CPU, and costs at most one span in
 * the wrong series.
 */
__noinline int agg_record(__u32 span, __u32 ifindex, __u32 netns, __u64 v)
{
	struct span_key k = {
	    .from = span >> 16, .to = span >> 8, .proto = span, .ifindex = ifindex, .netns = netns};
	struct agg_entry *e = NULL;
	__u32 h = agg_hash(&k), idx, b;

	for (int i = 0; i < AGG_PROBES; i++) {
		idx = (h + i) & agg_mask;
		e = bpf_map_lookup_elem(&agg_hist, &idx);
		if (!e)
			return 0;
		if (!e->key.to) {
			e->key = k;
			break;
		}
		if (key_eq(&e->key, &k))
			break;
		e = NULL;
	}
	if (!e) {
		count(CNT_AGG_FULL);
		return 0;
	}
	b = prom_bucket(v);
	if (b >= PROM_BUCKETS)
		b = PROM_BUCKETS - 1;
	e->b[b]++;
	e->sum += v;
	return 0;
}

static __always_inline void agg_add(__u8 from, __u8 to, __u8 proto, __u32 ifindex, __u32 netns,
				    __u64 v)
{
	agg_record((__u32)from << 16 | (__u32)to << 8 | proto, ifindex, netns, v);
}

/* Spans between consecutive points seen (ts[i] != 0) of points base .. base + n - 1. */
#define AGG_PATH(ts, n, base, proto, ifindex, netns)                                               \
	({                                                                                         \
		int __prev = -1;                                                                   \
		for (int __i = 0; __i < (n); __i++) {                                              \
			if (!(ts)[__i])                                                            \
				continue;                                                          \
			if (__prev >= 0)                                                           \
				agg_add((base) + __prev, (base) + __i, proto, ifindex, netns,      \
					(ts)[__i] > (ts)[__prev & 15]                              \
					    ? (ts)[__i] - (ts)[__prev & 15]                        \
					    : 0);                                                  \
			__prev = __i;                                                              \
		}                                                                                  \
	})

/* The netfilter split of a stretch: neighbouring stamps seen in order, only with at least
 * one middle stamp (as Rust's nf_split). */
static __always_inline void agg_nf_split(__u8 p0, __u64 t0, __u8 p1, __u64 t1, __u8 p2, __u64 t2,
					 __u8 p3, __u64 t3, __u8 proto, __u32 ifindex, __u32 netns)
{
	if (!t1 && !t2)
		return;
	if (t0 && t1 >= t0)
		agg_add(p0, p1, proto, ifindex, netns, t1 - t0);
	if (t1 && t2 >= t1)
		agg_add(p1, p2, proto, ifindex, netns, t2 - t1);
	if (t2 && t3 >= t2)
		agg_add(p2, p3, proto, ifindex, netns, t3 - t2);
}

#endif /* AGG_BPF_H */
