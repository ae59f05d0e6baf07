package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/porttrace/porttrace/tracer/event"
)

// The ring buffers: one a CPU (bpf/common.h: rings), each read by a
// goroutine of its own that decodes its events in batches; merge.go puts
// them back in time order. With one ring, every CPU of a large node
// reserved from the same lock and cache line, and one goroutine read,
// decoded and wrote everything: about half a million events a second on
// 16 CPUs, whatever the load.

// MaxRings bounds the rings (bpf/common.h's MAX_RINGS): past 64 CPUs,
// neighbouring CPUs share one, so that a large machine does not need
// hundreds of file descriptors and goroutines.
const MaxRings = 64

// ringLayout is how many rings ncpu possible CPUs get, and how many
// neighbouring CPUs share each.
func ringLayout(ncpu int) (rings, cpusPerRing int) {
	ncpu = max(ncpu, 1)
	cpusPerRing = (ncpu + MaxRings - 1) / MaxRings
	return (ncpu + cpusPerRing - 1) / cpusPerRing, cpusPerRing
}

// DefaultRingBufferSize is the size of each ring for ncpu CPUs: 8 MiB in
// all (about 58,000 events, seconds of a storm on a small machine) split
// over the rings, but at least 2 MiB a ring: a single busy CPU fills only
// its own ring, at up to a few hundred thousand events a second, and its
// reader must find room after being kept off the CPU for tens of
// milliseconds.
func DefaultRingBufferSize(ncpu int) uint32 {
	rings, _ := ringLayout(ncpu)
	size := uint32(8 << 20)
	for size > 2<<20 && int(size)*rings > 8<<20 {
		size >>= 1
	}
	return size
}

// MaxRingBufferSize bounds --buffer, a ring's size: the kernel takes up to
// 2 GiB less a page, and porttrace keeps it sane for a machine it watches.
const MaxRingBufferSize = 1 << 30

// ringSet is the rings of a tracer being started, made before its
// programs are loaded and put in their array while the programs load.
type ringSet struct {
	outer  *ebpf.Map   // the array the programs look the rings up in
	rings  []*ebpf.Map // closed once the array and the readers hold them
	filled chan error  // fillArray's answer, once
	err    error
}

// makeRings makes the array spec describes (bpf/common.h: rings, sized by
// configure) and its rings, and starts putting them in place.
func makeRings(spec *ebpf.MapSpec) (*ringSet, error) {
	outer, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("making the array of ring buffers: %w", err)
	}
	rs := &ringSet{outer: outer}
	for i := range int(spec.MaxEntries) {
		m, err := ebpf.NewMap(spec.InnerMap)
		if err != nil {
			rs.close()
			return nil, fmt.Errorf("making ring buffer %d: %w", i, err)
		}
		rs.rings = append(rs.rings, m)
	}
	rs.filled = make(chan error, 1)
	go func() { rs.filled <- fillArray(outer, rs.rings) }()
	return rs, nil
}

// wait is fillArray's answer, once it has one.
func (rs *ringSet) wait() error {
	if rs.filled != nil {
		rs.err = <-rs.filled
		rs.filled = nil
	}
	return rs.err
}

// open waits for the rings to be in place and opens a reader on each.
func (rs *ringSet) open() ([]*ringbuf.Reader, error) {
	if err := rs.wait(); err != nil {
		return nil, fmt.Errorf("putting the ring buffers in place: %w", err)
	}
	rds := make([]*ringbuf.Reader, 0, len(rs.rings))
	for i, m := range rs.rings {
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			for _, rd := range rds {
				rd.Close()
			}
			return nil, fmt.Errorf("opening ring buffer %d: %w", i, err)
		}
		rds = append(rds, rd)
	}
	return rds, nil
}

// close lets go of the maps: the programs hold the array, and the array and
// the readers the rings, for as long as they need them.
func (rs *ringSet) close() {
	_ = rs.wait()
	for _, m := range rs.rings {
		m.Close()
	}
	rs.outer.Close()
}

