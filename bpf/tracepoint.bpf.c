//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Tracepoint backend: syscalls:sys_exit_{bind,listen,connect,accept,
 * accept4}, and sys_enter_connect. Works where kprobes and fentry do not
 * (5.8+, for the ring buffer). With bpf_task_pt_regs (5.15) the arguments
 * are still in the task's saved registers at exit, so one program finds the
 * socket behind the fd and reads what the kernel did to it; without it, the
 * loader also attaches sys_enter_{bind,listen,accept,accept4}, which keep
 * the arguments by thread for the exit (have_task_pt_regs). connect always
 * looks at the socket before the call. Blind spot: calls that do not pass
 * through these syscalls (io_uring, in-kernel sockets).
 */
#include "common.h"

/* 0 is no call: an emptied slot of inflight_task. */
enum syscall_id { SYS_BIND = 1, SYS_LISTEN, SYS_CONNECT, SYS_ACCEPT };

/*
 * A call in flight: what its exit needs from before the call. A connect's
 * socket is kept rather than looked up again at exit: the call holds a
 * reference to it, while the fd could meanwhile be closed and reused by
 * another thread. The others keep their arguments only where the exit
 * cannot read them from the saved registers.
 */
struct args {
	__u64 sa;   /* user sockaddr pointer */
	__u64 sk;   /* struct sock, connect only */
	__u64 start_ns; /* when a connect began */
	__s32 fd;
	__u16 port_before; /* the socket's local port when the call began */
	__u8 call;  /* enum syscall_id: whose entry this is */
	__u8 pad;
};

/*
 * Calls in flight, in the thread's own task storage (task_slot): found
 * from the task in a few loads, written in place, and freed with the
 * thread. It took about 400 ns off connect's entry and 300 off its exit
 * here (6.18): most of what the LRU hash's update and delete cost.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct args);
} inflight_task SEC(".maps");

/*
 * Calls in flight by thread id, without task storage; LRU so a thread
 * killed mid-call cannot fill it. One element where inflight_task is used.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct args);
} inflight SEC(".maps");

/*
 * fd_file returns the file at fd in the current task's table, or NULL.
 * From 5.11 the task and its fd table are walked with direct loads
 * (walk_task), and only the fd slot needs a helper read; before, every
 * step is a CO-RE read.
 */
static __always_inline struct file *fd_file(int fd)
{
	struct file **fds;
	struct file *f = NULL;
	unsigned int max_fds;

	if (fd < 0)
		return NULL;
	if (have_rdonly_cast || have_task_btf) {
		struct files_struct *files = walk_task()->files;
		struct fdtable *fdt;

		if (!files)
			return NULL;
		fdt = files->fdt;
		if (!fdt)
			return NULL;
		max_fds = fdt->max_fds;
		fds = fdt->fd;
	} else {
		struct task_struct *task = (void *)bpf_get_current_task();
		struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);

		if (!fdt)
			return NULL;
		max_fds = BPF_CORE_READ(fdt, max_fds);
		fds = BPF_CORE_READ(fdt, fd);
	}
	if ((unsigned int)fd >= max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return NULL;
	return f;
}

/* sock_from_fd returns the struct socket behind fd in the current task, or NULL. */
static __always_inline struct socket *sock_from_fd(int fd)
{
	struct file *f = fd_file(fd);

	if (!f)
		return NULL;
	if (have_rdonly_cast) {
		struct file *bf = core_cast(f, struct file);
		struct inode *inode = bf->f_inode;

		if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
			return NULL;
		return core_cast(bf->private_data, struct socket);
	}
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(f, private_data);
}

static __always_inline struct sock *sk_from_fd(int fd)
{
	struct socket *sock = sock_from_fd(fd);

	if (!sock)
		return NULL;
	return have_rdonly_cast ? sock->sk : BPF_CORE_READ(sock, sk);
}

/* stash keeps this thread's arguments of call for its exit. */
static __always_inline void stash(struct args *a, enum syscall_id call)
{
	__u32 tid;

	a->call = call;
	if (have_task_storage) {
		struct args *slot = task_slot(&inflight_task, true);

		if (slot)
			*slot = *a;
		return;
	}
	tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&inflight, &tid, a, BPF_ANY);
}

/* drop_args forgets this thread's stashed arguments. */
static __always_inline void drop_args(void)
{
	__u32 tid;

	if (have_task_storage) {
		struct args *slot = task_slot(&inflight_task, false);

		if (slot)
			slot->call = 0;
		return;
	}
	tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&inflight, &tid);
}

/*
 * take pops this thread's stashed arguments of call. An entry of another
 * call (its exit was missed) is dropped, never used. A task storage slot
 * stays with the thread, emptied (call 0), for its next call.
 */
