/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-version differences, handled with CO-RE struct flavours only: the
 * loader matches "name___suffix" to the kernel's "name" and keeps the
 * branch whose fields exist.
 */
#ifndef PORTTRACE_CORE_FIXES_H
#define PORTTRACE_CORE_FIXES_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * net.ipv4.ip_local_port_range: up to 6.2 two ints under a seqlock; from
 * 6.3 (the series that added the IP_LOCAL_PORT_RANGE socket option) one
 * u32, low port in the low 16 bits.
 */
struct local_ports___old {
	int range[2];
} __attribute__((preserve_access_index));

struct netns_ipv4___old {
	struct local_ports___old ip_local_ports;
} __attribute__((preserve_access_index));

struct net___old {
	struct netns_ipv4___old ipv4;
} __attribute__((preserve_access_index));

struct local_ports___new {
	u32 range;
} __attribute__((preserve_access_index));

/* direct: net is a pointer the program may load through (core_cast). */
static __always_inline void net_port_range(struct net *net, bool direct, __u16 *lo, __u16 *hi)
{
	struct net___old *old = (void *)net;

	if (bpf_core_field_exists(((struct local_ports___new *)0)->range)) {
		__u32 r = direct ? net->ipv4.ip_local_ports.range : BPF_CORE_READ(net, ipv4.ip_local_ports.range);

		*lo = r & 0xffff;
		*hi = r >> 16;
	} else {
		int r[2] = {};

		BPF_CORE_READ_INTO(&r, old, ipv4.ip_local_ports.range);
		*lo = r[0];
		*hi = r[1];
	}
}

/*
 * struct sock's sk_userlocks and sk_protocol were bitfields in some kernels
 * (sk_protocol until 5.6, sk_userlocks until 6.4); the _PROBED reader handles
 * plain and bit fields alike.
 */
static __always_inline __u32 sk_userlocks(struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
}

static __always_inline __u16 sk_protocol(struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
}

/*
 * The capability sets became a single u64 in 6.3 ("capability: just use
 * a 'u64' instead of a 'u32[2]' array"); before, a
 * u32[2]. CAP_NET_BIND_SERVICE (10) sits in the first 32 bits either way on
 * little-endian machines.
 */
static __always_inline bool cred_has_cap(const struct cred *cred, int cap)
{
	__u32 lo = 0;

	bpf_probe_read_kernel(&lo, sizeof(lo), __builtin_preserve_access_index(&cred->cap_effective));
	return lo & (1u << cap);
}

#endif /* PORTTRACE_CORE_FIXES_H */
