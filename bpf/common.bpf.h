/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Helpers shared by the stage programs: packet parsing, filters, counters, output. */
#ifndef COMMON_BPF_H
#define COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "netstack.h"

#define AF_INET	     2
#define AF_INET6     10
#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define IPPROTO_TCP  6
#define IPPROTO_UDP  17
#define NF_ACCEPT    1
#define MSG_PEEK     2
#define MSG_ERRQUEUE 0x2000
#define E2BIG	     7

/* Filters, written by Rust through rodata before load; 0 means "any". */
const volatile __u16 f_port = 0;
const volatile __u8 f_proto = 0;
const volatile __u8 f_family = 0;
const volatile __u32 f_ifindex = 0;
const volatile __u32 f_netns = 0;
const volatile __u8 f_cidr_family = 0;
const volatile __u8 f_cidr_len = 0;
const volatile __u8 f_cidr_addr[16] = {};
const volatile __u32 f_tgid = 0;
const volatile __u8 f_comm_set = 0;
const volatile char f_comm[COMM_LEN] = {};
const volatile __u64 f_cgroup = 0;
/* Wake the reader only once this much is queued: one wakeup per batch, not per event. */
const volatile __u64 wake_bytes = 64 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		(*v)++;
}

static __always_inline long rb_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wake_bytes ? BPF_RB_FORCE_WAKEUP
									   : BPF_RB_NO_WAKEUP;
}

/* Copy an event to the ring buffer; a full buffer is counted, never silent. */
static __always_inline void emit(void *ev, __u64 size)
{
	if (bpf_ringbuf_output(&events, ev, size, rb_flags()))
		count(CNT_LOST);
	else
		count(CNT_EVENTS);
}

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

/*
 * Parse the IP and TCP/UDP headers at skb->head + network_header.
 * Returns 0 for TCP/UDP with the flow, payload length and TCP end sequence filled in.
 */
static __always_inline int parse_ip(unsigned char *head, __u16 nh, __be16 protocol, struct flow *f,
				    __u32 *payload, __u32 *seq_end)
{
	struct nsl_l4 l4 = {};
	__u32 l4off, l4len;

	if (protocol == bpf_htons(ETH_P_IP)) {
		struct nsl_ip4 ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1; /* not the first fragment: no ports */
		f->family = AF_INET;
		f->proto = ip.proto;
		__builtin_memcpy(f->saddr, ip.saddr, 4);
		__builtin_memcpy(f->daddr, ip.daddr, 4);
		l4off = nh + (ip.vihl & 0x0f) * 4;
		l4len = bpf_ntohs(ip.tot_len) - (ip.vihl & 0x0f) * 4;
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		struct nsl_ip6 ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return -1;
		f->family = AF_INET6;
		f->proto = ip6.nexthdr; /* extension headers are not walked */
		__builtin_memcpy(f->saddr, ip6.saddr, 16);
		__builtin_memcpy(f->daddr, ip6.daddr, 16);
		l4off = nh + sizeof(ip6);
		l4len = bpf_ntohs(ip6.payload_len);
	} else {
		return -1;
	}
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return -1;
	if (bpf_probe_read_kernel(&l4, sizeof(l4), head + l4off))
		return -1;
	f->sport = bpf_ntohs(l4.sport);
	f->dport = bpf_ntohs(l4.dport);
	if (f->proto == IPPROTO_TCP) {
		__u32 hl = (l4.doff_res >> 4) * 4;

		*payload = l4len > hl ? l4len - hl : 0;
		/* SYN and FIN take one sequence number each. */
		*seq_end =
		    bpf_ntohl(l4.seq) + *payload + (l4.tcp_flags & 1) + ((l4.tcp_flags >> 1) & 1);
	} else {
		*payload = l4len > 8 ? l4len - 8 : 0;
		*seq_end = 0;
	}
	return 0;
}

static __always_inline bool cidr_match(const __u8 *addr)
{
	__u8 bits = f_cidr_len;

#pragma unroll
	for (int i = 0; i < 16; i++) {
		__u8 mask;

		if (bits == 0)
			break;
		mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
		if ((addr[i] ^ f_cidr_addr[i]) & mask)
			return false;
		bits = bits >= 8 ? bits - 8 : 0;
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

/* The process filters, for events in process context. */
static __always_inline bool task_wanted(__u32 tgid)
{
	if (f_tgid && tgid != f_tgid)
		return false;
	if (f_cgroup && bpf_get_current_cgroup_id() != f_cgroup)
		return false;
	if (f_comm_set) {
		char comm[COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
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

/* A socket's flow as the receiver sees it: remote = source, local = destination. */
static __always_inline void sock_flow(const struct sock *sk, struct flow *f)
{
	f->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	f->proto = BPF_CORE_READ(sk, sk_protocol);
	f->sport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	f->dport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (f->family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);

		__builtin_memcpy(f->saddr, &s, 4);
		__builtin_memcpy(f->daddr, &d, 4);
	} else {
		BPF_CORE_READ_INTO(&f->saddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&f->daddr, sk, __sk_common.skc_v6_rcv_saddr);
	}
}

static __always_inline bool inet_l4_sock(const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 proto;

	if (family != AF_INET && family != AF_INET6)
		return false;
	proto = BPF_CORE_READ(sk, sk_protocol);
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

#endif /* COMMON_BPF_H */
