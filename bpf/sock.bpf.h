/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Socket fields, from any kind of program (tp_btf, raw_tp, fentry, kprobe). */
#ifndef SOCK_BPF_H
#define SOCK_BPF_H

#include "filter.bpf.h"
#include "kread.bpf.h"

/* Socket fields through KPTR/RD (kread.bpf.h): the same code serves tp_btf (trusted),
 * raw_tp and kprobe (untyped) arguments. */
static __always_inline struct sock *sock_ro(const void *sk)
{
	return KPTR(sk, struct sock);
}

static __always_inline __u32 sock_netns(const struct sock *s)
{
	struct net *net = RD(s, __sk_common.skc_net.net);

	return RD(net, ns.inum);
}

/* A socket's flow as the receiver sees it: remote = source, local = destination. */
static __always_inline void sock_flow(const struct sock *s, struct flow *f)
{
	f->family = RD(s, __sk_common.skc_family);
	f->proto = RD(s, sk_protocol);
	f->sport = bpf_ntohs(RD(s, __sk_common.skc_dport));
	f->dport = RD(s, __sk_common.skc_num);
	if (f->family == AF_INET) {
		__be32 sa = RD(s, __sk_common.skc_daddr);
		__be32 da = RD(s, __sk_common.skc_rcv_saddr);

		__builtin_memcpy(f->saddr, &sa, 4);
		__builtin_memcpy(f->daddr, &da, 4);
	} else {
		RD_BUF(f->saddr, s, __sk_common.skc_v6_daddr);
		RD_BUF(f->daddr, s, __sk_common.skc_v6_rcv_saddr);
	}
}

/* Set by Rust: may tracing programs call bpf_get_socket_cookie (5.12+)? */
const volatile bool cookie_helper = true;

/*
 * A socket's id in every join key: its cookie, unique for the boot, so that no state passes
 * from a closed socket to a new one at the same address. `typed` (a constant at each call):
 * `sk` is the hook's own BTF argument (tp_btf, fentry), for which the helper creates the
 * cookie; elsewhere the field is read, 0 until someone created it, and the address `addr`
 * stands in (cookies are small counters, kernel addresses are not: the two never meet).
 */
static __always_inline __u64 sock_id(const void *sk, __u64 addr, bool typed)
{
	__u64 id;

	if (typed && cookie_helper)
		id = bpf_get_socket_cookie((void *)sk);
	else
		id = RD(sock_ro(sk), __sk_common.skc_cookie.counter);
	return id ? id : addr;
}

static __always_inline bool inet_l4_sock(const struct sock *s)
{
	__u16 family = RD(s, __sk_common.skc_family);
	__u16 proto;

	if (family != AF_INET && family != AF_INET6)
		return false;
	proto = RD(s, sk_protocol);
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

#endif /* SOCK_BPF_H */
