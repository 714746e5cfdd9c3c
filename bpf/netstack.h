/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Every struct and enum that the Rust frontend reads. Rust sees them as the
 * skeleton's generated `types::*` (never hand copies), so change them here only.
 */
#ifndef NETSTACK_H
#define NETSTACK_H

#define COMM_LEN 16

enum event_kind {
	EV_RX_CHAIN = 1,   /* an skb's receive timeline up to the socket queue */
	EV_RX_READ = 2,	   /* an application read on an inet socket */
	EV_TX_CHAIN = 3,   /* an skb's transmit timeline from LOCAL_OUT on */
	EV_TX_SEND = 4,	   /* a TCP write started: its first sequence number */
	EV_TX_HELD = 5,	   /* a TCP write returned with data held in the socket */
	EV_SOCK_CLOSE = 6, /* a TCP socket reached TCP_CLOSE: its join state ends */
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

/* Transmit points, in path order; index into tx_chain_event.ts. */
enum tx_point {
	TX_SEND = 0,
	TX_TRANSPORT = 1,
	TX_NF_DONE = 2,
	TX_QDISC_ENQ = 3,
	TX_QDISC_DEQ = 4,
	TX_DRIVER = 5,
	TX_DONE = 6,
	TX_FREE = 7,
	TX_NPOINTS = 8,
};

/* How a transmit chain ended or what it carries. */
enum tx_flags {
	TXF_TASK = 1,	 /* sent in the sender's context: tgid/pid/comm are the sender */
	TXF_EVICTED = 2, /* pushed out of the per-CPU cache before completing */
	TXF_DROPPED = 4, /* freed by kfree_skb (a drop) before the driver took it */
	TXF_QUEUED = 8,	 /* waited in a qdisc (qdisc_enqueue seen) */
	TXF_AT_EXIT = 16,
};

/* Why data of a TCP write was still in the socket when the write returned. */
enum tx_held_reason {
	HELD_NAGLE = 1, /* Nagle: small segment, unacked data in flight, no TCP_NODELAY */
	HELD_CORK = 2,	/* TCP_CORK or MSG_MORE */
};

/* Which kernel structure told us the flow of a chain. */
enum chain_flags {
	CHAIN_FROM_SOCK = 1, /* sockq seen without its skb: flow read from the socket */
	CHAIN_FLUSHED = 2,   /* never reached a socket queue (ACK, drop, forward, backlog) */
	CHAIN_AT_EXIT = 4,   /* read from the per-CPU cache when the tool stopped */
	/* Queued outside the softirq chain while --iface is set: the interface is unknown, so
	 * the datagram is not counted, but it holds its place in the socket's queue. */
	CHAIN_PLACEHOLDER = 8,
	CHAIN_SEQ_FLAG = 16,	 /* TCP: a SYN or FIN took a sequence number (seq_end counts it) */
	CHAIN_HANDED_OVER = 32,	 /* BPF-internal: a copy waits in rx_backlog */
	CHAIN_FROM_BACKLOG = 64, /* queued by a reader from the TCP backlog */
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
	__u64 sk; /* socket id: its cookie (unique per boot), else its address (see sock_id) */
	struct flow flow;
	__u32 ifindex;
	__u32 netns;   /* network namespace inode */
	__u32 payload; /* transport payload bytes */
	__u32 seq_end; /* TCP: rcv_nxt after the segment was queued */
	__u32 flags;   /* enum chain_flags */
	__u32 _pad;
	/* The NET_RX run that processed the skb: when it was first raised and when it began. */
	__u64 sirq_raise;
	__u64 sirq_entry;
	/* Between the two netfilter hooks: [0] the last PRE_ROUTING priority (routing next),
	 * [1] the first LOCAL_IN priority. 0 = not seen. */
	__u64 nf_mid[2];
};

struct rx_read_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts;
	__u64 sk;  /* socket id, as in rx_chain_event */
	__u32 pid; /* thread id */
	__u32 tgid;
	__s32 bytes;
	__u32 copied_seq; /* TCP: first byte not yet read, after this read */
	char comm[COMM_LEN];
	__u8 proto;
	__u8 _pad[7];
};

