package tracer

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

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

// UDP connect allocates an ephemeral port too. A disconnect (connect to
// AF_UNSPEC) that follows is no connect, and is not reported.
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
				unspec := unix.RawSockaddr{Family: unix.AF_UNSPEC}
				if _, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec)); errno != 0 {
					t.Fatalf("disconnect: %v", errno)
				}
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
	done := 0
	for _, ev := range c.stop(t, ns) {
		if ev.Kind == event.KindConnectDone {
			// Each MPTCP connect is followed to its end through its first subflow.
			if event.ProtoName(ev.Proto) != wantProto || ev.Result != event.ResultOK || !ev.HasLatency {
				t.Errorf("got %s", Brief(&ev))
			}
			done++
			continue
		}
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
	if done != 2 {
		t.Errorf("got %d connect_done, want 2 (Go's dials are non-blocking)", done)
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

// A cgroup program that rewrites a connect's destination (a service
// address to one of its backends, as a socket load balancer does) sends
// the connect elsewhere: the event says where the kernel connected it, as
// ss(8) would, on every backend, not the address the caller gave.
func TestKernelConnectRewrittenByCgroup(t *testing.T) {
	ns := NewNetns(t)
	backend := netip.MustParseAddrPort("127.0.0.1:9000")
	var lfd int
	ns.Run(t, func() { lfd = ListenTCP(t, backend) })
	defer unix.Close(lfd)
	cg := newCgroup(t)
	ip := backend.Addr().As4()
	// bpf_sock_addr: user_ip4 at 4, user_port at 24, both in network order.
	attachSockAddr(t, cg, ebpf.AttachCGroupInet4Connect, asm.Instructions{
		asm.Mov.Imm(asm.R2, int32(binary.LittleEndian.Uint32(ip[:]))),
		asm.StoreMem(asm.R1, 4, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R2, int32(backend.Port()>>8|backend.Port()<<8&0xff00)),
		asm.StoreMem(asm.R1, 24, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
	})
	service := "10.96.0.10:80" // never reached: rewritten before any packet
	h := StartHelperIn(t, ns, cg, "tcp", "127.0.0.1:0", "PT_CONNECT="+service)
	c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
	port, errno := h.Bind(t)
	if errno != "" {
		t.Fatalf("helper connect to %s: %s", service, errno)
	}
	var got []string
	for _, ev := range c.stop(t, ns) {
		if ev.Kind == event.KindConnect {
			got = append(got, Brief(&ev))
		}
	}
	want := fmt.Sprintf("connect ok tcp ipv4 local=127.0.0.1:%d remote=%s eph=true class=registered priv=false dir=outbound", port, backend)
	if strings.Join(got, "\n") != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
