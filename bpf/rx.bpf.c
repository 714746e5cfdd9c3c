// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Receive path: rx_driver -> rx_netif -> rx_ip -> rx_transport -> rx_sockq, and rx_read.
 *
 * rx_driver -> rx_netif crosses a queue (backlog or GRO) that is drained on the CPU that
 * filled it (unless RPS steers it elsewhere), so it is joined by skb pointer in a per-CPU
 * direct-mapped cache: no hash operation, nothing to expire, a miss is merely counted.
 * From rx_netif to the socket queue the kernel runs one skb at a time on one CPU, so a
 * per-CPU slot carries the chain. The chain is emitted once, when the socket queue takes
 * it (or when the next skb reuses the slot). Reads are emitted per call, only on sockets
 * that had traced data queued (an LRU set marks them); Rust joins them to queued data
 * by socket (UDP: FIFO, TCP: sequence numbers), so GRO and coalescing do not break it.
 *
 * Every point has several programs (tp_btf first, then raw_tp, netfilter or fentry);
 * Rust enables exactly one per point after probing the kernel.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Dummy instances so that the skeleton generates the Rust types. */
struct rx_chain_event _rx_chain_event = {};
struct rx_read_event _rx_read_event = {};

#define DRV_CACHE 512 /* more than a NAPI budget (64) of skbs in flight per CPU */

struct drv_cache {
	__u64 skb[DRV_CACHE];
	__u64 ts[DRV_CACHE];
	__u64 scratch;
	/* Last socket marked / found marked on this CPU: consecutive packets and reads are
	 * mostly on the same socket, so the LRU lookup is skipped for them. */
	__u64 last_marked;
	__u64 last_found;
	/* NET_RX on this CPU: first raise since it last ran, and the current run's raise and
	 * entry times, which chains opened during the run carry. */
	__u64 nrx_raise;
	__u64 nrx_run_raise;
	__u64 nrx_run_entry;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drv_cache);
} rx_drv SEC(".maps");

/*
 * Sockets that had traced data queued: reads on any other socket cost one lookup. An LRU
 * hash, not socket storage: sk_storage_get measured ~100 ns a call here, this ~20 ns;
 * a reused socket address at worst reports reads the frontend cannot match (counted).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} rx_socks SEC(".maps");

/*
 * The verifier allows no arithmetic on a kernel pointer; a store to map memory and a
 * load back (two instructions) make it a plain number to hash.
 */
static __always_inline __u64 as_scalar(struct drv_cache *c, const void *p)
{
	*(volatile __u64 *)&c->scratch = (__u64)p;
	return *(volatile __u64 *)&c->scratch;
}

static __always_inline __u32 drv_index(__u64 skb)
{
	/* skbs come from a slab of 256-byte objects: drop the low bits, fold the rest. */
	return ((skb >> 8) ^ (skb >> 17)) & (DRV_CACHE - 1);
}

static __always_inline struct drv_cache *drv_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rx_drv, &zero);
}

static __always_inline void sock_mark(const void *sk)
{
	struct drv_cache *c = drv_get();
	__u8 one = 1;
	__u64 key;

	if (!c)
		return;
	key = as_scalar(c, sk);
	if (c->last_marked == key)
		return;
	if (!bpf_map_lookup_elem(&rx_socks, &key))
		bpf_map_update_elem(&rx_socks, &key, &one, BPF_ANY);
	c->last_marked = key;
}

static __always_inline bool sock_marked(const void *sk)
{
	struct drv_cache *c = drv_get();
	__u64 key;

	if (!c)
		return false;
	key = as_scalar(c, sk);
	if (c->last_found == key)
		return true;
	if (!bpf_map_lookup_elem(&rx_socks, &key))
		return false;
	c->last_found = key;
	return true;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_slot);
} rx_slot SEC(".maps");

static __always_inline struct rx_slot *slot_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rx_slot, &zero);
}

/* A chain that passed the filters but never reached a socket queue still has spans. */
static __always_inline void slot_flush(struct rx_slot *s)
{
	if (s->state == SLOT_PASS && s->ev.ts[RX_IP]) {
		s->ev.flags |= CHAIN_FLUSHED;
		emit(&s->ev, sizeof(s->ev));
		count(CNT_CHAIN_FLUSHED);
	}
	s->state = SLOT_EMPTY;
}

