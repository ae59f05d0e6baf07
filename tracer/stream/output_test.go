package stream

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// fakeLost is the kernel's running count of dropped events.
type fakeLost []uint64

// Each burst of losses is told once, with its own count, not the running
// total: on stderr, as a lost line and in the metrics.
func TestLostBursts(t *testing.T) {
	var stderr strings.Builder
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	m := NewMetrics()
	l := &lostReport{counter: &fakeLost{0, 5, 5, 8}, out: &jsonWriter{out: bw}, stderr: &stderr, metrics: m}
	for range 4 {
		l.check()
	}
	bw.Flush()
	if want := "{\"event\":\"lost\",\"count\":5}\n{\"event\":\"lost\",\"count\":3}\n"; out.String() != want {
		t.Errorf("lost lines\n%s\nwant\n%s", out.String(), want)
	}
	if want := "porttrace: 5 events lost: the ring buffer was full\nporttrace: 3 events lost: the ring buffer was full\n"; stderr.String() != want {
		t.Errorf("stderr\n%s\nwant\n%s", stderr.String(), want)
	}
	if l.reported != 8 || m.lost != 8 {
		t.Errorf("reported %d, metrics %v; want 8 and 8", l.reported, m.lost)
	}
}

func (f *fakeLost) Lost() (uint64, error) {
	n := (*f)[0]
	if len(*f) > 1 {
		*f = (*f)[1:]
	}
	return n, nil
}
