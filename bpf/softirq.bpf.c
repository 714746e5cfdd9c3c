// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * `netstack-lat softirq`: per CPU and vector, the delay from raise to entry and the run
 * time from entry to exit, and NAPI batch sizes per device. Softirqs run far more often
 * than packets arrive, so nothing goes through a ring buffer: each CPU keeps its own
 * histograms and counters in per-CPU maps, which Rust reads and sums.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "netstack.h"
#include "hist.bpf.h"
#include "kread.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct fine_hist _fine_hist = {};
struct sirq_cpu _sirq_cpu = {};
struct napi_key _napi_key = {};
struct napi_stats napi_zero = {}; /* also makes the skeleton generate the type */
enum sirq_kind _sirq_kind = 0;

/* Set by Rust before load: the vectors to follow (bit per vector), and a CPU (-1 = all). */
const volatile __u32 f_vectors = (1 << NET_TX_SOFTIRQ) | (1 << NET_RX_SOFTIRQ);
const volatile __s32 f_cpu = -1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sirq_cpu);
} sirq_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_SOFTIRQS_MAX *SIRQ_KINDS);
	__type(key, __u32);
	__type(value, struct fine_hist);
} sirq_hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct napi_key);
	__type(value, struct napi_stats);
} napi SEC(".maps");

static __always_inline bool wanted(__u32 vec)
{
	if (vec >= NR_SOFTIRQS_MAX || !(f_vectors & (1u << vec)))
		return false;
	return f_cpu < 0 || bpf_get_smp_processor_id() == (__u32)f_cpu;
}

static __always_inline struct sirq_cpu *cpu_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sirq_cpu, &zero);
}

static __always_inline void hist_add(__u32 vec, __u32 kind, __u64 v)
{
	__u32 key = vec * SIRQ_KINDS + kind;
	struct fine_hist *h = bpf_map_lookup_elem(&sirq_hists, &key);

	if (h)
		fine_hist_add(h, v);
}

#define PF_KTHREAD 0x00200000

/* Is the current task this CPU's ksoftirqd? Its comm is checked, for kernel threads other
 * than idle, until it is first seen. */
static __always_inline bool in_ksoftirqd(struct sirq_cpu *s)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 cur = (__u64)t;
	char comm[16];

	if (s->ksoftirqd)
		return s->ksoftirqd == cur;
	if (!t->pid || !(t->flags & PF_KTHREAD))
		return false;
	bpf_get_current_comm(comm, sizeof(comm));
	if (comm[0] != 'k' || comm[1] != 's' || comm[2] != 'o' || comm[3] != 'f' ||
	    comm[4] != 't' || comm[5] != 'i' || comm[6] != 'r' || comm[7] != 'q' ||
	    comm[8] != 'd' || comm[9] != '/')
		return false;
	s->ksoftirqd = cur;
	return true;
}

static __always_inline void on_raise(__u32 vec)
{
	struct sirq_counts *n;
	struct sirq_cpu *s;

	if (!wanted(vec) || vec >= NR_SOFTIRQS_MAX)
		return;
	s = cpu_state();
	if (!s)
		return;
	n = &s->counts[vec];
	n->raised++;
	/* Raises while pending coalesce: the wait starts at the first one. */
	if (!s->raise_ts[vec])
		s->raise_ts[vec] = bpf_ktime_get_ns();
}

static __always_inline void on_entry(__u32 vec)
{
	__u64 now = bpf_ktime_get_ns();
	struct sirq_counts *n;
	struct sirq_cpu *s;
	__u64 raised;

	if (!wanted(vec) || vec >= NR_SOFTIRQS_MAX)
		return;
	s = cpu_state();
	if (!s)
		return;
	n = &s->counts[vec];
	n->entered++;
	if (in_ksoftirqd(s))
		n->ksoftirqd++;
	s->entry_ts[vec] = now;
	raised = s->raise_ts[vec];
	s->raise_ts[vec] = 0;
	/* No raise seen: pending from before the tool started. */
	if (raised && raised <= now)
		hist_add(vec, SIRQ_DELAY, now - raised);
}

static __always_inline void on_exit(__u32 vec)
{
	__u64 now = bpf_ktime_get_ns();
	struct sirq_cpu *s;
	__u64 entered;

	if (!wanted(vec) || vec >= NR_SOFTIRQS_MAX)
		return;
	s = cpu_state();
	if (!s)
		return;
	entered = s->entry_ts[vec];
	s->entry_ts[vec] = 0;
	if (entered && entered <= now)
		hist_add(vec, SIRQ_RUN, now - entered);
}

/* napi_poll: one poll of a device's NAPI instance, `work` packets of at most `budget`. */
static __always_inline void on_napi_poll(const void *napip, int work, int budget)
{
	struct napi_struct *np = KPTR(napip, struct napi_struct);
	struct napi_key key = {};
	struct napi_stats *st;
	struct net_device *dev;
	struct net *net;
	__u32 w;

	if (f_cpu >= 0 && bpf_get_smp_processor_id() != (__u32)f_cpu)
		return;
	dev = RD(np, dev);
	if (!dev)
		return;
	key.ifindex = RD(dev, ifindex);
	net = RD(dev, nd_net.net);
	key.netns = RD(net, ns.inum);
	st = bpf_map_lookup_elem(&napi, &key);
	if (!st) {
		/* Too big for the stack: start from a zeroed global. */
		bpf_map_update_elem(&napi, &key, &napi_zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&napi, &key);
		if (!st)
			return;
		bpf_probe_read_kernel_str(st->name, sizeof(st->name), dev->name);
	}
	w = work < 0 ? 0 : work;
	st->polls++;
	st->work += w;
	st->budget = budget;
	if (work >= budget)
		st->full++;
	if (w > NAPI_BATCH_MAX)
		w = NAPI_BATCH_MAX;
	/* Spelled out for the verifier, which lost the bound above across the clamp. */
	asm volatile("%[w] &= 0xff" : [w] "+r"(w));
	if (w <= NAPI_BATCH_MAX)
		st->b[w]++;
}

SEC("tp_btf/softirq_raise")
int BPF_PROG(softirq_raise, unsigned int vec)
{
	on_raise(vec);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(softirq_entry, unsigned int vec)
{
	on_entry(vec);
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(softirq_exit, unsigned int vec)
{
	on_exit(vec);
	return 0;
}

SEC("tp_btf/napi_poll")
int BPF_PROG(softirq_napi_poll, struct napi_struct *napi, int work, int budget)
{
	on_napi_poll(napi, work, budget);
	return 0;
}