/* drv: this CPU's cache, where the current NET_RX run's times are (NULL: unknown). */
static __always_inline void slot_open(struct rx_slot *s, struct drv_cache *drv, __u64 skb,
				      __u32 ifindex, __u32 netns)
{
	slot_flush(s);
	__builtin_memset(&s->ev, 0, sizeof(s->ev));
	s->ev.kind = EV_RX_CHAIN;
	s->ev.cpu = bpf_get_smp_processor_id();
	s->ev.skb = skb;
	s->ev.ifindex = ifindex;
	s->ev.netns = netns;
	s->state = SLOT_OPEN;
	if (drv) {
		s->ev.sirq_raise = drv->nrx_run_raise;
		s->ev.sirq_entry = drv->nrx_run_entry;
	}
	if ((f_ifindex && ifindex != f_ifindex) || (netns && !netns_wanted(netns))) {
		s->state = SLOT_SKIP;
		count(CNT_FILTERED);
	}
}

/* ---- core logic, one function per point; the hooks below only fetch arguments ---- */

static __always_inline void on_driver(const void *skbp, __u32 ifindex)
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
	i = drv_index(skb);
	/* The first driver-level sighting wins (GRO entry, then netif_receive_skb_entry). */
	if (c->skb[i] == skb)
		return;
	c->skb[i] = skb;
	c->ts[i] = bpf_ktime_get_ns();
}

static __always_inline void on_netif(const void *skbp, __u32 ifindex, __u32 netns)
{
	__u64 now = bpf_ktime_get_ns();
	struct rx_slot *s = slot_get();
	struct drv_cache *drv = drv_get();
	__u64 skb;
	__u32 i;

	if (!s || !drv)
		return;
	skb = as_scalar(drv, skbp);
	slot_open(s, drv, skb, ifindex, netns);
	s->ev.ts[RX_NETIF] = now;
	i = drv_index(skb);
	if (drv->skb[i] == skb) {
		s->ev.ts[RX_DRIVER] = drv->ts[i];
		drv->skb[i] = 0;
	} else {
		count(CNT_DRV_MISS);
	}
}

static __always_inline void on_ip(__u64 skb, unsigned char *head, __u16 nh, __be16 protocol,
				  __u32 ifindex, __u32 netns)
{
	__u64 now = bpf_ktime_get_ns();
	struct rx_slot *s = slot_get();
	__u32 seq;

	if (!s)
		return;
	if (s->state == SLOT_EMPTY || s->ev.skb != skb)
		slot_open(s, drv_get(), skb, ifindex, netns); /* rx_netif not seen: start here */
	if (s->state != SLOT_OPEN)
		return;
	if (parse_ip(head, nh, protocol, &s->ev.flow, &s->ev.payload, &seq, &s->ev.seq_end) ||
	    !flow_wanted(&s->ev.flow)) {
		s->state = SLOT_SKIP;
		count(CNT_FILTERED);
		return;
	}
	s->state = SLOT_PASS;
	s->ev.ts[RX_IP] = now;
}

static __always_inline void on_transport(__u64 skb)
{
	struct rx_slot *s = slot_get();

	if (s && s->state == SLOT_PASS && s->ev.skb == skb && !s->ev.ts[RX_TRANSPORT])
		s->ev.ts[RX_TRANSPORT] = bpf_ktime_get_ns();
}

/* The netfilter split of rx_ip -> rx_transport: where PRE_ROUTING's hooks end and LOCAL_IN's
 * begin. */
static __always_inline void on_nf_mid(__u64 skb, int i)
{
	struct rx_slot *s = slot_get();

	if (s && s->state == SLOT_PASS && s->ev.skb == skb)
		s->ev.nf_mid[i & 1] = bpf_ktime_get_ns();
}

