package stream

import (
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
)

// The stream's work after the merge is split in three, so that a storm on
// a node of many cores is not held to what one core can filter, enrich
// and encode (about two million events a second: BenchmarkDecodeJSON):
//
//   - read: one goroutine takes the events from the tracer, already in
//     time order, into batches of up to batchEvents;
//   - work: workers (one a CPU, up to maxWorkers) each take a batch and
//     filter, enrich and, for -o json, encode its events;
//   - write: the stream's own goroutine writes the batches in the order
//     they were read, each line whole, waiting for a batch's worker where
//     it must, and keeps the counts, the losses and the flushes.
//
// The output keeps the merge's time order because batches are written in
// sequence whatever worker ends first. What the pipeline holds is bounded:
// inFlight batches of batchEvents events and their lines, about 2 MB. A
// batch is cut as soon as the next event is not there to take (Pending),
// so an event waits for no later one: not a lone event, nor one the merge
// could give out before the rings let it give the next. With one CPU there
// are no workers: the write stage reads and prepares each batch itself,
// which one CPU does a little faster than through hand-offs
// (BenchmarkStreamPipeline).
const (
	batchEvents = 256
	maxWorkers  = 4
	// inFlight is enough batches that the read seldom waits for one to
	// come back from the write: on two CPUs, 8 against 4 took the
	// pipeline from 0.9 to 1.2 million events a second.
	inFlight = 8
)

// source is where the events come from: the tracer (Read, Pending, Stop),
// or a benchmark's synthetic events.
type source interface {
	Read(*event.Event) error
	Pending() bool
	Stop()
}

// workBatch is batchEvents events on their way through the pipeline.
type workBatch struct {
	evs   []event.Event
	keep  []bool // evs[i] passed the filters
	lines []byte // -o json: the kept events' lines, one after another
	ends  []int  // where each kept event's line ends in lines
	idle  bool   // nothing was pending when it was cut: flush after it
	err   error  // what ended the reading (tracer.ErrStopped, or a reader's error)
	ready chan struct{}
}

type pipeline struct {
	src     source
	prepare func(*event.Event) bool // filter and enrich one event: false drops it
	encode  bool                    // -o json: workers write the lines
	free    chan *workBatch
	work    chan *workBatch
	order   chan *workBatch
	quit    chan struct{}
	wg      sync.WaitGroup
	waited  time.Duration // the writer's wait for batches, all told
	inline  *workBatch    // with no workers: the one batch, read and prepared by next
}

// pipelineWorkers is how many workers a stream runs: one a CPU Go may
// use, up to maxWorkers, and none with one CPU. An event takes a worker
// about half a microsecond: four are twice what two million events a
// second need.
func pipelineWorkers() int {
	if n := runtime.GOMAXPROCS(0); n > 1 {
		return min(n, maxWorkers)
	}
	return 0
}

// startPipeline starts reading src on its goroutines. encode has the
// workers write each kept event's JSON line.
func startPipeline(src source, workers int, prepare func(*event.Event) bool, encode bool) *pipeline {
	p := &pipeline{src: src, prepare: prepare, encode: encode,
		free: make(chan *workBatch, inFlight), work: make(chan *workBatch, inFlight),
		order: make(chan *workBatch, inFlight), quit: make(chan struct{})}
	newBatch := func() *workBatch {
		return &workBatch{evs: make([]event.Event, 0, batchEvents), keep: make([]bool, batchEvents),
			ready: make(chan struct{}, 1)}
	}
	if workers == 0 {
		p.inline = newBatch()
		return p
	}
	for range inFlight {
		p.free <- newBatch()
	}
	p.wg.Add(1 + workers)
	go p.read()
	for range workers {
		go p.worker()
	}
	return p
}

// read fills batches from the source and hands each to the write stage,
// in order, and to a worker.
func (p *pipeline) read() {
	defer p.wg.Done()
	defer close(p.work)
	defer close(p.order)
	for {
		var b *workBatch
		select {
		case b = <-p.free:
		case <-p.quit:
			return
		}
		p.fill(b)
		// To the write stage first: it then waits for the batch's worker,
		// never for a batch that has not yet reached it.
		select {
		case p.order <- b:
		case <-p.quit:
			return
		}
		p.work <- b // work holds inFlight, every batch there is: it never blocks
		if b.err != nil {
			return
		}
	}
}

// fill reads into b until it is full, nothing more is pending, or the
// source ends.
func (p *pipeline) fill(b *workBatch) {
	b.evs, b.lines, b.ends, b.idle, b.err = b.evs[:0], b.lines[:0], b.ends[:0], false, nil
	for len(b.evs) < cap(b.evs) {
		if len(b.evs) > 0 && !p.src.Pending() {
			b.idle = true
			return
		}
		b.evs = b.evs[:len(b.evs)+1]
		if err := p.src.Read(&b.evs[len(b.evs)-1]); err != nil {
			b.evs, b.err = b.evs[:len(b.evs)-1], err
			return
		}
	}
}

func (p *pipeline) worker() {
	defer p.wg.Done()
	for b := range p.work {
		p.prepareBatch(b)
		b.ready <- struct{}{}
	}
}

// prepareBatch decides which of b's events to keep, enriches them and,
// for -o json, writes their lines.
func (p *pipeline) prepareBatch(b *workBatch) {
	for i := range b.evs {
		ev := &b.evs[i]
		b.keep[i] = p.prepare(ev)
		if b.keep[i] && p.encode {
			b.lines = event.AppendJSON(b.lines, ev)
			b.ends = append(b.ends, len(b.lines))
		}
	}
}

// next is the next batch in the order read, prepared; nil once reading
// has ended. Only the write stage calls it. With no workers, it reads and
// prepares the batch itself.
func (p *pipeline) next() *workBatch {
	if p.inline != nil {
		if p.inline.err != nil {
			return nil
		}
		start := time.Now() // mostly waiting for the first event: taking the rest is a copy each
		p.fill(p.inline)
		p.waited += time.Since(start)
		p.prepareBatch(p.inline)
		return p.inline
	}
	start := time.Now()
	defer func() { p.waited += time.Since(start) }()
	b, ok := <-p.order
	if !ok {
		return nil
	}
	<-b.ready
	return b
}

// more says whether another batch is already on its way to the write
// stage, so that a flush may wait for it.
func (p *pipeline) more() bool { return len(p.order) > 0 }

// release gives a written batch back to be read into.
func (p *pipeline) release(b *workBatch) {
	if b != p.inline {
		p.free <- b
	}
}

// stop ends the pipeline: the source is stopped, so that a read waiting
// for events returns, and every goroutine has ended when it returns.
func (p *pipeline) stop() {
	close(p.quit)
	p.src.Stop()
	p.wg.Wait()
}

// lockedWriter serializes writes to w: the stream's workers and its
// write stage may each have a line to say on stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
