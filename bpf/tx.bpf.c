// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Transmit path: tx_send -> tx_transport -> tx_nf_done -> tx_qdisc_enq -> tx_qdisc_deq ->
 * tx_driver -> tx_done -> tx_free.
 *
 * From LOCAL_OUT to the driver an skb runs on one CPU (a TCP transmit is already the
 * clone at LOCAL_OUT), so its chain lives in a per-CPU direct-mapped cache keyed by skb
 * pointer; nested transmits (a softirq ACK inside a process-context send) take other
 * entries. Only two waits cross CPUs: a real qdisc (enqueue -> dequeue, often from a
 * timer or another CPU) and a completion-style driver (xmit -> free, e.g. tun, or a NIC
 * freeing on TX completion). For those the chain is parked in an LRU hash. Drivers that
 * hand the skb on (veth, loopback) complete at xmit return: no tx_free.
 *
 * TCP writes are joined to segments by Rust, by socket id and sequence numbers: a write
 * reports its first sequence number when it starts and, if data stayed in the socket when
 * it returned, why (Nagle or cork). UDP data goes out inside the send call, so the send
 * syscall's entry time, thread and socket are carried in a per-CPU slot to LOCAL_OUT, where
 * only a datagram of that thread and that socket takes them.
 */
#include "agg.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Dummy instances so that the skeleton generates the Rust types. */
struct tx_chain_event _tx_chain_event = {};
struct tx_send_event _tx_send_event = {};
enum tx_point _tx_point = 0;
enum tx_flags _tx_flags = 0;
enum tx_held_reason _tx_held_reason = 0;

#define TX_CACHE       64 /* transmits in flight per CPU, nesting included */
#define TX_PARK	       8192
#define DEQ_BATCH      8 /* skbs followed in one bulk dequeue */
#define TCP_NAGLE_OFF  1
#define TCP_NAGLE_CORK 2
#define MSG_MORE       0x8000
#define NETDEV_TX_BUSY 0x10
#define NET_XMIT_DROP  1

/* Send syscall numbers of the running architecture (write, writev, sendto, sendmsg,
 * sendmmsg), set by Rust; -1 = unused. */
const volatile __s64 sys_nr[5] = {-1, -1, -1, -1, -1};
/* tx_free is attached (consume_skb, kfree_skb); without it (serve's default, --no-tx-free)
 * a chain ends when the driver's xmit returns, whatever the device. */
const volatile bool has_tx_free = true;

struct tx_cache {
	struct tx_chain_event e[TX_CACHE];
	/* The thread whose send syscall started last on this CPU, when, which syscall, its fd,
	 * and the socket that fd names: looked up by the call's first datagram, so TCP sends
	 * never pay for it (0 = not yet; a file names no socket a datagram has). */
	__u64 sys_pid_tgid;
	__u64 sys_ts;
	__u64 sys_sk;
	__s64 sys_id;
	__s64 sys_fd;
	/* The socket and send call (its entry time) of the write that started last on this
	 * CPU: the later tcp_sendmsg_locked calls of a large write skip the hash lookup. */
	__u64 writing_sk;
	__u64 writing_ts;
	__u64 scratch[2]; /* ptr_scalar's word and use count */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tx_cache);
} tx_cpu SEC(".maps");

/* A TCP write in progress on a socket, keyed by socket id (the socket lock serialises
 * writes; a new socket at a closed one's address has another id, so never inherits one). */
#define WRITES 4 /* writes kept per socket for the in-kernel join (f_agg) */

struct tx_write {
	__u32 active;
	__u32 msg_flags; /* of the call: sock_send_length does not pass them (always 0) */
	/* f_agg: the socket's latest writes (first sequence number, send time), oldest at head,
	 * and the end of the data sent so far, for the join that Rust's txjoin does otherwise. */
	__u32 head;
	__u32 tail;
	__u32 sent_end;
	__u32 sent_set;
	__u32 start[WRITES];
	__u64 ts[WRITES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tx_write);
} tx_socks SEC(".maps");

/*
 * Chains waiting in a qdisc or for a completion; any CPU may pick them up. Not an LRU:
 * when full, a new chain is emitted at once and counted (CNT_TX_PARK_FULL), never dropped
 * silently; what is still parked at exit is read by Rust.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TX_PARK);
	__type(key, __u64);
	__type(value, struct tx_chain_event);
} tx_parked SEC(".maps");

/* Chains parked now; 0 skips the lookup that every freed skb would otherwise pay. */
__u64 parked_n = 0;

