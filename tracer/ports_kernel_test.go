package tracer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/ports"
)

// A connect-back implant: a deleted binary with no listener, only an
// outbound connection. ports flags that connection, and the established
// connections of a deleted-binary listener too, not only listeners.
func TestKernelDeletedBinaryConnection(t *testing.T) {
	ns := tracer.NewNetns(t)
	var ln int
	ns.Run(t, func() { ln = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:4444")) })
	defer unix.Close(ln)
	exe := filepath.Join(t.TempDir(), "beacon")
	tracer.CopyHelper(t, exe)
	h := tracer.StartHelper(t, ns, exe, 0, "tcp", "127.0.0.1:0", "PT_CONNECT=127.0.0.1:4444")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{All: true, Netns: []string{ns.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	flag := fmt.Sprintf("executable deleted: %s (pid %d)", exe, h.Cmd.Process.Pid)
	found := false
	for _, s := range socks {
		held := len(s.Holders) > 0 && s.Holders[0].PID == uint32(h.Cmd.Process.Pid)
		if held != slices.Contains(s.Suspicious, flag) {
			t.Errorf("%s %s -> %s held by the beacon: %t, flags %q", event.ProtoName(s.Proto), s.Local, s.Remote, held, s.Suspicious)
		}
		found = found || held
	}
	if !found {
		t.Fatalf("the beacon's connection is not listed: %+v", socks)
	}
	var out strings.Builder
	if err := ports.WriteTable(&out, socks, false); err != nil || !strings.Contains(out.String(), "! "+flag) {
		t.Errorf("the table does not flag it (%v):\n%s", err, out.String())
	}
}

// A file may be named "x (deleted)": that is not a deleted executable.
// The kernel's event says it is not, and so do ports and who, which judge
// by the file's link count rather than by the name /proc shows.
func TestKernelExeNamedDeleted(t *testing.T) {
	ns := tracer.NewNetns(t)
	exe := filepath.Join(t.TempDir(), "fake (deleted)")
	tracer.CopyHelper(t, exe)
	h := tracer.StartHelper(t, ns, exe, 0, "tcp", "127.0.0.1:5005", "PT_LISTEN=1")
	b := tracer.Backend(t)
	tr, err := tracer.New(tracer.Options{Backend: b, PID: uint32(h.Cmd.Process.Pid), Events: tracer.KindsOf(event.KindBind)})
	tracer.SkipUnsupported(t, b, err)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	tr.Stop()
	var evs []event.Event
	for ev := (event.Event{}); tr.Read(&ev) == nil; {
		if ev.Netns == ns.Inode {
			evs = append(evs, ev)
		}
	}
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	proc.NewEnricher().Enrich(&evs[0])
	if evs[0].ExeDeleted || evs[0].Exe != exe {
		t.Errorf("event: exe_deleted %t exe %q, want false %q", evs[0].ExeDeleted, evs[0].Exe, exe)
	}
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{ns.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 1 || len(socks[0].Holders) != 1 {
		t.Fatalf("want one listener with one holder: %+v", socks)
	}
	if h := socks[0].Holders[0]; h.ExeDeleted || h.Exe != exe || len(socks[0].Suspicious) != 0 {
		t.Errorf("holder: exe %q deleted %t, flags %q; want %q, false, none", h.Exe, h.ExeDeleted, exe, socks[0].Suspicious)
	}
	// And once it is deleted, it is, under the name it had.
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if f := proc.ReadFacts("/proc", uint32(h.Cmd.Process.Pid), proc.FactExe); !f.ExeDeleted || f.Exe != exe {
		t.Errorf("after rm: exe %q deleted %t, want %q true", f.Exe, f.ExeDeleted, exe)
	}
}

// Five listeners that come and go on one address within one interval are
// five listeners: each "+ listen" has its "- closed", told apart by the
// socket's inode, which the events carry.
func TestKernelPortsWatchQuickRepeats(t *testing.T) {
	ns := tracer.NewNetns(t)
	w := startWatch(t, []string{ns.Path()}, 300*time.Millisecond, "table")
	ns.Run(t, func() {
		for range 5 {
			unix.Close(tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7070")))
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
	ns := tracer.NewNetns(t)
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
	ns.Run(t, func() { fd = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7071")) })
	w.wait(t, "+ listen tcp 127.0.0.1:7071")
	unix.Close(fd)
	w.wait(t, "- closed tcp 127.0.0.1:7071")
	w.stop(t)
}

// who --wait on a namespace that is gone (its last holder closed it)
// stops waiting and says so, instead of waiting for ever; while the
// namespace lives, it waits.
func TestKernelWhoWaitNetnsGone(t *testing.T) {
	saved := ports.NetnsCheckEvery
	ports.NetnsCheckEvery = 100 * time.Millisecond
	defer func() { ports.NetnsCheckEvery = saved }()
	ns := tracer.NewNetns(t)
	cfg, _, done := startWhoWait(t, ns, "7072/tcp")
	select {
	case err := <-done:
		t.Fatalf("who --wait ended while its namespace lived: %v", err)
	case <-time.After(5 * ports.NetnsCheckEvery):
	}
	inode := ns.Inode
	ns.Drop()
	select {
	case err := <-done:
		if !errors.Is(err, ports.ErrNetnsGone) || !strings.Contains(err.Error(), fmt.Sprint(inode)) {
			t.Errorf("who --wait ended with %v, want errNetnsGone naming netns %d", err, inode)
		}
	case <-time.After(3*ports.NetnsCheckEvery + 5*time.Second):
		t.Fatalf("who --wait %s still waits on a namespace that is gone", cfg.Netns[0])
	}
}

// Told to stop while nobody reads its output, ports --watch stops at once
// and says so, with what it saw.
func TestKernelPortsWatchStopWhileOutputStalled(t *testing.T) {
	ns := tracer.NewNetns(t)
	stderr := stopStalled(t, ns, func(ctx context.Context, out, stderr io.Writer) error {
		cfg := ports.DefaultConfig()
		cfg.Watch = true
		cfg.Netns = []string{ns.Path()}
		if err := cfg.Validate(); err != nil {
			return err
		}
		cfg.Backend = tracer.Backend(t)
		return ports.Run(ctx, cfg, out, stderr)
	})
	if !strings.Contains(stderr, "porttrace ports: stopped while the output was not being read") {
		t.Errorf("stderr does not say the output stalled:\n%s", stderr)
	}
}

// A listing of listeners dumps only listeners, and who's listing of one
// port keeps the sockets on it, each walking the fd tables for the
// holders of what it keeps alone; yet each says of a socket what a
// listing of every socket does. In a namespace with listeners, a
// connection, a TIME-WAIT, a connected UDP socket and a closed listener,
// each agrees with every socket's listing on what it keeps: the sockets,
// their holders and what each means.
func TestKernelPortsSnapshotSubsets(t *testing.T) {
	ns := tracer.NewNetns(t)
	var open []int
	defer func() {
		for _, fd := range open {
			unix.Close(fd)
		}
	}()
	keep := func(fd int) int { open = append(open, fd); return fd }
	ns.Run(t, func() {
		ln := keep(tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7300")))
		v6 := keep(tracer.NewSocket(t, tracer.TCP6))
		if err := unix.SetsockoptInt(v6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(v6, tracer.Sockaddr(netip.MustParseAddrPort("[::]:7301"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(v6, 8); err != nil {
			t.Fatal(err)
		}
		// An established pair, and a connection closed by its client first:
		// TIME-WAIT on the client's side.
		for i := range 2 {
			c := tracer.NewSocket(t, tracer.TCP4)
			if err := unix.Connect(c, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:7300"))); err != nil {
				t.Fatal(err)
			}
			a, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				keep(c)
				keep(a)
				continue
			}
			unix.Close(c)
			unix.Close(a)
		}
		udp := keep(tracer.NewSocket(t, tracer.UDP4))
		if err := unix.Bind(udp, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:7302"))); err != nil {
			t.Fatal(err)
		}
		conn := keep(tracer.NewSocket(t, tracer.UDP4))
		if err := unix.Connect(conn, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:7302"))); err != nil {
			t.Fatal(err)
		}
		unix.Close(tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7303")))
	})
	every, _, err := ports.Snapshot(ports.SnapshotOptions{All: true, Netns: []string{ns.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for _, s := range every {
		states[s.State]++
	}
	if states["ESTAB"] < 3 || states["TIME-WAIT"] != 1 || states["LISTEN"] != 2 || states["UNCONN"] != 1 {
		t.Fatalf("the namespace holds %v; want 3 ESTAB or more, 1 TIME-WAIT, 2 LISTEN and 1 UNCONN", states)
	}
	self := uint32(os.Getpid())
	for _, tc := range []struct {
		name  string
		opts  ports.SnapshotOptions
		keep  func(s *ports.Socket) bool
		count int
	}{
		{"listeners", ports.SnapshotOptions{}, (*ports.Socket).Listening, 3},
		{"port 7300", ports.SnapshotOptions{All: true, Port: 7300}, func(s *ports.Socket) bool { return s.Local.Port() == 7300 }, 2},
		{"listeners on port 7302", ports.SnapshotOptions{Port: 7302}, func(s *ports.Socket) bool { return s.Local.Port() == 7302 && s.Listening() }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Netns = []string{ns.Path()}
			got, _, err := ports.Snapshot(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var want []ports.Socket
			for _, s := range every {
				if tc.keep(&s) {
					want = append(want, s)
				}
			}
			if len(want) != tc.count {
				t.Fatalf("every socket's listing has %d to keep, want %d: %+v", len(want), tc.count, want)
			}
			for _, s := range got {
				if len(s.Holders) != 1 || s.Holders[0].PID != self {
					t.Errorf("%s %s: holders %+v, want this process", event.ProtoName(s.Proto), s.Local, s.Holders)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("this listing:\n%+v\nthe same of every socket's:\n%+v", got, want)
			}
		})
	}
}
