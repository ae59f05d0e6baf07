package tracer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/textout"
)

// Five listeners that come and go on one address within one interval are
// five listeners: each "+ listen" has its "- closed", told apart by the
// socket's inode, which the events carry.
func TestKernelPortsWatchQuickRepeats(t *testing.T) {
	ns := NewNetns(t)
	w := startWatch(t, []string{ns.Path()}, 300*time.Millisecond, "table")
	ns.Run(t, func() {
		for range 5 {
			unix.Close(ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7070")))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(w.out.String(), "- closed tcp 127.0.0.1:7070") < 5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // one more look: nothing more to say
	w.stop(t)
	out := w.out.String()
	if opened, closed := strings.Count(out, "+ listen tcp 127.0.0.1:7070"), strings.Count(out, "- closed tcp 127.0.0.1:7070"); opened != 5 || closed != 5 {
		t.Errorf("%d listens and %d closes, want 5 and 5:\n%s", opened, closed, out)
	}
}

// A namespace named on the command line is watched through porttrace's
// own hold on it: removing its name (ip netns delete) leaves the watch
// running, and a listener opened there afterwards is still seen.
func TestKernelPortsWatchNamedNetnsRemoved(t *testing.T) {
	ns := NewNetns(t)
	name := filepath.Join(t.TempDir(), "demo")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ns.Path(), name, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting the namespace: %v", err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unix.Unmount(name, unix.MNT_DETACH)
		}
	}()
	w := startWatch(t, []string{name}, 100*time.Millisecond, "table")
	if err := unix.Unmount(name, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few looks without the name
	var fd int
	ns.Run(t, func() { fd = ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7071")) })
	w.wait(t, "+ listen tcp 127.0.0.1:7071")
	unix.Close(fd)
	w.wait(t, "- closed tcp 127.0.0.1:7071")
	w.stop(t)
}

// who --wait on a namespace that is gone (its last holder closed it)
// stops waiting and says so, instead of waiting for ever; while the
// namespace lives, it waits.
func TestKernelWhoWaitNetnsGone(t *testing.T) {
	saved := netnsCheckEvery
	netnsCheckEvery = 100 * time.Millisecond
	defer func() { netnsCheckEvery = saved }()
	ns := NewNetns(t)
	cfg, _, done := startWhoWait(t, ns, "7072/tcp")
	select {
	case err := <-done:
		t.Fatalf("who --wait ended while its namespace lived: %v", err)
	case <-time.After(5 * netnsCheckEvery):
	}
	inode := ns.Inode
	ns.Drop()
	select {
	case err := <-done:
		if !errors.Is(err, errNetnsGone) || !strings.Contains(err.Error(), fmt.Sprint(inode)) {
			t.Errorf("who --wait ended with %v, want errNetnsGone naming netns %d", err, inode)
		}
	case <-time.After(3*netnsCheckEvery + 5*time.Second):
		t.Fatalf("who --wait %s still waits on a namespace that is gone", cfg.Netns[0])
	}
}

// blockedWriter never returns from a Write once blocked: a pipe nobody
// reads. It says on first when the first Write began.
type blockedWriter struct {
	first chan struct{}
	once  bool
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	if !b.once {
		b.once = true
		close(b.first)
	}
	select {}
}

// Told to stop while nobody reads its output, each command stops at once
// and says so on stderr, with its summary.
func TestKernelStopWhileOutputStalled(t *testing.T) {
	saved := textout.StallGrace
	textout.StallGrace = 200 * time.Millisecond
	defer func() { textout.StallGrace = saved }()
	ns := NewNetns(t)
	bind := func() {
		ns.Run(t, func() {
			fd := NewSocket(t, UDP4)
			defer unix.Close(fd)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, tc := range []struct {
		name    string
		run     func(ctx context.Context, stdout, stderr *SyncBuilder, out *blockedWriter) error
		summary string
	}{
		{"ports --watch", func(ctx context.Context, _, stderr *SyncBuilder, out *blockedWriter) error {
			cfg := DefaultPortsConfig()
			cfg.Watch = true
			cfg.Netns = []string{ns.Path()}
			cfg.backend = BackendName()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			return RunPorts(ctx, cfg, out, stderr)
		}, "porttrace ports: stopped while the output was not being read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &blockedWriter{first: make(chan struct{})}
			var stdout, stderr SyncBuilder
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.run(ctx, &stdout, &stderr, out) }()
			for blocked := false; !blocked; {
				bind()
				select {
				case <-out.first:
					blocked = true
				case err := <-done:
					SkipUnsupported(t, Backend(t), err)
					t.Fatalf("ended early: %v", err)
				case <-time.After(20 * time.Millisecond):
				}
			}
			for range 50 {
				bind() // more to write, all stuck behind the first
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
			if !strings.Contains(stderr.String(), tc.summary) {
				t.Errorf("stderr lacks %q:\n%s", tc.summary, stderr.String())
			}
			// The summary counts what happened, written or not.

		})
	}
}
