// Package porttrace holds the one go:generate line of the kernel side:
// bpf2go compiles bpf/porttrace.bpf.c into tracer/porttrace_x86_bpfel.{go,o}
// and turns the contract's types and enums (bpf/porttrace.h) into Go. The
// results are committed, so building porttrace needs no clang; `make
// generate` runs this again, and CI fails when the committed files differ.
//
// The code is in cmd/porttrace (the command) and tracer/ (everything else);
// ARCHITECTURE.md says what lives where.
package porttrace

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -go-package tracer -output-dir tracer -type event -type port_bitmap -type event_kind -type backend_id -type event_flags -type sock_opt -type counter -type churn_ns_key -type churn_dst_key -type churn_proc_key -type churn_counts -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} porttrace bpf/porttrace.bpf.c -- -Ibpf -Ibpf/headers
