package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// A blocking connect interrupted by a signal is restarted by the kernel; it
// is still one connect. The listener's accept queue is full, so the SYN is
// dropped and the connect blocks until the test makes room.
func TestKernelConnectRestartedAfterSignal(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})
	service := netip.MustParseAddrPort("127.0.0.1:9100")
	var ln, first int
	ns.Run(t, func() {
		ln = NewSocket(t, TCP4)
		if err := unix.Bind(ln, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 0); err != nil {
			t.Fatal(err)
		}
		first = NewSocket(t, TCP4)
		if err := unix.Connect(first, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
	})
	defer unix.Close(ln)
	defer unix.Close(first)

	tids := make(chan int, 1)
	done := make(chan error, 1)
	ns.GoRun(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		tids <- unix.Gettid()
		done <- unix.Connect(fd, Sockaddr(service))
	})
	tid := <-tids
	waitInSyscall(t, tid, unix.SYS_CONNECT)
	// Go's handler for SIGURG is SA_RESTART: the kernel restarts connect.
	if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	waitInSyscall(t, tid, unix.SYS_CONNECT)
	nfd, _, err := unix.Accept(ln) // room for the retransmitted SYN
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(nfd)
	if err := <-done; err != nil {
		t.Fatalf("restarted connect: %v", err)
	}
	evs := c.stop(t, ns)
	// The first socket's connect, then the interrupted one: its exit saw
	// ERESTARTSYS and the handshake went on (in progress, then done); the
	// restarted call is the same connect, not reported again.
	want := []string{"connect ok", "connect in_progress ERESTARTSYS", "connect_done ok"}
	if len(evs) != len(want) {
		for _, ev := range evs {
			t.Log(Brief(&ev))
		}
		t.Fatalf("got %d connect events, want %d", len(evs), len(want))
	}
	for i, ev := range evs {
		if !strings.HasPrefix(Brief(&ev), want[i]+" ") || ev.Remote != service || !ev.Local.IsValid() {
			t.Errorf("event %d: got %s, want %s", i, Brief(&ev), want[i])
		}
	}
	if evs[1].Local != evs[2].Local || evs[1].PID != evs[2].PID || evs[1].TID != evs[2].TID {
		t.Errorf("connect_done is not its connect's: %s (tid %d), %s (tid %d)", Brief(&evs[1]), evs[1].TID, Brief(&evs[2]), evs[2].TID)
	}
	if !evs[0].HasLatency || evs[0].Latency <= 0 || !evs[2].HasLatency || evs[2].Latency < 100*time.Millisecond {
		t.Errorf("latencies: blocking %v (%t), restarted %v (%t), want the restarted one past the 100 ms it waited",
			evs[0].Latency, evs[0].HasLatency, evs[2].Latency, evs[2].HasLatency)
	}
}

// waitInSyscall waits until thread tid of this process sleeps in syscall nr.
func waitInSyscall(t *testing.T, tid, nr int) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/task/%d/syscall", os.Getpid(), tid)
	for i := 0; i < 500; i++ {
		b, _ := os.ReadFile(path)
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == fmt.Sprint(nr) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("thread %d never blocked in syscall %d", tid, nr)
}

// A non-blocking connect (Go's net.Dial) returns EINPROGRESS: a connect
// under way, reported as in progress with its source port, then its
// outcome, connect_done, with the same task and ports. Over loopback the
// handshake ends before connect() returns, which the exit sees.
func TestKernelConnectNonBlocking(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})
	var local, remote netip.AddrPort
	var th Thread
	ns.Run(t, func() {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		th = Self()
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		local = conn.LocalAddr().(*net.TCPAddr).AddrPort()
		remote = conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	})
	evs := c.stop(t, ns)
	if len(evs) != 2 {
		t.Fatalf("got %d connect events, want 2", len(evs))
	}
	rest := fmt.Sprintf("tcp ipv4 local=%s remote=%s eph=true class=%s priv=false dir=outbound", local, remote, event.ClassOf(remote.Port()))
	for i, want := range []string{"connect in_progress EINPROGRESS " + rest, "connect_done ok " + rest} {
		if got := Brief(&evs[i]); got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
		CheckTask(t, &evs[i], th)
	}
	if evs[0].HasLatency || !evs[1].HasLatency || evs[1].Latency <= 0 || evs[1].Latency > time.Second {
		t.Errorf("latency: in progress %t, done %v (%t)", evs[0].HasLatency, evs[1].Latency, evs[1].HasLatency)
	}
	if !evs[1].HasSynRetransmits || evs[1].SynRetransmits != 0 {
		t.Errorf("syn_retransmits %d (%t), want 0", evs[1].SynRetransmits, evs[1].HasSynRetransmits)
	}
}

