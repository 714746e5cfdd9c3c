/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Helpers shared by the stage programs: counters, output, sockets (filters: filter.bpf.h). */
#ifndef COMMON_BPF_H
#define COMMON_BPF_H

#include "filter.bpf.h"
#include "sock.bpf.h"

/* Wake the reader only once this much is queued: one wakeup per batch, not per event. */
const volatile __u64 wake_bytes = 64 * 1024;

/*
 * One ring buffer per CPU: with a single shared buffer, the softirq CPU (chains) and the
 * reader's CPU (reads) contend on its producer lock, which cost ~100 ns per event here.
 * Rust sizes the outer array to the possible CPUs and creates the inner buffers.
 */
#define RB_BYTES (1 << 20)

struct rb_inner {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RB_BYTES);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rb_inner);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * The verifier allows no arithmetic on a kernel pointer; a store to map memory and a load
 * back make it a plain number to hash. A program that interrupts this one on the same CPU
 * (softirq over a process-context hook) may use the same word in between: scratch[1]
 * counts uses, and a copy made while it moved is made again.
 */
static __always_inline __u64 ptr_scalar(__u64 *scratch, const void *p)
{
	volatile __u64 *word = &scratch[0], *gen = &scratch[1];
	__u64 v, g;

	g = *gen + 1;
	*gen = g;
	*word = (__u64)p;
	v = *word;
	if (*gen != g) {
		g = *gen + 1;
		*gen = g;
		*word = (__u64)p;
		v = *word;
	}
	return v;
}

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

static __always_inline void *rb_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&events, &cpu);
}

static __always_inline long rb_flags(void *rb)
{
	return bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) >= wake_bytes ? BPF_RB_FORCE_WAKEUP
								      : BPF_RB_NO_WAKEUP;
}

/* Copy an event to this CPU's ring buffer; a full buffer is counted, never silent. */
static __always_inline void emit(void *ev, __u64 size)
{
	void *rb = rb_get();

	/* Delivered events are counted by the reader: one map update less per event. */
	if (!rb || bpf_ringbuf_output(rb, ev, size, rb_flags(rb)))
		count(CNT_LOST);
}

/* Reserve in this CPU's ring buffer; submit with rb_submit. NULL (counted) when full. */
static __always_inline void *rb_reserve(void **rbp, __u64 size)
{
	void *rb = rb_get();
	void *ev = rb ? bpf_ringbuf_reserve(rb, size, 0) : NULL;

	if (!ev)
		count(CNT_LOST);
	*rbp = rb;
	return ev;
}

static __always_inline void rb_submit(void *rb, void *ev)
{
	bpf_ringbuf_submit(ev, rb_flags(rb));
}

/* A kretprobe sees only the return value: its entry kprobe keeps the socket and flags per
 * thread in a map of these. LRU: a thread killed mid-call leaves its entry. */
struct sock_call {
	__u64 sk;
	__s32 flags;
};

#define SOCK_CALL_MAP(name)                                                                        \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                                               \
		__uint(max_entries, 4096);                                                         \
		__type(key, __u64);                                                                \
		__type(value, struct sock_call);                                                   \
	} name SEC(".maps")

#endif /* COMMON_BPF_H */