static __always_inline struct tx_cache *cache_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tx_cpu, &zero);
}

/* A kernel pointer as a plain number (common.bpf.h). */
static __always_inline __u64 tx_scalar(struct tx_cache *c, const void *p)
{
	return ptr_scalar(c->scratch, p);
}

/* Sets of two ways: a transmit nested in another (softirq in a send) rarely evicts it. */
static __always_inline __u32 tx_set(__u64 skb)
{
	return ((skb >> 8) ^ (skb >> 17)) & (TX_CACHE - 2);
}

/* skb's entry in this CPU's cache, as an index, or -1. */
static __always_inline int tx_index(struct tx_cache *c, __u64 skb)
{
	__u32 i = tx_set(skb);

	if (c->e[i].skb == skb)
		return i;
	if (c->e[i + 1].skb == skb)
		return i + 1;
	return -1;
}

/* The chain of `skbp` in flight on this CPU, or NULL. */
static __always_inline struct tx_chain_event *tx_find(struct tx_cache *c, const void *skbp)
{
	int i = tx_index(c, tx_scalar(c, skbp));

	return i < 0 ? NULL : &c->e[i & (TX_CACHE - 1)];
}

/* A chain's spans into the in-kernel histograms (as Rust's tx_spans_of and nf_split). */
static __always_inline void agg_tx_chain(struct tx_chain_event *e)
{
	__u32 ifx = e->ifindex, ns = e->netns;
	__u8 p = e->flow.proto;

	count(CNT_TX_CHAINS);
	AGG_PATH(e->ts, TX_NPOINTS, SP_TX, p, ifx, ns);
	if (e->ts[TX_SEND] && e->ts[TX_DONE] > e->ts[TX_SEND] &&
	    (e->ts[TX_TRANSPORT] || e->ts[TX_NF_DONE] || e->ts[TX_QDISC_ENQ] ||
	     e->ts[TX_QDISC_DEQ] || e->ts[TX_DRIVER]))
		agg_add(SP_TX + TX_SEND, SP_TX + TX_DONE, p, ifx, ns,
			e->ts[TX_DONE] - e->ts[TX_SEND]);
	agg_nf_split(SP_TX + TX_TRANSPORT, e->ts[TX_TRANSPORT], SP_TX_NF_OUT_DONE, e->nf_mid[0],
		     SP_TX_NF_POST, e->nf_mid[1], SP_TX + TX_NF_DONE, e->ts[TX_NF_DONE], p, ifx,
		     ns);
}

static __always_inline void tx_emit(struct tx_chain_event *e, __u32 flags)
{
	e->flags |= flags;
	if (f_agg)
		agg_tx_chain(e);
	else
		emit(e, sizeof(*e));
	e->skb = 0;
}

/* The entry for skb: its own, else a free way, else the older chain of the set is emitted
 * as it is (counted) to make room. */
static __always_inline struct tx_chain_event *tx_claim(struct tx_cache *c, __u64 skb)
{
	__u32 i = tx_set(skb);
	struct tx_chain_event *a = &c->e[i], *b = &c->e[i + 1];

	if (a->skb == skb || !a->skb)
		return a;
	if (b->skb == skb || !b->skb)
		return b;
	if (b->ts[TX_TRANSPORT] < a->ts[TX_TRANSPORT])
		a = b;
	count(CNT_TX_EVICTED);
	tx_emit(a, TXF_EVICTED);
	return a;
}

static __always_inline void tx_park(struct tx_chain_event *e)
{
	__u64 key = e->skb;

	/* Count first: a CPU that sees 0 skips its lookup, so never under-count. */
	__sync_fetch_and_add(&parked_n, 1);
	if (bpf_map_update_elem(&tx_parked, &key, e, BPF_ANY)) {
		__sync_fetch_and_sub(&parked_n, 1);
		count(CNT_TX_PARK_FULL);
		tx_emit(e, TXF_EVICTED);
		return;
	}
	e->skb = 0;
}

static __always_inline void tx_unpark(__u64 key)
{
	bpf_map_delete_elem(&tx_parked, &key);
	if (parked_n)
		__sync_fetch_and_sub(&parked_n, 1);
}

