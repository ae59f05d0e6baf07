package stream

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

// Each burst of losses is told once, with its own count, not the running
// total: on stderr, as a lost line and in the metrics. A count that has
// not moved tells nothing; a second burst of either kind tells only what
// it added.
func TestLostBursts(t *testing.T) {
	var stderr strings.Builder
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	m := NewMetrics()
	l := &lostReport{counter: &fakeLost{lost: []uint64{0, 5, 5, 8, 8}, unfollowed: []uint64{0, 0, 2, 2, 6}, sampled: []uint64{0, 0, 3, 3, 9}}, maxConnecting: 65536, out: &jsonWriter{out: bw},
		stderr: &stderr, metrics: m}
	for range 5 {
		l.check()
	}
	bw.Flush()
	if want := `{"event":"lost","count":5}
{"event":"lost","count":2,"lost_event":"connect_done"}
{"event":"lost","count":3}
{"event":"lost","count":4,"lost_event":"connect_done"}
`; out.String() != want {
		t.Errorf("lost lines\n%s\nwant\n%s", out.String(), want)
	}
	if want := `porttrace: 5 events lost: the ring buffer was full
porttrace: 2 connect_done events lost: more than 65536 connects were in progress at once
porttrace: 3 events lost: the ring buffer was full
porttrace: 4 connect_done events lost: more than 65536 connects were in progress at once
`; stderr.String() != want {
		t.Errorf("stderr\n%s\nwant\n%s", stderr.String(), want)
	}
	if l.reported != 8 || l.unfollowed != 6 || m.lost != 14 || m.sampled != 9 {
		t.Errorf("reported %d and %d, metrics %v lost and %v sampled out; want 8, 6, 14 and 9", l.reported, l.unfollowed, m.lost, m.sampled)
	}
}

// fakeLost is the kernel's running counts, one reading a call.
type fakeLost struct {
	lost, unfollowed, sampled []uint64
	byCPU                     [][]uint64
}

func next(f *[]uint64) (uint64, error) {
	n := (*f)[0]
	if len(*f) > 1 {
		*f = (*f)[1:]
	}
	return n, nil
}

func (f *fakeLost) Lost() (uint64, error)       { return next(&f.lost) }
func (f *fakeLost) Unfollowed() (uint64, error) { return next(&f.unfollowed) }
func (f *fakeLost) SampledOut() (uint64, error) {
	if len(f.sampled) == 0 {
		return 0, nil
	}
	return next(&f.sampled)
}
func (f *fakeLost) LostByCPU() ([]uint64, error) {
	if len(f.byCPU) == 0 {
		return nil, nil
	}
	b := f.byCPU[0]
	f.byCPU = f.byCPU[1:]
	return b, nil
}

// The CPUs whose rings were full are named, those that lost most first,
// with what each lost since the last loss told.
func TestLostWhere(t *testing.T) {
	for _, tc := range []struct {
		name  string
		byCPU [][]uint64
		want  []string
	}{
		{"one ring", [][]uint64{{7}}, []string{"the ring buffer was full"}},
		{"one CPU of four", [][]uint64{{0, 0, 9, 0}}, []string{"the ring buffers of CPU 2 (9) were full"}},
		{"most first", [][]uint64{{1, 5, 0, 3}}, []string{"the ring buffers of CPU 1 (5), CPU 3 (3) and CPU 0 (1) were full"}},
		{"past three", [][]uint64{{1, 5, 2, 3, 4}}, []string{"the ring buffers of CPU 1 (5), CPU 4 (4), CPU 3 (3) and 2 more were full"}},
		{"since the last", [][]uint64{{0, 5}, {4, 5}}, []string{"the ring buffers of CPU 1 (5) were full", "the ring buffers of CPU 0 (4) were full"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &lostReport{counter: &fakeLost{byCPU: tc.byCPU}}
			for i, w := range tc.want {
				if got := l.where(); got != w {
					t.Errorf("loss %d: %q, want %q", i, got, w)
				}
			}
		})
	}
}