/* sk_data_ready: emit the chain joined to its socket, and mark the socket for rx_read. */
static __always_inline void on_sockq(const void *sk)
{
	__u64 now = bpf_ktime_get_ns();
	struct sock *sko = sock_ro(sk);
	struct rx_chain_event *ev;
	struct rx_slot *s;
	struct flow sf = {};
	void *rb;
	__u32 rcv_nxt = 0;
	__u16 proto, dport;

	/* A listener's data_ready announces a connection to accept, not data. */
	if (!inet_l4_sock(sko) || RD(sko, __sk_common.skc_state) == TCP_LISTEN)
		return;
	s = slot_get();
	if (!s)
		return;
	proto = RD(sko, sk_protocol);
	if (proto == IPPROTO_TCP)
		rcv_nxt = RD(KPTR(sk, struct tcp_sock), rcv_nxt);
	dport = RD(sko, __sk_common.skc_dport);

	/* The usual case: the skb in flight on this CPU is the one being queued. */
	if (s->state == SLOT_PASS && s->ev.ts[RX_TRANSPORT] && s->ev.flow.proto == proto &&
	    s->ev.flow.dport == RD(sko, __sk_common.skc_num) &&
	    (!dport || s->ev.flow.sport == bpf_ntohs(dport)) &&
	    (proto != IPPROTO_TCP || s->ev.seq_end == rcv_nxt)) {
		s->ev.ts[RX_SOCKQ] = now;
		s->ev.sk = (__u64)sk;
		s->ev.seq_end = rcv_nxt;
		emit(&s->ev, sizeof(s->ev));
		s->state = SLOT_EMPTY;
		sock_mark(sk);
		return;
	}

	/*
	 * Data queued outside the softirq chain (TCP backlog, or rx_netif/rx_ip unseen). A
	 * socket does not say which interface its data came in on: with --iface, only joined
	 * chains count.
	 */
	if (f_ifindex)
		return;
	__u32 netns = sock_netns(sko);

	sock_flow(sko, &sf);
	if (!netns_wanted(netns) || !flow_wanted(&sf))
		return;
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = EV_RX_CHAIN;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts[RX_SOCKQ] = now;
	ev->sk = (__u64)sk;
	ev->flow = sf;
	ev->netns = netns;
	ev->seq_end = rcv_nxt;
	ev->flags = CHAIN_FROM_SOCK;
	rb_submit(rb, ev);
	count(CNT_SOCKQ_UNJOINED);
	sock_mark(sk);
}

