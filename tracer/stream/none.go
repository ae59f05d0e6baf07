package stream

import (
	"bufio"
	"io"

	"github.com/porttrace/porttrace/tracer/event"
)

// noOutput is -o none: porttrace as an exporter only. The stream still
// reads, filters and counts every event (the summary, /metrics) and tells
// its losses on stderr and in /metrics; only stdout is left empty, so that
// a node where nobody reads the events spends nothing writing them.
type noOutput struct{}

func (noOutput) write(*event.Event, []byte) error { return nil }

func (noOutput) Lost(uint64, string) {}

func (noOutput) Close() error { return nil }

// openWriter is the output -o asks for: none, or a format newWriter makes.
func openWriter(cfg Config, out *bufio.Writer, stdout io.Writer) (writer, error) {
	if cfg.Output == "none" {
		return noOutput{}, nil
	}
	return newWriter(cfg, out, stdout)
}
