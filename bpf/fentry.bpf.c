//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * fentry/fexit backend (5.5+, where the architecture has BPF trampolines:
 * x86-64 since 5.5, arm64 since 6.0). An fexit program gets the traced
 * function's return value as the argument after the function's own, which
 * works on every kernel with fexit, where bpf_get_func_ret needs 5.17: the
 * loader checks each function's parameter count in the kernel's BTF before
 * it loads, so the value read is never an argument of a prototype that
 * changed (fexitArity in tracer/backend.go). Hooks the kernel functions
 * every path goes through, syscall or not:
 *  - __inet_bind/__inet6_bind, not inet_bind: from 6.12 an MPTCP socket's
 *    bind (Go's net.Listen since 1.24) reaches __inet_bind through
 *    inet_bind_sk without inet_bind, and __inet_bind is where -EACCES is
 *    decided.
 *  - inet_stream_connect: every TCP and MPTCP connect(2) and io_uring
 *    connect. It returns after release_sock(), which handles what arrived
 *    meanwhile, so its result is the connect's, a refusal over loopback or
 *    a blocking connect's timeout included, and the source port has been
 *    allocated (or released by the failure). __inet_stream_connect for
 *    TCP Fast Open, whose sendmsg connects without inet_stream_connect.
 *  - inet_dgram_connect: UDP connect and its autobind.
 *  - inet_csk_accept: its prototype went from 4 arguments to 2 in 6.10, so
 *    only the first argument and the return value are read.
 *  - __inet_listen_sk (on 6.12, not 6.1; also MPTCP's path), else inet_listen;
 *    one program, attached to whichever the kernel has.
 */
#include "common.h"

SEC("fexit/__inet_bind")
int BPF_PROG(fexit_inet_bind, struct sock *sk, struct sockaddr *uaddr, int addr_len, u32 flags, int ret)
{
	struct event e = {};

	if (task_wanted() && bind_request(&e, uaddr, false, ret))
		emit_bind(&e, sk, ret, BACKEND_FENTRY);
	return 0;
}

SEC("fexit/__inet6_bind")
int BPF_PROG(fexit_inet6_bind, struct sock *sk, struct sockaddr *uaddr, int addr_len, u32 flags, int ret)
{
	struct event e = {};

	if (task_wanted() && bind_request(&e, uaddr, false, ret))
		emit_bind(&e, sk, ret, BACKEND_FENTRY);
	return 0;
}

/*
 * A connect's start, by thread and hook: when it began, and the socket's
 * local port then (0 means the connect itself asks the kernel for a port,
 * which churn counts). A start_ns of 0 is an empty slot.
 */
struct connect_start {
	__u64 start_ns;
	__u16 port;
	__u16 pad[3];
};

enum { H_STREAM = 1, H_FASTOPEN, H_DGRAM };

/* The thread's starts, one a hook: TCP Fast Open's runs inside a stream connect's. */
struct connect_starts {
	struct connect_start hook[H_DGRAM + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct connect_starts);
} task_port_before SEC(".maps");

/* Without task storage: by thread and hook. One element where task_port_before is used. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct connect_start);
} port_before SEC(".maps");

static __always_inline int remember_port(struct sock *sk, __u64 hook)
{
	struct connect_starts *starts;
	struct connect_start st = {};
	__u64 key;

	if (!task_wanted())
		return 0;
	st.start_ns = bpf_ktime_get_boot_ns();
	st.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (have_task_storage) {
		starts = task_slot(&task_port_before, true);
		if (starts && hook <= H_DGRAM)
			starts->hook[hook] = st;
		return 0;
	}
	key = bpf_get_current_pid_tgid() << 8 | hook;
	bpf_map_update_elem(&port_before, &key, &st, BPF_ANY);
	return 0;
}

static __always_inline void connect_done(struct sock *sk, struct sockaddr *uaddr, int ret, __u64 hook)
{
	__u64 key = 0;
	struct connect_start *before;
	struct connect_starts *starts;
	struct connect_start st;

	if (have_task_storage) {
		starts = task_slot(&task_port_before, false);
		if (!starts || hook > H_DGRAM)
			return;
		before = &starts->hook[hook];
	} else {
		key = bpf_get_current_pid_tgid() << 8 | hook;
		before = bpf_map_lookup_elem(&port_before, &key);
	}
	if (!before || !before->start_ns)
		return; /* began before porttrace attached, a retry, or filtered out */
	st = *before;
	if (have_task_storage)
		before->start_ns = 0;
	else
		bpf_map_delete_elem(&port_before, &key);
	emit_connect(sk, uaddr, false, ret, BACKEND_FENTRY, st.port, st.start_ns);
}

/*
 * A connect on a socket already connecting or connected is a retry (after
 * a signal, or a non-blocking poll), not a new connection: only a socket
 * still unconnected is remembered, so each connection is reported once.
 */
SEC("fentry/inet_stream_connect")
int BPF_PROG(fentry_inet_stream_connect, struct socket *sock)
{
	if (BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	return remember_port(BPF_CORE_READ(sock, sk), H_STREAM);
}

SEC("fexit/inet_stream_connect")
int BPF_PROG(fexit_inet_stream_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	     int ret)
{
	connect_done(BPF_CORE_READ(sock, sk), uaddr, ret, H_STREAM);
	return 0;
}

SEC("fentry/__inet_stream_connect")
int BPF_PROG(fentry_fastopen_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	     int is_sendmsg)
{
	if (!is_sendmsg || BPF_CORE_READ(sock, state) != SS_UNCONNECTED)
		return 0;
	return remember_port(BPF_CORE_READ(sock, sk), H_FASTOPEN);
}

SEC("fexit/__inet_stream_connect")
int BPF_PROG(fexit_fastopen_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	     int is_sendmsg, int ret)
{
	connect_done(BPF_CORE_READ(sock, sk), uaddr, ret, H_FASTOPEN);
	return 0;
}

SEC("fentry/inet_dgram_connect")
int BPF_PROG(fentry_inet_dgram_connect, struct socket *sock)
{
	return remember_port(BPF_CORE_READ(sock, sk), H_DGRAM);
}

SEC("fexit/inet_dgram_connect")
int BPF_PROG(fexit_inet_dgram_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	     int ret)
{
	connect_done(BPF_CORE_READ(sock, sk), uaddr, ret, H_DGRAM);
	return 0;
}

/*
 * inet_csk_accept(sk, flags, err, kern) became inet_csk_accept(sk, arg) in
 * 6.10 (struct proto_accept_arg), so the return value follows a different
 * argument: one program for each prototype, and the loader loads the one
 * for the kernel's.
 */
static __always_inline void accept_done(struct sock *sk, struct sock *newsk, long err)
{
	forget_preblocked();
	if (!task_wanted())
		return;
	if (newsk)
		emit_accept(newsk, BACKEND_FENTRY);
	else if (accept_failure(err))
		emit_accept_failed(sk, err, BACKEND_FENTRY);
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(fexit_inet_csk_accept, struct sock *sk, void *arg, struct sock *newsk)
{
	accept_done(sk, newsk, newsk ? 0 : csk_accept_err(arg, NULL));
	return 0;
}

/*
 * Older verifiers (5.10's) let no tracing program read an argument that
 * points to an int (err) from its context, so the slot is read as memory,
 * as bpf_get_func_arg does on the kernels that have it.
 */
SEC("fexit/inet_csk_accept")
int BPF_PROG(fexit_inet_csk_accept_old, struct sock *sk, int flags, void *err_arg, bool kern, struct sock *newsk)
{
	int *err = NULL;

	if (!newsk)
		bpf_probe_read_kernel(&err, sizeof(err), &ctx[2]);
	accept_done(sk, newsk, newsk ? 0 : csk_accept_err(NULL, err));
	return 0;
}

/* The loader retargets this to __inet_listen_sk where the kernel has it. */
SEC("fexit/inet_listen")
int BPF_PROG(fexit_listen, void *arg0, int backlog, int ret)
{
	if (task_wanted())
		emit_listen(listen_sk(arg0), ret, BACKEND_FENTRY);
	return 0;
}
