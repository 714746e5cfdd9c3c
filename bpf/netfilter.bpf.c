// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * `netstack-lat netfilter`: time spent in netfilter per hook. Two netfilter BPF links
 * bracket each hook: nf_first at the first priority a link may take and nf_last at the
 * last, so the time between them is every hook function registered in between
 * (conntrack, NAT, iptables tables, nftables chains). A free of the skb while the bracket
 * is open is the traversal's drop verdict. Everything is aggregated per CPU in the kernel:
 * no ring buffer, Rust reads and sums the maps.
 */
#include "filter.bpf.h"
#include "hist.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NFPROTO_IPV4 2
#define NFPROTO_IPV6 10

/* Past this age an open slot is a traversal that never came back (stolen, queued). */
#define NF_STALE_NS 1000000000ULL

/* Set by Rust: possible CPUs, for the cross-CPU search when a task moved mid-traversal. */
const volatile __u32 nr_cpus = 1;

struct nf_cpu _nf_cpu = {};
struct nf_fn_key _nf_fn_key = {};
enum nf_fn_kind _nf_fn_kind = 0;
struct fine_hist fn_zero = {};
enum nf_sizes _nf_sizes = 0;
struct nf_hook_stats nf_zero = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_cpu);
} nf_open SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NF_KEYS);
	__type(key, __u32);
	__type(value, struct nf_hook_stats);
} nf_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct nf_fn_key);
	__type(value, struct fine_hist);
} nf_fn_stats SEC(".maps");

static __always_inline struct nf_hook_stats *stats_of(__u32 key)
{
	return bpf_map_lookup_elem(&nf_stats, &key);
}

/* Only the address and port filters need the headers: parse when one is set. */
static __always_inline bool packet_wanted(const struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *st = ctx->state;
	struct sk_buff *skb = ctx->skb;
	__u32 payload, seq, seq_end;
	struct flow f = {};

	if (f_ifindex) {
		const struct net_device *in = st->in, *out = st->out;

		if (!(in && in->ifindex == f_ifindex) && !(out && out->ifindex == f_ifindex))
			return false;
	}
	if (!f_port && !f_proto && !f_cidr_family)
		return true;
	if (parse_ip(skb->head, skb->network_header, skb->protocol, skb->len, &f, &payload, &seq,
		     &seq_end))
		return false; /* not TCP/UDP (or a later fragment): no ports to match */
	return flow_wanted(&f);
}

/* Free the slots of traversals that never came back (stolen, queued): only looked at when
 * every slot is taken, so the common path reads one slot. */
static __always_inline struct nf_slot *reclaim(struct nf_cpu *c, __u64 now)
{
	struct nf_slot *free = NULL;

	for (int i = 0; i < NF_SLOTS; i++) {
		struct nf_slot *s = &c->slot[i];
		struct nf_hook_stats *old;

		if (now - s->ts <= NF_STALE_NS)
			continue;
		old = stats_of(s->key);
		if (old && s->skip)
			old->filtered++;
		else if (old)
			old->unfinished++;
		s->skb = 0;
		free = s;
	}
	return free;
}

SEC("netfilter")
int nf_first(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *st = ctx->state;
	__u64 now = bpf_ktime_get_ns();
	struct nf_slot *free = NULL;
	__u32 zero = 0, key;
	struct nf_cpu *c;

	key = st->hook * 2 + (st->pf == NFPROTO_IPV6);
	if (key >= NF_KEYS)
		return NF_ACCEPT;
	c = bpf_map_lookup_elem(&nf_open, &zero);
	if (!c)
		return NF_ACCEPT;
	for (int i = 0; i < NF_SLOTS; i++) {
		if (!c->slot[i].skb) {
			free = &c->slot[i];
			break;
		}
	}
	if (!free)
		free = reclaim(c, now);
	if (!free) {
		/* Deeper nesting than NF_SLOTS: not measured, but counted. */
		struct nf_hook_stats *h = stats_of(key);

		if (h)
			h->unfinished++;
		return NF_ACCEPT;
	}
	free->skb = (__u64)ctx->skb;
	free->key = key;
	free->skip = 0;
	free->ts = now;
	if (f_ifindex || f_port || f_proto || f_cidr_family) {
		free->skip = !packet_wanted(ctx);
		/* Stamp after the parse, so it is not part of the measured time. */
		free->ts = bpf_ktime_get_ns();
	}
	return NF_ACCEPT;
}

static __always_inline struct nf_slot *find(struct nf_cpu *c, __u64 skb)
{
	for (int i = 0; i < NF_SLOTS; i++) {
		if (c->slot[i].skb == skb)
			return &c->slot[i];
	}
	return NULL;
}

/* The task moved CPU inside the traversal (preemptible process context): look elsewhere. */
static __always_inline struct nf_slot *find_any_cpu(__u64 skb)
{
	__u32 zero = 0;

	for (__u32 cpu = 0; cpu < 256; cpu++) {
		struct nf_cpu *c;
		struct nf_slot *s;

		if (cpu >= nr_cpus)
			break;
		c = bpf_map_lookup_percpu_elem(&nf_open, &zero, cpu);
		if (!c)
			continue;
		s = find(c, skb);
		if (s)
			return s;
	}
	return NULL;
}