/* sock_recv_length: one event per read on a socket that had traced data queued. */
static __always_inline void on_read(const void *sk, int ret, int flags)
{
	struct sock *sko = sock_ro(sk);
	struct rx_read_event *ev;
	void *rb;
	__u64 id;
	__u16 proto;

	if (ret <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)))
		return;
	if (!sock_marked(sk))
		return;
	id = bpf_get_current_pid_tgid();
	if (!task_wanted(id >> 32))
		return;
	ev = rb_reserve(&rb, sizeof(*ev));
	if (!ev)
		return;
	proto = RD(sko, sk_protocol);
	ev->kind = EV_RX_READ;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->sk = (__u64)sk;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->bytes = ret;
	ev->copied_seq = proto == IPPROTO_TCP ? RD(KPTR(sk, struct tcp_sock), copied_seq) : 0;
	ev->proto = proto;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
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
	on_driver(skb, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(rx_driver_gro, const struct sk_buff *skb)
{
	on_driver(skb, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/netif_receive_skb_entry")
int BPF_PROG(rx_driver_receive_entry, const struct sk_buff *skb)
{
	on_driver(skb, skb->dev->ifindex);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(rx_netif_tp_btf, struct sk_buff *skb)
{
	on_netif(skb, skb->dev->ifindex, dev_netns(skb->dev));
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(rx_sockq_tp_btf, const struct sock *sk)
{
	on_sockq(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(rx_read_tp_btf, struct sock *sk, int ret, int flags)
{
	on_read(sk, ret, flags);
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
	on_driver(skb, skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/napi_gro_receive_entry")
int BPF_PROG(rx_driver_gro_raw, struct sk_buff *skb)
{
	on_driver(skb, skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/netif_receive_skb_entry")
int BPF_PROG(rx_driver_receive_entry_raw, struct sk_buff *skb)
{
	on_driver(skb, skb_ifindex(skb));
	return 0;
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(rx_netif_raw, struct sk_buff *skb)
{
	on_netif(skb, skb_ifindex(skb), BPF_CORE_READ(skb, dev, nd_net.net, ns.inum));
	return 0;
}

SEC("raw_tp/sk_data_ready")
int BPF_PROG(rx_sockq_raw, struct sock *sk)
{
	on_sockq(sk);
	return 0;
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(rx_read_raw, struct sock *sk, int ret, int flags)
{
	on_read(sk, ret, flags);
	return 0;
}

/* ---- netfilter: first PRE_ROUTING position = rx_ip, last LOCAL_IN position = rx_transport ---- */

SEC("netfilter")
int rx_ip_nf(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;

	on_ip((__u64)skb, skb->head, skb->network_header, skb->protocol, skb->dev->ifindex,
	      dev_netns(skb->dev));
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_transport_nf(struct bpf_nf_ctx *ctx)
{
	on_transport((__u64)ctx->skb);
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_nf_pre_done_nf(struct bpf_nf_ctx *ctx)
{
	on_nf_mid((__u64)ctx->skb, 0);
	return NF_ACCEPT;
}

SEC("netfilter")
int rx_nf_in_nf(struct bpf_nf_ctx *ctx)
{
	on_nf_mid((__u64)ctx->skb, 1);
	return NF_ACCEPT;
}

/*
 * ---- fentry and kprobe fallbacks: the netfilter BPF link came in 6.4, sk_data_ready and
 * sock_recv_length are younger than 6.1. Each fallback function runs where its tracepoint
 * or hook would, for the same skb or socket. ----
 */

static __always_inline void on_ip_skb(struct sk_buff *skb)
{
	on_ip((__u64)skb, BPF_CORE_READ(skb, head), BPF_CORE_READ(skb, network_header),
	      BPF_CORE_READ(skb, protocol), skb_ifindex(skb),
	      BPF_CORE_READ(skb, dev, nd_net.net, ns.inum));
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
RX_FN(rx_transport_tcp4, tcp_v4_rcv, on_transport((__u64)skb), struct sk_buff *skb)
RX_FN(rx_transport_tcp6, tcp_v6_rcv, on_transport((__u64)skb), struct sk_buff *skb)
RX_FN(rx_transport_udp4, udp_rcv, on_transport((__u64)skb), struct sk_buff *skb)
RX_FN(rx_transport_udp6, udpv6_rcv, on_transport((__u64)skb), struct sk_buff *skb)
/* sock_def_readable is TCP's and UDP's sk_data_ready (unless sockmap or kTLS replaced it):
 * the tracepoint sits right before that call. */
RX_FN(rx_sockq, sock_def_readable, on_sockq(sk), struct sock *sk)

/* sock_recvmsg's return: sock_recv_length's place, minus recvmmsg (sock_recvmsg_nosec). */
SEC("fexit/sock_recvmsg")
int BPF_PROG(rx_read_fexit, struct socket *sock, struct msghdr *msg, int flags, int ret)
{
	on_read(sock->sk, ret, flags);
	return 0;
}

/* Only for sockets that had traced data queued. */
SOCK_CALL_MAP(rx_recv_calls);

SEC("kprobe/sock_recvmsg")
int BPF_KPROBE(rx_read_kprobe, struct socket *sock, struct msghdr *msg, int flags)
{
	struct sock_call rc = {.sk = (__u64)BPF_CORE_READ(sock, sk), .flags = flags};
	__u64 id = bpf_get_current_pid_tgid();

	if (sock_marked((void *)rc.sk))
		bpf_map_update_elem(&rx_recv_calls, &id, &rc, BPF_ANY);
	return 0;
}

SEC("kretprobe/sock_recvmsg")
int BPF_KRETPROBE(rx_read_kretprobe, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock_call *rc = bpf_map_lookup_elem(&rx_recv_calls, &id);
	struct sock_call c;

	if (!rc)
		return 0;
	c = *rc;
	bpf_map_delete_elem(&rx_recv_calls, &id);
	on_read((void *)c.sk, ret, c.flags);
	return 0;
}

/* Referenced so that the skeleton generates these enums for Rust. */
enum event_kind _event_kind = 0;
enum rx_point _rx_point = 0;
enum chain_flags _chain_flags = 0;
enum counter _counter = 0;
enum slot_state _slot_state = 0;
struct rx_slot _rx_slot = {};
