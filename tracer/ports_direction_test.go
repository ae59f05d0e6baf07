package tracer_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/ports"
)

// Direction as an operator infers it: the side on the listening port is
// the server, whatever the ports' numbers. A client of a local well-known
// port (mail to port 25) is outbound on its side and inbound on the
// server's; so is one of a service in the ephemeral range, one bound to a
// fixed source port, and a connected UDP socket. Both sides are classed by
// the service port, privileged by the namespace's own
// ip_unprivileged_port_start (30000 here): a client of port 25 is wk*,
// of 5353 reg*.
func TestKernelPortsDirection(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(lo, port) }
	// connect makes a client of server, from from if it is valid, and returns it.
	connect := func(t *testing.T, sock tracer.SockSpec, from, server netip.AddrPort) (int, netip.AddrPort) {
		c := tracer.NewSocket(t, sock)
		if from.IsValid() {
			if err := unix.Bind(c, tracer.Sockaddr(from)); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Connect(c, tracer.Sockaddr(server)); err != nil {
			t.Fatal(err)
		}
		return c, at(tracer.LocalPort(t, c))
	}
	// tcpPair is a listener on server and one accepted connection from
	// from; class is that of the server's port, for all three.
	tcpPair := func(t *testing.T, from, server netip.AddrPort, class string) ([]int, []string) {
		ln := tracer.ListenTCP(t, server)
		c, cl := connect(t, tracer.TCP4, from, server)
		a, _, err := unix.Accept(ln)
		if err != nil {
			t.Fatal(err)
		}
		return []int{ln, c, a}, []string{
			fmt.Sprintf("tcp %s - LISTEN dir= %s", server, class),
			fmt.Sprintf("tcp %s %s ESTAB dir=inbound %s", server, cl, class),
			fmt.Sprintf("tcp %s %s ESTAB dir=outbound %s", cl, server, class),
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (fds []int, want []string)
	}{
		{"client of local port 25", func(t *testing.T) ([]int, []string) {
			return tcpPair(t, netip.AddrPort{}, at(25), "wk*")
		}},
		{"service port in the ephemeral range", func(t *testing.T) ([]int, []string) {
			return tcpPair(t, netip.AddrPort{}, at(40000), "reg")
		}},
		{"client bound to a fixed port", func(t *testing.T) ([]int, []string) {
			return tcpPair(t, at(5000), at(40001), "reg")
		}},
		{"client of local DNS", func(t *testing.T) ([]int, []string) {
			server := at(53)
			srv := tracer.NewSocket(t, tracer.UDP4)
			if err := unix.Bind(srv, tracer.Sockaddr(server)); err != nil {
				t.Fatal(err)
			}
			c, cl := connect(t, tracer.UDP4, netip.AddrPort{}, server)
			return []int{srv, c}, []string{
				fmt.Sprintf("udp %s - UNCONN dir= wk*", server),
				fmt.Sprintf("udp %s %s ESTAB dir=outbound? wk*", cl, server),
			}
		}},
		{"connected UDP", func(t *testing.T) ([]int, []string) {
			// A UDP service, a client connected to it, and the service's own
			// socket connected back to that client (as QUIC servers do).
			server := at(5353)
			reuse := func(fd int) int {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					t.Fatal(err)
				}
				return fd
			}
			srv := reuse(tracer.NewSocket(t, tracer.UDP4))
			if err := unix.Bind(srv, tracer.Sockaddr(server)); err != nil {
				t.Fatal(err)
			}
			c, cl := connect(t, tracer.UDP4, netip.AddrPort{}, server)
			back := reuse(tracer.NewSocket(t, tracer.UDP4))
			if err := unix.Bind(back, tracer.Sockaddr(server)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(back, tracer.Sockaddr(cl)); err != nil {
				t.Fatal(err)
			}
			return []int{srv, c, back}, []string{
				fmt.Sprintf("udp %s - UNCONN dir= reg*", server),
				fmt.Sprintf("udp %s %s ESTAB dir=inbound? reg*", server, cl),
				fmt.Sprintf("udp %s %s ESTAB dir=outbound? reg*", cl, server),
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			ns.Sysctl(t, "net.ipv4.ip_local_port_range", "32768 60999")
			ns.Sysctl(t, "net.ipv4.ip_unprivileged_port_start", "30000")
			var fds []int
			var want []string
			ns.Run(t, func() { fds, want = tc.setup(t) })
			defer func() {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}()
			socks, _, err := ports.Snapshot(ports.SnapshotOptions{All: true, Netns: []string{ns.Path()}})
			if err != nil {
				t.Fatal(err)
			}
			got := directions(socks)
			slices.Sort(want)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// directions renders what TestKernelPortsDirection* assert of each socket,
// "?" after an inferred direction.
func directions(socks []ports.Socket) []string {
	var got []string
	for _, s := range socks {
		dir := s.Direction.String()
		if s.DirInferred {
			dir += "?"
		}
		got = append(got, fmt.Sprintf("%s %s %s %s dir=%s %s", event.ProtoName(s.Proto), s.Local, tracer.AddrString(s.Remote), s.State, dir,
			event.ShortClass(s.PortClass, s.Privileged)))
	}
	slices.Sort(got)
	return got
}

// With the peer on another host (a namespace behind a veth pair), only
// the host's own listeners and the handshake are facts: the accepted side
// of a listener is inbound; a socket on a port nothing here listens on is
// a client, said to be inferred, whatever its ports: bound to a fixed
// port below the range towards a remote 25, active FTP's data from port
// 20 to a high port, or both ports in the range. Its class is the remote
// service port's.
func TestKernelPortsDirectionRemote(t *testing.T) {
	here, there := tracer.NewNetns(t), tracer.NewNetns(t)
	vethPair(t, here, there, "10.199.0.1/24", "10.199.0.2/24")
	here.Sysctl(t, "net.ipv4.ip_local_port_range", "32768 60999")
	there.Sysctl(t, "net.ipv4.ip_local_port_range", "32768 60999")
	local, remote := netip.MustParseAddr("10.199.0.1"), netip.MustParseAddr("10.199.0.2")
	var lns []int
	there.Run(t, func() {
		for _, port := range []uint16{25, 40000, 50001} {
			lns = append(lns, tracer.ListenTCP(t, netip.AddrPortFrom(remote, port)))
		}
	})
	var fds []int
	var inbound netip.AddrPort
	here.Run(t, func() {
		lns = append(lns, tracer.ListenTCP(t, netip.AddrPortFrom(local, 8080)))
		for _, c := range []struct{ from, to uint16 }{{32250, 25}, {20, 40000}, {37382, 50001}} {
			fd := tracer.NewSocket(t, tracer.TCP4)
			if err := unix.Bind(fd, tracer.Sockaddr(netip.AddrPortFrom(local, c.from))); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, tracer.Sockaddr(netip.AddrPortFrom(remote, c.to))); err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
	})
	there.Run(t, func() {
		fd := tracer.NewSocket(t, tracer.TCP4)
		if err := unix.Connect(fd, tracer.Sockaddr(netip.AddrPortFrom(local, 8080))); err != nil {
			t.Fatal(err)
		}
		inbound = netip.AddrPortFrom(remote, tracer.LocalPort(t, fd))
		fds = append(fds, fd)
	})
	defer func() {
		for _, fd := range append(fds, lns...) {
			unix.Close(fd)
		}
	}()
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{All: true, Netns: []string{here.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	got := directions(socks)
	want := []string{
		"tcp 10.199.0.1:20 10.199.0.2:40000 ESTAB dir=outbound? reg",
		"tcp 10.199.0.1:32250 10.199.0.2:25 ESTAB dir=outbound? wk*",
		"tcp 10.199.0.1:37382 10.199.0.2:50001 ESTAB dir=outbound? dyn",
		"tcp 10.199.0.1:8080 - LISTEN dir= reg",
		fmt.Sprintf("tcp 10.199.0.1:8080 %s ESTAB dir=inbound reg", inbound),
	}
	slices.Sort(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// vethPair joins namespaces a and b with a veth pair, addressed as given.
func vethPair(t *testing.T, a, b *tracer.NS, addrA, addrB string) {
	t.Helper()
	up := func(name, cidr string) {
		l, err := netlink.LinkByName(name)
		if err == nil {
			var addr *netlink.Addr
			if addr, err = netlink.ParseAddr(cidr); err == nil {
				err = netlink.AddrAdd(l, addr)
			}
		}
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Errorf("veth %s %s: %v", name, cidr, err)
		}
	}
	a.Run(t, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pt-a"}, PeerName: "pt-b", PeerNamespace: netlink.NsFd(b.FD)}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatalf("adding a veth pair: %v", err)
		}
		up("pt-a", addrA)
	})
	b.Run(t, func() { up("pt-b", addrB) })
}
