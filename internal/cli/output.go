package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// errReaderGone ends a command whose output's reader went away: `porttrace
// -o json | head -1` once head has its line.
var errReaderGone = errors.New("the output's reader is gone")

// readerGone reports whether err, or why ctx ended, is the output's
// reader having gone: a command then stops as a filter does, status 0 and
// nothing more said. EPIPE is what a write finds (porttrace takes SIGPIPE
// as a signal it handles, so that it is not killed by it); errReaderGone
// is what watchReader finds first when no write comes.
func readerGone(ctx context.Context, err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(context.Cause(ctx), errReaderGone)
}

// watchReader calls gone once out, a pipe or a socket, has no reader any
// more. A stream with no new event to write would otherwise learn it only
// at its next write, which may not come for hours. It watches with poll(2),
// which reports POLLERR on a pipe whose readers have all closed it and
// POLLHUP on a socket whose peer did; a file or a terminal is not watched.
// stop ends the watch.
func watchReader(out io.Writer, gone func()) (stop func()) {
	f, ok := out.(*os.File)
	if !ok {
		return func() {}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return func() {}
	}
	// A copy of the descriptor, for the watch to hold on its own: Fd would
	// switch stdout to blocking mode.
	fd := -1
	if cerr := rc.Control(func(s uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(s), &st) != nil {
			return
		}
		if t := st.Mode & unix.S_IFMT; t != unix.S_IFIFO && t != unix.S_IFSOCK {
			return
		}
		fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil || fd < 0 {
		return func() {}
	}
	var wake [2]int
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		unix.Close(fd)
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		defer unix.Close(wake[0])
		for {
			// Events 0: only POLLERR, POLLHUP and POLLNVAL, which poll
			// always reports, wake it on out.
			fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake[0]), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); errors.Is(err, unix.EINTR) {
				continue
			} else if err != nil {
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
				gone()
				return
			}
		}
	}()
	return func() {
		unix.Close(wake[1]) // POLLHUP on wake[0]
		<-done
	}
}

// quietWriter passes writes to w until shut, then drops them: once the
// output's reader has gone, porttrace stops without a summary or an error
// on stderr, as `yes | head -1` does.
type quietWriter struct {
	w    io.Writer
	shut atomic.Bool
}

func (q *quietWriter) Write(p []byte) (int, error) {
	if q.shut.Load() {
		return len(p), nil
	}
	return q.w.Write(p)
}
