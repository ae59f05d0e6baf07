package tracer

import "github.com/porttrace/porttrace/tracer/event"

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
