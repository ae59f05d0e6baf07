/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Churn mode: ephemeral port allocations counted in the kernel, per network
 * namespace, destination and process, so the cost stays flat at any rate
 * and nothing depends on the ring buffer keeping up. Userspace reads and
 * diffs the maps once an interval.
 */
#ifndef PORTTRACE_CHURN_H
#define PORTTRACE_CHURN_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct churn_ns_key);
	__type(value, __u64);
} churn_ns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct churn_dst_key);
	__type(value, struct churn_counts);
} churn_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct churn_proc_key);
	__type(value, struct churn_counts);
} churn_proc SEC(".maps");

/*
 * bump adds to the value of key, creating it; a full map is counted as an
 * overflow rather than evicting another key (LRU would lose counts quietly).
 */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *zero)
{
	void *v = bpf_map_lookup_elem(map, key);

	if (v)
		return v;
	if (bpf_map_update_elem(map, key, zero, BPF_NOEXIST) && bpf_map_lookup_elem(map, key) == NULL) {
		count(CNT_CHURN_OVERFLOW);
		return NULL;
	}
	return bpf_map_lookup_elem(map, key);
}

static __always_inline bool alloc_failure(__s32 err)
{
	/* connect: EADDRNOTAVAIL (TCP), EAGAIN (UDP autobind); bind(0): EADDRINUSE. */
	return err == -EADDRNOTAVAIL || err == -EAGAIN || err == -EADDRINUSE;
}

static __always_inline void churn_count(const struct event *e)
{
	struct churn_ns_key nk = {};
	struct churn_counts zc = {}, *c;
	__u64 zero = 0, *n;
	bool fail;

	if (!(e->flags & F_AUTOBIND))
		return;
	fail = e->err != 0;
	if (fail && !alloc_failure(e->err))
		return; /* failed for another reason (refused, unreachable) */
	if (!fail && (!(e->flags & F_HAS_LOCAL) || e->lport == 0))
		return; /* bind(0) with IP_BIND_ADDRESS_NO_PORT: the connect allocates */

	nk.netns = e->netns;
	nk.proto = e->proto;
	nk.err = -e->err;
	nk.kind = e->kind;
	n = lookup_or_init(&churn_ns, &nk, &zero);
	if (n)
		*n += 1;

	if (e->kind == EV_CONNECT) {
		struct churn_dst_key dk = {};

		dk.netns = e->netns;
		dk.family = e->family;
		dk.dport = e->rport;
		dk.proto = e->proto;
		__builtin_memcpy(dk.daddr, e->raddr, 16);
		c = lookup_or_init(&churn_dst, &dk, &zc);
		if (c) {
			if (fail)
				c->fails += 1;
			else
				c->allocs += 1;
		}
	}

	{
		struct churn_proc_key pk = {};

		pk.pid = e->pid;
		pk.netns = e->netns;
		pk.cgroup_id = bpf_get_current_cgroup_id();
		__builtin_memcpy(pk.comm, e->comm, sizeof(pk.comm));
		c = lookup_or_init(&churn_proc, &pk, &zc);
		if (c) {
			if (fail)
				c->fails += 1;
			else
				c->allocs += 1;
		}
	}
}

#endif /* PORTTRACE_CHURN_H */