// A connect refused over loopback: the refusal arrives before connect()
// returns, and the port it had taken is released, so no local port is
// reported. A blocking connect fails with it (and its latency); a
// non-blocking one is in progress, then done, failed. One tracer sees the
// four cases, one after another.
func TestKernelConnectRefused(t *testing.T) {
	type refused struct {
		spec     SockSpec
		addr     string
		nonblock bool
		th       Thread
	}
	cases := []*refused{
		{spec: TCP4, addr: "127.0.0.1:9"},
		{spec: TCP4, addr: "127.0.0.1:9", nonblock: true},
		{spec: TCP6, addr: "[::1]:9"},
		{spec: TCP6, addr: "[::1]:9", nonblock: true},
	}
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})
	for _, tc := range cases {
		var err error
		ns.Run(t, func() {
			tc.th = Self()
			fd := NewSocket(t, tc.spec)
			defer unix.Close(fd)
			if tc.nonblock {
				if err := unix.SetNonblock(fd, true); err != nil {
					t.Fatal(err)
				}
			}
			err = unix.Connect(fd, Sockaddr(netip.MustParseAddrPort(tc.addr)))
			if tc.nonblock && err == unix.EINPROGRESS {
				// The reset can come after connect() returned (a slow
				// machine): wait for it, or closing first makes the
				// outcome ECANCELED.
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
				if _, perr := unix.Poll(pfd, 5000); perr != nil {
					t.Fatal(perr)
				}
				if soerr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil {
					err = unix.Errno(soerr)
				}
			}
		})
		if err != unix.ECONNREFUSED {
			t.Fatalf("connect to %s: %v, want ECONNREFUSED", tc.addr, err)
		}
	}
	evs := c.stop(t, ns)
	if len(evs) != 6 {
		for _, ev := range evs {
			t.Log(Brief(&ev))
		}
		t.Fatalf("got %d connect events, want 6", len(evs))
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/nonblock=%t", tc.spec.Fam(), tc.nonblock), func(t *testing.T) {
			rest := fmt.Sprintf("tcp %s local=- remote=%s eph=false class=well-known priv=true dir=outbound", tc.spec.Fam(), tc.addr)
			want := []string{"connect failed ECONNREFUSED " + rest}
			if tc.nonblock {
				want = []string{"connect in_progress EINPROGRESS " + rest, "connect_done failed ECONNREFUSED " + rest}
			}
			for _, w := range want {
				ev := evs[0]
				evs = evs[1:]
				if got := Brief(&ev); got != w {
					t.Errorf("got  %s\nwant %s", got, w)
				}
				CheckTask(t, &ev, tc.th)
				if ev.Result == event.ResultFailed && (!ev.HasLatency || ev.Latency <= 0 || ev.Latency > time.Second) {
					t.Errorf("%s: latency %v (%t)", ev.Kind, ev.Latency, ev.HasLatency)
				}
			}
		})
	}
}

// TCP Fast Open connects inside sendto(MSG_FASTOPEN): fentry and kprobe
// see it in __inet_stream_connect; no connect(2) is made, so the syscall
// tracepoints do not.
func TestKernelConnectFastOpen(t *testing.T) {
	ns := NewNetns(t)
	ns.Sysctl(t, "net.ipv4.tcp_fastopen", "1") // client side on
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})
	service := netip.MustParseAddrPort("127.0.0.1:9200")
	var local uint16
	ns.Run(t, func() {
		ln := NewSocket(t, TCP4)
		defer unix.Close(ln)
		if err := unix.Bind(ln, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 1); err != nil {
			t.Fatal(err)
		}
		fd := NewSocket(t, TCP4)
		defer unix.Close(fd)
		if err := unix.Sendto(fd, []byte("x"), unix.MSG_FASTOPEN, Sockaddr(service)); err != nil {
			t.Fatalf("sendto(MSG_FASTOPEN): %v", err)
		}
		local = LocalPort(t, fd)
	})
	evs := c.stop(t, ns)
	var want []string
	if c.tr.Backend() != event.BackendTracepoint {
		want = []string{fmt.Sprintf("connect ok tcp ipv4 local=127.0.0.1:%d remote=%s eph=true class=registered priv=false dir=outbound", local, service)}
	}
	var got []string
	for _, ev := range evs {
		got = append(got, Brief(&ev))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s backend: got\n%s\nwant\n%s", c.tr.Backend(), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
