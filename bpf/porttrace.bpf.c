//go:build ignore
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * One object, three backends. The loader loads only the programs of the
 * backend it picked; the maps are shared, so userspace reads one ring buffer
 * and one set of counters whatever the backend.
 */
#include "tracepoint.bpf.c"
#include "fentry.bpf.c"
#include "kprobe.bpf.c"
