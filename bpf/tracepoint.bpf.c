//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Tracepoint backend: syscalls:sys_exit_{bind,listen,connect,accept,
 * accept4}, and sys_enter_connect. Works where kprobes and fentry do not
 * (5.15+ for bpf_task_pt_regs). At exit the arguments are still in the
 * task's saved registers, so one program finds the socket behind the fd and
 * reads what the kernel did to it; connect also looks at the socket before
 * the call. Blind spot: calls that do not pass through these syscalls
 * (io_uring, in-kernel sockets).
 */
#include "common.h"

/*
 * A connect in flight: what its exit needs from before the call. The
 * socket is kept rather than looked up again at exit: the call holds a
 * reference to it, while the fd could meanwhile be closed and reused by
 * another thread.
 */
struct args {
	__u64 sa;   /* user sockaddr pointer */
	__u64 sk;   /* struct sock */
	__u16 port_before; /* the socket's local port when the call began */
	__u16 pad[3];
};

/* Connects in flight by thread id; LRU so a thread killed mid-call cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct args);
} inflight SEC(".maps");

/*
 * sock_from_fd returns the struct socket behind fd in the current task, or
 * NULL. The task and its fd table are walked with direct loads through BTF
 * pointers; only the fd slot and the file need helper reads.
 */
static __always_inline struct socket *sock_from_fd(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct fdtable *fdt;
	struct file *f = NULL;

	if (fd < 0 || !files)
		return NULL;
	fdt = files->fdt;
	if (!fdt || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]) || !f)
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

/*
 * user_regs returns the registers the task entered the kernel with. At
 * syscall exit they still hold the first two arguments, read through
 * PT_REGS_PARM*_CORE_SYSCALL: di and si on x86-64; orig_x0 and x1 on
 * arm64, whose x0 holds the return value by then.
 */
static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* take pops the stashed arguments of this thread's connect. */
static __always_inline bool take(struct args *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args *a = bpf_map_lookup_elem(&inflight, &tid);

	if (!a)
		return false;
	*out = *a;
	bpf_map_delete_elem(&inflight, &tid);
	return true;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	struct event e = {};
	struct pt_regs *regs;
	struct sock *sk;

	if (!task_wanted())
		return 0;
	regs = user_regs();
	if (!bind_request(&e, (void *)PT_REGS_PARM2_CORE_SYSCALL(regs), true))
		return 0;
	sk = sk_from_fd(PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (sk)
		emit_bind(&e, sk, ctx->ret, BACKEND_TRACEPOINT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	struct sock *sk;

	if (!task_wanted())
		return 0;
	sk = sk_from_fd(PT_REGS_PARM1_CORE_SYSCALL(user_regs()));
	if (sk)
		emit_listen(sk, ctx->ret, BACKEND_TRACEPOINT);
	return 0;
}

/*
 * connect() on a stream socket that is already connecting or connected is
 * a retry (after a signal, or a non-blocking poll), not a new connection:
 * the stash is skipped so it is reported once. Churn skips sockets that
 * already hold a port: their connect allocates none.
 */
SEC("tracepoint/syscalls/sys_enter_connect")
int tp_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args a = {};
	struct socket *sock;
	struct sock *sk;

	if (!task_wanted())
		return 0;
	sock = sock_from_fd(ctx->args[0]);
	if (!sock)
		return 0;
	if (BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	a.port_before = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (churn_mode && a.port_before != 0)
		return 0;
	a.sa = ctx->args[1];
	a.sk = (__u64)sk;
	bpf_map_update_elem(&inflight, &tid, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tp_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct args a;

	if (take(&a))
		emit_connect((void *)a.sk, (void *)a.sa, true, ctx->ret, BACKEND_TRACEPOINT, a.port_before);
	return 0;
}

/*
 * Attached to sys_exit_accept and sys_exit_accept4. Success needs nothing
 * from before the call: the new fd is the return value, so an accept()
 * already blocked when porttrace attached is still reported. The fentry
 * and kprobe backends attach it too, with accept_backend set to their own
 * id, for the threads in preblocked only.
 */
const volatile __u8 accept_backend = BACKEND_TRACEPOINT;

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct sock *sk;

	if (accept_backend != BACKEND_TRACEPOINT) {
		if (!forget_preblocked() || ret < 0 || !task_wanted())
			return 0;
		sk = sk_from_fd(ret);
		if (sk)
			emit_accept(sk, accept_backend);
		return 0;
	}
	if (!task_wanted())
		return 0;
	if (ret >= 0) {
		sk = sk_from_fd(ret);
		if (sk)
			emit_accept(sk, BACKEND_TRACEPOINT);
		return 0;
	}
	if (!accept_failure(ret))
		return 0;
	sk = sk_from_fd(PT_REGS_PARM1_CORE_SYSCALL(user_regs())); /* the listener */
	if (sk)
		emit_accept_failed(sk, ret, BACKEND_TRACEPOINT);
	return 0;
}
