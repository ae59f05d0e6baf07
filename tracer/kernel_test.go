package tracer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
)

var (
	TCP4 = SockSpec{unix.AF_INET, unix.SOCK_STREAM}
	TCP6 = SockSpec{unix.AF_INET6, unix.SOCK_STREAM}
	UDP4 = SockSpec{unix.AF_INET, unix.SOCK_DGRAM}
	UDP6 = SockSpec{unix.AF_INET6, unix.SOCK_DGRAM}
)

func TestKernelBind(t *testing.T) {
	type bindCase struct {
		name string
		sock SockSpec
		addr string
		th   Thread
		port uint16
	}
	cases := []*bindCase{
		{name: "tcp4 fixed port", sock: TCP4, addr: "127.0.0.1:10101"},
		{name: "tcp4 port 0", sock: TCP4, addr: "127.0.0.1:0"},
		{name: "tcp4 wildcard well-known", sock: TCP4, addr: "0.0.0.0:80"},
		{name: "udp4 fixed port", sock: UDP4, addr: "127.0.0.1:5353"},
		{name: "udp4 port 0", sock: UDP4, addr: "0.0.0.0:0"},
		{name: "tcp6 fixed port", sock: TCP6, addr: "[::1]:50000"},
		{name: "tcp6 port 0", sock: TCP6, addr: "[::]:0"},
		{name: "udp6 fixed port", sock: UDP6, addr: "[::1]:8125"},
		{name: "udp6 port 0", sock: UDP6, addr: "[::1]:0"},
	}
	// One tracer sees every bind, one after another, in order.
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	for _, tc := range cases {
		ns.Run(t, func() {
			tc.th = Self()
			fd := NewSocket(t, tc.sock)
			defer unix.Close(fd)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort(tc.addr))); err != nil {
				t.Fatalf("%s: bind: %v", tc.name, err)
			}
			tc.port = LocalPort(t, fd)
		})
	}
	evs := c.stop(t, ns)
	if len(evs) != len(cases) {
		t.Fatalf("got %d events, want %d: %v", len(evs), len(cases), evs)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := &evs[i]
			ap := netip.MustParseAddrPort(tc.addr)
			eph := ap.Port() == 0
			want := fmt.Sprintf("bind ok %s %s local=%s remote=- eph=%t class=%s priv=%t",
				tc.sock.Proto(), tc.sock.Fam(), netip.AddrPortFrom(ap.Addr(), tc.port), eph, event.ClassOf(tc.port), tc.port < 1024)
			if got := Brief(ev); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			CheckTask(t, ev, tc.th)
			if ev.Netns != ns.Inode || ev.UnprivPortStart != 1024 || ev.PortRange != [2]uint16{32768, 60999} {
				t.Errorf("netns %d (want %d), unpriv start %d, range %v", ev.Netns, ns.Inode, ev.UnprivPortStart, ev.PortRange)
			}
			if ev.Backend == event.BackendAuto {
				t.Error("backend not set")
			}
			if ev.ExeDeleted {
				t.Error("exe_deleted set for a binary that exists")
			}
		})
	}
}

