// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Which network namespaces have tasks in them: a task iterator that Rust reads about once
 * a second. Walking tasks in the kernel costs far less than reading /proc/PID/ns/net for
 * every process, and it sees a thread that entered a namespace on its own (CNI plugins
 * unshare on one thread). Each namespace is written once per pass.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "netstack.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by Rust before each pass; a namespace whose entry holds it was written already. */
__u64 pass = 0;
/* The last record written: also what puts struct ns_task in the skeleton's types. */
struct ns_task last_task = {};

/* Namespaces written in some pass; LRU so that dead ones age out by themselves (a live
 * one pushed out is only written again). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("iter/task")
int ns_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct ns_task rec = {};
	__u64 *last, cur = pass;

	if (!task)
		return 0;
	/* An exiting task has no nsproxy any more. */
	rec.inum = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	if (!rec.inum)
		return 0;
	last = bpf_map_lookup_elem(&seen, &rec.inum);
	if (last && *last == cur)
		return 0;
	bpf_map_update_elem(&seen, &rec.inum, &cur, BPF_ANY);
	rec.tgid = BPF_CORE_READ(task, tgid);
	rec.pid = BPF_CORE_READ(task, pid);
	last_task = rec;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
