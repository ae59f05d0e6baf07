package tracer

import (
	"errors"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/tracer/event"
)

// DecodedEvents are the output tests' fixtures as decode makes them, for
// the golden tests of the views outside this package.
func DecodedEvents() []event.Event { return decodedEvents() }

var (
	fixtures = rawEvents()
	comms    = newInterner()
)

// DecodeFixture decodes fixture i (modulo their number) into ev as the
// ring reader does, for the benchmarks outside this package.
func DecodeFixture(i int, ev *event.Event) {
	decode(&fixtures[i%len(fixtures)], 0, ev, comms)
}

// ConnectsInFlight counts the entries of the kernel's map of connects in
// progress.
func (t *Tracer) ConnectsInFlight() (int, error) {
	var key uint64
	n := 0
	it := t.l.maps.Connecting.Iterate()
	for it.Next(&key, new(porttraceEvent)) {
		n++
	}
	return n, it.Err()
}

// ChurnKeys counts the keys the churn maps hold now: churn_ns, churn_dst
// and churn_proc.
func (t *Tracer) ChurnKeys() (ns, dst, proc int, err error) {
	m := t.l.maps
	count := func(mp *ebpf.Map) (int, error) {
		n := 0
		var key any
		next := make([]byte, mp.KeySize())
		for {
			err := mp.NextKey(key, &next)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, nil
			} else if err != nil {
				return n, err
			}
			n++
			key = slices.Clone(next)
		}
	}
	if ns, err = count(m.ChurnNs); err != nil {
		return
	}
	if dst, err = count(m.ChurnDst); err != nil {
		return
	}
	proc, err = count(m.ChurnProc)
	return
}

// WithChurnEntries sizes each churn map of o to n entries.
func WithChurnEntries(o Options, n uint32) Options {
	o.churnEntries = n
	return o
}
