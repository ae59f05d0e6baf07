package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

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

// possibleCPUs is the number of CPUs the rings are laid out for: the
// kernel's possible CPUs. The tests raise it past MaxRings, so that the
// CPUs of a small machine share a ring as a large one's do.
var possibleCPUs = ebpf.PossibleCPU

// sizeRings sizes spec (bpf/common.h: rings) for this machine: a ring a
// CPU or group of CPUs, each of size bytes (0: DefaultRingBufferSize).
func sizeRings(spec *ebpf.MapSpec, size uint32) (ringSize uint32, cpusPerRing int) {
	ncpu, err := possibleCPUs()
	if err != nil {
		ncpu = runtime.NumCPU()
	}
	if size == 0 {
		size = DefaultRingBufferSize(ncpu)
	}
	rings, perRing := ringLayout(ncpu)
	spec.MaxEntries = uint32(rings)
	spec.InnerMap.MaxEntries = size
	return size, perRing
}

// MaxRingBufferSize bounds --buffer, a ring's size: the kernel takes up to
// 2 GiB less a page, and porttrace keeps it sane for a machine it watches.
const MaxRingBufferSize = 1 << 30

// ringSet is the rings of a tracer being started, made as soon as
// porttrace's object is read (prelude) and put in their array while the
// rest of the start goes on.
type ringSet struct {
	outer  *ebpf.Map   // the array the programs look the rings up in
	rings  []*ebpf.Map // closed once the array and the readers hold them
	shared bool        // several CPUs write into each ring
	filled chan error  // fillArray's answer, once
	err    error
}

// makeRings makes the array spec describes (bpf/common.h: rings), sized
// by sizeRings as configure sizes it for each backend, and its rings, and
// starts putting them in place. One set serves every backend New tries.
func makeRings(spec *ebpf.MapSpec, size uint32) (*ringSet, error) {
	spec = spec.Copy()
	_, perRing := sizeRings(spec, size)
	outer, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("making the array of ring buffers: %w", err)
	}
	rs := &ringSet{outer: outer, shared: perRing > 1}
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
func (rs *ringSet) open() ([]*ring, error) {
	if err := rs.wait(); err != nil {
		return nil, fmt.Errorf("putting the ring buffers in place: %w", err)
	}
	out := make([]*ring, 0, len(rs.rings))
	for i, m := range rs.rings {
		rg, err := openRing(m)
		if err != nil {
			for _, rg := range out {
				rg.close()
			}
			return nil, fmt.Errorf("opening ring buffer %d: %w", i, err)
		}
		out = append(out, rg)
	}
	return out, nil
}

// ring is one ring buffer's reading end. Its reader waits for the kernel
// in Go's netpoller, on a non-blocking copy of the map's fd (a ring buffer
// polls readable while it holds data, 5.8), and reads what is there
// through a ringbuf.Reader that never blocks. ringbuf.Reader's own wait is
// epoll_wait, a system call, and a goroutine in a system call keeps its P
// (one of GOMAXPROCS, one a CPU) until sysmon takes it back, after up to
// 10 ms on a quiet process: with every P held by a waiting reader, the
// merge that a reader had just handed a batch waited that long for one.
type ring struct {
	rd    *ringbuf.Reader
	f     *os.File        // the non-blocking copy, in the netpoller
	rc    syscall.RawConn // waits on f
	asked atomic.Bool     // the merge (or Stop) wants the reader to look
}

func openRing(m *ebpf.Map) (*ring, error) {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, err
	}
	rd.SetDeadline(time.Unix(1, 0)) // ReadInto never waits
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		if err = unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		rd.Close()
		return nil, err
	}
	rg := &ring{rd: rd, f: os.NewFile(uintptr(fd), "ring buffer")}
	if rg.rc, err = rg.f.SyscallConn(); err == nil {
		// Fails if the fd is not in the netpoller.
		err = rg.f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		rg.close()
		return nil, err
	}
	return rg, nil
}

// wait returns once the ring holds data, deadline (zero: none) has passed
// or ask was called: woken says it was one of the last two.
func (rg *ring) wait(deadline time.Time) (woken bool, err error) {
	// The deadline first, then the question: an ask that comes between
	// them is seen here, one that comes after ends the wait.
	if err := rg.f.SetReadDeadline(deadline); err != nil {
		return false, err
	}
	if rg.asked.Swap(false) {
		return true, nil
	}
	err = rg.rc.Read(func(uintptr) bool { return rg.rd.AvailableBytes() > 0 })
	if rg.asked.Swap(false) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true, nil
	}
	return false, err
}

