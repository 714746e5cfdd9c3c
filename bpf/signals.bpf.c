// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Congestion signals for a rate controller: bytes sent, drops by kernel reason, send-buffer
 * pressure, softirq time, qdisc backlog, retransmits. Every event is counted (no sampling)
 * into per-CPU totals that only grow; the reader takes differences, so nothing is lost
 * between a read and a reset.
 */
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct sig_cpu _sig_cpu = {};
struct sig_sock _sig_sock = {};
struct sig_qdisc _sig_qdisc = {};

#define NET_TX_VEC 2
#define NET_RX_VEC 3

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sig_cpu);
} sig SEC(".maps");

/* Sockets by address: their latest occupancy (LRU: closed sockets age out). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct sig_sock);
} sig_socks SEC(".maps");

/* Root qdiscs by device ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct sig_qdisc);
} sig_qdiscs SEC(".maps");

static __always_inline struct sig_cpu *sig_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sig, &zero);
}

/* Port filter on a socket: either end. */
static __always_inline bool sock_port_wanted(const struct sock *s)
{
	__u16 lport, rport;

	if (!f_port)
		return true;
	lport = RD(s, __sk_common.skc_num);
	rport = bpf_ntohs(RD(s, __sk_common.skc_dport));
	return lport == f_port || rport == f_port;
}

/* sock_send_length: a send call returned `ret` bytes (or an error). */
SEC("tp_btf/sock_send_length")
int BPF_PROG(sig_send, struct sock *sk, int ret, int flags)
{
	struct sock *s = KPTR(sk, struct sock);
	struct sig_cpu *c;
	struct sig_sock ss, *e;
	__u32 sndbuf, queued;
	__u64 key = (__u64)sk;
	__u16 proto;

	/* The task filter only when one is set: a helper call less per send. */
	if (!inet_l4_sock(s) ||
	    ((f_tgid || f_cgroup) && !task_wanted(bpf_get_current_pid_tgid() >> 32)) ||
	    !sock_port_wanted(s))
		return 0;
	c = sig_get();
	if (!c)
		return 0;
	proto = RD(s, sk_protocol);
	if (ret > 0) {
		c->send_bytes[proto == IPPROTO_UDP] += ret;
		c->send_calls[proto == IPPROTO_UDP]++;
	}
	c->events++;
	if (proto != IPPROTO_TCP)
		return 0;
	/* Occupancy after the call: a writer blocked on a full buffer returns with it full. */
	sndbuf = RD(s, sk_sndbuf);
	queued = RD(s, sk_wmem_queued);
	ss.ts = bpf_ktime_get_ns();
	ss.ppm = sndbuf ? (__u32)((__u64)queued * 1000000 / sndbuf) : 0;
	ss.pad = 0;
	/* A known socket is written in place: a lookup costs far less than an update. */
	e = bpf_map_lookup_elem(&sig_socks, &key);
	if (e) {
		e->ts = ss.ts;
		e->ppm = ss.ppm;
		return 0;
	}
	bpf_map_update_elem(&sig_socks, &key, &ss, BPF_ANY);
	return 0;
}

/* kfree_skb: a drop, with the kernel's reason (consume_skb is a normal free, not seen here). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(sig_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct sig_cpu *c;
	struct flow f = {};
	__u32 payload, seq, seq_end, r = reason;

	/* kfree_skb also reports SKB_CONSUMED frees: not drops. */
	if (r == skb_consumed_reason())
		return 0;
	if (f_ifindex && (!skb->dev || skb->dev->ifindex != f_ifindex))
		return 0;
	if (f_port || f_proto || f_family || f_cidr_family) {
		if (parse_ip(skb->head, skb->network_header, skb->protocol, skb->len, &f, &payload,
			     &seq, &seq_end) ||
		    !flow_wanted(&f))
			return 0;
	}
	if (f_tgid || f_cgroup) /* a drop has no owner we can trust: only unfiltered runs */
		return 0;
	c = sig_get();
	if (!c)
		return 0;
	c->drops++;
	c->events++;
	if (r >= SIG_REASONS)
		r = SIG_REASONS - 1;
	c->drop_reason[r & (SIG_REASONS - 1)]++;
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(sig_retransmit, const struct sock *sk)
{
	struct sig_cpu *c;

	if (!sock_port_wanted(KPTR(sk, struct sock)))
		return 0;
	c = sig_get();
	if (c) {
		c->retransmits++;
		c->events++;
	}
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(sig_softirq_entry, unsigned int vec)
{
	struct sig_cpu *c;

	if (vec != NET_RX_VEC && vec != NET_TX_VEC)
		return 0;
	c = sig_get();
	if (c)
		c->softirq_entry[vec == NET_TX_VEC] = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(sig_softirq_exit, unsigned int vec)
{
	struct sig_cpu *c;
	__u64 start, i = vec == NET_TX_VEC;

	if (vec != NET_RX_VEC && vec != NET_TX_VEC)
		return 0;
	c = sig_get();
	if (!c)
		return 0;
	start = c->softirq_entry[i & 1];
	if (start) {
		c->softirq_ns[i & 1] += bpf_ktime_get_ns() - start;
		c->softirq_entry[i & 1] = 0;
		c->events++;
	}
	return 0;
}

/* The root qdisc's backlog, as the tracepoints see it after each enqueue and dequeue. */
static __always_inline void qdisc_seen(struct Qdisc *q, const struct netdev_queue *txq)
{
	struct sig_qdisc *e, n = {};
	__u32 ifindex = txq->dev->ifindex;
	__u32 bytes = q->qstats.backlog, packets = q->q.qlen;

	if (f_ifindex && ifindex != f_ifindex)
		return;
	e = bpf_map_lookup_elem(&sig_qdiscs, &ifindex);
	if (!e) {
		bpf_map_update_elem(&sig_qdiscs, &ifindex, &n, BPF_NOEXIST);
		e = bpf_map_lookup_elem(&sig_qdiscs, &ifindex);
		if (!e)
			return;
	}
	e->ts = bpf_ktime_get_ns();
	e->bytes = bytes;
	e->packets = packets;
	if (bytes > e->peak_bytes)
		e->peak_bytes = bytes;
	if (packets > e->peak_packets)
		e->peak_packets = packets;
}

SEC("tp_btf/qdisc_enqueue")
int BPF_PROG(sig_qdisc_enqueue, struct Qdisc *q, const struct netdev_queue *txq,
	     struct sk_buff *skb)
{
	qdisc_seen(q, txq);
	return 0;
}

SEC("tp_btf/qdisc_dequeue")
int BPF_PROG(sig_qdisc_dequeue, struct Qdisc *q, const struct netdev_queue *txq, int packets,
	     struct sk_buff *skb)
{
	qdisc_seen(q, txq);
	return 0;
}
