// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Feature probe: an fentry program that does nothing. Whether it loads tells us if
 * fentry fallbacks can be used on this kernel (lockdown and LSMs may refuse it). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("fentry/ip_rcv")
int BPF_PROG(probe_fentry)
{
	return 0;
}
