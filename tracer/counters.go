package tracer

import "fmt"

// What the kernel counts beside the events (bpf/porttrace.h's enum
// counter), and the bounds a run holds it to.

// Lost is how many events the kernel dropped because a ring buffer was full.
func (t *Tracer) Lost() (uint64, error) { return t.counter(porttraceCounterCNT_LOST) }

// SampledOut is how many events Options.Sample left out.
func (t *Tracer) SampledOut() (uint64, error) { return t.counter(porttraceCounterCNT_SAMPLED_OUT) }

// MaxConnecting is how many connects in progress the kernel follows at once.
func (t *Tracer) MaxConnecting() int { return int(t.l.maps.Connecting.MaxEntries()) }

// Unfollowed is how many connects in progress the kernel could not follow
// to their end, because Options.MaxConnecting were already in progress:
// their connect_done is never sent.
func (t *Tracer) Unfollowed() (uint64, error) { return t.counter(porttraceCounterCNT_UNFOLLOWED) }

// DefaultMaxConnecting is how many connects in progress the kernel follows
// at once (bpf/common.h's connecting map) unless Options say otherwise:
// about 13 MB of kernel memory when full, none until used. Kernels whose
// BPF hash maps cannot allocate from any context (before 6.1's
// bpf_mem_alloc) get a map allocated in full at load, and so a smaller
// one, oldKernelMaxConnecting (3 MB).
const (
	DefaultMaxConnecting   = 65536
	oldKernelMaxConnecting = 16384
)

// LostByCPU is Lost CPU by CPU, indexed by CPU number: which CPUs found
// their ring full (a ring a CPU, but for MaxRings).
func (t *Tracer) LostByCPU() ([]uint64, error) { return t.perCPU(porttraceCounterCNT_LOST) }

func (t *Tracer) counter(idx porttraceCounter) (uint64, error) {
	perCPU, err := t.perCPU(idx)
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, err
}

func (t *Tracer) perCPU(idx porttraceCounter) ([]uint64, error) {
	var perCPU []uint64
	if err := t.l.maps.Counters.Lookup(idx, &perCPU); err != nil {
		return nil, fmt.Errorf("reading counters: %w", err)
	}
	return perCPU, nil
}
