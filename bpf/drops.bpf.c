// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Dropped packets: kfree_skb with a reason other than "consumed", one event each, with the
 * freeing address (symbolized by Rust), the flow when the headers parse, device, netns and
 * the current task, and optionally the kernel stack.
 */
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct drop_event _drop_event = {};

const volatile bool f_stack = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} drop_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__uint(value_size, 127 * sizeof(__u64));
} drop_stacks SEC(".maps");

/* [0] events lost to a full ring buffer, [1] drops the filters left out. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drop_counts SEC(".maps");

static __always_inline void bump(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&drop_counts, &i);

	if (v)
		(*v)++;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(drop_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct net_device *dev = skb->dev;
	struct drop_event *e;
	struct flow f = {};
	__u32 payload, seq, seq_end, ifindex = 0, netns = 0;
	__u64 id;
	bool parsed;

	if (reason == skb_consumed_reason())
		return 0;
	if (dev) {
		ifindex = dev->ifindex;
		netns = dev->nd_net.net->ns.inum;
	} else {
		/* Untyped read: a NULL socket reads as 0. */
		netns = sock_netns(sock_ro(skb->sk));
	}
	parsed = !parse_ip(skb->head, skb->network_header, skb->protocol, skb->len, &f, &payload,
			   &seq, &seq_end);
	if ((f_ifindex && ifindex != f_ifindex) || !netns_wanted(netns) ||
	    ((f_port || f_proto || f_family || f_cidr_family) && (!parsed || !flow_wanted(&f)))) {
		bump(1);
		return 0;
	}
	e = bpf_ringbuf_reserve(&drop_events, sizeof(*e), 0);
	if (!e) {
		bump(0);
		return 0;
	}
	id = bpf_get_current_pid_tgid();
	e->ts = bpf_ktime_get_ns();
	e->location = (__u64)location;
	e->reason = reason;
	e->ifindex = ifindex;
	e->netns = netns;
	e->tgid = id >> 32;
	e->stack_id = f_stack ? bpf_get_stackid(ctx, &drop_stacks, 0) : -1;
	e->protocol = skb->protocol;
	e->has_flow = parsed;
	/* The task on the CPU: the sender for drops on the way out; for drops in softirq,
	 * whichever task it interrupted (Rust says so). */
	e->flow = f;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
