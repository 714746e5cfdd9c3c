/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Every struct and enum that the Rust frontend reads. Rust sees them as the
 * skeleton's generated `types::*` (never hand copies), so change them here only.
 */
#ifndef NETSTACK_H
#define NETSTACK_H

#define COMM_LEN 16

enum event_kind {
	EV_RX_CHAIN = 1, /* an skb's receive timeline up to the socket queue */
	EV_RX_READ = 2,	 /* an application read on an inet socket */
};

/* Receive points, in path order; index into rx_chain_event.ts. */
enum rx_point {
	RX_DRIVER = 0,
	RX_NETIF = 1,
	RX_IP = 2,
	RX_TRANSPORT = 3,
	RX_SOCKQ = 4,
	RX_NPOINTS = 5,
};

/* Which kernel structure told us the flow of a chain. */
enum chain_flags {
	CHAIN_FROM_SOCK = 1, /* sockq seen without its skb: flow read from the socket */
	CHAIN_FLUSHED = 2,   /* never reached a socket queue (ACK, drop, forward, backlog) */
	CHAIN_AT_EXIT = 4,   /* read from the per-CPU slot when the tool stopped */
};

/* Addresses are network order, IPv4 in the first four bytes. Ports are host order. */
struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 _pad[2];
};

struct rx_chain_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts[RX_NPOINTS]; /* bpf_ktime_get_ns(); 0 = point not seen */
	__u64 skb;
	__u64 sk;
	struct flow flow;
	__u32 ifindex;
	__u32 netns;   /* network namespace inode */
	__u32 payload; /* transport payload bytes */
	__u32 seq_end; /* TCP: rcv_nxt after the segment was queued */
	__u32 flags;   /* enum chain_flags */
	__u32 _pad;
};

struct rx_read_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts;
	__u64 sk;
	__u32 pid; /* thread id */
	__u32 tgid;
	__s32 bytes;
	__u32 copied_seq; /* TCP: first byte not yet read, after this read */
	char comm[COMM_LEN];
	__u8 proto;
	__u8 _pad[7];
};

/* The per-CPU chain in flight; Rust reads leftovers at exit. */
enum slot_state {
	SLOT_EMPTY = 0, /* nothing in flight */
	SLOT_OPEN = 1,	/* seen at rx_netif, not yet parsed */
	SLOT_PASS = 2,	/* parsed and wanted by the filters */
	SLOT_SKIP = 3,	/* filtered out: later points ignore it */
};

struct rx_slot {
	struct rx_chain_event ev;
	__u32 state;
	__u32 _pad;
};

/* Per-CPU counters, summed by Rust; index into the `counters` array map. */
enum counter {
	CNT_LOST = 0,		/* ring buffer full: event dropped */
	CNT_DRV_MISS = 1,	/* rx_netif without a cached rx_driver stamp */
	CNT_SOCKQ_UNJOINED = 2, /* sockq event whose skb was not in flight on this CPU */
	CNT_CHAIN_FLUSHED = 3,	/* chains that ended before a socket queue */
	CNT_FILTERED = 4,	/* packets dropped by the BPF-side filters */
	CNT_EVENTS = 5,		/* events submitted */
	CNT_MAX = 8,
};

#endif /* NETSTACK_H */