// A non-root process asking for a privileged port is denied, and the event
// carries the port it asked for; the threshold is the netns's own sysctl.
func TestKernelBindDenied(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unprivStart string
		addr        string
		errno       string
		priv        bool
	}{
		{"port 80 default threshold", "", "0.0.0.0:80", "EACCES", true},
		{"port 1500 under raised threshold", "2000", "127.0.0.1:1500", "EACCES", true},
		{"port 80 under lowered threshold", "80", "0.0.0.0:80", "", false},
		{"ipv6 port 443", "", "[::]:443", "EACCES", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := NewNetns(t)
			if tc.unprivStart != "" {
				ns.Sysctl(t, "net.ipv4.ip_unprivileged_port_start", tc.unprivStart)
			}
			h := StartHelper(t, ns, HelperExe(t), 65534, "tcp", tc.addr)
			c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
			port, errno := h.Bind(t)
			if errno != tc.errno {
				t.Fatalf("helper bind: errno %q, want %q", errno, tc.errno)
			}
			evs := c.stop(t, ns)
			if len(evs) != 1 {
				t.Fatalf("got %d events, want 1: %v", len(evs), evs)
			}
			ev := &evs[0]
			ap := netip.MustParseAddrPort(tc.addr)
			result := "ok"
			if tc.errno != "" {
				result = "denied " + tc.errno
			} else if port != ap.Port() {
				t.Fatalf("bound port %d", port)
			}
			fam := "ipv4"
			if ap.Addr().Is6() {
				fam = "ipv6"
			}
			want := fmt.Sprintf("bind %s tcp %s local=%s remote=- eph=false class=%s priv=%t", result, fam, ap, event.ClassOf(ap.Port()), tc.priv)
			if got := Brief(ev); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if ev.UID != 65534 || ev.PID != uint32(h.Cmd.Process.Pid) || ev.CapBind {
				t.Errorf("uid %d pid %d cap %t, want 65534 %d false", ev.UID, ev.PID, ev.CapBind, h.Cmd.Process.Pid)
			}
			if tc.errno != "" && !strings.Contains(ev.Reason, "ip_unprivileged_port_start") {
				t.Errorf("reason %q does not explain the denial", ev.Reason)
			}
		})
	}
}

