//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * kprobe/kretprobe backend, for kernels where fentry is refused (no BPF
 * trampoline on the architecture, or an older kernel). Same functions as
 * the fentry backend; the entry side stashes the arguments by thread, the
 * return side reports. Needs CONFIG_KPROBES and kprobe_events.
 */
#include "common.h"

enum kprobe_id {
	P_BIND4 = 1,
	P_BIND6,
	P_STREAM,
	P_FASTOPEN,
	P_DGRAM,
	P_LISTEN,
};

struct kargs {
	__u64 obj; /* struct sock * or struct socket * */
	__u64 sa;  /* kernel sockaddr */
	__u64 start_ns;    /* connect: when the call began */
	__u16 port_before; /* connect: the socket's local port at entry */
	__u16 pad[3];
};

/* Without task storage: keyed by thread and probe. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kargs);
} kinflight SEC(".maps");

struct accept_args {
	__u64 sk;
	__u64 arg1;
	__u64 arg2;
};

/*
 * The thread's calls in flight, one a probe (Fast Open's runs inside a
 * stream connect's), and its accept: an obj or sk of 0 is an empty slot.
 */
struct kslots {
	struct kargs probe[P_LISTEN + 1];
	struct accept_args accept;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kslots);
} task_kinflight SEC(".maps");

static __always_inline __u64 kkey(enum kprobe_id p)
{
	return (bpf_get_current_pid_tgid() << 8) | p;
}

static __always_inline int kstash(enum kprobe_id p, void *obj, void *sa, __u16 port_before)
{
	__u64 key;
	struct kargs a = {.obj = (__u64)obj, .sa = (__u64)sa, .port_before = port_before};
	struct kslots *slots;

	if (!task_wanted())
		return 0;
	a.start_ns = bpf_ktime_get_boot_ns();
	if (have_task_storage) {
		slots = task_slot(&task_kinflight, true);
		if (slots && p <= P_LISTEN)
			slots->probe[p] = a;
		return 0;
	}
	key = kkey(p);
	bpf_map_update_elem(&kinflight, &key, &a, BPF_ANY);
	return 0;
}

static __always_inline bool ktake(enum kprobe_id p, struct kargs *out)
{
	__u64 key;
	struct kslots *slots;
	struct kargs *a;

	if (have_task_storage) {
		slots = task_slot(&task_kinflight, false);
		if (!slots || p > P_LISTEN || !slots->probe[p].obj)
			return false;
		*out = slots->probe[p];
		slots->probe[p].obj = 0;
		return true;
	}
	key = kkey(p);
	a = bpf_map_lookup_elem(&kinflight, &key);
	if (!a)
		return false;
	*out = *a;
	bpf_map_delete_elem(&kinflight, &key);
	return true;
}

SEC("kprobe/__inet_bind")
int BPF_KPROBE(kp_inet_bind, struct sock *sk, struct sockaddr *uaddr)
{
	return kstash(P_BIND4, sk, uaddr, 0);
}

SEC("kretprobe/__inet_bind")
int BPF_KRETPROBE(krp_inet_bind, int ret)
{
	struct kargs a;

	struct event e = {};

	if (ktake(P_BIND4, &a) && bind_request(&e, (void *)a.sa, false, ret))
		emit_bind(&e, (void *)a.obj, ret, BACKEND_KPROBE);
	return 0;
}

SEC("kprobe/__inet6_bind")
int BPF_KPROBE(kp_inet6_bind, struct sock *sk, struct sockaddr *uaddr)
{
	return kstash(P_BIND6, sk, uaddr, 0);
}

SEC("kretprobe/__inet6_bind")
int BPF_KRETPROBE(krp_inet6_bind, int ret)
{
	struct kargs a;

	struct event e = {};

	if (ktake(P_BIND6, &a) && bind_request(&e, (void *)a.sa, false, ret))
		emit_bind(&e, (void *)a.obj, ret, BACKEND_KPROBE);
	return 0;
}

/*
 * inet_stream_connect: every TCP and MPTCP connect(2) and io_uring
 * connect, returning after release_sock() with the connect's result (a
 * refusal over loopback included); __inet_stream_connect for TCP Fast
 * Open's sendmsg. A socket already connecting or connected is a retry,
 * not a new connection.
 */
