/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* In-kernel histograms in the log-linear buckets of src/stats/hist.rs (struct fine_hist). */
#ifndef HIST_BPF_H
#define HIST_BPF_H

/* Index of the most significant set bit (v > 0). */
static __always_inline __u32 msb64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) {
		v >>= 32;
		r = 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

/* src/stats/hist.rs fine_index: exact below 16, then 16 sub-buckets per power of two. */
static __always_inline __u32 fine_index(__u64 v)
{
	__u32 e;

	if (v < 16)
		return v;
	e = msb64(v);
	return (e - 3) * 16 + ((v >> (e - 4)) & 15);
}

_Static_assert(FINE_BUCKETS == 512, "the mask in fine_hist_add");

static __always_inline void fine_hist_add(struct fine_hist *h, __u64 v)
{
	__u32 i = fine_index(v);

	if (i >= FINE_BUCKETS)
		i = FINE_BUCKETS - 1;
	/* Spelled out for older verifiers (6.1), which lose the bound above once clang drops
	 * the mask as redundant. */
	asm volatile("%[i] &= 511" : [i] "+r"(i));
	h->b[i]++;
	h->count++;
	h->sum += v;
	if (!h->min_plus1 || v + 1 < h->min_plus1)
		h->min_plus1 = v + 1;
	if (v > h->max)
		h->max = v;
}

#endif /* HIST_BPF_H */