func TestKernelBindInUse(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	var th Thread
	ns.Run(t, func() {
		th = Self()
		a, b := NewSocket(t, TCP4), NewSocket(t, TCP4)
		defer unix.Close(a)
		defer unix.Close(b)
		ap := netip.MustParseAddrPort("127.0.0.1:10101")
		if err := unix.Bind(a, Sockaddr(ap)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(a, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(b, Sockaddr(ap)); err != unix.EADDRINUSE {
			t.Errorf("second bind: %v, want EADDRINUSE", err)
		}
	})
	evs := Only(c.stop(t, ns), event.KindBind)
	if len(evs) != 2 {
		t.Fatalf("got %d bind events, want 2", len(evs))
	}
	want := "bind failed EADDRINUSE tcp ipv4 local=127.0.0.1:10101 remote=- eph=false class=registered priv=false"
	if got := Brief(&evs[1]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	CheckTask(t, &evs[1], th)
	if evs[1].Netns != ns.Inode {
		t.Errorf("netns %d, want %d", evs[1].Netns, ns.Inode)
	}
}

// listen() on a socket never bound makes the kernel pick a port from the
// netns's ephemeral range.
func TestKernelListenUnbound(t *testing.T) {
	ns := NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "41000 41999")
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	var port uint16
	var tid Thread
	ns.Run(t, func() {
		tid = Self()
		fd := NewSocket(t, TCP6)
		defer unix.Close(fd)
		if err := unix.Listen(fd, 1); err != nil {
			t.Fatal(err)
		}
		port = LocalPort(t, fd)
	})
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %v", len(evs), evs)
	}
	if port < 41000 || port > 41999 {
		t.Fatalf("kernel chose %d, outside the netns range", port)
	}
	want := fmt.Sprintf("listen ok tcp ipv6 local=[::]:%d remote=- eph=true class=registered priv=false", port)
	if got := Brief(&evs[0]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	CheckTask(t, &evs[0], tid)
	if evs[0].PortRange != [2]uint16{41000, 41999} {
		t.Errorf("range %v, want the netns's 41000-41999", evs[0].PortRange)
	}
}

// A TCP connection inside the netns: the connect is outbound with an
// ephemeral port from the netns's range, the accept inbound in the
// accepting thread, on the service port.
func TestKernelConnectAccept(t *testing.T) {
	for _, sock := range []SockSpec{TCP4, TCP6} {
		t.Run(sock.Fam(), func(t *testing.T) {
			ns := NewNetns(t)
			ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40999")
			c := startTracer(t, Options{PID: uint32(os.Getpid())})
			addr := netip.MustParseAddr("127.0.0.1")
			if sock.Family == unix.AF_INET6 {
				addr = netip.IPv6Loopback()
			}
			service := netip.AddrPortFrom(addr, 8080)
			var ctid, atid Thread
			var cport uint16
			ns.Run(t, func() {
				ln := NewSocket(t, sock)
				defer unix.Close(ln)
				if err := unix.Bind(ln, Sockaddr(service)); err != nil {
					t.Fatal(err)
				}
				if err := unix.Listen(ln, 8); err != nil {
					t.Fatal(err)
				}
				ns.Run(t, func() {
					ctid = Self()
					fd := NewSocket(t, sock)
					defer unix.Close(fd)
					if err := unix.Connect(fd, Sockaddr(service)); err != nil {
						t.Fatal(err)
					}
					cport = LocalPort(t, fd)
				})
				atid = Self()
				nfd, _, err := unix.Accept(ln)
				if err != nil {
					t.Fatal(err)
				}
				unix.Close(nfd)
			})
			evs := c.stop(t, ns)
			conn, acc := Only(evs, event.KindConnect), Only(evs, event.KindAccept)
			if len(conn) != 1 || len(acc) != 1 {
				t.Fatalf("got %d connects and %d accepts, want 1 and 1", len(conn), len(acc))
			}
			if cport < 40000 || cport > 40999 {
				t.Fatalf("client port %d outside the netns range", cport)
			}
			client := netip.AddrPortFrom(addr, cport)
			want := fmt.Sprintf("connect ok tcp %s local=%s remote=%s eph=true class=registered priv=false dir=outbound", sock.Fam(), client, service)
			if got := Brief(&conn[0]); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			CheckTask(t, &conn[0], ctid)
			want = fmt.Sprintf("accept ok tcp %s local=%s remote=%s eph=false class=registered priv=false dir=inbound", sock.Fam(), service, client)
			if got := Brief(&acc[0]); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			CheckTask(t, &acc[0], atid)
		})
	}
}

// UDP connect allocates an ephemeral port too.
func TestKernelConnectUDP(t *testing.T) {
	for _, sock := range []SockSpec{UDP4, UDP6} {
		t.Run(sock.Fam(), func(t *testing.T) {
			ns := NewNetns(t)
			ns.Sysctl(t, "net.ipv4.ip_local_port_range", "45000 45099")
			c := startTracer(t, Options{PID: uint32(os.Getpid())})
			addr := netip.MustParseAddr("127.0.0.1")
			if sock.Family == unix.AF_INET6 {
				addr = netip.IPv6Loopback()
			}
			dst := netip.AddrPortFrom(addr, 53)
			var port uint16
			var tid Thread
			ns.Run(t, func() {
				tid = Self()
				fd := NewSocket(t, sock)
				defer unix.Close(fd)
				if err := unix.Connect(fd, Sockaddr(dst)); err != nil {
					t.Fatal(err)
				}
				port = LocalPort(t, fd)
			})
			evs := c.stop(t, ns)
			if len(evs) != 1 {
				t.Fatalf("got %d events, want 1: %v", len(evs), evs)
			}
			want := fmt.Sprintf("connect ok udp %s local=%s remote=%s eph=true class=well-known priv=true dir=outbound",
				sock.Fam(), netip.AddrPortFrom(addr, port), dst)
			if got := Brief(&evs[0]); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			CheckTask(t, &evs[0], tid)
		})
	}
}

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

// With the netns's range cut to two ports, the third connect to the same
// destination fails with EADDRNOTAVAIL and is reported as such.
func TestKernelConnectExhausted(t *testing.T) {
	ns := NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40001")
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	service := netip.MustParseAddrPort("127.0.0.1:9000")
	var errs []error
	var th Thread
	ns.Run(t, func() {
		th = Self()
		ln := NewSocket(t, TCP4)
		defer unix.Close(ln)
		if err := unix.Bind(ln, Sockaddr(service)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 8); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			fd := NewSocket(t, TCP4)
			defer unix.Close(fd)
			errs = append(errs, unix.Connect(fd, Sockaddr(service)))
		}
	})
	if errs[0] != nil || errs[1] != nil || errs[2] != unix.EADDRNOTAVAIL {
		t.Fatalf("connect errors %v, want nil nil EADDRNOTAVAIL", errs)
	}
	conn := Only(c.stop(t, ns), event.KindConnect)
	if len(conn) != 3 {
		t.Fatalf("got %d connect events, want 3", len(conn))
	}
	want := "connect failed EADDRNOTAVAIL tcp ipv4 local=- remote=127.0.0.1:9000 eph=false class=registered priv=false dir=outbound"
	if got := Brief(&conn[2]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !strings.Contains(conn[2].Reason, "ip_local_port_range 40000-40001") {
		t.Errorf("reason %q does not name the range", conn[2].Reason)
	}
	CheckTask(t, &conn[2], th)
	for _, ev := range conn[:2] {
		if p := ev.Local.Port(); ev.Result != event.ResultOK || p < 40000 || p > 40001 {
			t.Errorf("got %s", Brief(&ev))
		}
	}
}

// Go's net.Listen makes an MPTCP socket where the kernel has MPTCP (Go
// 1.24+); a plain socket(2) makes TCP. Both binds and listens are seen.
func TestKernelMPTCPAndPlainTCP(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	wantProto := "tcp"
	var goPort uint16
	ns.Run(t, func() {
		if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP); err == nil {
			unix.Close(fd)
			wantProto = "mptcp"
		}
		// An MPTCP socket keeps the "port named by the user" mark on its
		// first subflow, not on itself: a named port is not ephemeral.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		goPort = uint16(ln.Addr().(*net.TCPAddr).Port)
		ln7001, err := net.Listen("tcp", "127.0.0.1:7001")
		if err != nil {
			t.Fatal(err)
		}
		defer ln7001.Close()
		fd := NewSocket(t, TCP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:7000"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			t.Fatal(err)
		}
		// Outbound MPTCP from a named port, and from one the kernel picks.
		named := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7002}}
		var picked net.Dialer
		named.SetMultipathTCP(true)
		picked.SetMultipathTCP(true)
		for _, dial := range []func() (net.Conn, error){
			func() (net.Conn, error) { return named.Dial("tcp", "127.0.0.1:7001") },
			func() (net.Conn, error) { return picked.Dial("tcp", "127.0.0.1:7000") },
		} {
			conn, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
		}
	})
	var got []string
	for _, ev := range c.stop(t, ns) {
		if ev.Kind == event.KindAccept {
			continue
		}
		// Go also binds probe sockets of its own to learn what the host supports.
		if p := ev.Local.Port(); p == goPort || (p >= 7000 && p <= 7002) || ev.Kind == event.KindConnect {
			got = append(got, fmt.Sprintf("%s %s %s ephemeral=%v", ev.Kind, event.ProtoName(ev.Proto), AddrString(ev.Local), ev.Ephemeral))
		}
	}
	want := []string{
		fmt.Sprintf("bind %s 127.0.0.1:%d ephemeral=true", wantProto, goPort),
		fmt.Sprintf("listen %s 127.0.0.1:%d ephemeral=true", wantProto, goPort),
		fmt.Sprintf("bind %s 127.0.0.1:7001 ephemeral=false", wantProto),
		fmt.Sprintf("listen %s 127.0.0.1:7001 ephemeral=false", wantProto),
		"bind tcp 127.0.0.1:7000 ephemeral=false",
		"listen tcp 127.0.0.1:7000 ephemeral=false",
		fmt.Sprintf("bind %s 127.0.0.1:7002 ephemeral=false", wantProto),
		fmt.Sprintf("connect %s 127.0.0.1:7002 ephemeral=false", wantProto),
	}
	if len(got) == len(want)+1 {
		// The last connect's port comes from the range: check its shape only.
		last := got[len(got)-1]
		if !strings.HasPrefix(last, "connect "+wantProto+" 127.0.0.1:") || !strings.HasSuffix(last, " ephemeral=true") {
			t.Errorf("connect from a kernel-picked port: got %q", last)
		}
		got = got[:len(got)-1]
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s\n(and a connect from an ephemeral port)", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The port filter runs in the kernel and matches local or remote ports,
// a local port the kernel picked included.
func TestKernelPortFilter(t *testing.T) {
	ns := NewNetns(t)
	var ports PortSet
	if err := ports.Set("9999,20000-20001"); err != nil {
		t.Fatal(err)
	}
	// Ports the kernel picks come from the filtered ones.
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "20000 20001")
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Ports: &ports})
	ns.Run(t, func() {
		for _, p := range []string{"127.0.0.1:9998", "127.0.0.1:9999", "127.0.0.1:20001", "127.0.0.1:20002"} {
			fd := NewSocket(t, UDP4)
			defer unix.Close(fd)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort(p))); err != nil {
				t.Fatal(err)
			}
		}
		// Asked for port 0, matched by the port the kernel chose.
		fd0 := NewSocket(t, TCP4)
		defer unix.Close(fd0)
		if err := unix.Bind(fd0, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
			t.Fatal(err)
		}
		// Matched by its remote port alone: bound first to a port outside
		// the set (that bind is not reported), then connected to 9999.
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:30000"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:9999"))); err != nil {
			t.Fatal(err)
		}
	})
	var got []string
	for _, ev := range c.stop(t, ns) {
		got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, AddrString(ev.Local), AddrString(ev.Remote)))
	}
	if len(got) != 4 || got[0] != "bind 127.0.0.1:9999 -" || got[1] != "bind 127.0.0.1:20001 -" ||
		!strings.HasPrefix(got[2], "bind 127.0.0.1:2000") || got[3] != "connect 127.0.0.1:30000 127.0.0.1:9999" {
		t.Errorf("got %q", got)
	}
}

