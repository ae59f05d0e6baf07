package tracer_test

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/textout"
)

// blockedOut never returns from a Write once called: a pipe nobody reads.
type blockedOut struct {
	first chan struct{}
	once  sync.Once
}

func (b *blockedOut) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.first) })
	select {}
}

// stopStalled runs a command whose output nobody reads: it makes UDP
// binds in ns until the command has written, and 50 more stuck behind
// that write, then tells it to stop. It fails t unless the command then
// stops within 5 s without an error, and returns what it said on stderr.
func stopStalled(t *testing.T, ns *tracer.NS, run func(ctx context.Context, out, stderr io.Writer) error) string {
	t.Helper()
	saved := textout.StallGrace
	textout.StallGrace = 200 * time.Millisecond
	defer func() { textout.StallGrace = saved }()
	bind := func() {
		ns.Run(t, func() {
			fd := tracer.NewSocket(t, tracer.UDP4)
			defer unix.Close(fd)
			if err := unix.Bind(fd, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
		})
	}
	out := &blockedOut{first: make(chan struct{})}
	var stderr tracer.SyncBuilder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, out, &stderr) }()
	deadline := time.After(10 * time.Second)
	for blocked := false; !blocked; {
		bind()
		select {
		case <-out.first:
			blocked = true
		case err := <-done:
			tracer.SkipUnsupported(t, tracer.Backend(t), err)
			t.Fatalf("ended early: %v", err)
		case <-deadline:
			t.Fatal("wrote nothing within 10s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	for range 50 {
		bind()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5s after it was told to stop")
	}
	return stderr.String()
}
