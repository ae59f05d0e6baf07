package tracer

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
)

const ms = int64(time.Millisecond)

// sent is one batch a fake reader hands the merge: ts in ms, mark in ms
// (0: none), last.
type sent struct {
	ring int
	ts   []int64
	mark int64
	last bool
}

// feed sends b as ring b.ring's reader would, from its free batches; the
// events' PID is their timestamp in ms, to follow them.
func feed(t *testing.T, m *merger, b sent) {
	t.Helper()
	var fb *batch
	select {
	case fb = <-m.free[b.ring]:
	default:
		t.Fatalf("ring %d has no free batch: the merge holds them all", b.ring)
	}
	fb.reset()
	for _, ts := range b.ts {
		fb.evs = append(fb.evs, event.Event{PID: uint32(ts)})
		fb.ts = append(fb.ts, ts*ms)
	}
	fb.mark, fb.last = b.mark*ms, b.last
	fb.sort()
	m.send(fb)
}

// drain reads what the merge can give without waiting for another batch.
func drain(m *merger) []int64 {
	var got []int64
	for {
		if !m.ready() || m.run < 0 {
			return got
		}
		var ev event.Event
		if err := m.next(&ev); err != nil {
			return got
		}
		got = append(got, int64(ev.PID))
	}
}

func TestMergeOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rings  int
		shared bool // several CPUs a ring
		in     []sent
		want   []int64
	}{
		{"one ring goes out as it comes", 1, false,
			[]sent{{0, []int64{1, 2, 3}, 0, false}},
			[]int64{1, 2, 3}},
		{"a batch is sorted", 1, false,
			[]sent{{0, []int64{2, 1, 3}, 0, false}},
			[]int64{1, 2, 3}},
		{"two rings interleave", 2, false,
			[]sent{{0, []int64{1, 4, 6}, 10, false}, {1, []int64{2, 3, 5}, 10, false}},
			[]int64{1, 2, 3, 4, 5, 6}},
		{"an empty ring's mark lets the other's earlier events out", 2, false,
			[]sent{{0, []int64{1, 2, 8}, 0, false}, {1, nil, 5, false}},
			// 8 waits: ring 1 was empty at 5, so it may still send 4 on.
			[]int64{1, 2}},
		{"a ring's own latest event bounds what it can still send", 2, false,
			[]sent{{0, []int64{1, 2, 9}, 0, false}, {1, []int64{3}, 0, false}},
			[]int64{1, 2, 3}},
		{"a stopped ring holds nothing back", 2, false,
			[]sent{{0, []int64{1, 7}, 0, false}, {1, []int64{3}, 0, true}},
			[]int64{1, 3, 7}},
		{"three rings", 3, false,
			[]sent{{0, []int64{5, 9}, 20, true}, {1, []int64{1, 6}, 20, true}, {2, []int64{2, 3, 4, 10}, 20, true}},
			[]int64{1, 2, 3, 4, 5, 6, 9, 10}},
		{"a shared ring's batches are put in order with each other", 1, true,
			[]sent{{0, []int64{1, 5}, 0, false}, {0, []int64{3, 6}, 20, false}},
			[]int64{1, 3, 5, 6}},
		{"a shared ring's own latest events wait mergeSlack", 1, true,
			[]sent{{0, []int64{1, 2, 3}, 0, false}},
			// 3 waits: the ring may still send 2.5, committed after 3.
			[]int64{1, 2}},
		{"a shared ring whose batches are all queued holds nothing back", 1, true,
			[]sent{{0, []int64{1}, 0, false}, {0, []int64{2}, 0, false}, {0, []int64{2}, 0, false}, {0, []int64{3}, 0, false}},
			[]int64{1, 2, 2, 3}},
		{"two shared rings", 2, true,
			[]sent{{0, []int64{1, 4}, 10, false}, {1, []int64{2, 3}, 10, false}},
			[]int64{1, 2, 3, 4}},
		{"a shared ring's later event bounds the other's less", 2, true,
			[]sent{{0, []int64{1, 2, 9}, 0, false}, {1, []int64{3}, 0, false}},
			// Ring 1 may still send 2.5; ring 0 holds back its own 9.
			[]int64{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMerger(tc.rings, tc.shared, func(int) {}, func() int64 { return 0 })
			for _, b := range tc.in {
				feed(t, m, b)
			}
			for len(m.in) > 0 {
				m.add(<-m.in)
			}
			if got := drain(m); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// An event held back by an idle ring goes out once that ring, asked,
// answers that it was still empty mergeSlack after the event; the merge
// asks only the rings holding it back, and not before the event is
// mergeSlack old.
func TestMergeAsksIdleRings(t *testing.T) {
	var now atomic.Int64
	now.Store(10 * ms)
	var asked []int
	var m *merger
	m = newMerger(3, false, func(i int) {
		asked = append(asked, i)
		b := <-m.free[i] // the reader of an idle ring has its batches
		b.reset()
		b.mark = now.Load()
		m.send(b)
	}, now.Load)
	feed(t, m, sent{ring: 0, ts: []int64{10}})
	feed(t, m, sent{ring: 2, ts: []int64{30}})
	var ev event.Event
	done := make(chan error)
	go func() { done <- m.next(&ev) }()
	select {
	case err := <-done:
		t.Fatalf("the event went out before ring 1 said it was empty past it: %d, %v", ev.PID, err)
	case <-time.After(20 * time.Millisecond):
	}
	now.Store(12 * ms)
	if err := <-done; err != nil || ev.PID != 10 {
		t.Fatalf("got %d, %v; want the event at 10 ms", ev.PID, err)
	}
	if len(asked) == 0 || slices.ContainsFunc(asked, func(i int) bool { return i != 1 }) {
		t.Errorf("asked rings %v, want ring 1 only: ring 2 held an event, ring 0 the one waiting", asked)
	}
	// Each answer came after a wait of mergeSlack, not in a busy loop.
	if len(asked) > 25 {
		t.Errorf("asked ring 1 %d times in 20 ms", len(asked))
	}
}

// A shared ring's last event waits for the ring itself: once it is
// mergeSlack old, the merge asks that ring's reader, which has events
// queued, for a fresh mark, and the event goes out on its answer.
func TestMergeAsksSharedRing(t *testing.T) {
	var now atomic.Int64
	now.Store(10 * ms)
	var m *merger
	asked := make(chan int, 8)
	m = newMerger(1, true, func(i int) {
		asked <- i
		b := <-m.free[i]
		b.reset()
		b.mark = now.Load()
		m.send(b)
	}, now.Load)
	feed(t, m, sent{ring: 0, ts: []int64{9, 10}})
	var ev event.Event
	if err := m.next(&ev); err != nil || ev.PID != 9 {
		t.Fatalf("got %d, %v; want the event at 9 ms, which 10 lets out", ev.PID, err)
	}
	now.Store(12 * ms)
	done := make(chan error)
	go func() { done <- m.next(&ev) }()
	select {
	case err := <-done:
		if err != nil || ev.PID != 10 {
			t.Fatalf("got %d, %v; want the event at 10 ms", ev.PID, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the last event of a shared ring waited for good: the ring was not asked")
	}
	select {
	case i := <-asked:
		if i != 0 {
			t.Errorf("asked ring %d, want 0", i)
		}
	default:
		t.Error("the event went out without the ring saying it was past it")
	}
}

func TestMergeStopsAndErrs(t *testing.T) {
	m := newMerger(2, false, func(int) {}, func() int64 { return 0 })
	feed(t, m, sent{ring: 0, ts: []int64{1, 2}, last: true})
	feed(t, m, sent{ring: 1, ts: []int64{3}, last: true})
	var ev event.Event
	var got []int64
	for {
		err := m.next(&ev)
		if errors.Is(err, ErrStopped) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, int64(ev.PID))
	}
	if !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("got %v before ErrStopped, want [1 2 3]", got)
	}
	for i := range m.free {
		if len(m.free[i]) != batchesPerRing {
			t.Errorf("ring %d: %d batches given back, want %d", i, len(m.free[i]), batchesPerRing)
		}
	}

	m = newMerger(2, false, func(int) {}, func() int64 { return 0 })
	b := <-m.free[1]
	b.reset()
	b.err, b.last = errors.New("reading ring buffer 1: bad"), true
	m.send(b)
	feed(t, m, sent{ring: 0, ts: []int64{1}})
	if err := m.next(&ev); err == nil || err.Error() != "reading ring buffer 1: bad" {
		t.Errorf("got %v, want ring 1's error", err)
	}
}

// A ring that sends an event earlier than it had let the merge assume
// (one that took longer than mergeSlack to commit) is counted.
func TestMergeCountsReorders(t *testing.T) {
	m := newMerger(2, false, func(int) {}, func() int64 { return 0 })
	feed(t, m, sent{ring: 0, ts: []int64{5}})
	feed(t, m, sent{ring: 1, ts: []int64{6}})
	for len(m.in) > 0 {
		m.add(<-m.in)
	}
	got := drain(m)
	feed(t, m, sent{ring: 0, ts: []int64{4}, last: true})
	feed(t, m, sent{ring: 1, last: true})
	var ev event.Event
	for m.next(&ev) == nil {
		got = append(got, int64(ev.PID))
	}
	// 6 waited for ring 0, which had sent 5; its 4 still came after 5.
	if !slices.Equal(got, []int64{5, 4, 6}) || m.reorders != 1 {
		t.Errorf("got %v with %d reorders, want [5 4 6] with 1", got, m.reorders)
	}
}

// ready tells the stream whether Read would return at once, so that it
// writes what it has rather than wait: a reader's idle mark is no event;
// an event another ring still holds back is not ready, nor are those
// queued behind it; one no ring can precede is, sent and not yet taken in;
// and so are an error and the end.
func TestMergeReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rings int
		in    []sent
		took  int // events taken with next before asking
		want  bool
	}{
		{"nothing sent", 2, nil, 0, false},
		{"only an idle mark", 2, []sent{{1, nil, 5, false}}, 0, false},
		{"an event the other ring holds back", 2, []sent{{0, []int64{1, 2}, 0, false}}, 0, false},
		{"an event the other ring's mark lets out", 2, []sent{{0, []int64{1, 2}, 0, false}, {1, nil, 5, false}}, 0, true},
		{"the rest held back once the first went out", 2, []sent{{0, []int64{1, 2, 9}, 0, false}, {1, nil, 5, false}}, 2, false},
		{"the other ring's later event lets it out", 2, []sent{{0, []int64{1}, 0, false}, {1, []int64{3}, 0, false}}, 0, true},
		{"one ring, its own events", 1, []sent{{0, []int64{1, 2}, 0, false}}, 1, true},
		{"every event taken", 2, []sent{{0, []int64{1}, 0, true}, {1, nil, 0, true}}, 1, true},
		{"stopped with events left", 2, []sent{{0, []int64{1, 2}, 0, true}, {1, nil, 0, true}}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMerger(tc.rings, false, func(int) {}, func() int64 { return 0 })
			for _, b := range tc.in {
				feed(t, m, b)
			}
			var ev event.Event
			for range tc.took {
				if err := m.next(&ev); err != nil {
					t.Fatal(err)
				}
			}
			if got := m.ready(); got != tc.want {
				t.Fatalf("ready %v, want %v", got, tc.want)
			}
			if !tc.want {
				return
			}
			// Ready: next returns at once, with an event or the end.
			done := make(chan error, 1)
			go func() { done <- m.next(&ev) }()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, ErrStopped) {
					t.Errorf("next after ready: %v", err)
				}
			case <-time.After(time.Second):
				t.Fatal("next waited after ready said it would not")
			}
		})
	}

	m := newMerger(2, false, func(int) {}, func() int64 { return 0 })
	b := <-m.free[1]
	b.reset()
	b.err, b.last = errors.New("reading ring buffer 1: bad"), true
	m.send(b)
	feed(t, m, sent{ring: 0, ts: []int64{1}})
	if !m.ready() {
		t.Error("not ready with a reader's error sent")
	}
}

// BenchmarkMerge is the merge's cost an event: 16 rings, each sending
// batches in turn, their events interleaved in time as a storm on 16 CPUs
// writes them; shared: the same with rings written by several CPUs.
func BenchmarkMerge(b *testing.B) {
	for _, shared := range []bool{false, true} {
		name := "unshared"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			const rings = 16
			m := newMerger(rings, shared, func(int) {}, func() int64 { return 0 })
			var ev event.Event
			var ts int64
			b.ResetTimer()
			for n := 0; n < b.N; {
				for r := range rings {
					fb := <-m.free[r]
					fb.reset()
					for k := range batchSize {
						fb.evs = append(fb.evs, event.Event{})
						fb.ts = append(fb.ts, ts+int64(k*rings+r)*1000)
					}
					m.send(fb)
				}
				ts += batchSize * rings * 1000
				// What no ring holds back any more: a shared ring holds
				// its last mergeSlack, here this round's last half.
				for m.ready() {
					if err := m.next(&ev); err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
		})
	}
}