// The pid filter runs in the kernel: another process's binds are not seen.
func TestKernelPIDFilter(t *testing.T) {
	ns := NewNetns(t)
	h := StartHelper(t, ns, HelperExe(t), 0, "udp", "127.0.0.1:6001")
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	ns.Run(t, func() {
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:6002"))); err != nil {
			t.Fatal(err)
		}
	})
	evs := c.stop(t, ns)
	if len(evs) != 1 || evs[0].Local.Port() != 6002 || evs[0].PID != uint32(os.Getpid()) {
		t.Errorf("got %v, want only this process's bind of 6002", evs)
	}
}

// An IPv6 socket given an IPv4 sockaddr: UDP connects with it, TCP
// connect and UDP bind refuse it (EINVAL: too short for IPv6). Each is
// reported (the bind only by the tracepoint backend: it fails before
// __inet6_bind, which the others hook) with the
// IPv4 address the caller gave, as IPv4 traffic (-4 keeps it), not as the
// IPv6 address its four bytes would spell; churn counts the UDP connect
// under the same destination as one from an IPv4 socket.
func TestKernelIPv4SockaddrOnIPv6Socket(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	ch := startTracer(t, Options{PID: uint32(os.Getpid()), Churn: true, Events: KindsOf(event.KindBind, event.KindConnect)})
	dst := &unix.SockaddrInet4{Port: 53, Addr: [4]byte{127, 0, 0, 1}}
	var errs [3]error
	var port uint16
	ns.Run(t, func() {
		u := NewSocket(t, UDP6)
		defer unix.Close(u)
		errs[0] = unix.Connect(u, dst)
		port = LocalPort(t, u)
		v4 := NewSocket(t, UDP4)
		defer unix.Close(v4)
		if err := unix.Connect(v4, dst); err != nil {
			t.Fatal(err)
		}
		tc := NewSocket(t, TCP6)
		defer unix.Close(tc)
		errs[1] = unix.Connect(tc, dst)
		b := NewSocket(t, UDP6)
		defer unix.Close(b)
		errs[2] = unix.Bind(b, &unix.SockaddrInet4{Port: 5300, Addr: [4]byte{127, 0, 0, 1}})
	})
	if errs[0] != nil || errs[1] != unix.EINVAL || errs[2] != unix.EINVAL {
		t.Fatalf("udp connect %v, tcp connect %v, udp bind %v; want nil, EINVAL, EINVAL", errs[0], errs[1], errs[2])
	}
	evs := c.stop(t, ns)
	var got []string
	for _, ev := range evs {
		if ev.Family == unix.AF_INET6 {
			got = append(got, fmt.Sprintf("%s %s %s %s local=%s remote=%s", ev.Kind, ev.ErrnoName(), event.ProtoName(ev.Proto), ev.AddrFamily(),
				AddrString(unmapped(ev.Local)), AddrString(unmapped(ev.Remote))))
		}
	}
	want := []string{
		fmt.Sprintf("connect  udp ipv4 local=127.0.0.1:%d remote=127.0.0.1:53", port),
		"connect EINVAL tcp ipv4 local=- remote=127.0.0.1:53",
	}
	if c.tr.Backend() == event.BackendTracepoint {
		want = append(want, "bind EINVAL udp ipv4 local=127.0.0.1:5300 remote=-")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	totals, err := ch.tr.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	key := DestKey{ns.Inode, Dest{event.ProtoUDP, netip.MustParseAddrPort("127.0.0.1:53")}}
	if got := totals.Dests[key].Allocs; got != 2 {
		t.Errorf("churn: %d allocations towards %s, want 2 (one from each socket); destinations %v", got, key.Dest, totals.Dests)
	}
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// A process whose executable was deleted after it started: the classic
// backdoor. The event says so, from the kernel, with the path it ran from.
func TestKernelDeletedBinary(t *testing.T) {
	ns := NewNetns(t)
	exe := filepath.Join(t.TempDir(), "backdoor")
	if err := CopyFile(HelperExe(t), exe); err != nil {
		t.Fatal(err)
	}
	h := StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:31337")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	en := proc.NewEnricher()
	en.Enrich(&evs[0])
	if !evs[0].ExeDeleted || evs[0].Comm != "backdoor" || evs[0].Exe != exe {
		t.Errorf("exe_deleted %t comm %q exe %q, want true backdoor %q", evs[0].ExeDeleted, evs[0].Comm, evs[0].Exe, exe)
	}
}

// The cgroup comes from the id in the event, not from /proc: a process
// that has exited (here: no /proc at all) is still placed in the cgroup
// it bound from.
func TestKernelCgroupFromEvent(t *testing.T) {
	ns := NewNetns(t)
	cg := newCgroup(t)
	dir := cg.Name()
	root, name := filepath.Dir(dir), filepath.Base(dir)
	cmd := HelperCmd(HelperExe(t), 0, "tcp", "127.0.0.1:31338")
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	h := RunHelper(t, ns, cmd)
	c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	h.Stdin.Close()
	_ = h.Cmd.Wait()
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if evs[0].CgroupID != st.Ino {
		t.Errorf("cgroup_id %d, want %d (the inode of %s)", evs[0].CgroupID, st.Ino, dir)
	}
	en := proc.NewEnricherAt(t.TempDir(), root)
	en.Enrich(&evs[0])
	if evs[0].Cgroup != "/"+name {
		t.Errorf("cgroup %q, want %q", evs[0].Cgroup, "/"+name)
	}
}

// cgroup2Mount returns where cgroup v2 is mounted, mounting it for the
// test where nothing has.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	if root, ok := proc.Cgroup2Root(); ok {
		return root
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mounting cgroup2: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
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
	conn := c.stop(t, ns)
	if len(conn) != 2 {
		for _, ev := range conn {
			t.Log(Brief(&ev))
		}
		t.Fatalf("got %d connect events, want 2 (one per socket)", len(conn))
	}
	for _, ev := range conn {
		if ev.Result != event.ResultOK || ev.Remote != service || !ev.Local.IsValid() {
			t.Errorf("got %s", Brief(&ev))
		}
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

// A non-blocking connect (Go's net.Dial) returns EINPROGRESS: that is a
// connect under way, reported once, as ok, with its source port.
func TestKernelConnectNonBlocking(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})
	var local, remote netip.AddrPort
	ns.Run(t, func() {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		local = conn.LocalAddr().(*net.TCPAddr).AddrPort()
		remote = conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	})
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d connect events, want 1", len(evs))
	}
	want := fmt.Sprintf("connect ok tcp ipv4 local=%s remote=%s eph=true class=%s priv=false dir=outbound", local, remote, event.ClassOf(remote.Port()))
	if got := Brief(&evs[0]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// A connect refused over loopback is a failed connect on every backend,
// blocking or not: the refusal arrives before connect() returns, and the
// port it had taken is released, so no local port is reported. One tracer
// sees the four cases, one after another.
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
		})
		if !tc.nonblock && err != unix.ECONNREFUSED {
			t.Fatalf("connect to %s: %v, want ECONNREFUSED", tc.addr, err)
		}
	}
	evs := c.stop(t, ns)
	if len(evs) != len(cases) {
		t.Fatalf("got %d connect events, want %d", len(evs), len(cases))
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%s/nonblock=%t", tc.spec.Fam(), tc.nonblock), func(t *testing.T) {
			want := fmt.Sprintf("connect failed ECONNREFUSED tcp %s local=- remote=%s eph=false class=well-known priv=true dir=outbound", tc.spec.Fam(), tc.addr)
			if got := Brief(&evs[i]); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			CheckTask(t, &evs[i], tc.th)
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

// Calls that fail before they reach the protocol code never pass the
// fentry and kprobe hooks: listen or accept on a UDP socket, a bind whose
// address is too short, a bind refused by a cgroup BPF program (systemd's
// SocketBindDeny=) or an LSM. The syscall tracepoints see them all.
func TestKernelFailuresBeforeProtocol(t *testing.T) {
	cases := []struct {
		name string
		want string // kind, result and errno of the one event
		call func(t *testing.T, ns *NS) (pid int, err error)
	}{
		{"udp-listen", "listen failed EOPNOTSUPP", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, UDP4)
				defer unix.Close(fd)
				if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:9301"))); err != nil {
					t.Fatal(err)
				}
				err = unix.Listen(fd, 1)
			})
			return os.Getpid(), err
		}},
		{"udp-accept", "accept failed EOPNOTSUPP", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, UDP4)
				defer unix.Close(fd)
				_, _, err = unix.Accept(fd)
			})
			return os.Getpid(), err
		}},
		{"short-address", "bind failed EINVAL", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, TCP4)
				defer unix.Close(fd)
				sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: 0x5e24} // 9310, network order
				_, _, errno := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), 8)
				err = errno
			})
			return os.Getpid(), err
		}},
		{"cgroup-bpf-deny", "bind denied EPERM", func(t *testing.T, ns *NS) (int, error) {
			cg := newCgroup(t)
			deny, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Type:         ebpf.CGroupSockAddr,
				AttachType:   ebpf.AttachCGroupInet4Bind,
				Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
				License:      "GPL",
			})
			if err != nil {
				t.Fatal(err)
			}
			defer deny.Close()
			l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Name(), Attach: ebpf.AttachCGroupInet4Bind, Program: deny})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			cmd := HelperCmd(HelperExe(t), 0, "tcp", "127.0.0.1:9303")
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(cg.Fd())
			h := RunHelper(t, ns, cmd)
			if _, errno := h.Bind(t); errno != "EPERM" {
				return h.Cmd.Process.Pid, fmt.Errorf("bind in the cgroup: %q", errno)
			}
			return h.Cmd.Process.Pid, unix.EPERM
		}},
	}
	// One tracer, one call after another; each call's failure is told
	// apart by process and kind.
	ns := NewNetns(t)
	c := startTracer(t, Options{})
	pids := make([]int, len(cases))
	for i, tc := range cases {
		pid, err := tc.call(t, ns)
		if err == nil {
			t.Fatalf("%s: the call did not fail", tc.name)
		}
		pids[i] = pid
	}
	evs := c.stop(t, ns)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			kind, _, _ := strings.Cut(tc.want, " ")
			for _, ev := range evs {
				if ev.PID == uint32(pids[i]) && ev.Kind.String() == kind && ev.Result != event.ResultOK {
					got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, ev.Result, ev.ErrnoName()))
				}
			}
			var want []string
			if c.tr.Backend() == event.BackendTracepoint {
				want = []string{tc.want}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s backend: got %q, want %q", c.tr.Backend(), got, want)
			}
		})
	}
}

