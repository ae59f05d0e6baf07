package tracer

import (
	"time"

	"github.com/porttrace/porttrace/tracer/event"
)

// The kernel writes events into a ring per CPU (bpf/common.h: rings), each
// read and decoded on a goroutine of its own (rings.go); merger puts them
// back into the order of their timestamps for Read.
//
// A ring is in order, or nearly: a program interrupted by another on the
// same CPU (a state change in softirq during a connect's exit) commits
// after it, a few microseconds out; the reader sorts each batch. Across
// rings, an event can go out once no ring can still produce an earlier
// one: every other ring either holds a later event already, or its reader
// found it empty after the event's time plus mergeSlack (the longest an
// event takes from its timestamp to its commit in the program). So the
// window is what the rings hold and mergeSlack: an event waits at most
// mergeSlack, and the time to ask idle rings, beyond its arrival. Memory is
// bounded by batchesPerRing batches of batchSize events a ring: a reader
// whose batches are all queued here waits, and its ring fills and counts
// its losses, as a single slow reader would.
//
// Past MaxRings CPUs a ring is shared by neighbouring CPUs, and it is in
// the order they committed, which is not their timestamps': each CPU takes
// its timestamp before it reserves, so a later commit can carry an
// earlier time, by tens of nanoseconds, across a batch's end where the
// reader's sort cannot reach. The merge puts each batch of a shared ring
// in order with what is queued before it (settle), and holds the ring's
// own later events to the rule other rings' are held to: its head goes
// out once the ring has shown an event, or been found empty, mergeSlack
// past it. Where all its batches are queued here (a ring of over half a
// million events a second, or a merge kept off the CPU) its reader can
// show nothing more, and its head goes out as an unshared ring's would,
// counted by Reordered if it was early.

const (
	// mergeSlack is 1 ms: a program runs for microseconds between its
	// timestamp and its commit, with interrupts; a task preempted there for
	// longer (PREEMPT kernels) can come out of order, counted by Reordered.
	mergeSlack     = int64(time.Millisecond)
	batchSize      = 128
	batchesPerRing = 4
)

// batch is what a ring's reader hands the merge: events in ts order.
type batch struct {
	ring int
	evs  []event.Event
	ts   []int64 // boot time of evs, ascending
	mark int64   // > 0: the ring was found empty at this boot time, after evs
	last bool    // nothing more comes from this ring (stopped, or err)
	err  error
}

func (b *batch) reset() {
	b.evs, b.ts, b.mark, b.last, b.err = b.evs[:0], b.ts[:0], 0, false, nil
}

// sort puts a nearly sorted batch in ts order (insertion sort: linear when
// in order, as batches almost always are).
func (b *batch) sort() {
	for i := 1; i < len(b.ts); i++ {
		for j := i; j > 0 && b.ts[j] < b.ts[j-1]; j-- {
			b.ts[j], b.ts[j-1] = b.ts[j-1], b.ts[j]
			b.evs[j], b.evs[j-1] = b.evs[j-1], b.evs[j]
		}
	}
}

// ringState is what the merge knows of one ring.
type ringState struct {
	q      []*batch // received, oldest first; q[0].evs[pos] is the head
	pos    int
	seen   int64 // the latest timestamp received from it
	mark   int64 // when its reader last found it empty
	done   bool
	wakeup bool // asked for a fresh mark, not yet answered
}

func (r *ringState) head() (int64, bool) {
	if len(r.q) == 0 {
		return 0, false
	}
	return r.q[0].ts[r.pos], true
}

// frontier is how early an event this ring has not handed over yet can
// be. An unshared ring's is never before what it has queued; a shared
// one's (written by several CPUs, so not in time order across batches)
// can be.
func (r *ringState) frontier(shared bool) int64 {
	if r.done {
		return maxTs
	}
	if shared && len(r.q) < batchesPerRing {
		return max(r.mark, r.seen) - mergeSlack
	}
	return max(r.mark-mergeSlack, r.seen)
}

const maxTs = int64(^uint64(0) >> 1)

// merger is the k-way merge of the rings' batches. Only Read's goroutine
// uses it.
type merger struct {
	in    chan *batch   // from the readers, by send; room for all their batches, so a send never blocks
	free  []chan *batch // per ring, the batches its reader may fill
	rings []ringState
	live  int            // rings not done
	wake  func(ring int) // asks an idle ring's reader for a fresh mark
	now   func() int64   // boot time
	timer *time.Timer    // until the head is mergeSlack old
	err   error          // the first reader's error

	shared   bool  // several CPUs write into each ring
	run      int   // the ring events go out from, while its head is <= bound
	bound    int64 // no other ring can hand over anything earlier
	queued   int
	last     int64
	reorders uint64
}

func newMerger(rings int, shared bool, wake func(int), now func() int64) *merger {
	m := &merger{
		in:     make(chan *batch, rings*batchesPerRing),
		free:   make([]chan *batch, rings),
		rings:  make([]ringState, rings),
		live:   rings,
		wake:   wake,
		now:    now,
		run:    -1,
		shared: shared,
	}
	for i := range m.free {
		m.free[i] = make(chan *batch, batchesPerRing)
		for range batchesPerRing {
			m.free[i] <- &batch{ring: i, evs: make([]event.Event, 0, batchSize), ts: make([]int64, 0, batchSize)}
		}
	}
	return m
}