/* The socket's flow in packet direction: source = local end. */
static __always_inline void sock_tx_flow(const struct sock *s, struct flow *f)
{
	struct flow rx = {};

	sock_flow(s, &rx);
	f->family = rx.family;
	f->proto = rx.proto;
	f->sport = rx.dport;
	f->dport = rx.sport;
	__builtin_memcpy(f->saddr, rx.daddr, 16);
	__builtin_memcpy(f->daddr, rx.saddr, 16);
}

/* ---- core logic, one function per point; the hooks below only fetch arguments ---- */

/* The socket behind file descriptor `fd` of the current task, as a number (0: none). A
 * file that is no socket gives a value no skb's socket has. */
static __always_inline __u64 fd_sock(struct tx_cache *c, long fd)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct socket *sock;
	struct file *f = NULL;
	__u64 slot;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	slot = tx_scalar(c, fds) + (__u64)fd * sizeof(void *);
	if (bpf_probe_read_kernel(&f, sizeof(f), (void *)slot) || !f)
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	return sock ? (__u64)BPF_CORE_READ(sock, sk) : 0;
}

/* raw_syscalls:sys_enter: remember when this thread's send syscall started, and its
 * descriptor. `fd`: the syscall's first argument (every send syscall's descriptor). */
static __always_inline void on_sys_enter(long id, long fd)
{
	struct tx_cache *c;

	if (id != sys_nr[0] && id != sys_nr[1] && id != sys_nr[2] && id != sys_nr[3] &&
	    id != sys_nr[4])
		return;
	c = cache_get();
	if (!c)
		return;
	c->sys_pid_tgid = bpf_get_current_pid_tgid();
	c->sys_ts = bpf_ktime_get_ns();
	c->sys_id = id;
	c->sys_fd = fd;
	c->sys_sk = 0;
}

/* f_agg: a TCP write starts at sequence number `start` (the join of Rust's on_tx_send). */
static __always_inline void agg_write(__u64 key, struct tx_write *w, __u32 start, __u64 now,
				      __u32 msg_flags)
{
	struct tx_write nw = {};
	__u32 t;

	count(CNT_TX_WRITES);
	if (!w) {
		bpf_map_update_elem(&tx_socks, &key, &nw, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&tx_socks, &key);
		if (!w)
			return;
	}
	w->active = 1;
	w->msg_flags = msg_flags;
	t = w->tail;
	/* A write that took no bytes (EAGAIN) shares its start with the next one. */
	if (t != w->head && w->start[(t - 1) & (WRITES - 1)] == start)
		t--;
	else if (t - w->head >= WRITES) {
		w->head++;
		count(CNT_TX_WRITES_EVICTED);
	}
	w->start[t & (WRITES - 1)] = start;
	w->ts[t & (WRITES - 1)] = now;
	w->tail = t + 1;
}

/* f_agg: a TCP data segment at LOCAL_OUT takes the send time of the latest write that
 * started at or before its oldest byte; a segment whose oldest byte went out before (RTO,
 * TLP, fast retransmit) waited for no write (Rust's attribute). */
static __always_inline void agg_attribute(struct tx_chain_event *e)
{
	struct tx_write *w = bpf_map_lookup_elem(&tx_socks, &e->sk);
	__u32 h;

	if (!w) {
		count(CNT_TX_UNATTRIBUTED);
		return;
	}
	if (w->sent_set && (int)(e->seq - w->sent_end) < 0) {
		count(CNT_TX_RETRANS);
		return;
	}
	w->sent_end = e->seq + e->payload;
	w->sent_set = 1;
	h = w->head;
	for (int i = 0; i < WRITES - 1; i++) {
		if (w->tail - h < 2 || (int)(e->seq - w->start[(h + 1) & (WRITES - 1)]) < 0)
			break;
		h++;
	}
	w->head = h;
	if (h == w->tail || (int)(e->seq - w->start[h & (WRITES - 1)]) < 0) {
		count(CNT_TX_UNATTRIBUTED);
		return;
	}
	e->ts[TX_SEND] = w->ts[h & (WRITES - 1)];
}

/* tcp_sendmsg_locked runs once per skb a write fills: the first call of a write reports it.
 * `typed`: sk is the hook's BTF argument (sock_id). */
