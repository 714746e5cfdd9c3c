// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Test and benchmark helper (`netstack-lat bench spin`): a known, controlled delay inside
 * the transmit path. After a driver's xmit returns the CPU still holds bottom halves
 * disabled until dev_queue_xmit unwinds; spinning there delays every softirq raised by the
 * transmit (veth raises NET_RX for its peer) by the spin time: ground truth for the
 * softirq raise -> entry delay.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by Rust: the device (ifindex in namespace netns) and the spin time. */
const volatile __u32 f_ifindex = 0;
const volatile __u32 f_netns = 0;
const volatile __u64 spin_ns = 0;

__u64 spins = 0;

static long until(__u64 i, void *ctx)
{
	return bpf_ktime_get_ns() >= *(__u64 *)ctx;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(spin_xmit, struct sk_buff *skb, int rc, struct net_device *dev)
{
	__u64 deadline;

	if (dev->ifindex != f_ifindex || dev->nd_net.net->ns.inum != f_netns)
		return 0;
	deadline = bpf_ktime_get_ns() + spin_ns;
	bpf_loop(1 << 22, until, &deadline, 0);
	__sync_fetch_and_add(&spins, 1);
	return 0;
}
