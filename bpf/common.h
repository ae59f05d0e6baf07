/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What every backend shares: the maps, the knobs set from Go before load,
 * the filters, and the readers that turn a struct sock (plus the sockaddr
 * the caller passed) into a struct event.
 */
#ifndef PORTTRACE_COMMON_H
#define PORTTRACE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "porttrace.h"
#include "core_fixes.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_MPTCP 262
#define SOCK_BINDPORT_LOCK 8
#define CAP_NET_BIND_SERVICE 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define EINTR 4
#define EAGAIN 11
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99
#define EINPROGRESS 115
#define ECONNABORTED 103
#define ECANCELED 125
#define ERESTARTSYS 512
#define ERESTART_RESTARTBLOCK 516

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* One bit a port: set the bits of the ports to keep. */
struct port_bitmap {
	__u64 bits[65536 / 64];
};

/* Keep the contract's types in the object's BTF, for bpf2go -type. */
const struct event *unused_event __attribute__((unused));
const struct port_bitmap *unused_port_bitmap __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum backend_id *unused_backend_id __attribute__((unused));
const enum event_flags *unused_event_flags __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum sock_opt *unused_sock_opt __attribute__((unused));

/* Knobs: set by the loader before load, folded into the programs by the verifier. */
const volatile __u32 target_pid = 0;     /* 0: every process */
const volatile __u32 target_uid = -1;    /* -1: every user */
const volatile bool filter_ports = false; /* true: only ports set in port_filter */
const volatile bool filter_cgroups = false; /* true: only tasks in (or below) a cgroup of cgroup_filter */
const volatile bool filter_netns = false;   /* true: only sockets in a network namespace of netns_filter */
/* true: count allocations in the churn maps (churn.h) instead of sending events. */
const volatile bool churn_mode = false;
/* The listen hook: __inet_listen_sk(struct sock *) where it exists (6.12: yes, 6.1: no), else inet_listen(struct socket *). */
const volatile bool listen_on_sk = false;
/*
 * Helpers newer kernels have, as the loader's feature probes found them;
 * the verifier follows only the branch a knob selects, so a program that
 * names a helper the kernel lacks still loads.
 */
const volatile bool have_task_btf = true;     /* bpf_get_current_task_btf, 5.11 */
const volatile bool have_task_pt_regs = true; /* bpf_task_pt_regs, 5.15 */
/* bpf_get_current_ancestor_cgroup_id in tracing programs (not 5.10's) */
const volatile bool have_ancestor_cgroup = true;
/* bpf_rdonly_cast, 6.2: see core_cast */
const volatile bool have_rdonly_cast = true;
/*
 * bpf_task_storage_get in tracepoint and kprobe programs (5.12; fentry's
 * had it in 5.11), with have_task_btf: see task_slot.
 */
const volatile bool have_task_storage = true;

/*
 * core_cast(ptr, type) is ptr as a typed pointer the program loads through
 * directly: each load guarded against faults as a probe read is, without
 * a helper call (tens of nanoseconds each, a dozen an event). The kfunc
 * (bpf_rdonly_cast, 6.2) is inlined by the verifier into a move. Weak: on
 * an older kernel the loader poisons the call, and have_rdonly_cast false
 * keeps every path to it from the verifier, which then takes the CO-RE
 * reads beside it.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#define core_cast(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

/*
 * walk_task is the current task as a pointer the program loads through
 * directly, or NULL before 5.11, where CO-RE reads walk it. Where the
 * kernel has both, an untrusted cast (6.2) rather than
 * bpf_get_current_task_btf's trusted pointer (5.11): the same loads at run
 * time, but each pointer loaded through a trusted one sends the verifier
 * through the kernel's BTF, one type after another, for names that would
 * let it trust the result (four searches a field, about 1 ms each on
 * 6.18): that was most of the time the kernel took to load the programs.
 */
static __always_inline struct task_struct *walk_task(void)
{
	if (have_rdonly_cast)
		return core_cast((void *)bpf_get_current_task(), struct task_struct);
	if (have_task_btf)
		return bpf_get_current_task_btf();
	return NULL;
}

/*
 * task_slot is the current thread's value in map, a task storage map, made
 * if create and missing; NULL when it cannot be made (no memory, or the
 * storage busy on this CPU). Each backend keeps there what a hook's entry
 * saw for its exit, where a hash by thread id would cost an update, a
 * lookup and a delete (about 700 ns a connect more, BENCHMARKS.md); with
 * have_task_storage false (5.10, 5.11) the loader makes the map a hash the
 * programs never reach, and they keep it in their hash instead.
 */
#define task_slot(map, create) \
	bpf_task_storage_get(map, bpf_get_current_task_btf(), 0, (create) ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0)

/*
 * Events go out through a ring buffer per CPU, or per group of
 * cpus_per_ring neighbouring CPUs on a machine with more CPUs than
 * MAX_RINGS: with one ring that every CPU reserves from, the CPUs of a
 * large node spend a storm waiting for its lock and its producer cache
 * line, and one reader falls behind. Userspace makes the rings (all the
 * same size), puts them in this array, reads each on its own and merges
 * them back into time order. A ring buffer in an array of maps: 5.8.
 */
#define MAX_RINGS 64
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the loader */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_RINGS); /* resized by the loader */
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

const volatile __u32 cpus_per_ring = 1;

