/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Packet parsing and the filters every object shares (trace, netfilter). */
#ifndef FILTER_BPF_H
#define FILTER_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "netstack.h"

#define AF_INET		2
#define AF_INET6	10
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP	6
#define IPPROTO_UDP	17
#define NF_ACCEPT	1
#define MSG_PEEK	2
#define MSG_ERRQUEUE	0x2000

/* Filters, written by Rust through rodata before load; 0 means "any". */
const volatile __u16 f_port = 0;
const volatile __u8 f_proto = 0;
const volatile __u8 f_family = 0;
const volatile __u32 f_ifindex = 0;
const volatile __u8 f_netns_on = 0; /* 1: only the namespaces in netns_want */
const volatile __u8 f_cidr_family = 0;
const volatile __u8 f_cidr_len = 0;
const volatile __u8 f_cidr_addr[16] = {};
const volatile __u32 f_tgid = 0;
const volatile __u8 f_comm_set = 0;
const volatile char f_comm[COMM_LEN] = {};
const volatile __u64 f_cgroup = 0;
/* Our own header layouts: plain byte copies, so no CO-RE relocation is involved. */
struct nsl_ip4 {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct nsl_ip6 {
	__be32 vtc;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct nsl_l4 {
	__be16 sport;
	__be16 dport;
	__be32 seq;	/* TCP; UDP: len + check */
	__be32 ack;	/* TCP only */
	__u8 doff_res;	/* TCP only */
	__u8 tcp_flags; /* TCP only */
};

/* IP + TCP/UDP headers as one copy: one probe read covers IPv4 (no options) and IPv6. */
struct nsl_hdrs {
	union {
		struct {
			struct nsl_ip4 ip4;
			struct nsl_l4 l4_after_ip4;
		};
		struct {
			struct nsl_ip6 ip6;
			struct nsl_l4 l4_after_ip6;
		};
	};
};

/*
 * Parse the IP and TCP/UDP headers at skb->head + network_header. `len`: skb->len, counted
 * from the network header (the data pointer is there at every caller): BIG TCP packets
 * (over 64 KiB) carry 0 in the IP length field and the kernel goes by the skb's length.
 * Returns 0 for TCP/UDP with the flow, payload length and TCP end sequence filled in.
 */
static __always_inline int parse_ip(unsigned char *head, __u16 nh, __be16 protocol, __u32 len,
				    struct flow *f, __u32 *payload, __u32 *seq, __u32 *seq_end)
{
	struct nsl_hdrs h;
	struct nsl_l4 *l4;
	__u32 l4len;

	if (bpf_probe_read_kernel(&h, sizeof(h), head + nh))
		return -1;
	if (protocol == bpf_htons(ETH_P_IP)) {
		__u32 ihl = (h.ip4.vihl & 0x0f) * 4;

		if (h.ip4.frag_off & bpf_htons(0x1fff))
			return -1; /* not the first fragment: no ports */
		f->family = AF_INET;
		f->proto = h.ip4.proto;
		__builtin_memcpy(f->saddr, h.ip4.saddr, 4);
		__builtin_memcpy(f->daddr, h.ip4.daddr, 4);
		l4len = h.ip4.tot_len ? bpf_ntohs(h.ip4.tot_len) : len;
		if (l4len < ihl)
			return -1;
		l4len -= ihl;
		l4 = &h.l4_after_ip4;
		/* IP options move the transport header: read it again where it is. */
		if (ihl != sizeof(struct nsl_ip4) &&
		    bpf_probe_read_kernel(l4, sizeof(*l4), head + nh + ihl))
			return -1;
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		f->family = AF_INET6;
		f->proto = h.ip6.nexthdr; /* extension headers are not walked */
		__builtin_memcpy(f->saddr, h.ip6.saddr, 16);
		__builtin_memcpy(f->daddr, h.ip6.daddr, 16);
		l4len = h.ip6.payload_len ? bpf_ntohs(h.ip6.payload_len) : len;
		if (!h.ip6.payload_len) {
			if (l4len < sizeof(struct nsl_ip6))
				return -1;
			l4len -= sizeof(struct nsl_ip6);
		}
		l4 = &h.l4_after_ip6;
		/* One hop-by-hop header: BIG TCP's jumbo payload option, which stands between
		 * the IPv6 and TCP headers of packets over 64 KiB. */
		if (f->proto == IPPROTO_HOPOPTS) {
			__u8 hbh[2];
			__u32 hl;

			if (bpf_probe_read_kernel(hbh, sizeof(hbh),
						  head + nh + sizeof(struct nsl_ip6)))
				return -1;
			hl = (hbh[1] + 1) * 8;
			f->proto = hbh[0];
			if (l4len < hl ||
			    bpf_probe_read_kernel(l4, sizeof(*l4),
						  head + nh + sizeof(struct nsl_ip6) + hl))
				return -1;
			l4len -= hl;
		}
	} else {
		return -1;
	}
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return -1;
	f->sport = bpf_ntohs(l4->sport);
	f->dport = bpf_ntohs(l4->dport);
	if (f->proto == IPPROTO_TCP) {
		__u32 hl = (l4->doff_res >> 4) * 4;

		*payload = l4len > hl ? l4len - hl : 0;
		*seq = bpf_ntohl(l4->seq);
		/* SYN and FIN take one sequence number each. */
		*seq_end = *seq + *payload + (l4->tcp_flags & 1) + ((l4->tcp_flags >> 1) & 1);
	} else {
		*payload = l4len > 8 ? l4len - 8 : 0;
		*seq = 0;
		*seq_end = 0;
	}
	return 0;
}

/* SKB_CONSUMED as the running kernel numbers it (kfree_skb reports such frees, which are no
 * drops, since 6.2); -1 where the kernel has no such reason. */
static __always_inline __u32 skb_consumed_reason(void)
{
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED))
		return bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED);
	return (__u32)-1;
}

