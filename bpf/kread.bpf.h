/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Reading kernel memory through pointers the verifier does not type (raw_tp and kprobe
 * arguments, a sock seen as a tcp_sock), on every kernel.
 *
 * Linux 6.2+ has bpf_rdonly_cast: the fields become plain loads with an exception-table
 * fixup, far cheaper than a bpf_probe_read_kernel call per field. Older kernels lack the
 * kfunc (libbpf then poisons the call), so each read has a bpf_probe_read_kernel twin.
 * Rust sets has_cast from the kernel's BTF before loading; it is read-only data, so the
 * verifier knows its value and drops the branch not taken: no cost either way.
 */
#ifndef KREAD_BPF_H
#define KREAD_BPF_H

#include <bpf/bpf_core_read.h>

const volatile bool has_cast = true;

/* `p` as a pointer to T whose fields RD can read. */
#define KPTR(p, T) (has_cast ? bpf_core_cast(p, T) : (T *)(p))

/* One field (a.b for embedded members) of a KPTR pointer. To follow a pointer, read it into
 * a variable first: BPF_CORE_READ does not nest. */
#define RD(p, field) (has_cast ? (p)->field : BPF_CORE_READ(p, field))

/* Copy an array field of a KPTR pointer. */
#define RD_BUF(dst, p, field)                                                                      \
	do {                                                                                       \
		if (has_cast)                                                                      \
			__builtin_memcpy(dst, &(p)->field, sizeof((p)->field));                    \
		else                                                                               \
			bpf_core_read(dst, sizeof((p)->field), &(p)->field);                       \
	} while (0)

#endif /* KREAD_BPF_H */
