// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Receive path: rx_driver -> rx_netif -> rx_ip -> rx_transport -> rx_sockq, and rx_read.
 *
 * rx_driver -> rx_netif crosses a queue (backlog or GRO) that is drained on the CPU that
 * filled it (unless RPS steers it elsewhere), so it is joined by skb pointer in a per-CPU
 * direct-mapped cache: no hash operation, nothing to expire, a miss is merely counted.
 * From rx_netif to the socket queue an skb stays on one CPU, but not alone: NAPI hands the
 * stack batches (gro_normal_list -> ip_list_rcv runs rx_netif for the whole batch, then
 * PRE_ROUTING for the whole batch, then LOCAL_IN and the socket per skb). So chains live
 * in a per-CPU cache keyed by skb pointer (two ways per set), and the socket queue, which
 * is not told the skb, takes the skb that last passed rx_transport on this CPU: from the
 * transport layer to sk_data_ready the kernel does run one skb at a time.
 * The chain is emitted once, when the socket queue takes it, or when it is done without
 * one (the next skb passes rx_transport, or its cache way is needed). A TCP segment that
 * finds its socket held by a reader waits in the socket's backlog and is queued later by
 * the reader, on its own CPU: its chain is handed over through a shared map (rx_backlog)
 * and taken up again where tcp_rcv_established (tcp_probe) processes it. Reads are emitted
 * per call, only on sockets that had traced data queued (an LRU set marks them); Rust
 * joins them to queued data by socket id (UDP: FIFO, TCP: sequence numbers), so GRO and
 * coalescing do not break it.
 *
 * Every point has several programs (tp_btf first, then raw_tp, netfilter or fentry);
 * Rust enables exactly one per point after probing the kernel.
 */
#include "agg.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Dummy instances so that the skeleton generates the Rust types. */
struct rx_chain_event _rx_chain_event = {};
struct rx_read_event _rx_read_event = {};
struct sock_close_event _sock_close_event = {};
struct rx_set _rx_set = {};
enum rx_cache_size _rx_cache_size = 0;

/* Driver sightings waiting for rx_netif, per CPU: sets of two, so that a NAPI batch
 * (up to its budget, 64) rarely has two skbs competing for one place. */
#define DRV_SETS	512
#define TCP_CLOSE_STATE 7

struct drv_cache {
	/* A driver sighting: the skb's address and its buffer, so that a recycled skb (NAPI
	 * reuses the struct of a packet GRO merged away) never inherits an old stamp. */
	__u64 skb[DRV_SETS * 2];
	__u64 head[DRV_SETS * 2];
	__u64 ts[DRV_SETS * 2];
	__u64 scratch[2]; /* ptr_scalar's word and use count */
	/* Last socket marked / found marked on this CPU: consecutive packets and reads are
	 * mostly on the same socket, so the LRU lookup is skipped for them. */
	__u64 last_marked;
	__u64 last_found;
	/* NET_RX on this CPU: first raise since it last ran, and the current run's raise and
	 * entry times, which chains opened during the run carry. */
	__u64 nrx_raise;
	__u64 nrx_run_raise;
	__u64 nrx_run_entry;
	/* The skb that last passed rx_transport here, and where its chain is. */
	__u64 cur_skb;
	__u32 cur_set;
	__u32 cur_way;
	/* The segment tcp_probe last took from a backlog here, and where its chain is: apart
	 * from cur, since softirq or the NAPI thread can run between the reader's tcp_probe
	 * and its sk_data_ready. */
	__u64 bl_skb;
	__u32 bl_set;
	__u32 bl_way;
	/* The last TCP data reported queued here: a second sk_data_ready for it (kTLS, psock
	 * wrappers) is not new data. */
	__u64 last_q_sk;
	__u32 last_q_seq;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drv_cache);
} rx_drv SEC(".maps");

/* Chains in flight, per CPU: RX_SETS sets of RX_WAYS (netstack.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RX_SETS);
	__type(key, __u32);
	__type(value, struct rx_set);
} rx_chains SEC(".maps");

/* Chains of TCP segments that went to a socket's backlog, by skb: any CPU may process
 * them. LRU: a segment the backlog dropped leaves its chain, which ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct rx_chain_event);
} rx_backlog SEC(".maps");

/* Chains handed over now; 0 spares every TCP segment the lookup. */
__u64 backlog_n = 0;

/*
 * Sockets that had traced data queued: reads on any other socket cost one lookup. An LRU
 * hash keyed by socket id (sock_id), not socket storage: sk_storage_get measured ~100 ns a
 * call here, this ~20 ns.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} rx_socks SEC(".maps");

/*
 * In-kernel reads (f_agg): per socket, the data queued and not yet read, oldest first. One
 * producer (sk_data_ready: the socket's softirq, under the socket lock for TCP) and one
 * consumer (the reader): tail moves only when data is queued, head only at reads. An LRU
 * hash, not socket storage, for the reason above. Rust shrinks it when not aggregating.
 */
#define FIFO_LEN	    16
#define IFINDEX_PLACEHOLDER 0xffffffffu

struct fifo_item {
	__u64 t_sockq;
	__u64 t_netif; /* 0: the chain began at the socket */
	__u32 end_seq; /* TCP: the first sequence number after the data */
	__u32 ifindex; /* IFINDEX_PLACEHOLDER: holds a place only (--iface) */
};

