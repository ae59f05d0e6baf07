package tracer_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/churn"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/ports"
	"github.com/porttrace/porttrace/tracer/stream"
)

// The kernel tests of the JSON contract run each command against real
// calls on loopback in a namespace of their own and check every line it
// writes against docs/schema.

var loopback = netip.MustParseAddr("127.0.0.1")

// traffic makes one of each call the stream reports, in ns: binds and
// listens (IPv4, IPv6, UDP), blocking and non-blocking connects that work
// and that are refused, accepts, and a bind to held, which finds it in use
// (held lives on, so that the stream, which looks after the bind, names
// what holds it).
func traffic(t *testing.T, ns *tracer.NS, held netip.AddrPort) {
	ns.Run(t, func() {
		var fds []int
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		sock := func(s tracer.SockSpec) int {
			fd := tracer.NewSocket(t, s)
			fds = append(fds, fd)
			return fd
		}
		ln := tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0))
		fds = append(fds, ln)
		svc := netip.AddrPortFrom(loopback, tracer.LocalPort(t, ln))
		ln6 := sock(tracer.TCP6)
		if err := unix.Bind(ln6, tracer.Sockaddr(netip.MustParseAddrPort("[::1]:0"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln6, 8); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(sock(tracer.TCP4), tracer.Sockaddr(svc)); err != nil {
			t.Fatal(err)
		}
		nb := sock(tracer.TCP4)
		unix.SetNonblock(nb, true)
		if err := unix.Connect(nb, tracer.Sockaddr(svc)); err != unix.EINPROGRESS {
			t.Fatalf("non-blocking connect: %v, want EINPROGRESS", err)
		}
		for range 2 {
			a, _, err := unix.Accept(ln)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, a)
		}
		refused := netip.AddrPortFrom(loopback, 1)
		if err := unix.Connect(sock(tracer.TCP4), tracer.Sockaddr(refused)); err != unix.ECONNREFUSED {
			t.Fatalf("connect to %s: %v, want ECONNREFUSED", refused, err)
		}
		nbRefused := sock(tracer.TCP4)
		unix.SetNonblock(nbRefused, true)
		_ = unix.Connect(nbRefused, tracer.Sockaddr(refused))
		if err := unix.Bind(sock(tracer.TCP4), tracer.Sockaddr(held)); err != unix.EADDRINUSE {
			t.Fatalf("bind %s: %v, want EADDRINUSE", held, err)
		}
		udp := sock(tracer.UDP4)
		if err := unix.Connect(udp, tracer.Sockaddr(netip.AddrPortFrom(loopback, 53))); err != nil {
			t.Fatal(err)
		}
		// The refused handshake ends at once on loopback: let it, so its
		// connect_done comes while the socket is open.
		time.Sleep(20 * time.Millisecond)
	})
}