// next gives the earliest event no ring can precede any more, waiting for
// the readers as long as it takes; ErrStopped once every ring is done and
// drained; a reader's error at once.
func (m *merger) next(ev *event.Event) error {
	for {
		if m.err != nil {
			return m.err
		}
		r, h, ok := m.runnable()
		if ok {
			m.pop(r, ev)
			return nil
		}
		if r < 0 && m.live == 0 {
			return ErrStopped
		}
		m.await(r, h)
	}
}

// runnable finds the ring whose head may go out now (ok), and keeps it in
// run while its head stays under bound; else the ring with the earliest
// head (-1: none queued) and that head, which the others hold back.
func (m *merger) runnable() (ring int, head int64, ok bool) {
	if m.run >= 0 {
		if ts, ok := m.rings[m.run].head(); ok && ts <= m.bound {
			return m.run, ts, true
		}
		m.run = -1
	}
	ring, head = m.pick()
	if ring >= 0 && head <= m.bound {
		m.run = ring
		return ring, head, true
	}
	return ring, head, false
}

// pick finds the ring with the earliest head, and sets bound to what the
// others allow: their heads, or for those with nothing queued, their
// frontier; where rings are shared, every ring's frontier too, the picked
// one's included.
func (m *merger) pick() (ring int, head int64) {
	ring, head, m.bound = -1, maxTs, maxTs
	for i := range m.rings {
		ts, ok := m.rings[i].head()
		if ok && ts < head {
			if ring >= 0 {
				m.bound = min(m.bound, head)
			}
			ring, head = i, ts
			continue
		}
		if !ok {
			ts = m.rings[i].frontier(m.shared)
		}
		m.bound = min(m.bound, ts)
	}
	if m.shared {
		for i := range m.rings {
			m.bound = min(m.bound, m.rings[i].frontier(true))
		}
	}
	return ring, head
}

// await waits for a batch. With an event waiting (head of ring r), the
// rings whose frontier holds it back (those with nothing queued, and
// shared ones) are asked for a fresh mark once it is mergeSlack old.
func (m *merger) await(r int, head int64) {
	if r < 0 {
		m.add(<-m.in)
		return
	}
	if d := head + mergeSlack - m.now(); d > 0 {
		if m.timer == nil {
			m.timer = time.NewTimer(time.Duration(d))
		} else {
			m.timer.Reset(time.Duration(d))
		}
		select {
		case b := <-m.in:
			m.timer.Stop()
			m.add(b)
			return
		case <-m.timer.C:
		}
	}
	for i := range m.rings {
		s := &m.rings[i]
		if !s.done && !s.wakeup && s.frontier(m.shared) < head {
			s.wakeup = true
			m.wake(i)
		}
	}
	m.add(<-m.in)
}

// send hands b to the merge (the readers' side).
func (m *merger) send(b *batch) { m.in <- b }

func (m *merger) add(b *batch) {
	s := &m.rings[b.ring]
	s.wakeup = false
	if b.err != nil && m.err == nil {
		m.err = b.err
	}
	if b.last {
		s.done = true
		m.live--
	}
	s.mark = max(s.mark, b.mark)
	if len(b.evs) == 0 {
		m.free[b.ring] <- b
		return
	}
	if m.shared {
		s.settle(b)
	}
	s.seen = max(s.seen, b.ts[len(b.ts)-1])
	s.q = append(s.q, b)
	m.queued += len(b.evs)
}

// settle puts the events of b, a shared ring's next batch, in ts order
// with those queued before it that have not gone out: an insertion sort
// across the batches, which moves only the few events that another CPU
// committed late (tens of nanoseconds, so almost always none).
func (r *ringState) settle(b *batch) {
	if len(r.q) == 0 {
		return
	}
	last := r.q[len(r.q)-1]
	if b.ts[0] >= last.ts[len(last.ts)-1] {
		return
	}
	// Position k, i is event i of r.q[k], or of b for k == len(r.q).
	at := func(k int) *batch {
		if k == len(r.q) {
			return b
		}
		return r.q[k]
	}
	for n := range b.ts {
		k, i := len(r.q), n
		for {
			pk, pi := k, i-1
			if pi < 0 {
				if pk--; pk < 0 {
					break
				}
				pi = len(at(pk).ts) - 1
			}
			if pk == 0 && pi < r.pos {
				break // gone out already: the event is late, and pop counts it
			}
			p, c := at(pk), at(k)
			if p.ts[pi] <= c.ts[i] {
				break
			}
			p.ts[pi], c.ts[i] = c.ts[i], p.ts[pi]
			p.evs[pi], c.evs[i] = c.evs[i], p.evs[pi]
			k, i = pk, pi
		}
	}
}

func (m *merger) pop(ring int, ev *event.Event) {
	s := &m.rings[ring]
	b := s.q[0]
	ts := b.ts[s.pos]
	*ev = b.evs[s.pos] // the batch's copy is written over when the batch is read into again
	s.pos++
	m.queued--
	if s.pos == len(b.evs) {
		s.q[0] = nil
		s.q, s.pos = s.q[1:], 0
		m.free[ring] <- b
	}
	if ts < m.last {
		m.reorders++
	}
	m.last = max(m.last, ts)
}

// ready says whether next would return at once: with the batches the
// readers have sent taken in, an event no ring can precede any more, or
// an error, or the end. An event queued behind one that another ring
// still holds back is not ready: next would wait for that ring (up to
// mergeSlack and a wake-up), and a stream that kept reading would hold
// back the events it has read already.
func (m *merger) ready() bool {
	for drained := false; !drained; {
		select {
		case b := <-m.in:
			m.add(b)
		default:
			drained = true
		}
	}
	if m.err != nil {
		return true
	}
	r, _, ok := m.runnable()
	return ok || r < 0 && m.live == 0
}