struct sock_fifo {
	__u32 head;
	__u32 tail;
	__u32 netns;
	__u8 proto;
	__u8 _pad[3];
	struct fifo_item it[FIFO_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct sock_fifo);
} rx_fifo SEC(".maps");

static __always_inline __u64 as_scalar(struct drv_cache *c, const void *p)
{
	return ptr_scalar(c->scratch, p);
}

/* The first way of skb's set. skbs come from a slab of 256-byte objects: drop the low
 * bits, fold the rest. */
static __always_inline __u32 drv_set(__u64 skb)
{
	return (((skb >> 8) ^ (skb >> 17)) & (DRV_SETS - 1)) * 2;
}

static __always_inline __u32 set_index(__u64 skb)
{
	return ((skb >> 8) ^ (skb >> 15)) & (RX_SETS - 1);
}

static __always_inline struct drv_cache *drv_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rx_drv, &zero);
}

static __always_inline struct rx_set *set_get(__u32 i)
{
	return bpf_map_lookup_elem(&rx_chains, &i);
}

static __always_inline void sock_mark(struct drv_cache *c, __u64 key)
{
	__u8 one = 1;

	if (c->last_marked == key)
		return;
	if (!bpf_map_lookup_elem(&rx_socks, &key))
		bpf_map_update_elem(&rx_socks, &key, &one, BPF_ANY);
	c->last_marked = key;
}

static __always_inline bool sock_marked(struct drv_cache *c, __u64 key)
{
	if (c->last_found == key)
		return true;
	if (!bpf_map_lookup_elem(&rx_socks, &key))
		return false;
	c->last_found = key;
	return true;
}

/* A chain's spans into the in-kernel histograms (as Rust's chain_spans). */
static __always_inline void agg_rx_chain(struct rx_chain_event *ev)
{
	__u32 ifx = ev->ifindex, ns = ev->netns;
	__u8 p = ev->flow.proto;

	count(CNT_RX_CHAINS);
	AGG_PATH(ev->ts, RX_NPOINTS, 0, p, ifx, ns);
	if (ev->sirq_raise && ev->sirq_entry >= ev->sirq_raise)
		agg_add(SP_RX_SIRQ_RAISE, SP_RX_SIRQ_ENTRY, p, ifx, ns,
			ev->sirq_entry - ev->sirq_raise);
	agg_nf_split(RX_IP, ev->ts[RX_IP], SP_RX_NF_PRE_DONE, ev->nf_mid[0], SP_RX_NF_IN,
		     ev->nf_mid[1], RX_TRANSPORT, ev->ts[RX_TRANSPORT], p, ifx, ns);
}

/* A chain ends: to the ring buffer, or into the in-kernel histograms. */
static __always_inline void rx_emit(struct rx_chain_event *ev)
{
	if (f_agg)
		agg_rx_chain(ev);
	else
		emit(ev, sizeof(*ev));
}

/* A new socket's FIFO, from map memory: the stack is too small for one. */
const struct sock_fifo fifo_empty = {};

/* Queued data waits in its socket's FIFO for the read that takes it (as Rust's queue).
 * end_seq: TCP's first sequence number after the data; ifindex may be IFINDEX_PLACEHOLDER. */
static __always_inline void fifo_push(__u64 id, __u64 t_sockq, __u64 t_netif, __u32 end_seq,
				      __u32 ifindex, __u8 proto, __u32 netns)
{
	struct sock_fifo *f = bpf_map_lookup_elem(&rx_fifo, &id);
	struct fifo_item *it;
	__u32 tail;

	if (!f) {
		bpf_map_update_elem(&rx_fifo, &id, &fifo_empty, BPF_NOEXIST);
		f = bpf_map_lookup_elem(&rx_fifo, &id);
		if (!f)
			return;
		f->netns = netns;
		f->proto = proto;
	}
	tail = *(volatile __u32 *)&f->tail;
	/* TCP data already queued (a second sk_data_ready for it) is not new data. */
	if (proto == IPPROTO_TCP && tail != f->head &&
	    f->it[(tail - 1) & (FIFO_LEN - 1)].end_seq == end_seq)
		return;
	if (tail - *(volatile __u32 *)&f->head >= FIFO_LEN) {
		count(CNT_FIFO_FULL);
		return;
	}
	it = &f->it[tail & (FIFO_LEN - 1)];
	it->t_sockq = t_sockq;
	it->t_netif = t_netif;
	it->end_seq = end_seq;
	it->ifindex = ifindex;
	/* The item first, then the tail that makes it visible to the reader. */
	asm volatile("" ::: "memory");
	*(volatile __u32 *)&f->tail = tail + 1;
}

/* A chain that passed the filters but never reached a socket queue still has spans. */
static __always_inline void slot_flush(struct rx_slot *s)
{
	/* A chain handed over to the backlog is reported from there. */
	if (s->state == SLOT_PASS && s->ev.ts[RX_IP] && !(s->ev.flags & CHAIN_HANDED_OVER)) {
		s->ev.flags |= CHAIN_FLUSHED;
		rx_emit(&s->ev);
		count(CNT_CHAIN_FLUSHED);
	}
	s->state = SLOT_EMPTY;
}