// newCgroup makes a cgroup v2 child for one test, removed at its end.
func newCgroup(t *testing.T) *os.File {
	t.Helper()
	dir := filepath.Join(cgroup2Mount(t), fmt.Sprintf("porttrace-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Each backend's programs pass this kernel's verifier, or the kernel refuses
// the program type outright and the test says which.
func TestKernelBackendsLoad(t *testing.T) {
	NeedRoot(t)
	kernel, err := btfKernel()
	if err != nil {
		t.Fatal(err)
	}
	backends := []event.Backend{event.BackendTracepoint, event.BackendFentry, event.BackendKprobe}
	if b := Backend(t); b != event.BackendAuto {
		backends = []event.Backend{b}
	}
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			spec, err := loadPorttrace()
			if err != nil {
				t.Fatal(err)
			}
			fn, onSock := listenFunc(kernel)
			if err := spec.Variables["listen_on_sk"].Set(onSock); err != nil {
				t.Fatal(err)
			}
			opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}
			l, err := loadBackend(b, spec, opts, fn)
			if errors.Is(err, unix.EPERM) && b == event.BackendFentry {
				t.Skipf("this kernel refuses to load fexit programs (EPERM): %v", err)
			}
			if err != nil {
				t.Fatalf("%+v", err)
			}
			l.close()
		})
	}
}