struct tx_chain_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts[TX_NPOINTS]; /* 0 = point not seen */
	__u64 skb;
	__u64 sk;	  /* socket id, as in rx_chain_event */
	struct flow flow; /* packet direction: source = local */
	__u32 ifindex;	  /* output device */
	__u32 netns;
	__u32 payload;
	__u32 seq;   /* TCP: sequence number of the first payload byte */
	__u32 flags; /* enum tx_flags */
	__u32 pid;
	__u32 tgid;
	__u32 _pad;
	char comm[COMM_LEN];
	/* Between the two netfilter hooks: [0] the last LOCAL_OUT priority, [1] the first
	 * POST_ROUTING priority. 0 = not seen. */
	__u64 nf_mid[2];
};

/* TCP writes: EV_TX_SEND at the start, EV_TX_HELD at the end when data stayed behind. */
struct tx_send_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts;
	__u64 sk;
	struct flow flow;
	__u32 seq;	   /* SEND: write_seq at the start; HELD: the write's start */
	__u32 seq_end;	   /* HELD: write_seq at the end */
	__u32 snd_nxt;	   /* HELD: first byte not yet sent */
	__u32 packets_out; /* HELD: unacknowledged segments in flight */
	__u32 reason;	   /* HELD: enum tx_held_reason */
	__u32 nonagle;	   /* tcp_sock.nonagle bits (OFF 1, CORK 2, PUSH 4) */
	__u32 msg_flags;
	__u32 pid;
	__u32 tgid;
	__u32 _pad;
	char comm[COMM_LEN];
};

/* A TCP socket's end: Rust drops what it kept for the socket. */
struct sock_close_event {
	__u32 kind;
	__u32 cpu;
	__u64 ts;
	__u64 sk; /* socket id */
};

/* A chain in flight in the per-CPU cache; Rust reads leftovers at exit. */
enum slot_state {
	SLOT_EMPTY = 0, /* nothing in flight */
	SLOT_OPEN = 1,	/* seen at rx_netif, not yet parsed */
	SLOT_PASS = 2,	/* parsed and wanted by the filters */
	SLOT_SKIP = 3,	/* filtered out: later points ignore it */
};

struct rx_slot {
	struct rx_chain_event ev;
	__u64 head; /* skb->head at rx_netif: a reused skb address has another buffer */
	__u32 state;
	__u32 _pad;
};

/* The per-CPU chain cache (rx_chains): RX_SETS sets of RX_WAYS chains. A per-CPU map value
 * is at most 32 KiB, so a set is one value and the sets are the map's keys. */
enum rx_cache_size {
	RX_WAYS = 2,
	RX_SETS = 512,
};

struct rx_set {
	struct rx_slot w[RX_WAYS];
};

/* ---- histograms kept in the kernel (softirq, netfilter): Rust rebuilds exact stats ---- */

/* Log-linear buckets as in src/stats/hist.rs: 16 per power of two; the last one also holds
 * everything above (about 17 s), whose exact max is kept apart. */
#define FINE_BUCKETS 512

struct fine_hist {
	__u64 count;
	__u64 sum;
	__u64 min_plus1; /* 0 = empty */
	__u64 max;
	__u64 b[FINE_BUCKETS];
};

/* ---- softirq: aggregated in the kernel (softirqs are far more frequent than packets) ---- */

#define NR_SOFTIRQS_MAX 10

enum sirq_kind {
	SIRQ_DELAY = 0, /* raise -> entry */
	SIRQ_RUN = 1,	/* entry -> exit */
	SIRQ_KINDS = 2,
};