/* skb's chain in set `st`, if it has one. */
static __always_inline struct rx_slot *slot_find(struct rx_set *st, __u64 skb)
{
	if (st->w[0].state != SLOT_EMPTY && st->w[0].ev.skb == skb)
		return &st->w[0];
	if (st->w[1].state != SLOT_EMPTY && st->w[1].ev.skb == skb)
		return &st->w[1];
	return NULL;
}

/* A way for a new chain of skb: its own, a free one, else the older chain of the set is
 * ended as it is (a chain still unfinished is counted). */
static __always_inline struct rx_slot *slot_claim(struct rx_set *st, __u64 skb)
{
	struct rx_slot *a = &st->w[0], *b = &st->w[1];

	if (a->state == SLOT_EMPTY || a->ev.skb == skb) {
		slot_flush(a);
		return a;
	}
	if (b->state == SLOT_EMPTY || b->ev.skb == skb) {
		slot_flush(b);
		return b;
	}
	if (b->ev.ts[RX_NETIF] < a->ev.ts[RX_NETIF])
		a = b;
	if (!a->ev.ts[RX_TRANSPORT])
		count(CNT_RX_EVICTED);
	slot_flush(a);
	return a;
}

/* drv: this CPU's cache, where the current NET_RX run's times are. */
static __always_inline void slot_open(struct rx_slot *s, struct drv_cache *drv, __u64 skb,
				      __u64 head, __u32 ifindex, __u32 netns)
{
	__builtin_memset(&s->ev, 0, sizeof(s->ev));
	s->ev.kind = EV_RX_CHAIN;
	s->ev.cpu = bpf_get_smp_processor_id();
	s->ev.skb = skb;
	s->ev.ifindex = ifindex;
	s->ev.netns = netns;
	s->ev.sirq_raise = drv->nrx_run_raise;
	s->ev.sirq_entry = drv->nrx_run_entry;
	s->head = head;
	s->state = SLOT_OPEN;
	if ((f_ifindex && ifindex != f_ifindex) || (netns && !netns_wanted(netns))) {
		s->state = SLOT_SKIP;
		count(CNT_FILTERED);
	}
}

/* ---- core logic, one function per point; the hooks below only fetch arguments ---- */

static __always_inline void on_driver(const void *skbp, __u64 head, __u32 ifindex)
{
	struct drv_cache *c;
	__u64 skb;
	__u32 i;

	if (f_ifindex && ifindex != f_ifindex)
		return;
	c = drv_get();
	if (!c)
		return;
	skb = as_scalar(c, skbp);
	i = drv_set(skb);
	/* The latest sighting wins: a sighting of this address that never reached rx_netif
	 * (merged by GRO, dropped) belongs to an earlier packet. Else a free way, else the
	 * older sighting makes room. */
	if (c->skb[i] != skb &&
	    (c->skb[i + 1] == skb || !c->skb[i + 1] || (c->skb[i] && c->ts[i + 1] < c->ts[i])))
		i++;
	i &= DRV_SETS * 2 - 1;
	c->skb[i] = skb;
	c->head[i] = head;
	c->ts[i] = bpf_ktime_get_ns();
}

static __always_inline void on_netif(const void *skbp, __u64 head, __u32 ifindex, __u32 netns)
{
	__u64 now = bpf_ktime_get_ns();
	struct drv_cache *drv = drv_get();
	struct rx_slot *s;
	struct rx_set *st;
	__u64 skb;
	__u32 i;

	if (!drv)
		return;
	skb = as_scalar(drv, skbp);
	st = set_get(set_index(skb));
	if (!st)
		return;
	s = slot_find(st, skb);
	/* The same packet again (a bridge port, then the bridge): its first sighting stays. */
	if (s && s->state == SLOT_OPEN && s->head == head)
		return;
	s = slot_claim(st, skb);
	slot_open(s, drv, skb, head, ifindex, netns);
	s->ev.ts[RX_NETIF] = now;
	i = drv_set(skb);
	if (drv->skb[i] != skb)
		i++;
	i &= DRV_SETS * 2 - 1;
	if (drv->skb[i] == skb && drv->head[i] == head) {
		s->ev.ts[RX_DRIVER] = drv->ts[i];
		drv->skb[i] = 0;
	} else {
		count(CNT_DRV_MISS);
	}
}

static __always_inline void on_ip(const void *skbp, unsigned char *head, __u16 nh, __be16 protocol,
				  __u32 len, __u32 ifindex, __u32 netns)
{
	__u64 now = bpf_ktime_get_ns();
	struct drv_cache *drv = drv_get();
	struct rx_slot *s;
	struct rx_set *st;
	__u64 skb;
	__u32 seq;

	if (!drv)
		return;
	skb = as_scalar(drv, skbp);
	st = set_get(set_index(skb));
	if (!st)
		return;
	s = slot_find(st, skb);
	if (!s) {
		/* rx_netif not seen: start here */
		s = slot_claim(st, skb);
		slot_open(s, drv, skb, as_scalar(drv, head), ifindex, netns);
	}
	if (s->state != SLOT_OPEN)
		return;
	if (parse_ip(head, nh, protocol, len, &s->ev.flow, &s->ev.payload, &seq, &s->ev.seq_end) ||
	    !flow_wanted(&s->ev.flow)) {
		s->state = SLOT_SKIP;
		count(CNT_FILTERED);
		return;
	}
	if (s->ev.flow.proto == IPPROTO_TCP && s->ev.seq_end != seq + s->ev.payload)
		s->ev.flags |= CHAIN_SEQ_FLAG;
	s->state = SLOT_PASS;
	s->ev.ts[RX_IP] = now;
}