static __always_inline void on_tcp_send(const void *sk, const void *msgp, bool typed)
{
	struct tx_write *w, nw = {.active = 1};
	__u32 msg_flags;
	struct tx_send_event *ev;
	struct tx_cache *c = cache_get();
	struct sock *sko = sock_ro(sk);
	struct flow f = {};
	__u64 key, id, now;
	void *rb;

	if (!c)
		return;
	key = sock_id(sk, tx_scalar(c, sk), typed);
	id = bpf_get_current_pid_tgid();
	if (c->writing_sk == key && c->writing_ts && c->writing_ts == c->sys_ts &&
	    c->sys_pid_tgid == id)
		return;
	w = bpf_map_lookup_elem(&tx_socks, &key);
	if (w && w->active)
		return;
	if (!task_wanted(id >> 32) || !netns_wanted(sock_netns(sko)))
		return;
	sock_tx_flow(sko, &f);
	if (!flow_wanted(&f))
		return;
	/* The syscall entry is when the application handed the data over; without it (a
	 * kernel caller, or the slot taken by another thread), the first locked call. */
	now = c->sys_pid_tgid == id && c->sys_ts ? c->sys_ts : bpf_ktime_get_ns();
	if (f_agg) {
		agg_write(key, w, RD(KPTR(sk, struct tcp_sock), write_seq), now,
			  RD(KPTR(msgp, struct msghdr), msg_flags));
		c->writing_sk = key;
		c->writing_ts = c->sys_pid_tgid == id ? c->sys_ts : 0;
		return;
	}
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = EV_TX_SEND;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = now;
	ev->sk = key;
	ev->flow = f;
	ev->seq = RD(KPTR(sk, struct tcp_sock), write_seq);
	msg_flags = RD(KPTR(msgp, struct msghdr), msg_flags);
	ev->msg_flags = msg_flags;
	nw.msg_flags = msg_flags;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	rb_submit(rb, ev);
	bpf_map_update_elem(&tx_socks, &key, &nw, BPF_ANY);
	c->writing_sk = key;
	c->writing_ts = c->sys_pid_tgid == id ? c->sys_ts : 0;
}

/* sock_send_length: the send returned. For TCP, say why data stayed in the socket. */
static __always_inline void on_send_end(const void *sk, int ret, int flags, bool typed)
{
	struct sock *sko = sock_ro(sk);
	struct tx_cache *c = cache_get();
	struct tx_send_event *ev;
	struct tcp_sock *tp;
	struct tx_write *w;
	__u32 write_seq, snd_nxt, nonagle, reason;
	__u64 key;
	void *rb;

	if (!c || !inet_l4_sock(sko))
		return;
	/* The send is over: its entry time must not leak to a later packet of this thread.
	 * sendmmsg sends many datagrams in one syscall, each ending here: it keeps it. */
	if (c->sys_pid_tgid == bpf_get_current_pid_tgid() && c->sys_id != sys_nr[4])
		c->sys_ts = 0;
	if (RD(sko, sk_protocol) != IPPROTO_TCP)
		return;
	key = sock_id(sk, tx_scalar(c, sk), typed);
	if (c->writing_sk == key)
		c->writing_sk = 0;
	w = bpf_map_lookup_elem(&tx_socks, &key);
	if (!w || !w->active)
		return;
	w->active = 0;
	flags |= w->msg_flags;
	tp = KPTR(sk, struct tcp_sock);
	write_seq = RD(tp, write_seq);
	snd_nxt = RD(tp, snd_nxt);
	if (ret <= 0 || write_seq == snd_nxt || f_agg)
		return;
	/*
	 * Nagle and cork hold back only a partial segment; more than an MSS unsent means a
	 * window, pacing or TSQ is in the way (normal for bulk writes: not reported, one
	 * event per write would cost more than it tells).
	 */
	if (write_seq - snd_nxt >= RD(tp, mss_cache))
		return;
	nonagle = BPF_CORE_READ_BITFIELD_PROBED(tp, nonagle);
	if ((nonagle & TCP_NAGLE_CORK) || (flags & MSG_MORE))
		reason = HELD_CORK;
	else if (!(nonagle & TCP_NAGLE_OFF) && RD(tp, packets_out))
		reason = HELD_NAGLE;
	else
		return;
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = EV_TX_HELD;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->sk = key;
	ev->seq = write_seq - ret;
	ev->seq_end = write_seq;
	ev->snd_nxt = snd_nxt;
	ev->packets_out = RD(tp, packets_out);
	ev->reason = reason;
	ev->nonagle = nonagle;
	ev->msg_flags = flags;
	rb_submit(rb, ev);
}

/* First LOCAL_OUT position: the transport layer handed a built segment to IP. `in_nf`: called
 * from a netfilter program (see current_pid_tgid). */
