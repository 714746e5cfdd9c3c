/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Arch dispatch for the committed kernel type dumps (see README.md here).
 * build.rs passes `-I vmlinux/<arch>` itself; this header is for anything that
 * includes "vmlinux.h" with only `-I vmlinux` on its path.
 */
#if defined(__TARGET_ARCH_x86)
#include "x86_64/vmlinux.h"
#else
#error "no vmlinux.h for this architecture: run `make vmlinux` on one and add vmlinux/<arch>/"
#endif
