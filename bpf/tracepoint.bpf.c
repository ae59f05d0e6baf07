//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Tracepoint backend: syscalls:sys_enter/exit_{bind,listen,connect,accept,
 * accept4}. Works where kprobes and fentry do not (kernel 5.8+ for the ring
 * buffer). The enter side stashes the fd and the user's sockaddr pointer by
 * thread; the exit side finds the socket behind the fd and reads what the
 * kernel did to it. Blind spot: calls that do not pass through these
 * syscalls (io_uring, in-kernel sockets).
 */
#include "common.h"

struct args {
	__u64 sa;   /* user sockaddr pointer */
	__s32 fd;
	__u16 kind; /* enum event_kind */
	__u16 port_before; /* connect: the socket's local port when the call began */
};

/* In-flight calls by thread id; LRU so a thread killed mid-call cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct args);
} inflight SEC(".maps");

/* sock_from_fd returns the struct socket behind fd in the current task, or NULL. */
static __always_inline struct socket *sock_from_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds, *f = NULL;
	unsigned int max;

	if (fd < 0)
		return NULL;
	max = BPF_CORE_READ(task, files, fdt, max_fds);
	if ((unsigned int)fd >= max)
		return NULL;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(f, private_data);
}

static __always_inline struct sock *sk_from_fd(int fd)
{
	struct socket *sock = sock_from_fd(fd);

	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

static __always_inline int enter(struct trace_event_raw_sys_enter *ctx, __u16 kind, __u16 port_before)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args a = {};

	if (!task_wanted())
		return 0;
	a.fd = ctx->args[0];
	a.sa = ctx->args[1];
	a.kind = kind;
	a.port_before = port_before;
	bpf_map_update_elem(&inflight, &tid, &a, BPF_ANY);
	return 0;
}

/* take pops the stashed arguments of this thread's call. */
static __always_inline bool take(__u16 kind, struct args *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args *a = bpf_map_lookup_elem(&inflight, &tid);

	if (!a)
		return false;
	*out = *a;
	bpf_map_delete_elem(&inflight, &tid);
	return out->kind == kind;
}

SEC("tracepoint/syscalls/sys_enter_bind")
int tp_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, EV_BIND, 0);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	struct args a;
	struct sock *sk;

	if (!take(EV_BIND, &a))
		return 0;
	sk = sk_from_fd(a.fd);
	if (sk)
		emit_bind(sk, (void *)a.sa, true, ctx->ret, BACKEND_TRACEPOINT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_listen")
int tp_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, EV_LISTEN, 0);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	struct args a;
	struct sock *sk;

	if (!take(EV_LISTEN, &a))
		return 0;
	sk = sk_from_fd(a.fd);
	if (sk)
		emit_listen(sk, ctx->ret, BACKEND_TRACEPOINT);
	return 0;
}

/*
 * connect() on a stream socket that is already connecting or connected is
 * a retry (after a signal, or a non-blocking poll), not a new connection:
 * the stash is skipped so it is reported once.
 */
SEC("tracepoint/syscalls/sys_enter_connect")
int tp_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct socket *sock;

	if (!task_wanted())
		return 0;
	sock = sock_from_fd(ctx->args[0]);
	if (!sock)
		return 0;
	if (BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	return enter(ctx, EV_CONNECT, BPF_CORE_READ(sock, sk, __sk_common.skc_num));
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tp_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct args a;
	struct sock *sk;

	if (!take(EV_CONNECT, &a))
		return 0;
	sk = sk_from_fd(a.fd);
	if (sk)
		emit_connect(sk, (void *)a.sa, true, ctx->ret, BACKEND_TRACEPOINT, a.port_before);
	return 0;
}

/* Attached to sys_enter_accept and sys_enter_accept4. */
SEC("tracepoint/syscalls/sys_enter_accept4")
int tp_enter_accept(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, EV_ACCEPT, 0);
}

/*
 * Attached to sys_exit_accept and sys_exit_accept4. Success needs nothing
 * from the enter side: the new fd is the return value, so an accept() that
 * was already blocked when porttrace attached is still reported.
 */
/*
 * The fentry and kprobe backends attach this too, with accept_backend set
 * to their own id, for the threads in preblocked only.
 */
const volatile __u8 accept_backend = BACKEND_TRACEPOINT;

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct args a;
	struct sock *sk;
	bool stashed;

	if (accept_backend != BACKEND_TRACEPOINT) {
		if (!forget_preblocked() || ret < 0 || !task_wanted())
			return 0;
		sk = sk_from_fd(ret);
		if (sk)
			emit_accept(sk, accept_backend);
		return 0;
	}
	stashed = take(EV_ACCEPT, &a);

	if (ret >= 0) {
		if (!stashed && !task_wanted())
			return 0;
		sk = sk_from_fd(ret);
		if (sk)
			emit_accept(sk, BACKEND_TRACEPOINT);
		return 0;
	}
	if (!stashed || !accept_failure(ret))
		return 0;
	sk = sk_from_fd(a.fd);
	if (sk)
		emit_accept_failed(sk, ret, BACKEND_TRACEPOINT);
	return 0;
}
