/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one definition of what the kernel side tells userspace. bpf2go turns
 * struct event into tracer.porttraceEvent; change it here and regenerate.
 */
#ifndef PORTTRACE_H
#define PORTTRACE_H

#define TASK_COMM_LEN 16

/* Event kinds; tracer/event.go names them. */
enum event_kind {
	EV_BIND = 1,
	EV_LISTEN = 2,
	EV_CONNECT = 3,
	EV_ACCEPT = 4,
	EV_CONNECT_DONE = 5, /* how a connect that returned in progress ended */
};

/* Which backend produced an event. */
enum backend_id {
	BACKEND_TRACEPOINT = 1,
	BACKEND_FENTRY = 2,
	BACKEND_KPROBE = 3,
};

/*
 * Field-presence and property bits. A backend that cannot know a field
 * leaves its HAS_ bit clear, so userspace omits the field instead of
 * printing a zero that looks like an answer.
 */
enum event_flags {
	F_HAS_LOCAL = 1 << 0,       /* laddr/lport are known */
	F_HAS_REMOTE = 1 << 1,      /* raddr/rport are known */
	F_HAS_NET = 1 << 2,         /* netns, prot_sock and the port range are known */
	F_EPHEMERAL = 1 << 3,       /* the kernel chose lport */
	F_EXE_DELETED = 1 << 4,     /* the task's executable has no links left */
	F_CAP_BIND = 1 << 5,        /* the task holds CAP_NET_BIND_SERVICE */
	F_HAS_PROTO = 1 << 6,       /* proto is known */
	F_AUTOBIND = 1 << 7,        /* the call asked the kernel for a local port */
	F_HAS_SOCK_OPTS = 1 << 8,   /* sock_opts and bound_if are known (binds) */
	F_HAS_LATENCY = 1 << 9,     /* latency_ns is known (TCP and MPTCP connects) */
	F_HAS_RETRANS = 1 << 10,    /* syn_retrans is known (connect_done) */
};

/*
 * The socket options that decide whether two binds of one address and port
 * clash, as a bind event reports them (struct event's sock_opts).
 */
enum sock_opt {
	SO_OPT_REUSEADDR = 1 << 0,      /* SO_REUSEADDR */
	SO_OPT_REUSEPORT = 1 << 1,      /* SO_REUSEPORT */
	SO_OPT_FREEBIND = 1 << 2,       /* IP_FREEBIND */
	SO_OPT_TRANSPARENT = 1 << 3,    /* IP_TRANSPARENT */
	SO_OPT_BIND_NO_PORT = 1 << 4,   /* IP_BIND_ADDRESS_NO_PORT */
	SO_OPT_V6ONLY = 1 << 5,         /* IPV6_V6ONLY */
};

/*
 * One socket event. Fixed-width fields, addresses flat in 16 bytes with the
 * family beside them, no unions or bitfields, so bpf2go can mirror it.
 */
struct event {
	__u64 ts_ns;       /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;   /* cgroup v2 id of the task */
	__u64 latency_ns;  /* a connect's: from the call to the handshake's end, with F_HAS_LATENCY */
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 netns;       /* inode number of the socket's network namespace */
	__s32 err;         /* 0, or the negative errno the call returned */
	__u32 flags;       /* enum event_flags */
	__u32 prot_sock;   /* net.ipv4.ip_unprivileged_port_start of the netns */
	__u16 port_lo;     /* net.ipv4.ip_local_port_range of the netns */
	__u16 port_hi;
	__u16 lport;       /* host byte order */
	__u16 rport;       /* host byte order */
	__u16 proto;       /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_MPTCP */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u8 kind;         /* enum event_kind */
	__u8 backend;      /* enum backend_id */
	__u8 sock_opts;    /* enum sock_opt, with F_HAS_SOCK_OPTS */
	__u8 pad;
	__u32 sock_ino;    /* inode of the socket (sock_diag's, /proc/PID/fd's); 0 if unknown */
	__s32 bound_if;    /* SO_BINDTODEVICE's ifindex in the socket's netns; 0: none */
	__u32 syn_retrans; /* connect_done: SYNs the kernel sent again, with F_HAS_RETRANS */
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
};

/* Index of the per-CPU counters in the "counters" map. */
enum counter {
	CNT_LOST = 0,          /* the ring buffer was full: the event was dropped */
	CNT_CHURN_OVERFLOW = 1, /* a churn map was full: a key went uncounted */
	CNT_UNFOLLOWED = 2,    /* a connect in progress found the connecting map full: its outcome is not reported */
	CNT_SAMPLED_OUT = 3,   /* left out by --sample: counted, not sent */
	CNT_SAMPLE_TICK = 4,   /* calls seen by this CPU, for --sample's one in N */
	CNT_MAX = 8,
};

/*
 * Churn mode counts ephemeral port allocations in per-CPU hash maps
 * instead of sending events. err is 0 for an allocation, else the errno
 * of a failed one (EADDRNOTAVAIL, EAGAIN, EADDRINUSE).
 */
struct churn_ns_key {
	__u32 netns;
	__u16 proto;
	__u16 err;
	__u16 kind; /* EV_BIND (bind to port 0) or EV_CONNECT (autobind) */
	__u16 pad;
};

/*
 * One destination. The kernel reuses a local port towards different
 * destinations, so the range runs out per destination.
 */
struct churn_dst_key {
	__u32 netns;
	__u16 family;
	__u16 dport;
	__u16 proto;
	__u16 pad;
	__u8 daddr[16];
};

struct churn_proc_key {
	__u32 pid;
	__u32 netns;
	char comm[TASK_COMM_LEN];
	__u64 cgroup_id; /* the cgroup v2 the process called from: its container, its pod */
};

struct churn_counts {
	__u64 allocs;
	__u64 fails;
};

#endif /* PORTTRACE_H */
