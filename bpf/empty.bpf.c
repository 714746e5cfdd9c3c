// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The cost floor for `make bench`: do-nothing programs on exactly the hooks that
 * `netstack-lat trace` attaches here. Each only counts its runs, so bpf_stats' ns/run
 * of a traced program divided by that of its empty twin is the tool's own overhead.
 * Names are empty_<traced program name>, so the bench pairs them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define NF_ACCEPT 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Runs of all programs together, per CPU: a shared counter would make every run pay for
 * an atomic on a cache line that both CPUs write, and the floor would not be a floor.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&hits, &zero);

	if (n)
		(*n)++;
}

SEC("tp_btf/netif_rx")
int BPF_PROG(empty_rx_driver_netif_rx)
{
	hit();
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(empty_rx_driver_gro)
{
	hit();
	return 0;
}

SEC("tp_btf/netif_receive_skb_entry")
int BPF_PROG(empty_rx_driver_receive_entry)
{
	hit();
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(empty_rx_netif_tp_btf)
{
	hit();
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(empty_rx_sockq_tp_btf)
{
	hit();
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(empty_rx_read_tp_btf)
{
	hit();
	return 0;
}

/* First PRE_ROUTING position, like rx_ip_nf. */
SEC("netfilter")
int empty_rx_ip_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

/* Last LOCAL_IN position, like rx_transport_nf. */
SEC("netfilter")
int empty_rx_transport_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("netfilter")
int empty_rx_nf_pre_done_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("netfilter")
int empty_rx_nf_in_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("netfilter")
int empty_tx_nf_out_done_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("netfilter")
int empty_tx_nf_post_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(empty_tx_send_sys_enter)
{
	hit();
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(empty_tx_send_tcp)
{
	hit();
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(empty_tx_send_end)
{
	hit();
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(empty_tx_qdisc_enq_queue)
{
	hit();
	return 0;
}

SEC("tp_btf/qdisc_enqueue")
int BPF_PROG(empty_tx_qdisc_enq_qdisc)
{
	hit();
	return 0;
}

SEC("tp_btf/qdisc_dequeue")
int BPF_PROG(empty_tx_qdisc_deq_qdisc)
{
	hit();
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(empty_tx_driver_start)
{
	hit();
	return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(empty_tx_done_xmit)
{
	hit();
	return 0;
}

SEC("tp_btf/consume_skb")
int BPF_PROG(empty_tx_free_consume)
{
	hit();
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(empty_tx_free_kfree)
{
	hit();
	return 0;
}

/* First LOCAL_OUT position, like tx_transport_nf. */
SEC("netfilter")
int empty_tx_transport_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

/* Last POST_ROUTING position, like tx_nf_done_nf. */
SEC("netfilter")
int empty_tx_nf_done_nf(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("tp_btf/softirq_raise")
int BPF_PROG(empty_rx_softirq_raise)
{
	hit();
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(empty_rx_softirq_entry)
{
	hit();
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(empty_softirq_exit)
{
	hit();
	return 0;
}

SEC("tp_btf/napi_poll")
int BPF_PROG(empty_softirq_napi_poll)
{
	hit();
	return 0;
}

/* `netfilter`'s bracket: the same program at the first and at the last priority of a hook. */
SEC("netfilter")
int empty_nf_first(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

SEC("netfilter")
int empty_nf_last(struct bpf_nf_ctx *ctx)
{
	hit();
	return NF_ACCEPT;
}

/* netfilter's nf_drop: on every kfree_skb of the machine. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(empty_nf_drop)
{
	hit();
	return 0;
}

/* marker's capture points: TC programs that pass every packet on. */
SEC("tc")
int empty_marker_p0(struct __sk_buff *skb)
{
	hit();
	return -1; /* TC_ACT_UNSPEC, as marker_pN */
}

SEC("tc")
int empty_marker_p1(struct __sk_buff *skb)
{
	hit();
	return -1;
}