static __always_inline bool take(enum syscall_id call, struct args *out)
{
	struct args *a;
	__u32 tid;

	if (have_task_storage) {
		a = task_slot(&inflight_task, false);
		if (!a || !a->call)
			return false;
		*out = *a;
		a->call = 0;
		return out->call == call;
	}
	tid = (__u32)bpf_get_current_pid_tgid();
	a = bpf_map_lookup_elem(&inflight, &tid);
	if (!a)
		return false;
	*out = *a;
	bpf_map_delete_elem(&inflight, &tid);
	return out->call == call;
}

/*
 * call_args gives the exit of call its first two arguments: from the
 * registers the task entered the kernel with, which still hold them at
 * syscall exit (di and si on x86-64; orig_x0 and x1 on arm64, whose x0
 * holds the return value by then), or, without bpf_task_pt_regs, from what
 * its entry stashed. bpf_task_pt_regs gives a typed pointer: the registers
 * are loaded directly (CO-RE-relocated), not with a helper call each.
 */
static __always_inline bool call_args(enum syscall_id call, int *fd, __u64 *arg2)
{
	struct args a;

	if (have_task_pt_regs) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

#if defined(__TARGET_ARCH_x86)
		*fd = regs->di;
		*arg2 = regs->si;
#elif defined(__TARGET_ARCH_arm64)
		*fd = regs->orig_x0;
		*arg2 = regs->regs[1];
#else
#error "call_args: no syscall registers for this architecture"
#endif
		return true;
	}
	if (!take(call, &a))
		return false;
	*fd = a.fd;
	*arg2 = a.sa;
	return true;
}

/* The entries of bind, listen and accept: attached only without bpf_task_pt_regs. */
static __always_inline int enter(struct trace_event_raw_sys_enter *ctx, enum syscall_id call)
{
	struct args a = {};

	if (!task_wanted())
		return 0;
	a.fd = ctx->args[0];
	a.sa = ctx->args[1];
	stash(&a, call);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_bind")
int tp_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, SYS_BIND);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int tp_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, SYS_LISTEN);
}

/* Attached to sys_enter_accept and sys_enter_accept4. */
SEC("tracepoint/syscalls/sys_enter_accept4")
int tp_enter_accept(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx, SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	struct event e = {};
	struct sock *sk;
	__u64 sa;
	int fd;

	if (!task_wanted() || !call_args(SYS_BIND, &fd, &sa))
		return 0;
	if (!bind_request(&e, (void *)sa, true, ctx->ret))
		return 0;
	sk = sk_from_fd(fd);
	if (sk)
		emit_bind(&e, sk, ctx->ret, BACKEND_TRACEPOINT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	struct sock *sk;
	__u64 unused;
	int fd;

	if (!task_wanted() || !call_args(SYS_LISTEN, &fd, &unused))
		return 0;
	sk = sk_from_fd(fd);
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
	struct args a = {};
	struct socket *sock;
	struct sock *sk;

	if (!task_wanted())
		return 0;
	sock = sock_from_fd(ctx->args[0]);
	if (!sock)
		return 0;
	if (have_rdonly_cast) {
		/* sock_from_fd gave a cast pointer: direct loads. */
		if (sock->state != SS_UNCONNECTED)
			return 0;
		sk = sock->sk;
		if (!sk)
			return 0;
		a.port_before = core_cast(sk, struct sock)->__sk_common.skc_num;
	} else {
		if (BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
			return 0;
		sk = BPF_CORE_READ(sock, sk);
		if (!sk)
			return 0;
		a.port_before = BPF_CORE_READ(sk, __sk_common.skc_num);
	}
	if (churn_mode && a.port_before != 0)
		return 0;
	a.sa = ctx->args[1];
	a.sk = (__u64)sk;
	a.start_ns = bpf_ktime_get_boot_ns();
	stash(&a, SYS_CONNECT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tp_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct args a;

	if (take(SYS_CONNECT, &a))
		emit_connect((void *)a.sk, (void *)a.sa, true, ctx->ret, BACKEND_TRACEPOINT, a.port_before, a.start_ns);
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
	__u64 unused;
	int fd;

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
	if (ret >= 0 || !accept_failure(ret)) {
		if (!have_task_pt_regs)
			drop_args(); /* the listener's fd, needed only on failure */
		if (ret < 0)
			return 0;
		sk = sk_from_fd(ret);
		if (sk)
			emit_accept(sk, BACKEND_TRACEPOINT);
		return 0;
	}
	if (!call_args(SYS_ACCEPT, &fd, &unused))
		return 0;
	sk = sk_from_fd(fd); /* the listener */
	if (sk)
		emit_accept_failed(sk, ret, BACKEND_TRACEPOINT);
	return 0;
}
