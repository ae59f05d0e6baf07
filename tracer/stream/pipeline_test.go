package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/textout"
)

// synthSource gives events already decoded, as the tracer's merge does:
// n of them (0: until stopped), then tracer.ErrStopped. Event i is a bind
// of process 1000+i%procs to port i%65536, at base plus i µs; every
// listenEvery-th is a listen instead (0: none). After every cutEvery
// events (0: never) it says that nothing more is pending.
type synthSource struct {
	n, procs, listenEvery int
	cutEvery              int
	base                  time.Time
	i                     int
	stopped               atomic.Bool
	reads                 atomic.Int64 // after Stop
}

func (s *synthSource) Read(ev *event.Event) error {
	if s.stopped.Load() {
		s.reads.Add(1)
		return tracer.ErrStopped
	}
	if s.n > 0 && s.i >= s.n {
		return tracer.ErrStopped
	}
	*ev = synthEvent(s.i, s.procs, s.listenEvery, s.base)
	s.i++
	return nil
}

func (s *synthSource) Pending() bool {
	if s.cutEvery > 0 && s.i%s.cutEvery == 0 {
		return false
	}
	return s.n == 0 || s.i < s.n
}

func (s *synthSource) Stop() { s.stopped.Store(true) }

func synthEvent(i, procs, listenEvery int, base time.Time) event.Event {
	pid := uint32(1000 + i%procs)
	ev := event.Event{Time: base.Add(time.Duration(i) * time.Microsecond), Kind: event.KindBind,
		Backend: event.BackendTracepoint, PID: pid, TID: pid, PPID: 1, Comm: "server", CgroupID: 77,
		Proto: event.ProtoUDP, Family: 2, Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(i)),
		HasNet: true, Netns: 4026531840, UnprivPortStart: 1024, PortRange: [2]uint16{32768, 60999}}
	if listenEvery > 0 && i%listenEvery == listenEvery-1 {
		ev.Kind = event.KindListen
	}
	event.Classify(&ev)
	return ev
}

// testLoop is the stream's write stage over out, as Run makes it, with a
// cache that reads nothing from /proc.
func testLoop(t testing.TB, cfg Config, out io.Writer) (*streamLoop, *bufio.Writer) {
	sw := textout.NewStopWriter(context.Background(), out)
	t.Cleanup(func() { sw.Close() })
	bw := bufio.NewWriterSize(sw, 64<<10)
	w, err := openWriter(cfg, bw, out)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	l := &streamLoop{cfg: cfg, w: w, out: bw, sw: sw, s: newSummary(), en: proc.NewEnricherAt(t.TempDir()),
		ifnames: netns.NewIfNames(), holders: newHolderLookup(&stderr), ctx: context.Background(), stderr: &stderr,
		lost: &lostReport{counter: &fakeLost{lost: []uint64{0}, unfollowed: []uint64{0}}, out: w, stderr: &stderr}}
	l.lost.pace.written = &l.s.total
	return l, bw
}

// The pipeline gives back every batch in the order read, whatever order
// its workers end in, each with what its worker decided; with none, the
// write stage reads and prepares each batch itself. A batch ends where
// the source has nothing more pending, and says so.
func TestPipelineKeepsOrder(t *testing.T) {
	for _, workers := range []int{0, 1, 2, 4} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			const n = 20_000
			const cut = 100 // less than a batch
			src := &synthSource{n: n, procs: 50, cutEvery: cut, base: time.Unix(1000, 0)}
			prepare := func(ev *event.Event) bool {
				if rand.IntN(64) == 0 {
					time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // a worker held up
				}
				return ev.Local.Port()%3 != 0
			}
			p := startPipeline(src, workers, prepare, true)
			defer p.stop()
			seen, kept := 0, 0
			for b := p.next(); b != nil; b = p.next() {
				if b.err == nil && (len(b.evs) != cut || !b.idle) {
					t.Fatalf("a batch of %d events from %d, idle %v: want %d, idle", len(b.evs), seen, b.idle, cut)
				}
				lines := bytes.SplitAfter(b.lines, []byte("\n"))
				line := 0
				for i := range b.evs {
					if port := int(b.evs[i].Local.Port()); port != seen%65536 {
						t.Fatalf("event %d: port %d: out of order", seen, port)
					}
					if b.keep[i] != (seen%3 != 0) {
						t.Fatalf("event %d: kept %v", seen, b.keep[i])
					}
					if b.keep[i] {
						if want := fmt.Sprintf(`"local_port":%d,`, seen%65536); !bytes.Contains(lines[line], []byte(want)) {
							t.Fatalf("event %d: line %q lacks %s", seen, lines[line], want)
						}
						line++
						kept++
					}
					seen++
				}
				if len(b.ends) > 0 && b.ends[len(b.ends)-1] != len(b.lines) {
					t.Fatalf("lines end at %d, %d written", b.ends[len(b.ends)-1], len(b.lines))
				}
				err := b.err
				p.release(b)
				if err != nil {
					break
				}
			}
			if seen != n || kept != n-(n+2)/3 {
				t.Errorf("%d events read, %d kept; want %d and %d", seen, kept, n, n-(n+2)/3)
			}
		})
	}
}