/* The skb's chain, if it passed the filters. */
static __always_inline struct rx_slot *slot_pass(const void *skbp)
{
	struct drv_cache *drv = drv_get();
	struct rx_slot *s;
	struct rx_set *st;
	__u64 skb;

	if (!drv)
		return NULL;
	skb = as_scalar(drv, skbp);
	st = set_get(set_index(skb));
	s = st ? slot_find(st, skb) : NULL;
	return s && s->state == SLOT_PASS ? s : NULL;
}

/* The chain in the cache way (set, way), if it is still skb's. */
static __always_inline struct rx_slot *slot_at(__u32 set, __u32 way, __u64 skb)
{
	struct rx_set *st = set_get(set);
	struct rx_slot *s;

	if (!st)
		return NULL;
	s = &st->w[way & 1];
	return s->state != SLOT_EMPTY && s->ev.skb == skb ? s : NULL;
}

/* Copy a chain to rx_backlog, for whichever CPU processes the socket's backlog. */
static __always_inline bool hand_over(struct rx_slot *s, __u64 skb)
{
	__sync_fetch_and_add(&backlog_n, 1);
	if (bpf_map_update_elem(&rx_backlog, &skb, &s->ev, BPF_ANY)) {
		__sync_fetch_and_sub(&backlog_n, 1);
		return false;
	}
	s->ev.flags |= CHAIN_HANDED_OVER;
	count(CNT_RX_BACKLOG);
	return true;
}

/* The segment will wait in its socket's backlog (a reader holds the socket): hand its
 * chain over now. */
static __always_inline void to_backlog(struct rx_slot *s, const void *skbp, __u64 skb)
{
	struct sk_buff *kskb = KPTR(skbp, struct sk_buff);
	struct sock *sk;

	if (s->ev.flow.proto != IPPROTO_TCP || !s->ev.payload)
		return;
	/* Early demux found the socket of an established flow (the ones with data). */
	sk = RD(kskb, sk);
	if (sk && RD(KPTR(sk, struct sock), sk_lock.owned))
		hand_over(s, skb);
}

static __always_inline void on_transport(const void *skbp)
{
	struct drv_cache *drv = drv_get();
	struct rx_set *st;
	struct rx_slot *s, *prev;
	__u64 skb;
	__u32 set;

	if (!drv)
		return;
	skb = as_scalar(drv, skbp);
	set = set_index(skb);
	st = set_get(set);
	if (!st)
		return;
	s = slot_find(st, skb);
	if (!s || s->state != SLOT_PASS || s->ev.ts[RX_TRANSPORT])
		return;
	/* The skb before this one went through its transport layer without reaching a
	 * socket queue (an ACK, a drop, the TCP backlog): its chain is done. */
	if (drv->cur_skb && drv->cur_skb != skb) {
		prev = slot_at(drv->cur_set, drv->cur_way, drv->cur_skb);
		/* TCP data that reached no socket queue here went to the backlog after all
		 * (the reader took the socket after rx_transport): hand it over late. */
		if (prev && prev->state == SLOT_PASS && prev->ev.flow.proto == IPPROTO_TCP &&
		    prev->ev.payload && !(prev->ev.flags & CHAIN_HANDED_OVER))
			hand_over(prev, drv->cur_skb);
		if (prev)
			slot_flush(prev);
	}
	s->ev.ts[RX_TRANSPORT] = bpf_ktime_get_ns();
	/* The lock may be free again by the time TCP looks: then the socket queue here
	 * takes the chain and drops the copy. */
	to_backlog(s, skbp, skb);
	drv->cur_skb = skb;
	drv->cur_set = set;
	drv->cur_way = s == &st->w[0] ? 0 : 1;
}

/* tcp_probe: tcp_rcv_established takes a segment, in softirq or from the backlog. A chain
 * handed over comes back as this CPU's current one, for sk_data_ready to join. */
static __always_inline void on_tcp_segment(const void *skbp)
{
	struct rx_chain_event *ev;
	struct drv_cache *drv;
	struct rx_slot *s;
	struct rx_set *st;
	__u64 skb;
	__u32 set;

	if (!backlog_n)
		return;
	drv = drv_get();
	if (!drv)
		return;
	skb = as_scalar(drv, skbp);
	ev = bpf_map_lookup_elem(&rx_backlog, &skb);
	if (!ev)
		return;
	count(CNT_RX_BACKLOG_TAKEN);
	set = set_index(skb);
	st = set_get(set);
	if (st) {
		s = slot_find(st, skb);
		/* Still here (the lock was free after all, same CPU): the local chain stands. */
		if (!s) {
			s = slot_claim(st, skb);
			__builtin_memcpy(&s->ev, ev, sizeof(s->ev));
			s->head = 0;
			s->state = SLOT_PASS;
		}
		s->ev.flags &= ~CHAIN_HANDED_OVER;
		s->ev.flags |= CHAIN_FROM_BACKLOG;
		drv->bl_skb = skb;
		drv->bl_set = set;
		drv->bl_way = s == &st->w[0] ? 0 : 1;
	}
	if (!bpf_map_delete_elem(&rx_backlog, &skb))
		__sync_fetch_and_sub(&backlog_n, 1);
}