static __always_inline void on_tx_transport(const void *skbp, __u32 ifindex, __u32 netns,
					    bool in_nf)
{
	__u64 now = bpf_ktime_get_ns();
	struct sk_buff *skb = KPTR(skbp, struct sk_buff);
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;
	struct flow f = {};
	__u32 payload, seq, seq_end;
	__u64 id, key, skp;
	struct sock *sk;
	bool task;

	if (!c)
		return;
	if ((f_ifindex && ifindex && ifindex != f_ifindex) || !netns_wanted(netns) ||
	    parse_ip(RD(skb, head), RD(skb, network_header), RD(skb, protocol), RD(skb, len), &f,
		     &payload, &seq, &seq_end) ||
	    !flow_wanted(&f)) {
		count(CNT_TX_FILTERED);
		return;
	}
	sk = RD(skb, sk);
	skp = tx_scalar(c, sk);
	/* UDP goes out inside the send call: the sender is the current task, if it is the
	 * thread whose send syscall armed the slot, on this datagram's socket. */
	id = f.proto == IPPROTO_UDP && c->sys_ts && skp ? current_pid_tgid(in_nf) : 0;
	if (id && id == c->sys_pid_tgid && !c->sys_sk)
		c->sys_sk = fd_sock(c, c->sys_fd);
	task = id && id == c->sys_pid_tgid && c->sys_sk == skp;
	if (f.proto == IPPROTO_UDP && (f_tgid || f_comm_set || f_cgroup) &&
	    (!task || !task_wanted_in(id >> 32, in_nf))) {
		count(CNT_TX_FILTERED);
		return;
	}
	key = tx_scalar(c, skbp);
	e = tx_claim(c, key);
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EV_TX_CHAIN;
	e->cpu = bpf_get_smp_processor_id();
	e->skb = key;
	e->sk = skp ? sock_id(sk, skp, false) : 0;
	e->flow = f;
	e->ifindex = ifindex;
	e->netns = netns;
	e->payload = payload;
	e->seq = seq;
	e->ts[TX_TRANSPORT] = now;
	if (f_agg && f.proto == IPPROTO_TCP && payload && e->sk)
		agg_attribute(e);
	if (task) {
		e->ts[TX_SEND] = c->sys_ts;
		e->flags = TXF_TASK;
		e->pid = (__u32)id;
		e->tgid = id >> 32;
		current_comm(e->comm, in_nf);
	}
}

/* Stamp point `pt` of a chain in flight on this CPU, the first time only. */
static __always_inline void on_tx_point(const void *skbp, int pt)
{
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;

	if (!c || pt < 0 || pt >= TX_NPOINTS)
		return;
	e = tx_find(c, skbp);
	if (!e)
		return;
	if (!e->ts[pt])
		e->ts[pt] = bpf_ktime_get_ns();
}

/* The netfilter split of tx_transport -> tx_nf_done: where LOCAL_OUT's hooks end and
 * POST_ROUTING's begin. */
static __always_inline void on_tx_nf_mid(const void *skbp, int k)
{
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e = c ? tx_find(c, skbp) : NULL;

	if (e)
		e->nf_mid[k & 1] = bpf_ktime_get_ns();
}

/* net_dev_queue: dev_queue_xmit took the skb; the output device is now known. */
static __always_inline void on_tx_queue(const void *skbp)
{
	struct sk_buff *skb = KPTR(skbp, struct sk_buff);
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;
	struct net_device *dev;
	__u32 ifindex;

	if (!c)
		return;
	e = tx_find(c, skbp);
	if (!e)
		return;
	if (e->ts[TX_QDISC_ENQ])
		return;
	dev = RD(skb, dev);
	ifindex = RD(dev, ifindex);
	if (f_ifindex && ifindex != f_ifindex) {
		e->skb = 0;
		count(CNT_TX_FILTERED);
		return;
	}
	e->ifindex = ifindex;
	e->ts[TX_QDISC_ENQ] = bpf_ktime_get_ns();
}

/* qdisc_enqueue: the skb waits in a real qdisc; whoever dequeues it may be another CPU. */
static __always_inline void on_qdisc_enqueue(const void *skbp)
{
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;

	if (!c)
		return;
	e = tx_find(c, skbp);
	if (!e)
		return;
	e->flags |= TXF_QUEUED;
	tx_park(e);
}