static __always_inline bool cidr_match(const __u8 *addr)
{
	__u8 bits = f_cidr_len;

	/* No early exit on the prefix's end: a loop of constant trip count unrolls. */
#pragma unroll
	for (int i = 0; i < 16; i++) {
		__u8 b = bits > 8 ? 8 : bits;
		__u8 mask = b ? (__u8)(0xff << (8 - b)) : 0;

		if ((addr[i] ^ f_cidr_addr[i]) & mask)
			return false;
		bits -= b;
	}
	return true;
}

/* The packet filters: protocol, family, port and address (either end). */
static __always_inline bool flow_wanted(const struct flow *f)
{
	if (f_proto && f->proto != f_proto)
		return false;
	if (f_family && f->family != f_family)
		return false;
	if (f_port && f->sport != f_port && f->dport != f_port)
		return false;
	if (f_cidr_family) {
		if (f->family != f_cidr_family)
			return false;
		if (!cidr_match(f->saddr) && !cidr_match(f->daddr))
			return false;
	}
	return true;
}

/* The namespaces of --netns, by inode; filled by Rust after load (a node has hundreds). */
#define MAX_NETNS 4096
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NETNS);
	__type(key, __u32);
	__type(value, __u8);
} netns_want SEC(".maps");

static __always_inline bool netns_wanted(__u32 ns)
{
	if (!f_netns_on)
		return true;
	return bpf_map_lookup_elem(&netns_want, &ns) != NULL;
}

/*
 * The current task from a netfilter program: the kernel offers netfilter programs only the
 * base helpers, which lacked bpf_get_current_pid_tgid before 6.10 and still lack
 * bpf_get_current_comm in 6.12. Rust probes which ones a netfilter program may call
 * (nf_helpers bits); for the others `in_nf` reads the task's own fields. Callers pass
 * `in_nf` as a constant and nf_helpers is read-only data: the verifier keeps one branch.
 */
#define NF_HELPER_PID	 1
#define NF_HELPER_COMM	 2
#define NF_HELPER_CGROUP 4
const volatile __u32 nf_helpers = 0;

static __always_inline __u64 current_pid_tgid(bool in_nf)
{
	struct task_struct *t;

	if (!in_nf || (nf_helpers & NF_HELPER_PID))
		return bpf_get_current_pid_tgid();
	t = (void *)bpf_get_current_task();
	return (__u64)BPF_CORE_READ(t, tgid) << 32 | (__u32)BPF_CORE_READ(t, pid);
}

static __always_inline void current_comm(char *buf, bool in_nf)
{
	struct task_struct *t;

	if (!in_nf || (nf_helpers & NF_HELPER_COMM)) {
		bpf_get_current_comm(buf, COMM_LEN);
		return;
	}
	t = (void *)bpf_get_current_task();
	bpf_core_read_str(buf, COMM_LEN, &t->comm);
}

static __always_inline __u64 current_cgroup_id(bool in_nf)
{
	struct task_struct *t;

	if (!in_nf || (nf_helpers & NF_HELPER_CGROUP))
		return bpf_get_current_cgroup_id();
	t = (void *)bpf_get_current_task();
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

/* The process filters, for events in process context. */
static __always_inline bool task_wanted_in(__u32 tgid, bool in_nf)
{
	if (f_tgid && tgid != f_tgid)
		return false;
	if (f_cgroup && current_cgroup_id(in_nf) != f_cgroup)
		return false;
	if (f_comm_set) {
		char comm[COMM_LEN];

		current_comm(comm, in_nf);
#pragma unroll
		for (int i = 0; i < COMM_LEN; i++) {
			if (comm[i] != f_comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

static __always_inline bool task_wanted(__u32 tgid)
{
	return task_wanted_in(tgid, false);
}

#endif /* FILTER_BPF_H */