// The stream's every line, of every kind of call, follows its schema.
func TestKernelSchemaStream(t *testing.T) {
	ns := tracer.NewNetns(t)
	var ln int
	var held netip.AddrPort
	ns.Run(t, func() {
		ln = tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0))
		held = netip.AddrPortFrom(loopback, tracer.LocalPort(t, ln))
	})
	defer unix.Close(ln)
	cfg := stream.DefaultConfig()
	cfg.Output = "json"
	cfg.PID = uint32(os.Getpid())
	cfg.Backend = tracer.Backend(t)
	var stdout, stderr tracer.SyncBuilder
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, cfg, &stdout, &stderr) }()
	want := []string{`"event":"bind"`, `"event":"listen"`, `"event":"accept"`, `"result":"in_progress"`, `"event":"connect_done","result":"ok"`,
		`"event":"connect_done","result":"failed","errno":"ECONNREFUSED"`, `"event":"connect","result":"failed","errno":"ECONNREFUSED"`,
		`"holders":[{`, `"latency_ns"`, `"family":"ipv6"`, `"proto":"udp"`, `"sock_opts"`}
	deadline := time.Now().Add(15 * time.Second)
	for missing := want; len(missing) > 0; {
		traffic(t, ns, held)
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, cfg.Backend, err)
			t.Fatalf("the stream ended: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		out := stdout.String()
		missing = missing[:0:0]
		for _, w := range want {
			if !strings.Contains(out, w) {
				missing = append(missing, w)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream never wrote %q:\n%s", missing, out)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	counts := schematest.CheckLines(t, schematest.Stream, []byte(stdout.String()))
	for _, kind := range []string{"bind", "listen", "connect", "accept", "connect_done"} {
		if counts[kind] == 0 {
			t.Errorf("no %s line", kind)
		}
	}
}

// The line that tells of events lost follows lost.schema.json, and the
// events around it theirs: the output is held while the binds overflow a
// small ring buffer, as in TestKernelRunLost: more than the merge and the
// stream's pipeline hold besides (a few thousand events).
func TestKernelSchemaStreamLost(t *testing.T) {
	ns := tracer.NewNetns(t)
	cfg := stream.DefaultConfig()
	cfg.Output = "json"
	cfg.PID = uint32(os.Getpid())
	cfg.Backend = tracer.Backend(t)
	cfg.RingBufferSize = 4096
	out := &heldWriter{first: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, cfg, out, &strings.Builder{}) }()
	bind := func(port int) { bindUDP(t, ns, netip.AddrPortFrom(loopback, uint16(port))) }
	bindUntilFirst(t, bind, out.first, done, cfg.Backend)
	for i := range 5000 {
		bind(21000 + i)
	}
	close(out.release)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if counts := schematest.CheckLines(t, schematest.Stream, []byte(out.String())); counts["lost"] == 0 {
		t.Errorf("no lost line:\n%s", out.String())
	}
}

// Every interval churn writes follows churn.schema.json, with its rows
// filled: connects that allocate ports, to one destination until the
// namespace's 10 ports run out (EADDRNOTAVAIL), and a UDP connect.
func TestKernelSchemaChurn(t *testing.T) {
	ns := tracer.NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40009")
	cfg := churn.DefaultConfig()
	cfg.Output = "json"
	cfg.Interval = 100 * time.Millisecond
	cfg.Backend = tracer.Backend(t)
	var stdout, stderr tracer.SyncBuilder
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- churn.Run(ctx, cfg, &stdout, &stderr) }()
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	svc := netip.AddrPortFrom(loopback, 9000)
	ns.Run(t, func() { fds = append(fds, tracer.ListenTCP(t, svc)) })
	want := []string{fmt.Sprintf(`"netns":%d,"range":[40000,40009]`, ns.Inode), `"EADDRNOTAVAIL":`, `"processes":[{`}
	deadline := time.Now().Add(15 * time.Second)
	for !containsAll(stdout.String(), want) {
		ns.Run(t, func() {
			for range 12 {
				fd := tracer.NewSocket(t, tracer.TCP4)
				fds = append(fds, fd)
				if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil && err != unix.EADDRNOTAVAIL {
					t.Fatal(err)
				}
			}
			// Closed at once: kept, a slow kernel's many rounds would use up
			// the ten ports of the UDP range too (EAGAIN).
			udp := tracer.NewSocket(t, tracer.UDP4)
			err := unix.Connect(udp, tracer.Sockaddr(netip.AddrPortFrom(loopback, 53)))
			unix.Close(udp)
			if err != nil && err != unix.EAGAIN {
				t.Fatal(err)
			}
		})
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, cfg.Backend, err)
			t.Fatalf("churn ended: %v\n%s", err, stderr.String())
		case <-time.After(150 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("churn never wrote %q:\n%s", want, stdout.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	schematest.CheckLines(t, schematest.ChurnLines, []byte(stdout.String()))
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// sockets leaves in ns a socket in each state ports -a shows, and
// returns the port of its IPv4 listener and of its TIME-WAIT: listeners
// (IPv4, dual-stack IPv6, IPv6-only), unconnected and connected UDP, an
// established connection both ways.
func sockets(t *testing.T, ns *tracer.NS) (listener, timeWait uint16) {
	timeWait = 10105
	ns.Run(t, func() {
		var fds []int
		t.Cleanup(func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		})
		keep := func(fd int) int { fds = append(fds, fd); return fd }
		ln := keep(tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0)))
		listener = tracer.LocalPort(t, ln)
		for _, v6only := range []int{0, 1} {
			fd := keep(tracer.NewSocket(t, tracer.TCP6))
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
				t.Fatal(err)
			}
			if err := unix.Bind(fd, tracer.Sockaddr(netip.MustParseAddrPort("[::]:0"))); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(fd, 8); err != nil {
				t.Fatal(err)
			}
		}
		c := keep(tracer.NewSocket(t, tracer.TCP4))
		if err := unix.Connect(c, tracer.Sockaddr(netip.AddrPortFrom(loopback, listener))); err != nil {
			t.Fatal(err)
		}
		a, _, err := unix.Accept(ln)
		if err != nil {
			t.Fatal(err)
		}
		keep(a)
		u := keep(tracer.NewSocket(t, tracer.UDP4))
		if err := unix.Bind(u, tracer.Sockaddr(netip.AddrPortFrom(loopback, 0))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(keep(tracer.NewSocket(t, tracer.UDP6)), tracer.Sockaddr(netip.MustParseAddrPort("[::1]:53"))); err != nil {
			t.Fatal(err)
		}
		closedConnection(t, netip.AddrPortFrom(loopback, timeWait))
	})
	return listener, timeWait
}

// ports -a, and who on a held port and on one only TIME-WAIT is left
// on, write sockets that follow socket.schema.json.
func TestKernelSchemaPortsAndWho(t *testing.T) {
	ns := tracer.NewNetns(t)
	listener, timeWait := sockets(t, ns)
	cfg := ports.DefaultConfig()
	cfg.All, cfg.Output, cfg.Netns = true, "json", []string{ns.Path()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := ports.Run(t.Context(), cfg, &out, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	schematest.CheckLines(t, schematest.Ports, []byte(out.String()))
	for _, state := range []string{"LISTEN", "ESTAB", "UNCONN", "TIME-WAIT"} {
		if !strings.Contains(out.String(), `"state":"`+state+`"`) {
			t.Errorf("no %s socket:\n%s", state, out.String())
		}
	}
	for _, tc := range []struct {
		port uint16
		err  error
	}{{listener, nil}, {timeWait, ports.ErrNobody}} {
		out.Reset()
		who := ports.DefaultWhoConfig()
		who.Output, who.Netns = "json", []string{ns.Path()}
		if err := who.ParseTarget(fmt.Sprint(tc.port)); err != nil {
			t.Fatal(err)
		}
		if err := who.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := ports.RunWho(t.Context(), who, &out, &strings.Builder{}); !errors.Is(err, tc.err) {
			t.Errorf("who %d: %v, want %v", tc.port, err, tc.err)
		}
		if counts := schematest.CheckLines(t, schematest.Who, []byte(out.String())); counts["who"] != 1 || !strings.Contains(out.String(), `"sockets":[{`) {
			t.Errorf("who %d wrote no who object with its sockets:\n%s", tc.port, out.String())
		}
	}
}
