package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
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
// One that holds CAP_NET_BIND_SERVICE is let through, and its event says
// it holds it.
func TestKernelBindDenied(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unprivStart string
		addr        string
		errno       string
		priv        bool
		capBind     bool // the helper holds CAP_NET_BIND_SERVICE (ambient)
	}{
		{"port 80 default threshold", "", "0.0.0.0:80", "EACCES", true, false},
		{"port 1500 under raised threshold", "2000", "127.0.0.1:1500", "EACCES", true, false},
		{"port 80 under lowered threshold", "80", "0.0.0.0:80", "", false, false},
		{"ipv6 port 443", "", "[::]:443", "EACCES", true, false},
		{"port 80 with cap_net_bind_service", "", "0.0.0.0:80", "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := NewNetns(t)
			if tc.unprivStart != "" {
				ns.Sysctl(t, "net.ipv4.ip_unprivileged_port_start", tc.unprivStart)
			}
			cmd := HelperCmd(HelperExe(t), 65534, "tcp", tc.addr)
			cmd.SysProcAttr.Credential.Gid = 65533 // apart from the uid: neither stands in for the other
			if tc.capBind {
				cmd.SysProcAttr.AmbientCaps = []uintptr{unix.CAP_NET_BIND_SERVICE}
			}
			h := RunHelper(t, ns, cmd)
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
			if ev.UID != 65534 || ev.GID != 65533 || ev.PID != uint32(h.Cmd.Process.Pid) || ev.CapBind != tc.capBind {
				t.Errorf("uid %d gid %d pid %d cap %t, want 65534 65533 %d %t", ev.UID, ev.GID, ev.PID, ev.CapBind, h.Cmd.Process.Pid, tc.capBind)
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

// A bind reports the socket options that decide whether it clashes with
// another, as the kernel held them, and the interface SO_BINDTODEVICE
// bound it to, on every backend.
func TestKernelBindSockOpts(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{Events: KindsOf(event.KindBind), PID: uint32(os.Getpid())})
	type opt struct{ level, name int }
	cases := []struct {
		spec SockSpec
		port uint16
		opts []opt
		want event.SockOpts
	}{
		{TCP4, 31390, nil, 0},
		{TCP4, 31391, []opt{{unix.SOL_SOCKET, unix.SO_REUSEADDR}}, event.OptReuseAddr},
		{UDP4, 31392, []opt{{unix.SOL_SOCKET, unix.SO_REUSEPORT}}, event.OptReusePort},
		{TCP4, 31393, []opt{{unix.SOL_IP, unix.IP_FREEBIND}, {unix.SOL_IP, unix.IP_TRANSPARENT}}, event.OptFreebind | event.OptTransparent},
		{TCP4, 31394, []opt{{unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT}, {unix.SOL_SOCKET, unix.SO_REUSEADDR}}, event.OptBindNoPort | event.OptReuseAddr},
		{TCP6, 31395, []opt{{unix.SOL_IPV6, unix.IPV6_V6ONLY}}, event.OptV6Only},
	}
	ns.Run(t, func() {
		for _, tc := range cases {
			fd := NewSocket(t, tc.spec)
			for _, o := range tc.opts {
				if err := unix.SetsockoptInt(fd, o.level, o.name, 1); err != nil {
					t.Fatal(err)
				}
			}
			addr := "127.0.0.1"
			if tc.spec == TCP6 {
				addr = "::1"
			}
			if err := unix.Bind(fd, Sockaddr(netip.AddrPortFrom(netip.MustParseAddr(addr), tc.port))); err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.BindToDevice(fd, "lo"); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:31396"))); err != nil {
			t.Fatal(err)
		}
	})
	got := map[uint16]event.Event{}
	for _, ev := range c.stop(t, ns) {
		got[ev.Local.Port()] = ev
	}
	for _, tc := range cases {
		ev, ok := got[tc.port]
		if !ok || !ev.HasSockOpts || ev.SockOpts != tc.want || ev.BoundIf != 0 {
			t.Errorf("bind of %d: sock_opts %v (known %t), bound_if %d; want %v, none", tc.port, ev.SockOpts, ev.HasSockOpts, ev.BoundIf, tc.want)
		}
	}
	lo := netIfIndex(t, ns, "lo")
	if ev := got[31396]; ev.BoundIf != lo || netns.NewIfNames().Name(ns.Inode, ev.BoundIf) != "lo" {
		t.Errorf("bind of 31396 on lo: bound_if %d, want %d, named lo", ev.BoundIf, lo)
	}
}

// netIfIndex is the index of interface name inside ns.
func netIfIndex(t *testing.T, ns *NS, name string) int32 {
	t.Helper()
	var idx int32
	ns.Run(t, func() {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			t.Fatal(err)
		}
		idx = int32(ifi.Index)
	})
	return idx
}