static __always_inline void restore(struct tx_cache *c, __u64 key, int pt, __u64 now)
{
	struct tx_chain_event *p = bpf_map_lookup_elem(&tx_parked, &key);
	struct tx_chain_event *e;

	if (!p)
		return;
	e = tx_claim(c, key);
	__builtin_memcpy(e, p, sizeof(*e));
	if (pt >= 0 && pt < TX_NPOINTS)
		e->ts[pt] = now;
	tx_unpark(key);
}

/* qdisc_dequeue: one skb, or a bulk list linked by skb->next. */
static __always_inline void on_qdisc_dequeue(const void *skbp, int packets)
{
	__u64 now = bpf_ktime_get_ns();
	struct tx_cache *c = cache_get();
	struct sk_buff *skb = KPTR(skbp, struct sk_buff);

	if (!c || !parked_n)
		return;
	for (int i = 0; i < DEQ_BATCH && i < packets && skb; i++) {
		restore(c, tx_scalar(c, skb), TX_QDISC_DEQ, now);
		skb = RD(skb, next);
	}
}

/* net_dev_start_xmit: the driver gets the skb. Not queued = no time in the qdisc. */
static __always_inline void on_tx_driver(const void *skbp)
{
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;

	if (!c)
		return;
	e = tx_find(c, skbp);
	if (!e)
		return;
	if (e->ts[TX_DRIVER])
		return;
	e->ts[TX_DRIVER] = bpf_ktime_get_ns();
	if (!e->ts[TX_QDISC_DEQ])
		e->ts[TX_QDISC_DEQ] = e->ts[TX_QDISC_ENQ];
}

/*
 * net_dev_xmit: the driver returned. The skb may be gone already (a peer on another CPU
 * took it), so only the device is read here. Devices without a queue of their own (veth,
 * loopback, bridge, vlan, tunnels: IFF_NO_QUEUE) hand the skb on inside xmit: done. Others
 * (NICs, tun) free it on completion: it waits parked for that.
 */
static __always_inline void on_tx_done(const void *skbp, int rc, const void *devp)
{
	struct net_device *dev = KPTR(devp, struct net_device);
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e;
	__u64 priv;

	if (!c || rc == NETDEV_TX_BUSY)
		return; /* requeued: it is tried again */
	e = tx_find(c, skbp);
	if (!e)
		return;
	e->ts[TX_DONE] = bpf_ktime_get_ns();
	if (rc != NETDEV_TX_OK) {
		/* NET_XMIT_DROP / NET_XMIT_CN: the driver took and freed it, or dropped it. */
		count(CNT_TX_XMIT_FAIL);
		tx_emit(e, rc == NET_XMIT_DROP ? TXF_DROPPED : 0);
		return;
	}
	priv = has_cast ? BPF_CORE_READ_BITFIELD(dev, priv_flags)
			: BPF_CORE_READ_BITFIELD_PROBED(dev, priv_flags);
	if (!has_tx_free || e->ts[TX_FREE] || (RD(dev, flags) & IFF_LOOPBACK) ||
	    (priv & bpf_core_enum_value(enum netdev_priv_flags, IFF_NO_QUEUE)))
		tx_emit(e, 0);
	else
		tx_park(e);
}

/* consume_skb / kfree_skb: completion, or a drop on the way. */
static __always_inline void on_tx_free(const void *skbp, bool drop)
{
	__u64 now = bpf_ktime_get_ns();
	struct tx_cache *c = cache_get();
	struct tx_chain_event *e, *p;
	__u64 key;
	int i;

	if (!c)
		return;
	key = tx_scalar(c, skbp);
	i = tx_index(c, key);
	if (i >= 0) {
		e = &c->e[i & (TX_CACHE - 1)];
		if (drop) {
			e->flags |= TXF_DROPPED;
			count(CNT_TX_DROPPED);
		}
		if (e->ts[TX_DRIVER] && !e->ts[TX_DONE]) {
			e->ts[TX_FREE] = now; /* freed inside xmit: emitted at net_dev_xmit */
			return;
		}
		tx_emit(e, 0);
		return;
	}
	if (!parked_n)
		return;
	p = bpf_map_lookup_elem(&tx_parked, &key);
	if (!p)
		return;
	p->ts[TX_FREE] = now;
	if (drop) {
		p->flags |= TXF_DROPPED;
		count(CNT_TX_DROPPED);
	}
	if (f_agg)
		agg_tx_chain(p);
	else
		emit(p, sizeof(*p));
	tx_unpark(key);
}

