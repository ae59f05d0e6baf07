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