// The advice at a first loss names the bottleneck: the output when most of
// the time went waiting for it, else the reading; with the rates.
func TestAdvice(t *testing.T) {
	for _, tc := range []struct {
		share float64
		want  []string
	}{
		{0.9, []string{"the output takes events more slowly than they come (1200 events a second written, 30000 lost; 90% of the time waiting for it)",
			"--sample N", "-o json into a file", "porttrace churn"}},
		{0.1, []string{"events come faster than porttrace reads them (1200 events a second written, 30000 lost)", "--sample N", "-p, --pid"}},
	} {
		got := advice(1200, 30000, tc.share)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("share %.1f: %q lacks %q", tc.share, got, w)
			}
		}
		if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
			t.Errorf("not one line: %q", got)
		}
	}
}

// The output is the bottleneck from half the working time on.
func TestAdviceThreshold(t *testing.T) {
	for share, want := range map[float64]string{0.5: "the output takes events more slowly", 0.49: "events come faster than porttrace reads them"} {
		if got := advice(1, 1, share); !strings.Contains(got, want) {
			t.Errorf("share %.2f: %q, want %q", share, got, want)
		}
	}
}

// pace measures between two looks: events written a second, and the share
// of the time not spent waiting for events that the output took. Each
// look counts from the one before.
func TestPace(t *testing.T) {
	var busy, waited time.Duration
	var written uint64
	p := pace{busy: &busy, waited: func() time.Duration { return waited }, written: &written}
	for i, tc := range []struct {
		ago           time.Duration // since the last look
		busy, waited  time.Duration // added since
		written       uint64
		perSec, share func(wall time.Duration) float64
	}{
		{2 * time.Second, time.Second, 500 * time.Millisecond, 100,
			func(w time.Duration) float64 { return 100 / w.Seconds() },
			func(w time.Duration) float64 { return float64(time.Second) / float64(w-500*time.Millisecond) }},
		{4 * time.Second, time.Second, 2 * time.Second, 200,
			func(w time.Duration) float64 { return 200 / w.Seconds() },
			func(w time.Duration) float64 { return float64(time.Second) / float64(w-2*time.Second) }},
		// More output time than working time, as measured: capped at 1.
		{time.Second, 3 * time.Second, 0, 0, func(time.Duration) float64 { return 0 }, func(time.Duration) float64 { return 1 }},
		// All the time waiting for events: the output took none of it.
		{time.Second, 0, 5 * time.Second, 10,
			func(w time.Duration) float64 { return 10 / w.Seconds() }, func(time.Duration) float64 { return 0 }},
	} {
		p.since = time.Now().Add(-tc.ago)
		busy, waited, written = busy+tc.busy, waited+tc.waited, written+tc.written
		wall, perSec, share := p.look()
		if wall < tc.ago || perSec != tc.perSec(wall) || share != min(1, tc.share(wall)) {
			t.Errorf("look %d: %v, %.2f/s, share %.3f; want %v or more, %.2f/s, %.3f", i, wall, perSec, share, tc.ago, tc.perSec(wall), tc.share(wall))
		}
	}
	if wall, perSec, share := (&pace{since: time.Now().Add(-time.Second)}).look(); wall != 0 || perSec != 0 || share != 0 {
		t.Errorf("no measures: %v %v %v, want zeros", wall, perSec, share)
	}
}

// The advice comes with the first loss only.
func TestAdviceOnce(t *testing.T) {
	var stderr strings.Builder
	var busy time.Duration
	var written uint64
	l := &lostReport{counter: &fakeLost{lost: []uint64{10, 14, 14}, unfollowed: []uint64{0}}, out: noOutput{}, stderr: &stderr,
		pace: pace{busy: &busy, waited: func() time.Duration { return 0 }, written: &written, since: time.Now().Add(-2 * time.Second)}}
	for range 3 {
		l.check()
	}
	// 10 lost over the 2s before the first look.
	if n := strings.Count(stderr.String(), "--sample N"); n != 1 || !strings.Contains(stderr.String(), "4 events lost") ||
		!strings.Contains(stderr.String(), "(0 events a second written, 5 lost)") {
		t.Errorf("advice %d times in\n%s", n, stderr.String())
	}
}