SEC("netfilter")
int nf_last(struct bpf_nf_ctx *ctx)
{
	__u64 now = bpf_ktime_get_ns(), skb = (__u64)ctx->skb;
	struct nf_hook_stats *h;
	struct nf_slot *s;
	__u32 zero = 0;
	struct nf_cpu *c;

	c = bpf_map_lookup_elem(&nf_open, &zero);
	if (!c)
		return NF_ACCEPT;
	s = find(c, skb);
	if (!s)
		s = find_any_cpu(skb);
	if (!s)
		return NF_ACCEPT; /* opened before the tool started */
	h = stats_of(s->key);
	if (h) {
		if (s->skip)
			h->filtered++;
		else if (now >= s->ts)
			fine_hist_add(&h->lat, now - s->ts);
	}
	s->skb = 0;
	return NF_ACCEPT;
}

/* An skb freed while its bracket is open was dropped by a hook in between. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(nf_drop, struct sk_buff *skb)
{
	__u64 now = bpf_ktime_get_ns();
	struct nf_hook_stats *h;
	struct nf_slot *s;
	__u32 zero = 0;
	struct nf_cpu *c;

	c = bpf_map_lookup_elem(&nf_open, &zero);
	if (!c)
		return 0;
	s = find(c, (__u64)skb);
	if (!s)
		return 0;
	h = stats_of(s->key);
	if (h && s->skip) {
		h->filtered++;
	} else if (h) {
		h->drops++;
		if (now >= s->ts)
			h->drop_ns += now - s->ts;
	}
	s->skb = 0;
	return 0;
}

/*
 * ipt_do_table, ip6t_do_table and nft_do_chain themselves, per table or base chain, where
 * fentry programs load (Rust probes; on this 6.18 host they are refused). The bracket above
 * needs no function hooks: these only add the break-down by table and chain.
 */
static __always_inline void fn_enter(__u64 skb)
{
	__u32 zero = 0;
	struct nf_cpu *c = bpf_map_lookup_elem(&nf_open, &zero);
	__u64 now;

	if (!c)
		return;
	now = bpf_ktime_get_ns();
	for (int i = 0; i < NF_SLOTS; i++) {
		/* A call whose exit was never seen (attached mid-call) frees its slot in time. */
		if (!c->fn[i].skb || now - c->fn[i].ts > NF_STALE_NS) {
			c->fn[i].skb = skb;
			c->fn[i].ts = now;
			return;
		}
	}
}

/* Close the open call of `skb` (calls of one skb never nest), returning its time. */
static __always_inline __u64 fn_exit(__u64 skb)
{
	__u64 now = bpf_ktime_get_ns(), d = 0;
	__u32 zero = 0;
	struct nf_cpu *c = bpf_map_lookup_elem(&nf_open, &zero);

	if (!c)
		return 0;
	for (int i = NF_SLOTS - 1; i >= 0; i--) {
		if (c->fn[i].skb == skb) {
			if (now >= c->fn[i].ts)
				d = now - c->fn[i].ts;
			c->fn[i].skb = 0;
			return d;
		}
	}
	return 0;
}

static __always_inline void fn_record(struct nf_fn_key *k, __u64 d)
{
	struct fine_hist *h;

	if (!d)
		return;
	h = bpf_map_lookup_elem(&nf_fn_stats, k);
	if (!h) {
		bpf_map_update_elem(&nf_fn_stats, k, &fn_zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&nf_fn_stats, k);
		if (!h)
			return;
	}
	fine_hist_add(h, d);
}

static __always_inline void xt_exit(__u32 kind, const void *priv, struct sk_buff *skb,
				    const struct nf_hook_state *st)
{
	const struct xt_table *t = priv;
	struct nf_fn_key k = {};
	__u64 d = fn_exit((__u64)skb);

	k.kind = kind;
	k.hook = BPF_CORE_READ(st, hook);
	bpf_core_read_str(k.name, sizeof(k.name), &t->name);
	fn_record(&k, d);
}

SEC("fentry/ipt_do_table")
int BPF_PROG(nf_ipt_enter, void *priv, struct sk_buff *skb)
{
	fn_enter((__u64)skb);
	return 0;
}

SEC("fexit/ipt_do_table")
int BPF_PROG(nf_ipt_exit, void *priv, struct sk_buff *skb, const struct nf_hook_state *st)
{
	xt_exit(NF_FN_IPT_DO_TABLE, priv, skb, st);
	return 0;
}

SEC("fentry/ip6t_do_table")
int BPF_PROG(nf_ip6t_enter, void *priv, struct sk_buff *skb)
{
	fn_enter((__u64)skb);
	return 0;
}

SEC("fexit/ip6t_do_table")
int BPF_PROG(nf_ip6t_exit, void *priv, struct sk_buff *skb, const struct nf_hook_state *st)
{
	xt_exit(NF_FN_IP6T_DO_TABLE, priv, skb, st);
	return 0;
}

SEC("fentry/nft_do_chain")
int BPF_PROG(nf_nft_enter, struct nft_pktinfo *pkt)
{
	fn_enter((__u64)BPF_CORE_READ(pkt, skb));
	return 0;
}

SEC("fexit/nft_do_chain")
int BPF_PROG(nf_nft_exit, struct nft_pktinfo *pkt, void *priv)
{
	const struct nft_chain *chain = priv;
	struct nf_fn_key k = {};
	__u64 d = fn_exit((__u64)BPF_CORE_READ(pkt, skb));

	k.kind = NF_FN_NFT_DO_CHAIN;
	k.hook = BPF_CORE_READ(pkt, state, hook);
	bpf_probe_read_kernel_str(k.name, sizeof(k.name), BPF_CORE_READ(chain, name));
	fn_record(&k, d);
	return 0;
}
