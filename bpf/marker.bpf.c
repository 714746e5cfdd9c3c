// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Marker capture at TC: the TCP payload bytes of the chosen ports, with the time the skb
 * passed, go to user space in chunks; Rust follows each stream there and parses the marker
 * field. Parsing in BPF would mean a byte loop per packet and per-flow state to find a
 * field split across segments; here a segment costs a header parse and a copy.
 *
 * One program per capture point (marker_p0 .. marker_p7): the point is a constant of the
 * program, so no map lookup tells which interface and direction this is.
 */
#include "filter.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TC_ACT_UNSPEC (-1) /* tcx: next program; clsact: the next filter or the default */
#define TCP_FIN	      0x01
#define TCP_SYN	      0x02
#define TCP_RST	      0x04
#define IP_FRAG	      0x3fff /* MF flag or a fragment offset */

struct marker_event _marker_event = {};
struct marker_hdr _marker_hdr = {};
enum marker_flags _marker_flags = 0;
enum marker_counter _marker_counter = 0;

/* Ports whose payloads are read (host order); n_ports of them are set. */
const volatile __u16 ports[MARKER_PORTS] = {};
const volatile __u32 n_ports = 0;
/* Bytes before the IP header at each point: 14 on Ethernet, 0 on L3 devices (tun, wg). */
const volatile __u8 l2_len[MARKER_POINTS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} marker_events SEC(".maps");

/*
 * Wake the reader each time the queue grows past another WAKE_BYTES, not per chunk: a wakeup
 * (an irq_work self-IPI) cost ~2 us here, ten times the copy. Waking whenever the queue is
 * above the mark would wake per chunk again until the reader has drained it. The reader also
 * polls every 100 ms, and the times come from here, not from it.
 */
#define WAKE_BYTES (64 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MKC_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} marker_counts SEC(".maps");

static __always_inline void add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&marker_counts, &idx);

	if (v)
		*v += n;
}

static __always_inline bool port_wanted(__u16 sport, __u16 dport)
{
	for (__u32 i = 0; i < MARKER_PORTS; i++) {
		if (i >= n_ports)
			break;
		if (ports[i] == sport || ports[i] == dport)
			return true;
	}
	return false;
}

/*
 * One chunk to the ring buffer: the header, then `n` payload bytes from `off`, in a record
 * of `cap` data bytes (a constant at each call, as the reserve needs).
 */