// ask ends the reader's wait, or its next one.
func (rg *ring) ask() {
	rg.asked.Store(true)
	_ = rg.f.SetReadDeadline(time.Unix(1, 0))
}

func (rg *ring) close() error {
	return JoinErrors(rg.f.Close(), rg.rd.Close())
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
	return JoinErrors(errs...)
}

// readers is the reading side: the rings, their readers' goroutines, the merge.
type readers struct {
	rings    []*ring
	m        *merger
	quit     chan struct{}
	stopping chan struct{}
	wg       sync.WaitGroup
}

func (t *Tracer) startReaders(rings []*ring, shared bool) {
	r := &readers{rings: rings, quit: make(chan struct{}), stopping: make(chan struct{})}
	r.m = newMerger(len(rings), shared, func(i int) { rings[i].ask() }, monotonicBoot)
	for i, rg := range rings {
		r.wg.Go(func() { r.read(i, rg, t.bootOffset) })
	}
	t.r = r
}

// read reads ring i until it is stopped or closed: batches of events in
// the ring's order, each with the time the ring was found empty after it
// (its mark), if it was. Idle, it sends a fresh mark when the merge asks,
// and looks again WakeupAfter after it last found the ring busy: an event
// written in between may have woken nobody (bpf/common.h: wakeup_flags).
// Past that it sleeps until an event wakes it, so that an idle tracer
// costs nothing (it used to look every 25 ms a ring).
func (r *readers) read(i int, rg *ring, bootOffset time.Duration) {
	var rec ringbuf.Record
	comms := newInterner()
	var busy time.Time // when the ring was last found empty after a read
	read := false      // since busy
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
		woken := false // by the deadline or the merge, with nothing read
		for len(b.evs) < batchSize {
			// The clock only when the ring looks empty: not once a record
			// in a storm. A mark is taken before the look that finds the
			// ring empty.
			if rg.rd.AvailableBytes() == 0 {
				mark := monotonicBoot()
				if rg.rd.AvailableBytes() == 0 {
					// Stopped: the hooks are gone, so an empty ring stays empty.
					if r.stopped() || r.closing() {
						b.last = true
						break
					}
					if len(b.evs) > 0 || woken {
						b.mark = mark
						break
					}
				}
				now := time.Now()
				if read {
					busy, read = now, false
				}
				deadline := time.Time{}
				if now.Sub(busy) < WakeupAfter {
					deadline = busy.Add(WakeupAfter)
				}
				w, err := rg.wait(deadline)
				if err != nil && !r.closing() {
					b.err, b.last = fmt.Errorf("waiting on ring buffer %d: %w", i, err), true
					break
				}
				woken = woken || w
				continue
			}
			err := rg.rd.ReadInto(&rec)
			if err == nil {
				b.evs = b.evs[:len(b.evs)+1]
				ts, err := decodeRecord(rec.RawSample, bootOffset, &b.evs[len(b.evs)-1], comms)
				if err != nil {
					b.evs = b.evs[:len(b.evs)-1]
					b.err, b.last = fmt.Errorf("reading ring buffer %d: %w", i, err), true
					break
				}
				b.ts = append(b.ts, int64(ts))
				read = true
				continue
			}
			if errors.Is(err, os.ErrClosed) || r.closing() {
				b.last = true
				break
			}
			// Only discarded records: the next look finds the ring empty.
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				b.err, b.last = fmt.Errorf("reading ring buffer %d: %w", i, err), true
				break
			}
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

// Rings is how many ring buffers the events come through.
func (t *Tracer) Rings() int { return len(t.r.rings) }

// Pending reports whether Read would return at once: an event no ring can
// precede any more is waiting, or the tracer is stopped or failed. An event
// read from a ring but held back by another ring is not pending: a writer
// that waited for it would hold back what it has, so it writes (and
// flushes) first.
func (t *Tracer) Pending() bool { return t.r.m.ready() }

// Stop detaches every hook, so no new event is produced, and makes Read
// return the events still buffered, then ErrStopped. Safe to call from
// another goroutine and more than once.
func (t *Tracer) Stop() {
	t.stopOnce.Do(func() {
		t.detach()
		close(t.r.stopping)
		for _, rg := range t.r.rings {
			rg.ask()
		}
	})
}

// close ends the readers' goroutines, woken if they wait on their ring,
// then closes the rings.
func (r *readers) close() error {
	close(r.quit)
	for _, rg := range r.rings {
		rg.ask()
	}
	r.wg.Wait()
	var errs []error
	for _, rg := range r.rings {
		errs = append(errs, rg.close())
	}
	return JoinErrors(errs...)
}
