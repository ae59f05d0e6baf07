package textout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// ErrStalled is a write abandoned because porttrace was told to stop
// while its output was not being read.
var ErrStalled = errors.New("output not being read")

// StallGrace is how long a write may still take once porttrace is told to
// stop: enough to finish a line into a slow terminal, not so long that a
// pipe nobody reads keeps it running.
var StallGrace = time.Second

// StopWriter writes to w from a goroutine of its own, so that a command
// whose output is blocked (`-o json > fifo` with a reader that never
// reads, a terminal on hold) still stops when told to: once ctx is done, a
// write that does not finish within stallGrace is abandoned with
// errStalled, and so is every write after it. The goroutine stays blocked
// in the abandoned write until the process exits.
type StopWriter struct {
	ctx     context.Context
	req     chan []byte
	res     chan writeResult
	buf     []byte
	stalled bool
	closed  bool
}

type writeResult struct {
	n   int
	err error
}

func NewStopWriter(ctx context.Context, w io.Writer) *StopWriter {
	s := &StopWriter{ctx: ctx, req: make(chan []byte), res: make(chan writeResult, 1)}
	go func() {
		for p := range s.req {
			n, err := w.Write(p)
			s.res <- writeResult{n, err}
		}
	}()
	return s
}

// Write hands p to the writing goroutine and waits for it: as long as it
// takes before ctx is done, stallGrace after.
func (s *StopWriter) Write(p []byte) (int, error) {
	if s.stalled || s.closed {
		return 0, ErrStalled
	}
	// The goroutine is idle: the last write finished, or we would be
	// stalled. It owns buf until it answers.
	s.buf = append(s.buf[:0], p...)
	s.req <- s.buf
	select {
	case r := <-s.res:
		return r.n, r.err
	case <-s.ctx.Done():
	}
	t := time.NewTimer(StallGrace)
	defer t.Stop()
	select {
	case r := <-s.res:
		return r.n, r.err
	case <-t.C:
		s.stalled = true
		return 0, ErrStalled
	}
}

// Stalled reports whether a write was abandoned.
func (s *StopWriter) Stalled() bool { return s.stalled }

// Close ends the writing goroutine, unless it is stuck in a write.
func (s *StopWriter) Close() {
	if !s.stalled && !s.closed {
		s.closed = true
		close(s.req)
	}
}

// OutputError is err, met writing the output, as every command says it:
// "writing output: no space left on device", without the "write
// /dev/stdout" that os.File puts before the errno, which names the
// output no better. It keeps nil and ErrStalled as they are, and the errno
// for errors.Is.
func OutputError(err error) error {
	if err == nil || errors.Is(err, ErrStalled) {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("writing output: %w", err)
}