SEC("kprobe/inet_stream_connect")
int BPF_KPROBE(kp_inet_stream_connect, struct socket *sock, struct sockaddr *uaddr)
{
	struct sock *sk;

	if (BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	return kstash(P_STREAM, sk, uaddr, BPF_CORE_READ(sk, __sk_common.skc_num));
}

SEC("kretprobe/inet_stream_connect")
int BPF_KRETPROBE(krp_inet_stream_connect, int ret)
{
	struct kargs a;

	if (ktake(P_STREAM, &a))
		emit_connect((void *)a.obj, (void *)a.sa, false, ret, BACKEND_KPROBE, a.port_before, a.start_ns);
	return 0;
}

SEC("kprobe/__inet_stream_connect")
int BPF_KPROBE(kp_fastopen_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	       int is_sendmsg)
{
	struct sock *sk;

	if (!is_sendmsg || BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	return kstash(P_FASTOPEN, sk, uaddr, BPF_CORE_READ(sk, __sk_common.skc_num));
}

SEC("kretprobe/__inet_stream_connect")
int BPF_KRETPROBE(krp_fastopen_connect, int ret)
{
	struct kargs a;

	if (ktake(P_FASTOPEN, &a))
		emit_connect((void *)a.obj, (void *)a.sa, false, ret, BACKEND_KPROBE, a.port_before, a.start_ns);
	return 0;
}

SEC("kprobe/inet_dgram_connect")
int BPF_KPROBE(kp_inet_dgram_connect, struct socket *sock, struct sockaddr *uaddr)
{
	return kstash(P_DGRAM, sock, uaddr, BPF_CORE_READ(sock, sk, __sk_common.skc_num));
}

SEC("kretprobe/inet_dgram_connect")
int BPF_KRETPROBE(krp_inet_dgram_connect, int ret)
{
	struct kargs a;

	struct socket *sock;

	if (!ktake(P_DGRAM, &a))
		return 0;
	/* Through a variable: a cast inside BPF_CORE_READ would relocate a.obj too. */
	sock = (void *)a.obj;
	emit_connect(BPF_CORE_READ(sock, sk), (void *)a.sa, false, ret, BACKEND_KPROBE, a.port_before, a.start_ns);
	return 0;
}

/* The listener and where the error will be, for a failed accept, without task storage. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct accept_args);
} kaccept SEC(".maps");

SEC("kprobe/inet_csk_accept")
int BPF_KPROBE(kp_inet_csk_accept, struct sock *sk, void *arg1, void *arg2)
{
	__u32 tid;
	struct accept_args a = {.sk = (__u64)sk, .arg1 = (__u64)arg1, .arg2 = (__u64)arg2};
	struct kslots *slots;

	if (!task_wanted())
		return 0;
	if (have_task_storage) {
		slots = task_slot(&task_kinflight, true);
		if (slots)
			slots->accept = a;
		return 0;
	}
	tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&kaccept, &tid, &a, BPF_ANY);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(krp_inet_csk_accept, struct sock *newsk)
{
	__u32 tid = 0;
	struct accept_args *a;
	struct kslots *slots;
	long err;

	forget_preblocked();
	if (have_task_storage) {
		slots = task_slot(&task_kinflight, false);
		a = slots && slots->accept.sk ? &slots->accept : NULL;
	} else {
		tid = (__u32)bpf_get_current_pid_tgid();
		a = bpf_map_lookup_elem(&kaccept, &tid);
	}
	if (newsk) {
		if (task_wanted())
			emit_accept(newsk, BACKEND_KPROBE);
	} else if (a) {
		err = csk_accept_err((void *)a->arg1, (void *)a->arg2);
		if (accept_failure(err))
			emit_accept_failed((void *)a->sk, err, BACKEND_KPROBE);
	}
	if (!a)
		return 0;
	if (have_task_storage)
		a->sk = 0;
	else
		bpf_map_delete_elem(&kaccept, &tid);
	return 0;
}

/* Attached to __inet_listen_sk where the kernel has it, else inet_listen. */
SEC("kprobe/inet_listen")
int BPF_KPROBE(kp_listen, void *arg0)
{
	return kstash(P_LISTEN, arg0, NULL, 0);
}

SEC("kretprobe/inet_listen")
int BPF_KRETPROBE(krp_listen, int ret)
{
	struct kargs a;

	if (ktake(P_LISTEN, &a))
		emit_listen(listen_sk((void *)a.obj), ret, BACKEND_KPROBE);
	return 0;
}