/* Per CPU and vector. */
struct sirq_counts {
	__u64 raised;	 /* softirq_raise calls */
	__u64 entered;	 /* handler runs (what /proc/softirqs counts) */
	__u64 ksoftirqd; /* runs in ksoftirqd rather than on IRQ exit or BH enable */
	__u64 _pad;
};

/* Per-CPU state and counters, one map value: one lookup per event. */
struct sirq_cpu {
	__u64 raise_ts[NR_SOFTIRQS_MAX]; /* first raise since the vector last ran; 0 = none */
	__u64 entry_ts[NR_SOFTIRQS_MAX];
	__u64 ksoftirqd; /* this CPU's ksoftirqd task, once seen */
	__u64 _pad;
	struct sirq_counts counts[NR_SOFTIRQS_MAX];
};

#define NAPI_BATCH_MAX 128

/* softirq's per-CPU `sirq_hists` array holds one fine_hist per vector * SIRQ_KINDS + kind. */

struct napi_key {
	__u32 ifindex;
	__u32 netns;
};

/* Per CPU and device (per-CPU hash keyed by napi_key). */
struct napi_stats {
	__u64 polls;
	__u64 full; /* polls that used their whole budget (time_squeeze territory) */
	__u64 work; /* packets over all polls */
	__u32 budget;
	__u32 _pad;
	char name[16];
	__u64 b[NAPI_BATCH_MAX + 1]; /* polls by packets processed; the last holds more */
};

/* ---- netfilter: time between the first and the last netfilter priority of one hook ---- */

enum nf_sizes {
	NF_HOOKS = 5, /* PRE_ROUTING, LOCAL_IN, FORWARD, LOCAL_OUT, POST_ROUTING */
	NF_KEYS = 10, /* hook * 2 + (IPv6 ? 1 : 0) */
	NF_SLOTS = 4, /* traversals open at once on one CPU (nesting: softirq, REJECT) */
};

/* A traversal in flight: opened at the first priority, closed at the last or at a drop. */
struct nf_slot {
	__u64 skb; /* 0 = free */
	__u64 ts;
	__u32 key;  /* hook * 2 + family */
	__u32 skip; /* filtered out: close it without recording */
};

struct nf_cpu {
	struct nf_slot slot[NF_SLOTS];
	/* Calls of the rule-walk functions in flight (fentry, where the kernel allows it). */
	struct nf_slot fn[NF_SLOTS];
};

enum nf_fn_kind {
	NF_FN_IPT_DO_TABLE = 1,	 /* iptables (legacy xtables): one call per table */
	NF_FN_IP6T_DO_TABLE = 2, /* ip6tables */
	NF_FN_NFT_DO_CHAIN = 3,	 /* nftables (and iptables-nft): one call per base chain */
};

#define NF_NAME_LEN 32

/* Per-CPU hash key: which function, for which table or base chain, on which hook. */
struct nf_fn_key {
	char name[NF_NAME_LEN];
	__u32 kind; /* enum nf_fn_kind */
	__u32 hook;
};

/* Per CPU and key: passed traversals are the histogram's count. */
struct nf_hook_stats {
	__u64 drops;	  /* freed inside the traversal (an NF_DROP verdict, e.g. DROP or REJECT) */
	__u64 drop_ns;	  /* time from the first priority to the drop, summed */
	__u64 unfinished; /* opened but never closed here: stolen, queued or moved CPU unseen */
	__u64 filtered;	  /* traversals the filters left out, whatever their outcome */
	struct fine_hist lat;
};

/* ---- congestion signals (signals.bpf.c): monotonic per-CPU totals, Rust takes deltas ---- */

#define SIG_REASONS 256 /* drop reasons counted one by one; larger values share the last slot */

struct sig_cpu {
	__u64 send_bytes[2]; /* [0] TCP, [1] UDP: bytes the send calls returned */
	__u64 send_calls[2]; /* send calls that moved data (UDP: datagrams) */
	__u64 drops;
	__u64 retransmits;
	__u64 softirq_ns[2]; /* [0] NET_RX, [1] NET_TX run time */
	__u64 softirq_entry[2];
	__u64 events; /* program runs that counted something */
	__u64 drop_reason[SIG_REASONS];
};

