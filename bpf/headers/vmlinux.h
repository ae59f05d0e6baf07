/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel's types for the architecture being built: bpf2go defines
 * __TARGET_ARCH_x86 or __TARGET_ARCH_arm64 for each -target. Each header
 * is dumped from a Debian kernel's BTF by bpf/headers/gen-vmlinux.sh; CO-RE
 * relocates every field access on the running kernel, so these only need
 * to name the types and fields porttrace reads.
 */
#if defined(__TARGET_ARCH_x86)
#include "x86/vmlinux.h"
#elif defined(__TARGET_ARCH_arm64)
#include "arm64/vmlinux.h"
#else
#error "porttrace builds its BPF objects for x86 and arm64 only"
#endif
