package tracer

import (
	"testing"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
)

// BenchmarkDecodeJSON is the per-event userspace path of the stream: decode
// the kernel record, enrich from the per-process cache, format one JSON line;
// events/s is what one reader core sustains.
func BenchmarkDecodeJSON(b *testing.B) {
	raws := rawEvents()
	en := proc.NewEnricherAt(b.TempDir()) // no /proc reads: the cache path
	comms := newInterner()
	var ev event.Event
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		decode(&raws[i%len(raws)], 0, &ev, comms)
		en.Enrich(&ev)
		buf = event.AppendJSON(buf[:0], &ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