/* A socket's send-buffer occupancy at its latest send, in parts per million of sk_sndbuf. */
struct sig_sock {
	__u64 ts;
	__u32 ppm;
	__u32 pad;
};

/* A device's root qdisc backlog after its latest enqueue or dequeue, and the peak since Rust
 * last reset it. */
struct sig_qdisc {
	__u64 ts;
	__u32 bytes;
	__u32 packets;
	__u32 peak_bytes;
	__u32 peak_packets;
};

/* ---- drops (drops.bpf.c): one event per dropped skb ---- */

struct drop_event {
	__u64 ts;
	__u64 location; /* kernel address that freed the skb */
	__u32 reason;	/* enum skb_drop_reason of the running kernel */
	__u32 ifindex;
	__u32 netns;
	__u32 tgid;	/* the current task: the owner when a process context dropped it */
	__s32 stack_id; /* kernel stack in drop_stacks, or < 0 */
	__u16 protocol; /* skb->protocol (network order) */
	__u8 has_flow;	/* flow parsed from the IP/TCP/UDP headers */
	__u8 _pad_drop;
	struct flow flow;
	char comm[COMM_LEN];
};

/* Per-CPU counters, summed by Rust; index into the `counters` array map. */
enum counter {
	CNT_LOST = 0,		/* ring buffer full: event dropped */
	CNT_DRV_MISS = 1,	/* rx_netif without a cached rx_driver stamp */
	CNT_SOCKQ_UNJOINED = 2, /* sockq event whose skb was not in flight on this CPU */
	CNT_CHAIN_FLUSHED = 3,	/* chains that ended before a socket queue */
	CNT_FILTERED = 4,	/* packets dropped by the BPF-side filters */
	CNT_RX_EVICTED = 5,	/* RX chains pushed out of the per-CPU cache unfinished */
	CNT_SOCKQ_DUP = 6,	/* a second sk_data_ready for data already reported */
	CNT_RX_BACKLOG = 7,	/* RX chains handed over to the TCP backlog */
	CNT_TX_EVICTED = 8,	/* TX chains pushed out of the per-CPU cache */
	CNT_TX_DROPPED = 9,	/* traced TX skbs freed as drops */
	CNT_TX_FILTERED = 10,	/* TX packets dropped by the BPF-side filters */
	CNT_TX_PARK_FULL = 11,	/* no room to park a queued or in-flight TX chain */
	CNT_TX_XMIT_FAIL = 12,	/* the driver refused or dropped a traced skb (NET_XMIT_DROP/CN) */
	CNT_RX_BACKLOG_TAKEN = 13, /* handed-over chains taken up where the backlog was processed */
	/* In-kernel aggregation (agg.bpf.h): what user space would otherwise have counted. */
	CNT_AGG_FULL = 14,	    /* spans not recorded: no free series within AGG_PROBES */
	CNT_FIFO_FULL = 15,	    /* queued data whose read is not timed: socket FIFO full */
	CNT_RX_CHAINS = 16,	    /* RX chains recorded (packets) */
	CNT_TX_CHAINS = 17,	    /* TX chains recorded (packets) */
	CNT_READS = 18,		    /* reads on sockets with traced data queued */
	CNT_READS_UNMATCHED = 19,   /* such reads that found nothing queued in the FIFO */
	CNT_UNREAD = 20,	    /* queued data never read: its TCP socket closed */
	CNT_TX_WRITES = 21,	    /* TCP writes started */
	CNT_TX_RETRANS = 22,	    /* TCP data segments whose oldest byte was sent before */
	CNT_TX_UNATTRIBUTED = 23,   /* TCP data segments with no write found for them */
	CNT_TX_WRITES_EVICTED = 24, /* TCP writes pushed out of a full write FIFO */
	CNT_MAX = 32,
};

