// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * A native XDP program that passes every packet: on a veth it turns on the peer's NAPI
 * (with threaded NAPI: batches of several packets per poll, as a NIC gives). The tests'
 * traffic generator attaches it (nsl-load xdp-pass); netstack-lat itself never does.
 * Also a netfilter program that accepts every packet: nsl-load nf-hold takes priorities
 * with it, as another BPF user of a namespace would.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

#define NF_ACCEPT 1

SEC("netfilter")
int nf_accept(struct bpf_nf_ctx *ctx)
{
	return NF_ACCEPT;
}