/* Per-CPU counters, enum counter; userspace sums and reports them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * Threads that were already blocked in accept() when an fexit/kretprobe
 * backend attached: their return never reaches those hooks, so the
 * sys_exit_accept tracepoint reports them instead. Userspace fills it at
 * start; whichever hook sees the return first removes the thread.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} preblocked SEC(".maps");

/* forget_preblocked removes this thread from preblocked; true if it was there. */
static __always_inline bool forget_preblocked(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	return bpf_map_delete_elem(&preblocked, &tid) == 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_bitmap);
} port_filter SEC(".maps");

/* The network namespaces (inode numbers) to trace when filter_netns is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} netns_filter SEC(".maps");

/*
 * Verdicts on cgroup v2 ids (directory inodes) when filter_cgroups is set:
 * CG_IN traces the cgroup and every cgroup below it, CG_OUT drops that
 * cgroup's calls. Userspace adds verdicts while tracing (a workload that
 * starts later).
 */
enum { CG_IN = 1, CG_OUT = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

/*
 * A cgroup with no verdict of its own or above it: dropped, or, with
 * judge_unknown, sent for userspace to judge (and to give its verdict,
 * so that the next call is decided here). So a container that starts
 * after porttrace loses no call to the time userspace takes to see it.
 */
const volatile bool judge_unknown = false;

/* Deeper cgroups are matched by their ancestors at this depth and above. */
#define MAX_CGROUP_DEPTH 24

/*
 * cgroup_wanted applies the verdicts: the task's own cgroup's first, then
 * its ancestors'. Those come from bpf_get_current_ancestor_cgroup_id (0
 * past the task's own level) where tracing programs have it; else from
 * the task's cgroup v2 and its parents, with CO-RE reads (a cgroup's id
 * is its kernfs node's).
 */
static __always_inline bool cgroup_wanted(void)
{
	__u64 leaf = bpf_get_current_cgroup_id();
	__u8 *v = bpf_map_lookup_elem(&cgroup_filter, &leaf);

	if (v)
		return *v == CG_IN;
	if (have_ancestor_cgroup) {
		for (int level = 0; level <= MAX_CGROUP_DEPTH; level++) {
			__u64 id = bpf_get_current_ancestor_cgroup_id(level);

			if (!id)
				break;
			v = bpf_map_lookup_elem(&cgroup_filter, &id);
			if (v && *v == CG_IN)
				return true;
		}
	} else {
		struct task_struct *task = (void *)bpf_get_current_task();
		struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);

		for (int i = 0; i <= MAX_CGROUP_DEPTH && cg; i++) {
			__u64 id = BPF_CORE_READ(cg, kn, id);

			v = bpf_map_lookup_elem(&cgroup_filter, &id);
			if (v && *v == CG_IN)
				return true;
			cg = BPF_CORE_READ(cg, self.parent, cgroup);
		}
	}
	return judge_unknown;
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

/* The cheap part of the filter, before any socket is read. */
static __always_inline bool task_wanted(void)
{
	if (target_pid && (bpf_get_current_pid_tgid() >> 32) != target_pid)
		return false;
	if (target_uid != (__u32)-1 && (__u32)bpf_get_current_uid_gid() != target_uid)
		return false;
	if (filter_cgroups && !cgroup_wanted())
		return false;
	return true;
}

static __always_inline bool port_set(__u16 port)
{
	__u32 zero = 0;
	struct port_bitmap *m = bpf_map_lookup_elem(&port_filter, &zero);

	if (!m)
		return false;
	return m->bits[(port >> 6) & 1023] & (1ull << (port & 63));
}

static __always_inline bool ports_wanted(const struct event *e)
{
	if (!filter_ports)
		return true;
	if ((e->flags & F_HAS_LOCAL) && port_set(e->lport))
		return true;
	if ((e->flags & F_HAS_REMOTE) && port_set(e->rport))
		return true;
	return false;
}

/* Only TCP, UDP and MPTCP sockets carry ports worth reporting. */
static __always_inline bool proto_wanted(__u16 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_MPTCP;
}

/* fill_task sets what every event needs, filters and churn included. */
static __always_inline void fill_task(struct event *e, __u8 kind, __u8 backend)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->kind = kind;
	e->backend = backend;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	if (have_rdonly_cast)
		/* Two loads, not a helper that copies the name a byte at a time. */
		__builtin_memcpy(e->comm, walk_task()->comm, sizeof(e->comm));
	else
		bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/*
 * fill_task_rest sets the rest, only for an event that will be sent. From
 * 5.11 the task is walked with direct loads (walk_task) rather than a
 * helper call a field; before, with bpf_get_current_task and CO-RE reads. A static subprogram:
 * 5.10's verifier takes no pointer arguments in a global one.
 */
static __noinline int fill_task_rest(struct event *e)
{
	const struct cred *cred;
	struct file *exe;
	__u32 nlink;

	e->ts_ns = bpf_ktime_get_boot_ns();
	if (have_rdonly_cast || have_task_btf) {
		struct task_struct *task = walk_task();
		struct mm_struct *mm = task->mm;

		/* What bpf_get_current_cgroup_id gives: the id of the task's
		 * cgroup v2, its kernfs node's. */
		e->cgroup_id = task->cgroups->dfl_cgrp->kn->id;

		e->ppid = task->real_parent->tgid;
		exe = mm ? mm->exe_file : NULL;
		nlink = exe ? exe->f_path.dentry->d_inode->i_nlink : 1;
		cred = task->cred;
		/* What bpf_get_current_uid_gid gives, without the call: the
		 * ids as the initial user namespace sees them, which a kuid is. */
		e->uid = cred->uid.val;
		e->gid = cred->gid.val;
		/* The low word of kernel_cap_t: cap[0] before 6.3, of val from 6.3. */
		if (*(const __u32 *)&cred->cap_effective & (1u << CAP_NET_BIND_SERVICE))
			e->flags |= F_CAP_BIND;
	} else {
		struct task_struct *task = (void *)bpf_get_current_task();
		__u64 ug = bpf_get_current_uid_gid();

		e->cgroup_id = bpf_get_current_cgroup_id();

		e->uid = (__u32)ug;
		e->gid = ug >> 32;
		e->ppid = BPF_CORE_READ(task, real_parent, tgid);
		exe = BPF_CORE_READ(task, mm, exe_file);
		nlink = exe ? BPF_CORE_READ(exe, f_path.dentry, d_inode, i_nlink) : 1;
		cred = BPF_CORE_READ(task, cred);
		if (cred_has_cap(cred, CAP_NET_BIND_SERVICE))
			e->flags |= F_CAP_BIND;
	}
	/* A running binary that was unlinked keeps its inode with no links. */
	if (nlink == 0)
		e->flags |= F_EXE_DELETED;
	return 0;
}

/*
 * The first bytes of struct sock_common: both IPv4 addresses, both ports,
 * the family and the state, fetched at once instead of a helper call each
 * (every helper call costs tens of nanoseconds on the hot path): with
 * direct loads through an untrusted cast from 6.2, else one helper call.
 * Each field is taken at its CO-RE-relocated offset; a kernel that moved
 * one past the copy would fail verification, not read the wrong bytes.
 */
struct sk_head {
	__u32 w[6];
};

#define HEAD(h, type, field) \
	(*(type *)((__u8 *)(h)->w + bpf_core_field_offset(struct sock_common, field)))

/* read_head fills h from sk and e->family from h; false unless IPv4 or IPv6. */
static __always_inline bool read_head(struct event *e, struct sock *sk, struct sk_head *h)
{
	if (have_rdonly_cast) {
		/* A load through a bad pointer gives 0: family 0, no event. The
		 * verifier takes no load across two members: bytes 16 to 19
		 * (skc_family, skc_state, the option bits) one at a time. */
		const __u32 *w = (const void *)core_cast(sk, struct sock_common);
		const __u8 *b = (const void *)w;
		__u8 *hb = (void *)h->w;

		for (int i = 0; i < 4; i++)
			h->w[i] = w[i];
		for (int i = 16; i < 20; i++)
			hb[i] = b[i];
		h->w[5] = w[5];
	} else if (bpf_core_read(h, sizeof(*h), &sk->__sk_common)) {
		return false;
	}
	e->family = HEAD(h, __u16, skc_family);
	return e->family == AF_INET || e->family == AF_INET6;
}

/* v6_addr copies the IPv6 address at offset off of sk's sock_common. */
static __always_inline void v6_addr(__u8 addr[16], struct sock *sk, __u32 off)
{
	if (have_rdonly_cast) {
		const __u32 *a = (const void *)((const __u8 *)core_cast(sk, struct sock_common) + off);

		for (int i = 0; i < 4; i++)
			((__u32 *)addr)[i] = a[i];
	} else {
		bpf_probe_read_kernel(addr, 16, (const __u8 *)sk + off);
	}
}

/* head_local sets the socket's bound address and port. */
static __always_inline void head_local(struct event *e, struct sock *sk, const struct sk_head *h)
{
	e->lport = HEAD(h, __u16, skc_num);
	if (e->family == AF_INET) {
		__u32 a = HEAD(h, __u32, skc_rcv_saddr);

		__builtin_memcpy(e->laddr, &a, 4);
	} else {
		v6_addr(e->laddr, sk, bpf_core_field_offset(struct sock_common, skc_v6_rcv_saddr));
	}
	e->flags |= F_HAS_LOCAL;
}

/* head_remote sets the socket's peer. */
static __always_inline void head_remote(struct event *e, struct sock *sk, const struct sk_head *h)
{
	e->rport = bpf_ntohs(HEAD(h, __u16, skc_dport));
	if (e->family == AF_INET) {
		__u32 a = HEAD(h, __u32, skc_daddr);

		__builtin_memcpy(e->raddr, &a, 4);
	} else {
		v6_addr(e->raddr, sk, bpf_core_field_offset(struct sock_common, skc_v6_daddr));
	}
	e->flags |= F_HAS_REMOTE;
}

/*
 * A port the user named sets the lock; one the kernel chose does not. An
 * MPTCP socket (the one behind the fd) binds through its first subflow and
 * copies only the addresses back, so the lock is read from that subflow.
 */
static __always_inline void local_ephemeral(struct event *e, struct sock *sk)
{
	if (!(e->flags & F_HAS_LOCAL))
		return;
	if (have_rdonly_cast) {
		struct sock *s = core_cast(sk, struct sock);

		if (e->proto == IPPROTO_MPTCP && bpf_core_field_exists(struct mptcp_sock, first) &&
		    s->sk_protocol == IPPROTO_MPTCP) {
			struct sock *first = core_cast(sk, struct mptcp_sock)->first;

			if (first)
				s = first;
		}
		if (!(BPF_CORE_READ_BITFIELD(s, sk_userlocks) & SOCK_BINDPORT_LOCK))
			e->flags |= F_EPHEMERAL;
		return;
	}
	if (e->proto == IPPROTO_MPTCP && bpf_core_field_exists(struct mptcp_sock, first) &&
	    sk_protocol(sk) == IPPROTO_MPTCP) {
		struct sock *first = BPF_CORE_READ((struct mptcp_sock *)sk, first);

		if (first)
			sk = first;
	}
	if (!(sk_userlocks(sk) & SOCK_BINDPORT_LOCK))
		e->flags |= F_EPHEMERAL;
}

/*
 * sock_ino is the inode number of the socket behind sk, as sock_diag and
 * /proc/PID/fd name it (socket:[INODE]), so an event joins a snapshot's
 * socket; 0 for a socket with no struct socket. The inode follows the
 * struct socket in struct socket_alloc.
 */
static __always_inline __u32 sock_ino(struct sock *sk)
{
	struct socket *sock;
	struct socket_alloc *sa;

	if (have_rdonly_cast) {
		sock = core_cast(sk, struct sock)->sk_socket;
		if (!sock)
			return 0;
		sa = core_cast((void *)sock - bpf_core_field_offset(struct socket_alloc, socket), struct socket_alloc);
		return sa->vfs_inode.i_ino;
	}
	sock = BPF_CORE_READ(sk, sk_socket);
	if (!sock)
		return 0;
	sa = (void *)sock - bpf_core_field_offset(struct socket_alloc, socket);
	return BPF_CORE_READ(sa, vfs_inode.i_ino);
}

/*
 * Protocol, network namespace and, for an event that is sent, that
 * namespace's port sysctls. Called once the cheap filters have passed.
 */
static __always_inline bool fill_sock_meta(struct event *e, struct sock *sk)
{
	struct net *net;
	__u16 proto;

	if (have_rdonly_cast) {
		struct sock *s = core_cast(sk, struct sock);

		proto = s->sk_protocol;
		if (proto == IPPROTO_TCP && bpf_core_field_exists(struct tcp_sock, is_mptcp) &&
		    BPF_CORE_READ_BITFIELD(core_cast(sk, struct tcp_sock), is_mptcp))
			proto = IPPROTO_MPTCP;
		net = s->__sk_common.skc_net.net;
	} else {
		proto = sk_protocol(sk);
		/* An MPTCP subflow is a TCP socket underneath; name what the user opened. */
		if (proto == IPPROTO_TCP && bpf_core_field_exists(struct tcp_sock, is_mptcp) &&
		    BPF_CORE_READ_BITFIELD_PROBED((struct tcp_sock *)sk, is_mptcp))
			proto = IPPROTO_MPTCP;
		net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	}
	if (!proto_wanted(proto))
		return false;
	e->proto = proto;
	e->flags |= F_HAS_PROTO;

	if (!churn_mode)
		e->sock_ino = sock_ino(sk);
	if (net) {
		e->netns = have_rdonly_cast ? net->ns.inum : BPF_CORE_READ(net, ns.inum);
		if (filter_netns && !bpf_map_lookup_elem(&netns_filter, &e->netns))
			return false;
		if (!churn_mode) {
			e->prot_sock = have_rdonly_cast ? net->ipv4.sysctl_ip_prot_sock : BPF_CORE_READ(net, ipv4.sysctl_ip_prot_sock);
			net_port_range(net, have_rdonly_cast, &e->port_lo, &e->port_hi);
		}
		e->flags |= F_HAS_NET;
	} else if (filter_netns) {
		return false; /* a namespace it cannot tell is none of those asked for */
	}
	return true;
}

/*
 * The address in a sockaddr the caller passed, from user memory (syscall
 * tracepoints) or kernel memory (fentry/kprobe, after move_addr_to_kernel).
 * Returns the sockaddr's family: AF_INET, AF_INET6, or 0 for anything else.
 */
static __always_inline __u16 read_sockaddr(const void *sa, bool user, __u8 addr[16], __u16 *port)
{
	struct sockaddr_in6 sin6 = {};
	long err;

	/* sockaddr_in6 is the larger; read what the family needs. */
	if (user)
		err = bpf_probe_read_user(&sin6, sizeof(struct sockaddr_in), sa);
	else
		err = bpf_probe_read_kernel(&sin6, sizeof(struct sockaddr_in), sa);
	if (err)
		return 0;
	if (sin6.sin6_family == AF_INET) {
		struct sockaddr_in *sin = (void *)&sin6;

		*port = bpf_ntohs(sin->sin_port);
		__builtin_memcpy(addr, &sin->sin_addr, 4);
		return AF_INET;
	}
	if (sin6.sin6_family != AF_INET6)
		return 0;
	if (user)
		err = bpf_probe_read_user(&sin6, sizeof(sin6), sa);
	else
		err = bpf_probe_read_kernel(&sin6, sizeof(sin6), sa);
	if (err)
		return 0;
	*port = bpf_ntohs(sin6.sin6_port);
	__builtin_memcpy(addr, &sin6.sin6_addr, 16);
	return AF_INET6;
}

/*
 * An IPv6 socket takes an IPv4 sockaddr where the kernel allows it (UDP
 * connect; a TCP connect or bind refuses it with EAFNOSUPPORT): the event
 * is of the socket's family, so the IPv4 address the caller gave is
 * written as the IPv4-mapped IPv6 address (::ffff:a.b.c.d) the kernel
 * itself would use, not as 4 bytes that read as another IPv6 address.
 */
static __always_inline void sockaddr_as_family(__u8 addr[16], __u16 sa_family, __u16 sk_family)
{
	if (sa_family != AF_INET || sk_family != AF_INET6)
		return;
	__builtin_memcpy(addr + 12, addr, 4);
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
}

#include "churn.h"

/*
 * Waking the reader for every event costs more than the event, and a
 * reader that drains the ring as events arrive fights the writers for its
 * cache lines. Wake it once wakeup_bytes have been written since it was
 * last woken (1,024 events, less for a small ring: the loader sets it to
 * at most a quarter of the ring; counted here, which is cheaper than
 * asking the ring what it holds), or when it has not been woken for
 * wakeup_ns, so a lone event is delivered at once and a storm in batches.
 * An event that finds the ring woken less than wakeup_ns ago wakes nobody:
 * userspace reads again wakeup_ns after it last found the ring busy
 * (rings.go), and an idle reader sleeps until woken. Set by the loader
 * (tracer.WakeupAfter). wakeup_flags takes the event's own timestamp as
 * now (boot time, as every caller's event has it): no clock is read twice
 * for one event.
 */
const volatile __u64 wakeup_bytes = 1024 * sizeof(struct event);
const volatile __u64 wakeup_ns = 5 * 1000 * 1000;

/* Per ring; a race between the CPUs of a group costs one wakeup. */
__u64 last_wakeup[MAX_RINGS] = {};
__u64 unwoken_bytes[MAX_RINGS] = {};

/*
 * this_ring is the ring of the CPU running the program, and its index in
 * *idx; NULL only if userspace left it out (the event is counted lost).
 */
static __always_inline void *this_ring(__u32 *idx)
{
	*idx = bpf_get_smp_processor_id() / cpus_per_ring;
	return bpf_map_lookup_elem(&rings, idx);
}

static __always_inline __u64 wakeup_flags(__u32 idx, __u64 now)
{
	__u64 *last = &last_wakeup[idx & (MAX_RINGS - 1)];
	__u64 *unwoken = &unwoken_bytes[idx & (MAX_RINGS - 1)];
	__u64 n = *unwoken + sizeof(struct event);

	if (n >= wakeup_bytes || now - *last > wakeup_ns) {
		*last = now;
		*unwoken = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	*unwoken = n;
	return BPF_RB_NO_WAKEUP;
}

/* send copies e into this CPU's ring, or counts it lost. */
static __always_inline void send(struct event *e)
{
	__u32 idx;
	void *ring = this_ring(&idx);

	if (!ring || bpf_ringbuf_output(ring, e, sizeof(*e), wakeup_flags(idx, e->ts_ns)))
		count(CNT_LOST);
}

/*
 * --sample N: of the events that pass the filters, each CPU sends one in
 * sample_every and counts the others (CNT_SAMPLED_OUT), so that a consumer
 * slower than a storm gets a thinned stream it can keep up with, and knows
 * by how much, rather than a full ring and losses. 0 or 1: every event.
 */
const volatile __u32 sample_every = 0;

static __always_inline bool sampled_out(void)
{
	__u32 idx = CNT_SAMPLE_TICK;
	__u64 *tick;

	if (sample_every <= 1)
		return false;
	tick = bpf_map_lookup_elem(&counters, &idx);
	if (!tick)
		return false;
	if ((*tick)++ % sample_every == 0)
		return false;
	count(CNT_SAMPLED_OUT);
	return true;
}

/* submit counts or sends e; the callers have applied the filters. False
 * when --sample left it out. */
static __always_inline bool submit(struct event *e)
{
	if (churn_mode) {
		churn_count(e);
		return true;
	}
	if (sampled_out())
		return false;
	fill_task_rest(e);
	send(e);
	return true;
}

/* A call that the kernel restarts or that goes on in the background did not fail. */
static __always_inline bool in_progress(long ret)
{
	return ret == -EINPROGRESS || ret == -EINTR ||
	       (ret <= -ERESTARTSYS && ret >= -ERESTART_RESTARTBLOCK);
}

/*
 * bind_request reads the address a failed bind asked for into e and says
 * whether the bind is worth the socket lookup: churn counts only binds to
 * port 0, and a named port that the port filter drops is dropped before
 * any socket is read. A bind that worked is not read (a copy from the
 * caller's memory, the dearest read of the event): the socket holds the
 * address it asked for, and its port lock says whether it named the port
 * (emit_bind).
 */
static __always_inline bool bind_request(struct event *e, const void *sa, bool user, long ret)
{
	if (ret == 0)
		return true;
	/* e->family holds the sockaddr's until emit_bind reads the socket's. */
	e->family = read_sockaddr(sa, user, e->laddr, &e->lport);
	if (!e->family)
		return !churn_mode;
	e->flags |= F_HAS_LOCAL;
	if (e->lport == 0) {
		e->flags |= F_AUTOBIND;
		return true;
	}
	return !churn_mode && ports_wanted(e);
}

/*
 * struct inet_sock's freebind, transparent and bind_address_no_port were
 * bitfields until 6.6, then bits of inet_flags (INET_FLAGS_FREEBIND 11,
 * INET_FLAGS_TRANSPARENT 15, INET_FLAGS_BIND_ADDRESS_NO_PORT 18: an
 * anonymous enum, which CO-RE cannot look up, so the bits are written out).
 */
struct inet_sock___bits {
	__u8 freebind: 1;
	__u8 transparent: 1;
	__u8 bind_address_no_port: 1;
} __attribute__((preserve_access_index));

struct inet_sock___flags {
	unsigned long inet_flags;
} __attribute__((preserve_access_index));

/*
 * read_sock_opts sets the options that decide whether two binds clash.
 * SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY are bitfields of struct
 * sock_common, and SO_BINDTODEVICE's ifindex follows them: all inside the
 * head read_head copied, so they cost no helper call (each field taken at
 * its CO-RE-relocated place; one moved past the copy fails verification).
 */
static __always_inline void read_sock_opts(struct event *e, struct sock *sk, const struct sk_head *h)
{
	const struct sock_common *head = (const void *)h->w;
	__u8 o = 0;

	if (BPF_CORE_READ_BITFIELD(head, skc_reuse))
		o |= SO_OPT_REUSEADDR;
	if (BPF_CORE_READ_BITFIELD(head, skc_reuseport))
		o |= SO_OPT_REUSEPORT;
	if (BPF_CORE_READ_BITFIELD(head, skc_ipv6only))
		o |= SO_OPT_V6ONLY;
	if (bpf_core_field_exists(((struct inet_sock___flags *)0)->inet_flags)) {
		unsigned long f = have_rdonly_cast ? core_cast(sk, struct inet_sock___flags)->inet_flags
						   : BPF_CORE_READ((struct inet_sock___flags *)sk, inet_flags);

		if (f & (1UL << 11))
			o |= SO_OPT_FREEBIND;
		if (f & (1UL << 15))
			o |= SO_OPT_TRANSPARENT;
		if (f & (1UL << 18))
			o |= SO_OPT_BIND_NO_PORT;
	} else {
		/* 6.2 to 6.5 have the cast too, but no kernel of the matrix does: probed reads there. */
		struct inet_sock___bits *bits = (void *)sk;

		if (BPF_CORE_READ_BITFIELD_PROBED(bits, freebind))
			o |= SO_OPT_FREEBIND;
		if (BPF_CORE_READ_BITFIELD_PROBED(bits, transparent))
			o |= SO_OPT_TRANSPARENT;
		if (BPF_CORE_READ_BITFIELD_PROBED(bits, bind_address_no_port))
			o |= SO_OPT_BIND_NO_PORT;
	}
	e->sock_opts = o;
	e->bound_if = HEAD(h, int, skc_bound_dev_if);
	e->flags |= F_HAS_SOCK_OPTS;
}

/*
 * emit_bind reports a bind on sk that returned ret; e holds what
 * bind_request read, so a failed bind still says which port it wanted.
 */
static __always_inline void emit_bind(struct event *e, struct sock *sk, long ret, __u8 backend)
{
	/* A failed bind's named port passed the filter in bind_request. */
	bool filtered = (e->flags & F_HAS_LOCAL) && !(e->flags & F_AUTOBIND);
	__u16 sa_family = e->family;
	struct sk_head h;

	if (!read_head(e, sk, &h))
		return;
	if (ret == 0)
		head_local(e, sk, &h);
	else
		sockaddr_as_family(e->laddr, sa_family, e->family);
	if ((!filtered && !ports_wanted(e)) || !fill_sock_meta(e, sk))
		return;
	if (ret == 0) {
		/* Unlocked: the call asked for port 0 (bind_request did not
		 * read it). After fill_sock_meta: MPTCP's lock is its subflow's. */
		local_ephemeral(e, sk);
		if (e->flags & F_EPHEMERAL)
			e->flags |= F_AUTOBIND;
		else if (churn_mode)
			return; /* a named port: nothing allocated */
	}
	fill_task(e, EV_BIND, backend);
	e->err = ret;
	if (!churn_mode)
		read_sock_opts(e, sk, &h);
	submit(e);
}

/* listen_sk returns the struct sock the listen hook's first argument leads to. */
static __always_inline struct sock *listen_sk(void *arg0)
{
	if (listen_on_sk)
		return arg0;
	return BPF_CORE_READ((struct socket *)arg0, sk);
}

/* emit_listen reports listen(); on success the port may be one listen chose. */
static __always_inline void emit_listen(struct sock *sk, long ret, __u8 backend)
{
	struct event e = {};
	struct sk_head h;

	if (!read_head(&e, sk, &h))
		return;
	head_local(&e, sk, &h);
	if (ret != 0 && e.lport == 0)
		e.flags &= ~F_HAS_LOCAL;
	if (!ports_wanted(&e) || !fill_sock_meta(&e, sk))
		return;
	fill_task(&e, EV_LISTEN, backend);
	e.err = ret;
	local_ephemeral(&e, sk);
	submit(&e);
}

/*
 * Connects in progress, by the socket that does the handshake: the connect
 * event as it was reported (the task's identity is known only there: the
 * handshake ends in softirq), to be sent again as connect_done when the
 * handshake ends. latency_ns holds the call's start until then. Entries
 * leave when the socket leaves SYN_SENT/SYN_RECV, or at the latest when it
 * reaches TCP_CLOSE, which every TCP socket does before it is freed, so
 * nothing lingers. A plain hash, not an LRU: an LRU would evict a connect
 * in flight without a word, where a full hash refuses the insert and
 * CNT_UNFOLLOWED says so. Not preallocated: memory follows the connects
 * in flight.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct event);
} connecting SEC(".maps");

/*
 * handshake_sk is the TCP socket whose states tell how a connect on sk
 * ends: sk itself, or an MPTCP socket's first subflow (the MPTCP socket's
 * own states follow the subflow's at their own pace).
 */
static __always_inline struct sock *handshake_sk(struct sock *sk, __u16 proto)
{
	if (proto == IPPROTO_MPTCP && bpf_core_field_exists(struct mptcp_sock, first)) {
		struct sock *first = BPF_CORE_READ((struct mptcp_sock *)sk, first);

		if (first)
			return first;
	}
	return sk;
}

static __always_inline bool in_handshake(int state)
{
	return state == TCP_SYN_SENT || state == TCP_SYN_RECV;
}

/*
 * outcome turns e, a connect event kept since the call, into its
 * connect_done: ok once established, else the socket's error, or
 * ECANCELED when it closed without one (closed or disconnected by its
 * owner before the handshake ended). seen says the handshake's end is the
 * transition being seen; a connect whose end was missed (it raced the
 * insert and is found only at TCP_CLOSE) has no latency. err is the
 * socket's sk_err, read by the caller as soon as it knows the socket is
 * followed: the kernel writes sk_err before the state change, and a
 * thread of the owner woken on another CPU clears it as it reads it
 * (SO_ERROR), so the later the read, the likelier an error is lost.
 */
static __always_inline void outcome(struct event *e, struct sock *hs, int newstate, bool seen, int err)
{
	__u64 now = bpf_ktime_get_boot_ns();

	e->kind = EV_CONNECT_DONE;
	if (seen) {
		e->latency_ns = now - e->latency_ns;
		e->flags |= F_HAS_LATENCY;
	} else {
		e->latency_ns = 0;
		e->flags &= ~F_HAS_LATENCY;
	}
	e->ts_ns = now;
	if (newstate != TCP_CLOSE)
		err = 0;
	else if (!err)
		err = ECANCELED;
	e->err = -err;
	e->syn_retrans = BPF_CORE_READ((struct tcp_sock *)hs, total_retrans);
	e->flags |= F_HAS_RETRANS;
}

/*
 * follow_connect keeps e, the connect event just sent for a call that
 * returned in progress, until its handshake ends. The end may already have
 * come (a refusal over loopback is handled before connect() returns), or
 * come while the entry is being inserted: whoever deletes the entry, this
 * call or the state change, sends connect_done, so it is sent once.
 */
static __always_inline void follow_connect(struct event *e, struct sock *sk, __u64 start_ns)
{
	struct sock *hs = handshake_sk(sk, e->proto);
	__u64 key = (__u64)hs;
	int state;

	e->latency_ns = start_ns;
	state = BPF_CORE_READ(hs, __sk_common.skc_state);
	if (in_handshake(state)) {
		if (bpf_map_update_elem(&connecting, &key, e, BPF_ANY)) {
			count(CNT_UNFOLLOWED);
			return;
		}
		state = BPF_CORE_READ(hs, __sk_common.skc_state);
		if (in_handshake(state) || bpf_map_delete_elem(&connecting, &key))
			return; /* the state change sends it */
	}
	outcome(e, hs, state, true, state == TCP_CLOSE ? BPF_CORE_READ(hs, sk_err) : 0);
	send(e);
}

/*
 * emit_connect reports an outbound connect. The peer comes from the
 * socket once connected or connecting, else from the caller's sockaddr;
 * the local port is the one the kernel now holds, absent
 * when a failure released it. port_before is the socket's local port when
 * the call began: 0 means this connect asked the kernel for one. start_ns
 * is when the call began (bpf_ktime_get_boot_ns): a TCP connect's latency
 * runs from there. A TCP or MPTCP connect that returned in progress
 * (EINPROGRESS: non-blocking; EINTR: a signal, the handshake goes on) is
 * reported as such and followed to its end (connect_done).
 */
static __always_inline void emit_connect(struct sock *sk, const void *sa, bool user, long ret, __u8 backend,
					 __u16 port_before, __u64 start_ns)
{
	struct event e = {};
	struct sk_head h;
	__u16 sa_family;
	bool stream;

	if (churn_mode && port_before != 0)
		return; /* churn counts only the connects that allocate a port */
	if (!read_head(&e, sk, &h))
		return;
	if ((ret == 0 || in_progress(ret)) && HEAD(&h, __u16, skc_dport) != 0) {
		/* Connected or connecting, the socket holds its peer: read
		 * there, not copied from the caller's memory (the dearest read
		 * of the event), and as the kernel connects it, after any
		 * cgroup program rewrote the address (a service's, to one of
		 * its backends). */
		head_remote(&e, sk, &h);
	} else {
		/* Failed, the socket may hold no peer: the one asked for. */
		sa_family = read_sockaddr(sa, user, e.raddr, &e.rport);
		if (!sa_family)
			return; /* AF_UNSPEC: a disconnect, not a connect */
		e.flags |= F_HAS_REMOTE;
		sockaddr_as_family(e.raddr, sa_family, e.family);
	}
	e.err = ret;
	head_local(&e, sk, &h);
	if (e.lport == 0)
		e.flags &= ~F_HAS_LOCAL;
	if (!ports_wanted(&e) || !fill_sock_meta(&e, sk))
		return;
	fill_task(&e, EV_CONNECT, backend);
	if (port_before == 0)
		e.flags |= F_AUTOBIND;
	if (churn_mode) {
		/* In progress (non-blocking, or a signal mid-handshake), the
		 * connect holds the port it was given: an allocation. */
		if (in_progress(ret))
			e.err = 0;
		submit(&e);
		return;
	}
	local_ephemeral(&e, sk);
	stream = e.proto == IPPROTO_TCP || e.proto == IPPROTO_MPTCP;
	if (stream && in_progress(ret)) {
		/* A connect left out by --sample is not followed either: no
		 * connect_done without its connect. */
		if (submit(&e))
			follow_connect(&e, sk, start_ns);
		return;
	}
	if (stream && start_ns) {
		e.latency_ns = bpf_ktime_get_boot_ns() - start_ns;
		e.flags |= F_HAS_LATENCY;
	}
	submit(&e);
}

/*
 * connect_state follows connects in progress to their end. It sees every
 * TCP state change (inet_sock_set_state, 4.16; a raw tracepoint, 4.17, so
 * nothing is copied for the changes it ignores) and looks up only a
 * handshake's end (SYN_SENT or SYN_RECV to ESTABLISHED or CLOSE) and any
 * change to TCP_CLOSE, where a connect whose end was missed is found
 * before its socket is freed. Runs in softirq: the task is not the
 * connecting one, so the event is the one kept at the connect, with the
 * outcome written over it.
 */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(connect_state, struct sock *sk, int oldstate, int newstate)
{
	bool seen = in_handshake(oldstate);
	struct event *kept, *e;
	__u64 key = (__u64)sk;
	void *ring;
	__u32 idx;
	int err = 0;

	if (newstate != TCP_CLOSE && !(seen && newstate == TCP_ESTABLISHED))
		return 0;
	kept = bpf_map_lookup_elem(&connecting, &key);
	if (!kept)
		return 0;
	if (newstate == TCP_CLOSE)
		err = BPF_CORE_READ(sk, sk_err);
	ring = this_ring(&idx);
	e = ring ? bpf_ringbuf_reserve(ring, sizeof(*e), 0) : NULL;
	if (!e) {
		if (bpf_map_delete_elem(&connecting, &key) == 0)
			count(CNT_LOST);
		return 0;
	}
	__builtin_memcpy(e, kept, sizeof(*e));
	if (bpf_map_delete_elem(&connecting, &key)) {
		bpf_ringbuf_discard(e, 0); /* the connect's exit sent it */
		return 0;
	}
	/* Found late, after ESTABLISHED: the handshake worked. */
	outcome(e, sk, seen || oldstate == TCP_CLOSE ? newstate : TCP_ESTABLISHED, seen, err);
	bpf_ringbuf_submit(e, wakeup_flags(idx, e->ts_ns));
	return 0;
}

/* emit_accept reports the socket accept() returned, in the accepting task. */
static __always_inline void emit_accept(struct sock *sk, __u8 backend)
{
	struct event e = {};
	struct sk_head h;

	if (!read_head(&e, sk, &h))
		return;
	head_local(&e, sk, &h); /* the service port, inherited from the listener: not ephemeral */
	head_remote(&e, sk, &h);
	if (!ports_wanted(&e) || !fill_sock_meta(&e, sk))
		return;
	fill_task(&e, EV_ACCEPT, backend);
	submit(&e);
}

/* Waiting is not failing: only errors that refuse a connection are reported. */
static __always_inline bool accept_failure(long ret)
{
	return ret < 0 && ret != -EAGAIN && ret != -ECONNABORTED && !in_progress(ret);
}

/*
 * struct proto_accept_arg replaced inet_csk_accept's flags/err/kern
 * arguments in 6.10; the error is in it, or behind the third argument.
 */
struct proto_accept_arg___new {
	int err;
} __attribute__((preserve_access_index));

static __always_inline long csk_accept_err(void *arg1, void *arg2)
{
	int err = 0;

	if (bpf_core_type_exists(struct proto_accept_arg___new))
		err = BPF_CORE_READ((struct proto_accept_arg___new *)arg1, err);
	else
		bpf_probe_read_kernel(&err, sizeof(err), arg2);
	return err;
}

/* emit_accept_failed reports an accept() that failed on listener sk. */
static __always_inline void emit_accept_failed(struct sock *sk, long ret, __u8 backend)
{
	struct event e = {};
	struct sk_head h;

	if (!read_head(&e, sk, &h))
		return;
	head_local(&e, sk, &h);
	if (!ports_wanted(&e) || !fill_sock_meta(&e, sk))
		return;
	fill_task(&e, EV_ACCEPT, backend);
	e.err = ret;
	submit(&e);
}

#endif /* PORTTRACE_COMMON_H */