/* ---- in-kernel span histograms (agg.bpf.h): serve's default, no ring record per packet ---- */

/* Points in one numbering for spans, as src/events/mod.rs point_name: RX 0-5 (5: the read),
 * TX from SP_TX, then the context points beside the paths. */
enum span_point {
	SP_RX_READ = 5,
	SP_TX = 6,
	SP_RX_SIRQ_RAISE = 14,
	SP_RX_SIRQ_ENTRY = 15,
	SP_RX_NF_PRE_DONE = 16,
	SP_RX_NF_IN = 17,
	SP_TX_NF_OUT_DONE = 18,
	SP_TX_NF_POST = 19,
};

/* A series: span (from -> to, from < to, so to == 0 marks a free entry) and its labels. */
struct span_key {
	__u8 from;
	__u8 to;
	__u8 proto;
	__u8 _pad;
	__u32 ifindex;
	__u32 netns;
	__u32 _pad2; /* 16 bytes: compared as two words */
};

/* The bounds of src/sink/prom/registry.rs BOUNDS_NS (Rust writes them to agg_bounds) and +Inf. */
#define PROM_BOUNDS  22
#define PROM_BUCKETS (PROM_BOUNDS + 1)

/* One series of one CPU's open-addressed table (agg_hist): a Prometheus histogram. */
struct agg_entry {
	struct span_key key;
	__u64 sum; /* nanoseconds */
	__u64 b[PROM_BUCKETS];
};

/* ---- namespaces (nswatch.bpf.c): one record per network namespace a task is in ---- */

/* A task iterator's record: a namespace seen for the first time in this pass, and a
 * thread in it (a thread may sit in another namespace than its process). */
struct ns_task {
	__u32 inum; /* the namespace's inode */
	__u32 tgid;
	__u32 pid;
	__u32 _pad_ns;
};

/* ---- marker (marker.bpf.c): TCP payload bytes of the chosen ports, seen at TC ---- */

#define MARKER_POINTS 8	   /* capture points (interface + direction) one run attaches */
#define MARKER_PORTS  8	   /* ports whose payloads are inspected */
#define MARKER_CHUNK  1024 /* payload bytes one event carries */
#define MARKER_CHUNKS 64   /* events one skb may give: 64 KiB, a full GSO segment */

enum marker_flags {
	MKF_SYN = 1, /* the segment opens the stream: parsing starts at its first byte */
	MKF_FIN = 2, /* the stream ends after this segment */
	MKF_RST = 4,
};

/* What every chunk of a segment says about it. */
struct marker_hdr {
	__u64 ts;      /* bpf_ktime_get_ns() when the skb passed the hook */
	__u32 seq;     /* TCP sequence number of data[0] */
	__u32 seg_len; /* payload bytes of the whole segment (GSO: of the super-packet) */
	__u16 len;     /* bytes of data[] that are valid */
	__u8 point;    /* index of the capture point (program marker_pN) */
	__u8 flags;    /* enum marker_flags */
	struct flow flow;
};

/*
 * One chunk of one TCP segment's payload. A chunk of at most MARKER_SMALL bytes is
 * reserved that short (the ring record ends after data[MARKER_SMALL - 1]): most marker
 * events are small, and a full-size record would take eight times their room.
 */
#define MARKER_SMALL 128
struct marker_event {
	struct marker_hdr h;
	__u8 data[MARKER_CHUNK];
};

/* Per-CPU counters of marker.bpf.c; index into `marker_counts`. */
enum marker_counter {
	MKC_SEGMENTS = 0,  /* TCP segments on a chosen port whose payload was read */
	MKC_BYTES = 1,	   /* payload bytes read */
	MKC_LOST = 2,	   /* events lost to a full ring buffer */
	MKC_TRUNCATED = 3, /* payload bytes past MARKER_CHUNKS chunks, not read */
	MKC_NCOUNTERS = 4,
};

#endif /* NETSTACK_H */