func btfKernel() (*btf.Spec, error) { return btf.LoadKernelSpec() }

// auto takes the first backend, in the order fentry, kprobe, tracepoint,
// that starts on its own; PORTTRACE_WANT_AUTO names the one expected.
func TestKernelAutoBackend(t *testing.T) {
	NeedRoot(t)
	first := event.BackendAuto
	for _, b := range []event.Backend{event.BackendFentry, event.BackendKprobe, event.BackendTracepoint} {
		tr, err := New(Options{Backend: b, Events: AllKinds()})
		if err == nil {
			tr.Close()
			first = b
			break
		}
	}
	tr, err := New(Options{Backend: event.BackendAuto, Events: AllKinds()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Backend() != first {
		t.Errorf("auto chose %s, but %s starts", tr.Backend(), first)
	}
	if want := os.Getenv("PORTTRACE_WANT_AUTO"); want != "" && tr.Backend().String() != want {
		t.Errorf("auto chose %s, want %s on this kernel (notes: %v)", tr.Backend(), want, tr.Notes())
	}
	if first != event.BackendFentry && len(tr.Notes()) == 0 {
		t.Error("no note says why the backends before it were refused")
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

// Nothing is lost silently: with a ring buffer too small for a burst and a
// reader that is not reading, every event is either delivered or counted
// as lost, and the two add up.
func TestKernelLostEventsCounted(t *testing.T) {
	const n = 500
	ns := NewNetns(t)
	NeedRoot(t)
	tr := newTracer(t, Options{Backend: Backend(t), Events: KindsOf(event.KindBind), PID: uint32(os.Getpid()), RingBufferSize: 4096})
	defer tr.Close()
	ns.Run(t, func() {
		for i := 0; i < n; i++ {
			fd := NewSocket(t, UDP4)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
	})
	tr.Stop()
	delivered := 0
	var ev event.Event
	for tr.Read(&ev) == nil {
		if ev.Netns == ns.Inode {
			delivered++
		}
	}
	lost, err := tr.Lost()
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 || delivered+int(lost) != n {
		t.Errorf("delivered %d + lost %d, want a loss and a sum of %d", delivered, lost, n)
	}
}

// The uid filter runs in the kernel: only the named user's binds are
// seen, root (0) a user like any other.
func TestKernelUIDFilter(t *testing.T) {
	for _, uid := range []uint32{65534, 0} {
		t.Run(fmt.Sprint(uid), func(t *testing.T) {
			ns := NewNetns(t)
			nobody := StartHelper(t, ns, HelperExe(t), 65534, "udp", "127.0.0.1:6101")
			root := StartHelper(t, ns, HelperExe(t), 0, "udp", "127.0.0.1:6102")
			c := startTracer(t, Options{FilterUID: true, UID: uid})
			for _, h := range []*Helper{nobody, root} {
				if _, errno := h.Bind(t); errno != "" {
					t.Fatal(errno)
				}
			}
			want := map[uint32]*Helper{65534: nobody, 0: root}[uid]
			port := map[uint32]uint16{65534: 6101, 0: 6102}[uid]
			evs := c.stop(t, ns)
			if len(evs) != 1 || evs[0].UID != uid || evs[0].Local.Port() != port || evs[0].PID != uint32(want.Cmd.Process.Pid) {
				t.Errorf("got %v, want only uid %d's bind of %d", evs, uid, port)
			}
		})
	}
}
