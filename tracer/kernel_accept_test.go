package tracer

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// An accept() already blocked when the tracer attaches is reported when it returns.
func TestKernelAcceptBlockedBeforeAttach(t *testing.T) {
	ns := NewNetns(t)
	service := netip.MustParseAddrPort("127.0.0.1:2222")
	ready := make(chan int)
	accepted := make(chan error, 1)
	ns.GoRun(func() {
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(ln, Sockaddr(service))
		}
		if err == nil {
			err = unix.Listen(ln, 8)
		}
		if err != nil {
			accepted <- err
			close(ready)
			return
		}
		defer unix.Close(ln)
		ready <- unix.Gettid()
		nfd, _, err := unix.Accept(ln)
		if err == nil {
			unix.Close(nfd)
		}
		accepted <- err
	})
	atid, ok := <-ready
	if !ok {
		t.Fatal(<-accepted)
	}
	waitBlockedIn(t, atid, unix.SYS_ACCEPT)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	ns.Run(t, func() {
		fd := NewSocket(t, TCP4)
		defer unix.Close(fd)
		if err := unix.Connect(fd, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
	})
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	acc := Only(c.stop(t, ns), event.KindAccept)
	if len(acc) != 1 {
		t.Fatalf("got %d accept events, want 1", len(acc))
	}
	if acc[0].TID != uint32(atid) || acc[0].Local != service || acc[0].Direction != event.DirInbound {
		t.Errorf("got %s tid %d, want tid %d on %s", Brief(&acc[0]), acc[0].TID, atid, service)
	}
}

// waitBlockedIn waits until thread tid sleeps in syscall nr (accept, or
// accept4 as Go and libc issue it).
func waitBlockedIn(t *testing.T, tid int, nr int) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/task/%d/syscall", os.Getpid(), tid)
	for i := 0; i < 500; i++ {
		b, _ := os.ReadFile(path)
		f := strings.Fields(string(b))
		if len(f) > 0 && (f[0] == fmt.Sprint(nr) || f[0] == fmt.Sprint(unix.SYS_ACCEPT4)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("thread %d never blocked in accept", tid)
}

// Every one of 2,000 short-lived connections, made by four threads at once,
// is reported, connect and accept, each from the thread that made it, and
// nothing is lost.
func TestKernelCatchRate(t *testing.T) {
	const clients, each = 4, 500
	const n = clients * each
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect, event.KindAccept)})
	service := netip.MustParseAddrPort("127.0.0.1:8081")
	var mu sync.Mutex
	clientPorts := map[uint16]bool{}
	clientTIDs := map[uint32]bool{}
	var acceptTID uint32
	ln := -1
	ns.Run(t, func() {
		ln = NewSocket(t, TCP4)
		if err := unix.Bind(ln, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 512); err != nil {
			t.Fatal(err)
		}
	})
	defer unix.Close(ln)
	// One thread accepts while several connect at once.
	accepted := make(chan error, 1)
	ns.GoRun(func() {
		acceptTID = uint32(unix.Gettid())
		for i := 0; i < n; i++ {
			nfd, _, err := unix.Accept(ln)
			if err != nil {
				accepted <- err
				return
			}
			unix.Close(nfd)
		}
		accepted <- nil
	})
	errc := make(chan error, clients)
	for range clients {
		ns.GoRun(func() {
			tid := uint32(unix.Gettid())
			for range each {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err == nil {
					err = unix.Connect(fd, Sockaddr(service))
				}
				if err != nil {
					errc <- err
					return
				}
				sa, err := unix.Getsockname(fd)
				unix.Close(fd)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				clientPorts[uint16(sa.(*unix.SockaddrInet4).Port)] = true
				clientTIDs[tid] = true
				mu.Unlock()
			}
			errc <- nil
		})
	}
	for range clients {
		if err := <-errc; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}
	evs := c.stop(t, ns)
	conn, acc := Only(evs, event.KindConnect), Only(evs, event.KindAccept)
	if len(conn) != n || len(acc) != n {
		t.Fatalf("got %d connects and %d accepts, want %d each", len(conn), len(acc), n)
	}
	for _, ev := range conn {
		delete(clientPorts, ev.Local.Port())
		if !clientTIDs[ev.TID] {
			t.Fatalf("connect reported from thread %d, not a client thread", ev.TID)
		}
	}
	if len(clientPorts) != 0 {
		t.Errorf("%d client ports never reported", len(clientPorts))
	}
	for _, ev := range acc {
		if ev.TID != acceptTID || ev.Local != service {
			t.Fatalf("accept reported from thread %d on %s, want thread %d on %s", ev.TID, ev.Local, acceptTID, service)
		}
	}
}

// A failed accept is reported with the listener's port. EINVAL (not
// listening) comes from the protocol, where every backend sees it; EMFILE
// (no free fd) fails in the syscall before the protocol is called, so only
// the tracepoint backend can report it.
func TestKernelAcceptFailed(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindAccept)})
	notListening := netip.MustParseAddrPort("127.0.0.1:4001")
	listening := netip.MustParseAddrPort("127.0.0.1:4002")
	ns.Run(t, func() {
		fd := NewSocket(t, TCP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(notListening)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := unix.Accept(fd); err != unix.EINVAL {
			t.Errorf("accept on a socket not listening: %v, want EINVAL", err)
		}
		ln := NewSocket(t, TCP4)
		defer unix.Close(ln)
		if err := unix.Bind(ln, Sockaddr(listening)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 1); err != nil {
			t.Fatal(err)
		}
		if err := withNoFreeFD(func() error { _, _, err := unix.Accept(ln); return err }); err != unix.EMFILE {
			t.Errorf("accept with no free fd: %v, want EMFILE", err)
		}
	})
	var got []string
	for _, ev := range c.stop(t, ns) {
		got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, ev.ErrnoName(), AddrString(ev.Local)))
	}
	want := []string{"accept EINVAL 127.0.0.1:4001"}
	if c.tr.Backend() == event.BackendTracepoint {
		want = append(want, "accept EMFILE 127.0.0.1:4002")
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s backend saw %q, want %q", c.tr.Backend(), got, want)
	}
}

// withNoFreeFD calls fn with RLIMIT_NOFILE lowered to the fds already open,
// so any call that needs a new fd fails with EMFILE.
func withNoFreeFD(fn func() error) error {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		return err
	}
	// Fill every free slot below a limit just above the highest fd in use.
	probe, err := unix.Dup(0)
	if err != nil {
		return err
	}
	limit := uint64(probe) + 8
	fill := []int{probe}
	defer func() {
		for _, fd := range fill {
			unix.Close(fd)
		}
	}()
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		return err
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	for {
		fd, err := unix.Dup(0)
		if err == unix.EMFILE {
			break
		}
		if err != nil {
			return err
		}
		fill = append(fill, fd)
	}
	return fn()
}