/* The netfilter split of rx_ip -> rx_transport: where PRE_ROUTING's hooks end and LOCAL_IN's
 * begin. */
static __always_inline void on_nf_mid(const void *skb, int i)
{
	struct rx_slot *s = slot_pass(skb);

	if (s)
		s->ev.nf_mid[i & 1] = bpf_ktime_get_ns();
}

/* Is `s` the skb whose data sk_data_ready announces for this socket? */
static __always_inline bool sockq_takes(struct rx_slot *s, __u16 proto, __u16 num, __u16 dport,
					__u32 rcv_nxt)
{
	return s && s->state == SLOT_PASS && s->ev.ts[RX_TRANSPORT] && s->ev.flow.proto == proto &&
	       s->ev.flow.dport == num && (!dport || s->ev.flow.sport == bpf_ntohs(dport)) &&
	       (proto != IPPROTO_TCP || s->ev.seq_end == rcv_nxt ||
		/* The backlog merges a segment into the one before it (skb_try_coalesce):
		 * the merged skb is queued as one, as GRO's are. */
		((s->ev.flags & CHAIN_FROM_BACKLOG) && (int)(rcv_nxt - s->ev.seq_end) > 0));
}

/* sk_data_ready: emit the chain joined to its socket, and mark the socket for rx_read.
 * `typed`: sk is the hook's BTF argument (see sock_id). */
static __always_inline void on_sockq(const void *sk, bool typed)
{
	__u64 now = bpf_ktime_get_ns();
	struct sock *sko = sock_ro(sk);
	struct rx_chain_event *ev;
	struct drv_cache *drv;
	struct rx_slot *s;
	struct flow sf = {};
	void *rb;
	__u32 rcv_nxt = 0, netns;
	__u16 proto, dport, num;
	__u64 id, skb;

	/* A listener's data_ready announces a connection to accept, not data. */
	if (!inet_l4_sock(sko) || RD(sko, __sk_common.skc_state) == TCP_LISTEN)
		return;
	drv = drv_get();
	if (!drv)
		return;
	proto = RD(sko, sk_protocol);
	if (proto == IPPROTO_TCP)
		rcv_nxt = RD(KPTR(sk, struct tcp_sock), rcv_nxt);
	dport = RD(sko, __sk_common.skc_dport);
	id = sock_id(sk, as_scalar(drv, sk), typed);

	num = RD(sko, __sk_common.skc_num);
	/* The usual case: the skb that last passed rx_transport here is the one queued; else
	 * a reader's, taken from the backlog by tcp_probe. */
	s = drv->cur_skb ? slot_at(drv->cur_set, drv->cur_way, drv->cur_skb) : NULL;
	if (!sockq_takes(s, proto, num, dport, rcv_nxt)) {
		s = drv->bl_skb ? slot_at(drv->bl_set, drv->bl_way, drv->bl_skb) : NULL;
		if (!sockq_takes(s, proto, num, dport, rcv_nxt))
			s = NULL;
	}
	if (s) {
		skb = s->ev.skb;
		s->ev.ts[RX_SOCKQ] = now;
		s->ev.sk = id;
		s->ev.seq_end = rcv_nxt;
		if (s->ev.flags & CHAIN_HANDED_OVER) {
			/* The socket was free again in time: no backlog, drop the copy. */
			s->ev.flags &= ~CHAIN_HANDED_OVER;
			if (!bpf_map_delete_elem(&rx_backlog, &s->ev.skb))
				__sync_fetch_and_sub(&backlog_n, 1);
		}
		if (f_agg) {
			agg_rx_chain(&s->ev);
			/* No data, nothing for a read to wait for (a FIN, an empty datagram). */
			if (s->ev.payload)
				fifo_push(id, now, s->ev.ts[RX_NETIF],
					  /* A FIN after the data takes a sequence number that
					   * no read copies. */
					  rcv_nxt - !!(s->ev.flags & CHAIN_SEQ_FLAG), s->ev.ifindex,
					  proto, s->ev.netns);
		} else {
			emit(&s->ev, sizeof(s->ev));
		}
		s->state = SLOT_EMPTY;
		if (drv->cur_skb == skb)
			drv->cur_skb = 0;
		if (drv->bl_skb == skb)
			drv->bl_skb = 0;
		drv->last_q_sk = id;
		drv->last_q_seq = rcv_nxt;
		if (!f_agg)
			sock_mark(drv, id);
		return;
	}
	/* A second call for data already reported (kTLS and psock wrappers call it again). */
	if (proto == IPPROTO_TCP && drv->last_q_sk == id && drv->last_q_seq == rcv_nxt) {
		count(CNT_SOCKQ_DUP);
		return;
	}

	/* Data queued outside the softirq chain (TCP backlog, or rx_netif/rx_ip unseen). */
	netns = sock_netns(sko);
	sock_flow(sko, &sf);
	if (!netns_wanted(netns) || !flow_wanted(&sf))
		return;
	if (f_agg) {
		/* With --iface it only holds its place in the socket's queue (see below). */
		if (!f_ifindex)
			count(CNT_RX_CHAINS);
		fifo_push(id, now, 0, rcv_nxt, f_ifindex ? IFINDEX_PLACEHOLDER : 0, proto, netns);
		count(CNT_SOCKQ_UNJOINED);
		drv->last_q_sk = id;
		drv->last_q_seq = rcv_nxt;
		return;
	}
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = EV_RX_CHAIN;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts[RX_SOCKQ] = now;
	ev->sk = id;
	ev->flow = sf;
	ev->netns = netns;
	ev->seq_end = rcv_nxt;
	/* A socket does not say which interface its data came in on: with --iface the data
	 * only keeps its place in the socket's queue. */
	ev->flags = CHAIN_FROM_SOCK | (f_ifindex ? CHAIN_PLACEHOLDER : 0);
	rb_submit(rb, ev);
	count(CNT_SOCKQ_UNJOINED);
	drv->last_q_sk = id;
	drv->last_q_seq = rcv_nxt;
	sock_mark(drv, id);
}

