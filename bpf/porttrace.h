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
};

/*
 * One socket event. Fixed-width fields, addresses flat in 16 bytes with the
 * family beside them, no unions or bitfields, so bpf2go can mirror it.
 */
struct event {
	__u64 ts_ns;       /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;   /* cgroup v2 id of the task */
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
	__u8 pad[6];
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
};

/* Index of the per-CPU counters in the "counters" map. */
enum counter {
	CNT_LOST = 0,  /* bpf_ringbuf_reserve failed: the event was dropped */
	CNT_MAX = 4,
};

#endif /* PORTTRACE_H */