static __always_inline int emit_chunk(struct __sk_buff *skb, const struct marker_hdr *h, __u32 off,
				      __u64 n, const __u64 cap)
{
	struct marker_event *e;
	__u64 queued = bpf_ringbuf_query(&marker_events, BPF_RB_AVAIL_DATA), last;
	bool wake;

	e = bpf_ringbuf_reserve(&marker_events, sizeof(struct marker_hdr) + cap, 0);
	if (!e) {
		add(MKC_LOST, 1);
		return -1;
	}
	e->h = *h;
	/*
	 * The helper wants a length the verifier knows is in [1, cap]. Older verifiers lose a
	 * lower bound checked on another copy of n, so check and pass one opaque register
	 * (n = 0, a bare SYN or FIN, wraps above cap and reads nothing).
	 */
	last = n - 1;
	barrier_var(last);
	if (last < cap && bpf_skb_load_bytes(skb, off, e->data, last + 1)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return -1;
	}
	wake = bpf_ringbuf_query(&marker_events, BPF_RB_AVAIL_DATA) / WAKE_BYTES !=
	       queued / WAKE_BYTES;
	bpf_ringbuf_submit(e, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	return 0;
}

static __always_inline int inspect(struct __sk_buff *skb, __u32 point)
{
	struct marker_hdr h = {};
	struct nsl_l4 tcp;
	struct flow *f = &h.flow;
	__u32 off = l2_len[point & (MARKER_POINTS - 1)];
	__u32 l4, end, poff, plen, done;
	__u8 flags = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct nsl_ip4 ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return TC_ACT_UNSPEC;
		if (ip.proto != IPPROTO_TCP || (ip.frag_off & bpf_htons(IP_FRAG)))
			return TC_ACT_UNSPEC;
		l4 = off + (ip.vihl & 0xf) * 4;
		/* tot_len is 0 on BIG TCP packets: then the skb's own length bounds them. */
		end = ip.tot_len ? off + bpf_ntohs(ip.tot_len) : skb->len;
		f->family = AF_INET;
		__builtin_memcpy(f->saddr, ip.saddr, 4);
		__builtin_memcpy(f->daddr, ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct nsl_ip6 ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return TC_ACT_UNSPEC;
		/* TCP right after the fixed header; extension headers are not followed. */
		if (ip6.nexthdr != IPPROTO_TCP)
			return TC_ACT_UNSPEC;
		l4 = off + sizeof(ip6);
		end = ip6.payload_len ? l4 + bpf_ntohs(ip6.payload_len) : skb->len;
		f->family = AF_INET6;
		__builtin_memcpy(f->saddr, ip6.saddr, 16);
		__builtin_memcpy(f->daddr, ip6.daddr, 16);
	} else {
		return TC_ACT_UNSPEC;
	}
	if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
		return TC_ACT_UNSPEC;
	f->proto = IPPROTO_TCP;
	f->sport = bpf_ntohs(tcp.sport);
	f->dport = bpf_ntohs(tcp.dport);
	if (!port_wanted(f->sport, f->dport))
		return TC_ACT_UNSPEC;

	if (end > skb->len) /* Ethernet padding is past tot_len, never the other way */
		end = skb->len;
	poff = l4 + (tcp.doff_res >> 4) * 4;
	plen = end > poff ? end - poff : 0;
	if (tcp.tcp_flags & TCP_SYN)
		flags |= MKF_SYN;
	if (tcp.tcp_flags & TCP_FIN)
		flags |= MKF_FIN;
	if (tcp.tcp_flags & TCP_RST)
		flags |= MKF_RST;
	if (!plen && !flags)
		return TC_ACT_UNSPEC; /* a bare ACK: nothing to follow */

	h.ts = bpf_ktime_get_ns();
	h.seg_len = plen;
	h.point = point;
	if (plen) {
		add(MKC_SEGMENTS, 1);
		add(MKC_BYTES, plen);
	}
	for (__u32 i = 0; i < MARKER_CHUNKS; i++) {
		__u64 n;

		done = i * MARKER_CHUNK;
		if (i > 0 && done >= plen)
			break;
		n = plen - done;
		if (n > MARKER_CHUNK)
			n = MARKER_CHUNK;
		h.seq = bpf_ntohl(tcp.seq) + done;
		h.len = n;
		/* SYN opens the stream before the first chunk, FIN closes it after the last. */
		h.flags = flags & (i == 0 ? (MKF_SYN | MKF_RST) : 0);
		if (done + n >= plen)
			h.flags |= flags & MKF_FIN;
		if (n <= MARKER_SMALL ? emit_chunk(skb, &h, poff + done, n, MARKER_SMALL)
				      : emit_chunk(skb, &h, poff + done, n, MARKER_CHUNK))
			return TC_ACT_UNSPEC;
	}
	if (plen > MARKER_CHUNKS * MARKER_CHUNK)
		add(MKC_TRUNCATED, plen - MARKER_CHUNKS * MARKER_CHUNK);
	return TC_ACT_UNSPEC;
}

#define POINT(n)                                                                                   \
	SEC("tc")                                                                                  \
	int marker_p##n(struct __sk_buff *skb)                                                     \
	{                                                                                          \
		return inspect(skb, n);                                                            \
	}

POINT(0)
POINT(1)
POINT(2)
POINT(3)
POINT(4)
POINT(5)
POINT(6)
POINT(7)