/* A read in the kernel (f_agg): it takes from the socket's FIFO what it completes, as
 * Rust's on_read: a datagram, or the TCP data up to copied_seq. */
static __always_inline void agg_read(const void *sk, __u64 id)
{
	struct sock_fifo *f = bpf_map_lookup_elem(&rx_fifo, &id);
	__u64 now = bpf_ktime_get_ns();
	struct fifo_item *it;
	__u32 head, tail, copied = 0;
	bool tcp, took = false;

	if (!f)
		return;
	count(CNT_READS);
	if (!task_wanted(bpf_get_current_pid_tgid() >> 32))
		return;
	tcp = f->proto == IPPROTO_TCP;
	if (tcp)
		copied = RD(KPTR(sk, struct tcp_sock), copied_seq);
	head = f->head;
	tail = *(volatile __u32 *)&f->tail;
	for (int i = 0; i < FIFO_LEN; i++) {
		if (head == tail)
			break;
		it = &f->it[head & (FIFO_LEN - 1)];
		if (tcp && (int)(copied - it->end_seq) < 0)
			break;
		if (it->ifindex != IFINDEX_PLACEHOLDER) {
			agg_add(RX_SOCKQ, SP_RX_READ, f->proto, it->ifindex, f->netns,
				now > it->t_sockq ? now - it->t_sockq : 0);
			if (it->t_netif)
				agg_add(RX_NETIF, SP_RX_READ, f->proto, it->ifindex, f->netns,
					now > it->t_netif ? now - it->t_netif : 0);
		}
		took = true;
		head++;
		if (!tcp)
			break;
	}
	*(volatile __u32 *)&f->head = head;
	if (!took)
		count(CNT_READS_UNMATCHED);
}

/* sock_recv_length: one event per read on a socket that had traced data queued. */
static __always_inline void on_read(const void *sk, int ret, int flags, bool typed)
{
	struct sock *sko = sock_ro(sk);
	struct rx_read_event *ev;
	struct drv_cache *drv;
	void *rb;
	__u64 id, tid;
	__u16 proto;

	if (ret <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)))
		return;
	drv = drv_get();
	if (!drv)
		return;
	id = sock_id(sk, as_scalar(drv, sk), typed);
	if (f_agg) {
		agg_read(sk, id);
		return;
	}
	if (!sock_marked(drv, id))
		return;
	tid = bpf_get_current_pid_tgid();
	if (!task_wanted(tid >> 32))
		return;
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	proto = RD(sko, sk_protocol);
	ev->kind = EV_RX_READ;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->sk = id;
	ev->pid = (__u32)tid;
	ev->tgid = tid >> 32;
	ev->bytes = ret;
	ev->copied_seq = proto == IPPROTO_TCP ? RD(KPTR(sk, struct tcp_sock), copied_seq) : 0;
	ev->proto = proto;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	rb_submit(rb, ev);
}

/* inet_sock_set_state to TCP_CLOSE: the socket's join state ends (only sockets that had
 * traced data queued: others have none). */
static __always_inline void on_close(const void *sk, int newstate, bool typed)
{
	struct sock_close_event *ev;
	struct drv_cache *drv;
	void *rb;
	__u64 id;

	if (newstate != TCP_CLOSE_STATE)
		return;
	drv = drv_get();
	if (!drv)
		return;
	id = sock_id(sk, as_scalar(drv, sk), typed);
	if (f_agg) {
		struct sock_fifo *f = bpf_map_lookup_elem(&rx_fifo, &id);
		__u32 n = 0;

		if (!f)
			return;
		for (__u32 h = f->head, i = 0; i < FIFO_LEN && h != f->tail; h++, i++)
			n += f->it[h & (FIFO_LEN - 1)].ifindex != IFINDEX_PLACEHOLDER;
		if (n)
			count_n(CNT_UNREAD, n);
		bpf_map_delete_elem(&rx_fifo, &id);
		return;
	}
	if (!bpf_map_lookup_elem(&rx_socks, &id))
		return;
	bpf_map_delete_elem(&rx_socks, &id);
	drv->last_found = 0;
	drv->last_marked = 0;
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	ev->kind = EV_SOCK_CLOSE;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->sk = id;
	rb_submit(rb, ev);
}