// The stream's write stage writes every event the filters want as one
// whole JSON line, in the order read, and counts them; --count stops it
// at that many, the source stopped and every goroutine ended.
func TestStreamLoopWritesInOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int // events offered; 0: until stopped
		count   uint64
		workers int
		want    int
	}{
		{"every event, no worker: read and prepared by the write stage", 10_000, 0, 0, 8_000},
		{"every event, one worker", 10_000, 0, 1, 8_000},
		{"every event, four workers", 10_000, 0, 4, 8_000},
		{"--count mid-batch", 0, 1_000, 4, 1_000},
		{"--count of one", 0, 1, 2, 1},
		{"--count, no worker", 0, 700, 0, 700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg := Config{Output: "json", Events: bindsOnly(t), Count: tc.count}
			l, bw := testLoop(t, cfg, &out)
			src := &synthSource{n: tc.n, procs: 300, listenEvery: 5, base: time.Unix(1000, 0)}
			if err := l.run(src, tc.workers); err != nil {
				t.Fatal(err)
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			if tc.n == 0 && !src.stopped.Load() {
				t.Error("the source was not stopped")
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != tc.want || l.s.total != uint64(tc.want) {
				t.Fatalf("%d lines, %d counted; want %d", len(lines), l.s.total, tc.want)
			}
			i := 0
			for n, line := range lines {
				var got struct {
					Event string
					PID   uint32
					Port  int `json:"local_port"`
				}
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatalf("line %d: %v: %q", n, err, line)
				}
				if i%5 == 4 {
					i++ // a listen, left out by -e bind
				}
				if want := synthEvent(i, 300, 5, time.Unix(1000, 0)); got.Event != "bind" || got.Port != int(want.Local.Port()) || got.PID != want.PID {
					t.Fatalf("line %d: %s of pid %d to port %d, want bind of pid %d to port %d", n, got.Event, got.PID, got.Port, want.PID, want.Local.Port())
				}
				i++
			}
		})
	}
}

// A stream with workers on a machine of more than one CPU, as many as Go
// may use up to four; none on one.
func TestPipelineWorkers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tc := range []struct{ procs, want int }{{1, 0}, {2, 2}, {3, 3}, {4, 4}, {16, 4}} {
		runtime.GOMAXPROCS(tc.procs)
		if got := pipelineWorkers(); got != tc.want {
			t.Errorf("%d CPUs: %d workers, want %d", tc.procs, got, tc.want)
		}
	}
}

// An event that comes alone reaches the output while the stream waits
// for the next: the write stage flushes once nothing more is on its way.
func TestStreamLoopFlushesALoneEvent(t *testing.T) {
	for _, workers := range []int{0, 2} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			out := make(chan string, 16)
			cfg := Config{Output: "json", Events: bindsOnly(t)}
			l, _ := testLoop(t, cfg, writerFunc(func(p []byte) (int, error) { out <- string(p); return len(p), nil }))
			src := &loneSource{ev: synthEvent(7, 1, 0, time.Unix(1000, 0)), stop: make(chan struct{})}
			done := make(chan error, 1)
			go func() { done <- l.run(src, workers) }()
			select {
			case line := <-out:
				if !strings.Contains(line, `"local_port":7,`) {
					t.Errorf("wrote %q", line)
				}
			case <-time.After(5 * time.Second):
				t.Error("the lone event was not written while the stream waited for more")
			}
			src.Stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// loneSource gives one event, then nothing until stopped.
type loneSource struct {
	ev   event.Event
	sent bool
	stop chan struct{}
	once sync.Once
}

func (s *loneSource) Read(ev *event.Event) error {
	if !s.sent {
		s.sent, *ev = true, s.ev
		return nil
	}
	<-s.stop
	return tracer.ErrStopped
}

func (s *loneSource) Pending() bool { return !s.sent }

func (s *loneSource) Stop() { s.once.Do(func() { close(s.stop) }) }

// BenchmarkStreamPipeline is the stream after the merge at full speed:
// synthetic events, already decoded, filtered, enriched from the process
// cache, encoded as JSON and written in order to a discarding writer; by
// the write stage alone (workers=0) or by workers. Run with -cpu 1,2,...
// to see how it scales with the cores Go may use.
func BenchmarkStreamPipeline(b *testing.B) {
	for _, workers := range []int{0, 1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			cfg := Config{Output: "json", Events: bindsOnly(b)}
			l, _ := testLoop(b, cfg, io.Discard)
			src := &synthSource{n: b.N, procs: 500, base: time.Now()}
			b.ReportAllocs()
			b.ResetTimer()
			if err := l.run(src, workers); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if l.s.total != uint64(b.N) {
				b.Fatalf("%d written of %d", l.s.total, b.N)
			}
		})
	}
}

// bindsOnly is -e bind.
func bindsOnly(t testing.TB) tracer.KindSet {
	var k tracer.KindSet
	if err := k.Set("bind"); err != nil {
		t.Fatal(err)
	}
	return k
}
