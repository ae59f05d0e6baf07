//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * fentry/fexit backend (5.5+; bpf_get_func_ret needs 5.17). Hooks the
 * kernel functions every path goes through, syscall or not:
 *  - __inet_bind/__inet6_bind, not inet_bind: from 6.12 an MPTCP socket's
 *    bind (Go's net.Listen since 1.24) reaches __inet_bind through
 *    inet_bind_sk without inet_bind, and __inet_bind is where -EACCES is
 *    decided.
 *  - tcp_v4_connect/tcp_v6_connect: the source port is allocated inside,
 *    synchronous failures are their return value.
 *  - inet_dgram_connect: UDP connect and its autobind.
 *  - inet_csk_accept: its prototype went from 4 arguments to 2 in 6.10, so
 *    only the first argument and the return value are read.
 *  - __inet_listen_sk (on 6.12, not 6.1; also MPTCP's path), else inet_listen;
 *    one program, attached to whichever the kernel has.
 */
#include "common.h"

static __always_inline long func_ret(void *ctx)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return (long)ret;
}

SEC("fexit/__inet_bind")
int BPF_PROG(fexit_inet_bind, struct sock *sk, struct sockaddr *uaddr)
{
	struct event e = {};

	if (task_wanted() && bind_request(&e, uaddr, false))
		emit_bind(&e, sk, (int)func_ret(ctx), BACKEND_FENTRY);
	return 0;
}

SEC("fexit/__inet6_bind")
int BPF_PROG(fexit_inet6_bind, struct sock *sk, struct sockaddr *uaddr)
{
	struct event e = {};

	if (task_wanted() && bind_request(&e, uaddr, false))
		emit_bind(&e, sk, (int)func_ret(ctx), BACKEND_FENTRY);
	return 0;
}

/*
 * The socket's local port when a connect begins, by thread and hook: 0
 * means the connect itself asks the kernel for a port (churn counts it).
 * tcp_v6_connect nests tcp_v4_connect for v4-mapped peers, hence the hook
 * in the key.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u16);
} port_before SEC(".maps");

enum { H_TCP4 = 1, H_TCP6, H_DGRAM };

static __always_inline int remember_port(struct sock *sk, __u64 hook)
{
	__u64 key = bpf_get_current_pid_tgid() << 8 | hook;
	__u16 port = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (task_wanted())
		bpf_map_update_elem(&port_before, &key, &port, BPF_ANY);
	return 0;
}

static __always_inline void connect_done(void *ctx, struct sock *sk, struct sockaddr *uaddr, __u64 hook)
{
	__u64 key = bpf_get_current_pid_tgid() << 8 | hook;
	__u16 *before = bpf_map_lookup_elem(&port_before, &key);
	__u16 port;

	if (!before)
		return; /* began before porttrace attached, or filtered out */
	port = *before;
	bpf_map_delete_elem(&port_before, &key);
	emit_connect(sk, uaddr, false, (int)func_ret(ctx), BACKEND_FENTRY, port);
}

SEC("fentry/tcp_v4_connect")
int BPF_PROG(fentry_tcp_v4_connect, struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) != AF_INET)
		return 0;
	return remember_port(sk, H_TCP4);
}

SEC("fexit/tcp_v4_connect")
int BPF_PROG(fexit_tcp_v4_connect, struct sock *sk, struct sockaddr *uaddr)
{
	/* tcp_v6_connect calls this for v4-mapped peers and reports them itself. */
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET)
		connect_done(ctx, sk, uaddr, H_TCP4);
	return 0;
}

SEC("fentry/tcp_v6_connect")
int BPF_PROG(fentry_tcp_v6_connect, struct sock *sk)
{
	return remember_port(sk, H_TCP6);
}

SEC("fexit/tcp_v6_connect")
int BPF_PROG(fexit_tcp_v6_connect, struct sock *sk, struct sockaddr *uaddr)
{
	connect_done(ctx, sk, uaddr, H_TCP6);
	return 0;
}

SEC("fentry/inet_dgram_connect")
int BPF_PROG(fentry_inet_dgram_connect, struct socket *sock)
{
	return remember_port(BPF_CORE_READ(sock, sk), H_DGRAM);
}

SEC("fexit/inet_dgram_connect")
int BPF_PROG(fexit_inet_dgram_connect, struct socket *sock, struct sockaddr *uaddr)
{
	connect_done(ctx, BPF_CORE_READ(sock, sk), uaddr, H_DGRAM);
	return 0;
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(fexit_inet_csk_accept, struct sock *sk)
{
	struct sock *newsk = (struct sock *)func_ret(ctx);
	__u64 arg1 = 0, arg2 = 0;
	long err;

	forget_preblocked();
	if (!task_wanted())
		return 0;
	if (newsk) {
		emit_accept(newsk, BACKEND_FENTRY);
		return 0;
	}
	bpf_get_func_arg(ctx, 1, &arg1);
	bpf_get_func_arg(ctx, 2, &arg2);
	err = csk_accept_err((void *)arg1, (void *)arg2);
	if (accept_failure(err))
		emit_accept_failed(sk, err, BACKEND_FENTRY);
	return 0;
}

/* The loader retargets this to __inet_listen_sk where the kernel has it. */
SEC("fexit/inet_listen")
int BPF_PROG(fexit_listen, void *arg0)
{
	if (task_wanted())
		emit_listen(listen_sk(arg0), (int)func_ret(ctx), BACKEND_FENTRY);
	return 0;
}