/* ---- tracepoints: each as tp_btf and, for kernels without tp_btf, raw_tp ---- */

#define TX_TP(name, tp, call, ...)                                                                 \
	SEC("tp_btf/" #tp)                                                                         \
	int BPF_PROG(name, ##__VA_ARGS__)                                                          \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}                                                                                          \
	SEC("raw_tp/" #tp)                                                                         \
	int BPF_PROG(name##_raw, ##__VA_ARGS__)                                                    \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}

SEC("tp_btf/sys_enter")
int BPF_PROG(tx_send_sys_enter, struct pt_regs *regs, long id)
{
	on_sys_enter(id, PT_REGS_PARM1_CORE(regs));
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(tx_send_sys_enter_raw, struct pt_regs *regs, long id)
{
	on_sys_enter(id, PT_REGS_PARM1_CORE(regs));
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tx_send_tcp, const struct sock *sk, const struct msghdr *msg)
{
	on_tcp_send(sk, msg, true);
	return 0;
}

SEC("raw_tp/tcp_sendmsg_locked")
int BPF_PROG(tx_send_tcp_raw, const struct sock *sk, const struct msghdr *msg)
{
	on_tcp_send(sk, msg, false);
	return 0;
}

/* inet_sock_set_state to TCP_CLOSE: the socket's write state ends. Without this, every
 * short connection left its entry until the LRU pushed it out: the map sat full under
 * connection churn, evicting live sockets' writes. */
#define TX_TCP_CLOSE 7

static __always_inline void on_tx_close(const void *sk, int newstate, bool typed)
{
	struct tx_cache *c;
	__u64 key;

	if (newstate != TX_TCP_CLOSE)
		return;
	c = cache_get();
	if (!c)
		return;
	key = sock_id(sk, tx_scalar(c, sk), typed);
	bpf_map_delete_elem(&tx_socks, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tx_close_tp_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	on_tx_close(sk, newstate, true);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tx_close_raw, const struct sock *sk, const int oldstate, const int newstate)
{
	on_tx_close(sk, newstate, false);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tx_send_end, struct sock *sk, int ret, int flags)
{
	on_send_end(sk, ret, flags, true);
	return 0;
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(tx_send_end_raw, struct sock *sk, int ret, int flags)
{
	on_send_end(sk, ret, flags, false);
	return 0;
}

TX_TP(tx_qdisc_enq_queue, net_dev_queue, on_tx_queue(skb), struct sk_buff *skb)
TX_TP(tx_qdisc_enq_qdisc, qdisc_enqueue, on_qdisc_enqueue(skb), struct Qdisc *q,
      const struct netdev_queue *txq, struct sk_buff *skb)
TX_TP(tx_qdisc_deq_qdisc, qdisc_dequeue, on_qdisc_dequeue(skb, packets), struct Qdisc *q,
      const struct netdev_queue *txq, int packets, struct sk_buff *skb)
TX_TP(tx_driver_start, net_dev_start_xmit, on_tx_driver(skb), const struct sk_buff *skb,
      const struct net_device *dev)
TX_TP(tx_done_xmit, net_dev_xmit, on_tx_done(skb, rc, dev), struct sk_buff *skb, int rc,
      struct net_device *dev)
TX_TP(tx_free_consume, consume_skb, on_tx_free(skb, false), struct sk_buff *skb)
TX_TP(tx_free_kfree, kfree_skb, on_tx_free(skb, true), struct sk_buff *skb)

/* ---- netfilter: first LOCAL_OUT position = tx_transport, last POST_ROUTING = tx_nf_done ---- */

SEC("netfilter")
int tx_transport_nf(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *st = ctx->state;

	on_tx_transport(ctx->skb, st->out ? st->out->ifindex : 0, st->net->ns.inum, true);
	return NF_ACCEPT;
}

SEC("netfilter")
int tx_nf_done_nf(struct bpf_nf_ctx *ctx)
{
	on_tx_point(ctx->skb, TX_NF_DONE);
	return NF_ACCEPT;
}

SEC("netfilter")
int tx_nf_out_done_nf(struct bpf_nf_ctx *ctx)
{
	on_tx_nf_mid(ctx->skb, 0);
	return NF_ACCEPT;
}

SEC("netfilter")
int tx_nf_post_nf(struct bpf_nf_ctx *ctx)
{
	on_tx_nf_mid(ctx->skb, 1);
	return NF_ACCEPT;
}

/*
 * ---- fentry and kprobe fallbacks: the netfilter BPF link came in 6.4 (ip_output runs
 * after LOCAL_OUT with the headers complete, ip_finish_output2 after POST_ROUTING), and
 * tcp_sendmsg_locked and sock_send_length are tracepoints only on newer kernels. ----
 */

static __always_inline void on_tx_transport_skb(struct sk_buff *skb)
{
	on_tx_transport(skb, 0, BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, ns.inum), false);
}

/* Per function: an fentry and a kprobe program calling the same core logic. */
#define TX_FN(name, fn, call, ...)                                                                 \
	SEC("fentry/" #fn)                                                                         \
	int BPF_PROG(name##_fentry, ##__VA_ARGS__)                                                 \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}                                                                                          \
	SEC("kprobe/" #fn)                                                                         \
	int BPF_KPROBE(name##_kprobe, ##__VA_ARGS__)                                               \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}

TX_FN(tx_transport4, ip_output, on_tx_transport_skb(skb), struct net *net, struct sock *sk,
      struct sk_buff *skb)
TX_FN(tx_transport6, ip6_output, on_tx_transport_skb(skb), struct net *net, struct sock *sk,
      struct sk_buff *skb)
TX_FN(tx_nf_done4, ip_finish_output2, on_tx_point(skb, TX_NF_DONE), struct net *net,
      struct sock *sk, struct sk_buff *skb)
TX_FN(tx_nf_done6, ip6_finish_output2, on_tx_point(skb, TX_NF_DONE), struct net *net,
      struct sock *sk, struct sk_buff *skb)
/* The tracepoint fires per skb a write fills, this once per call: on_tcp_send keeps the
 * first of a write either way. */
SEC("fentry/tcp_sendmsg_locked")
int BPF_PROG(tx_send_tcp_fentry, struct sock *sk, struct msghdr *msg)
{
	on_tcp_send(sk, msg, true);
	return 0;
}

SEC("kprobe/tcp_sendmsg_locked")
int BPF_KPROBE(tx_send_tcp_kprobe, struct sock *sk, struct msghdr *msg)
{
	on_tcp_send(sk, msg, false);
	return 0;
}

/*
 * The return of inet_sendmsg / inet6_sendmsg: where sock_send_length fires, for TCP and UDP.
 * Not sock_sendmsg: send(2) and sendmsg(2) call __sock_sendmsg directly (6.1.y, 6.12).
 */
#define TX_SEND_END(name, fn)                                                                      \
	SEC("fexit/" #fn)                                                                          \
	int BPF_PROG(name##_fexit, struct socket *sock, struct msghdr *msg, size_t size, int ret)  \
	{                                                                                          \
		on_send_end(sock->sk, ret, msg->msg_flags, false);                                 \
		return 0;                                                                          \
	}                                                                                          \
	SEC("kprobe/" #fn)                                                                         \
	int BPF_KPROBE(name##_kprobe, struct socket *sock, struct msghdr *msg)                     \
	{                                                                                          \
		send_call_enter(sock, msg);                                                        \
		return 0;                                                                          \
	}                                                                                          \
	SEC("kretprobe/" #fn)                                                                      \
	int BPF_KRETPROBE(name##_kretprobe, int ret)                                               \
	{                                                                                          \
		send_call_exit(ret);                                                               \
		return 0;                                                                          \
	}

SOCK_CALL_MAP(tx_send_calls);

static __always_inline void send_call_enter(struct socket *sock, struct msghdr *msg)
{
	struct sock_call sc = {.sk = (__u64)BPF_CORE_READ(sock, sk),
			       .flags = BPF_CORE_READ(msg, msg_flags)};
	__u64 id = bpf_get_current_pid_tgid();

	bpf_map_update_elem(&tx_send_calls, &id, &sc, BPF_ANY);
}

static __always_inline void send_call_exit(int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock_call *sc = bpf_map_lookup_elem(&tx_send_calls, &id);
	struct sock_call c;

	if (!sc)
		return;
	c = *sc;
	bpf_map_delete_elem(&tx_send_calls, &id);
	on_send_end((void *)c.sk, ret, c.flags, false);
}

TX_SEND_END(tx_send_end4, inet_sendmsg)
TX_SEND_END(tx_send_end6, inet6_sendmsg)