// fillArray puts inner[i] at i in outer, an array of maps. Each update of
// a map of maps waits for an RCU grace period (programs still running
// with the old slot: 10 to 25 ms here), so one update a ring made startup
// grow with the CPUs (64 rings, over half a second); one batch (5.6)
// waits once. Where the kernel takes no batch for this map type, the
// updates are made at once, and their waits overlap.
func fillArray(outer *ebpf.Map, inner []*ebpf.Map) error {
	keys := make([]uint32, len(inner))
	fds := make([]uint32, len(inner))
	for i, m := range inner {
		keys[i], fds[i] = uint32(i), uint32(m.FD())
	}
	_, err := outer.BatchUpdate(keys, fds, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	errs := make([]error, len(inner))
	var wg sync.WaitGroup
	for i, m := range inner {
		wg.Go(func() { errs[i] = outer.Put(uint32(i), m) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readers is the reading side: the rings, their readers' goroutines, the merge.
type readers struct {
	rds      []*ringbuf.Reader
	m        *merger
	quit     chan struct{}
	stopping chan struct{}
	wg       sync.WaitGroup
}

func (t *Tracer) startReaders(rds []*ringbuf.Reader) {
	r := &readers{rds: rds, quit: make(chan struct{}), stopping: make(chan struct{})}
	r.m = newMerger(len(rds), func(i int) { _ = rds[i].Flush() }, monotonicBoot)
	for i, rd := range rds {
		r.wg.Go(func() { r.read(i, rd, t.bootOffset) })
	}
	t.r = r
}

// read reads ring i until it is stopped or closed: batches of events in
// the ring's order, each with the time the ring was found empty after it
// (its mark), if it was. Idle, it sends a fresh mark every ReadEvery, or at
// once when the merge asks (Flush).
func (r *readers) read(i int, rd *ringbuf.Reader, bootOffset time.Duration) {
	var rec ringbuf.Record
	comms := newInterner()
	// Set again at each look that finds the ring empty; until then, a
	// ring holding only discarded records does not block for ever.
	rd.SetDeadline(time.Now().Add(ReadEvery))
	for {
		if r.closing() {
			return
		}
		var b *batch
		select {
		case b = <-r.m.free[i]:
		case <-r.quit:
			return
		}
		b.reset()
		woken := false // by the deadline or the merge's Flush, with nothing read
		for len(b.evs) < batchSize {
			// The clock and the deadline only when the ring looks empty:
			// not once a record in a storm. A mark is taken before the look
			// that finds the ring empty.
			if rd.AvailableBytes() == 0 {
				mark := monotonicBoot()
				if rd.AvailableBytes() == 0 && (len(b.evs) > 0 || woken) {
					b.mark = mark
					break
				}
				rd.SetDeadline(time.Now().Add(ReadEvery))
			}
			err := rd.ReadInto(&rec)
			if err == nil {
				b.evs = b.evs[:len(b.evs)+1]
				ts, err := decodeRecord(rec.RawSample, bootOffset, &b.evs[len(b.evs)-1], comms)
				if err != nil {
					b.evs = b.evs[:len(b.evs)-1]
					b.err, b.last = fmt.Errorf("reading ring buffer %d: %w", i, err), true
					break
				}
				b.ts = append(b.ts, int64(ts))
				continue
			}
			if errors.Is(err, os.ErrClosed) || r.closing() {
				b.last = true
				break
			}
			// Stopped: the hooks are gone, so an empty ring stays empty.
			if errors.Is(err, ringbuf.ErrFlushed) && r.stopped() {
				if rd.AvailableBytes() == 0 {
					b.last = true
					break
				}
				continue
			}
			if !errors.Is(err, ringbuf.ErrFlushed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				b.err, b.last = fmt.Errorf("reading ring buffer %d: %w", i, err), true
				break
			}
			// Idle, or asked: the next look answers with a mark if the
			// ring is still empty.
			woken = true
		}
		b.sort()
		r.m.send(b)
		if b.last {
			return
		}
	}
}

func (r *readers) closing() bool {
	select {
	case <-r.quit:
		return true
	default:
		return false
	}
}

func (r *readers) stopped() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// Read blocks for the next event, in time order across the CPUs' rings,
// and decodes it into ev. After Stop it returns what is left in the rings,
// then ErrStopped.
func (t *Tracer) Read(ev *event.Event) error { return t.r.m.next(ev) }

// Reordered counts the events Read gave out of time order: one that took
// longer than mergeSlack from its timestamp to its ring.
func (t *Tracer) Reordered() uint64 { return t.r.m.reorders }

// Waited is how long Read has waited, all told, for events to come: the
// time the reader was not the bottleneck.
func (t *Tracer) Waited() time.Duration { return t.r.m.waited }

// Rings is how many ring buffers the events come through.
func (t *Tracer) Rings() int { return len(t.r.rds) }

// Pending reports whether more events are waiting, in the rings or read
// and not yet taken, so a writer knows when to flush.
func (t *Tracer) Pending() bool {
	if t.r.m.pending() {
		return true
	}
	for _, rd := range t.r.rds {
		if rd.AvailableBytes() > 0 {
			return true
		}
	}
	return false
}

// Stop detaches every hook, so no new event is produced, and makes Read
// return the events still buffered, then ErrStopped. Safe to call from
// another goroutine and more than once.
func (t *Tracer) Stop() {
	t.stopOnce.Do(func() {
		t.detach()
		close(t.r.stopping)
		for _, rd := range t.r.rds {
			_ = rd.Flush()
		}
	})
}

// close ends the readers' goroutines, woken if they wait on their ring,
// then closes the rings.
func (r *readers) close() error {
	close(r.quit)
	for _, rd := range r.rds {
		_ = rd.Flush()
	}
	r.wg.Wait()
	var errs []error
	for _, rd := range r.rds {
		errs = append(errs, rd.Close())
	}
	return JoinErrors(errs...)
}
