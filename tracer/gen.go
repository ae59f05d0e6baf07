package tracer

// The kernel side is compiled once and committed (porttrace_x86_bpfel.go/.o),
// so building porttrace needs no clang. Regenerate with `make generate`.
//go:generate go tool bpf2go -tags linux -target amd64 -type event -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} porttrace ../bpf/porttrace.bpf.c -- -I../bpf -I../bpf/headers