#define NET_RX_VEC 3

/* softirq_raise / softirq_entry, NET_RX only: the softirq-delay context of chains. */
static __always_inline void on_sirq_raise(unsigned int vec)
{
	struct drv_cache *c;

	if (vec != NET_RX_VEC)
		return;
	c = drv_get();
	if (c && !c->nrx_raise)
		c->nrx_raise = bpf_ktime_get_ns();
}

static __always_inline void on_sirq_entry(unsigned int vec)
{
	struct drv_cache *c;

	if (vec != NET_RX_VEC)
		return;
	c = drv_get();
	if (!c)
		return;
	c->nrx_run_entry = bpf_ktime_get_ns();
	c->nrx_run_raise = c->nrx_raise;
	c->nrx_raise = 0;
}

/* ---- tp_btf: typed tracepoint arguments, direct (CO-RE relocated) loads ---- */

SEC("tp_btf/softirq_raise")
int BPF_PROG(rx_softirq_raise, unsigned int vec)
{
	on_sirq_raise(vec);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(rx_softirq_entry, unsigned int vec)
{
	on_sirq_entry(vec);
	return 0;
}

SEC("raw_tp/softirq_raise")
int BPF_PROG(rx_softirq_raise_raw, unsigned int vec)
{
	on_sirq_raise(vec);
	return 0;
}

SEC("raw_tp/softirq_entry")
int BPF_PROG(rx_softirq_entry_raw, unsigned int vec)
{
	on_sirq_entry(vec);
	return 0;
}

static __always_inline __u32 dev_netns(struct net_device *dev)
{
	return dev ? dev->nd_net.net->ns.inum : 0;
}

SEC("tp_btf/netif_rx")
int BPF_PROG(rx_driver_netif_rx, struct sk_buff *skb)
{
	on_driver(skb, (__u64)skb->head, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(rx_driver_gro, const struct sk_buff *skb)
{
	on_driver(skb, (__u64)skb->head, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/netif_receive_skb_entry")
int BPF_PROG(rx_driver_receive_entry, const struct sk_buff *skb)
{
	on_driver(skb, (__u64)skb->head, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(rx_netif_tp_btf, struct sk_buff *skb)
{
	on_netif(skb, (__u64)skb->head, skb->dev->ifindex, dev_netns(skb->dev));
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(rx_sockq_tp_btf, const struct sock *sk)
{
	on_sockq(sk, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(rx_read_tp_btf, struct sock *sk, int ret, int flags)
{
	on_read(sk, ret, flags, true);
	return 0;
}

/* ---- raw_tp: same tracepoints, untyped arguments, probe reads ---- */

static __always_inline __u32 skb_ifindex(struct sk_buff *skb)
{
	return BPF_CORE_READ(skb, dev, ifindex);
}

SEC("raw_tp/netif_rx")
int BPF_PROG(rx_driver_netif_rx_raw, struct sk_buff *skb)
{
	on_driver(skb, (__u64)BPF_CORE_READ(skb, head), skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/napi_gro_receive_entry")
int BPF_PROG(rx_driver_gro_raw, struct sk_buff *skb)
{
	on_driver(skb, (__u64)BPF_CORE_READ(skb, head), skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/netif_receive_skb_entry")
int BPF_PROG(rx_driver_receive_entry_raw, struct sk_buff *skb)
{
	on_driver(skb, (__u64)BPF_CORE_READ(skb, head), skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(rx_netif_raw, struct sk_buff *skb)
{
	on_netif(skb, (__u64)BPF_CORE_READ(skb, head), skb_ifindex(skb),
		 BPF_CORE_READ(skb, dev, nd_net.net, ns.inum));
	return 0;
}

SEC("raw_tp/sk_data_ready")
int BPF_PROG(rx_sockq_raw, struct sock *sk)
{
	on_sockq(sk, false);
	return 0;
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(rx_read_raw, struct sock *sk, int ret, int flags)
{
	on_read(sk, ret, flags, false);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(rx_backlog_tp_btf, struct sock *sk, const struct sk_buff *skb)
{
	on_tcp_segment(skb);
	return 0;
}

SEC("raw_tp/tcp_probe")
int BPF_PROG(rx_backlog_raw, struct sock *sk, const struct sk_buff *skb)
{
	on_tcp_segment(skb);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(rx_close_tp_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	on_close(sk, newstate, true);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(rx_close_raw, const struct sock *sk, const int oldstate, const int newstate)
{
	on_close(sk, newstate, false);
	return 0;
}

/* ---- netfilter: first PRE_ROUTING position = rx_ip, last LOCAL_IN position = rx_transport ---- */

SEC("netfilter")
int rx_ip_nf(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;

	on_ip(skb, skb->head, skb->network_header, skb->protocol, skb->len, skb->dev->ifindex,
	      dev_netns(skb->dev));
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_transport_nf(struct bpf_nf_ctx *ctx)
{
	on_transport(ctx->skb);
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_nf_pre_done_nf(struct bpf_nf_ctx *ctx)
{
	on_nf_mid(ctx->skb, 0);
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_nf_in_nf(struct bpf_nf_ctx *ctx)
{
	on_nf_mid(ctx->skb, 1);
	return NF_ACCEPT;
}

/*
 * ---- fentry and kprobe fallbacks: the netfilter BPF link came in 6.4, sk_data_ready and
 * sock_recv_length are younger than 6.1. Each fallback function runs where its tracepoint
 * or hook would, for the same skb or socket. ----
 */

static __always_inline void on_ip_skb(struct sk_buff *skb)
{
	on_ip(skb, BPF_CORE_READ(skb, head), BPF_CORE_READ(skb, network_header),
	      BPF_CORE_READ(skb, protocol), BPF_CORE_READ(skb, len), skb_ifindex(skb),
	      BPF_CORE_READ(skb, dev, nd_net.net, ns.inum));
}

/* NAPI batches enter IP through ip_list_rcv / ipv6_list_rcv, never through ip_rcv. A GRO
 * flush hands over gro_normal_batch (8) skbs at a time: 16 covers a doubled sysctl. */
#define IP_LIST_MAX 16

static __always_inline void on_ip_list(struct list_head *head)
{
	__u64 off = bpf_core_field_offset(struct sk_buff, list);
	struct list_head *pos = BPF_CORE_READ(head, next);

	for (int i = 0; i < IP_LIST_MAX; i++) {
		if (!pos || (__u64)pos == (__u64)head)
			break;
		on_ip_skb((struct sk_buff *)((__u64)pos - off));
		pos = BPF_CORE_READ(pos, next);
	}
}

/* Per function: an fentry and a kprobe program calling the same core logic. */
#define RX_FN(name, fn, call, ...)                                                                 \
	SEC("fentry/" #fn) int BPF_PROG(name##_fentry, ##__VA_ARGS__)                              \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}                                                                                          \
	SEC("kprobe/" #fn) int BPF_KPROBE(name##_kprobe, ##__VA_ARGS__)                            \
	{                                                                                          \
		call;                                                                              \
		return 0;                                                                          \
	}

RX_FN(rx_ip4, ip_rcv, on_ip_skb(skb), struct sk_buff *skb)
RX_FN(rx_ip6, ipv6_rcv, on_ip_skb(skb), struct sk_buff *skb)
RX_FN(rx_ip4_list, ip_list_rcv, on_ip_list(head), struct list_head *head)
RX_FN(rx_ip6_list, ipv6_list_rcv, on_ip_list(head), struct list_head *head)
RX_FN(rx_transport_tcp4, tcp_v4_rcv, on_transport(skb), struct sk_buff *skb)
RX_FN(rx_transport_tcp6, tcp_v6_rcv, on_transport(skb), struct sk_buff *skb)
RX_FN(rx_transport_udp4, udp_rcv, on_transport(skb), struct sk_buff *skb)
RX_FN(rx_transport_udp6, udpv6_rcv, on_transport(skb), struct sk_buff *skb)
/* sock_def_readable is TCP's and UDP's sk_data_ready (unless sockmap or kTLS replaced it):
 * the tracepoint sits right before that call. fentry's argument is typed; kprobe's is not. */
SEC("fentry/sock_def_readable")
int BPF_PROG(rx_sockq_fentry, struct sock *sk)
{
	on_sockq(sk, true);
	return 0;
}

SEC("kprobe/sock_def_readable")
int BPF_KPROBE(rx_sockq_kprobe, struct sock *sk)
{
	on_sockq(sk, false);
	return 0;
}

/* sock_recvmsg's return: sock_recv_length's place, minus recvmmsg (sock_recvmsg_nosec).
 * sock->sk is a walked pointer: its cookie is read, as sk_data_ready created it. */
SEC("fexit/sock_recvmsg")
int BPF_PROG(rx_read_fexit, struct socket *sock, struct msghdr *msg, int flags, int ret)
{
	on_read(sock->sk, ret, flags, false);
	return 0;
}

/* Only for sockets that had traced data queued. */
SOCK_CALL_MAP(rx_recv_calls);

SEC("kprobe/sock_recvmsg")
int BPF_KPROBE(rx_read_kprobe, struct socket *sock, struct msghdr *msg, int flags)
{
	struct sock_call rc = {.sk = (__u64)BPF_CORE_READ(sock, sk), .flags = flags};
	__u64 tid = bpf_get_current_pid_tgid();
	struct drv_cache *drv = drv_get();

	if (drv && (f_agg || sock_marked(drv, sock_id((void *)rc.sk, rc.sk, false))))
		bpf_map_update_elem(&rx_recv_calls, &tid, &rc, BPF_ANY);
	return 0;
}

SEC("kretprobe/sock_recvmsg")
int BPF_KRETPROBE(rx_read_kretprobe, int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct sock_call *rc = bpf_map_lookup_elem(&rx_recv_calls, &tid);
	struct sock_call c;

	if (!rc)
		return 0;
	c = *rc;
	bpf_map_delete_elem(&rx_recv_calls, &tid);
	on_read((void *)c.sk, ret, c.flags, false);
	return 0;
}

/* Referenced so that the skeleton generates these enums for Rust. */
enum event_kind _event_kind = 0;
enum rx_point _rx_point = 0;
enum chain_flags _chain_flags = 0;
enum counter _counter = 0;
enum slot_state _slot_state = 0;
struct rx_slot _rx_slot = {};
