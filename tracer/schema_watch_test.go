package tracer_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/ports"
)

// ports --watch writes its snapshot, each bind and listen (listeners with
// their scope and flags: IPv4, dual-stack IPv6, UDP; a TCP bind without),
// and each listener it finds gone, every line after its schema.
func TestKernelSchemaPortsWatch(t *testing.T) {
	ns := tracer.NewNetns(t)
	var held int
	ns.Run(t, func() { held = tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0)) })
	defer unix.Close(held)
	w := startWatch(t, []string{ns.Path()}, 200*time.Millisecond, "json")
	var fds []int
	ns.Run(t, func() {
		fds = append(fds, tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0)))
		ln6 := tracer.NewSocket(t, tracer.TCP6)
		fds = append(fds, ln6)
		if err := unix.Bind(ln6, tracer.Sockaddr(netip.MustParseAddrPort("[::]:0"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln6, 8); err != nil {
			t.Fatal(err)
		}
		// A UDP socket on a port of its choosing is a listener; on one
		// the kernel chose it is most likely a client, and not watched.
		for _, b := range []struct {
			s    tracer.SockSpec
			port uint16
		}{{tracer.UDP4, 5353}, {tracer.UDP4, 0}, {tracer.TCP4, 0}} {
			fd := tracer.NewSocket(t, b.s)
			fds = append(fds, fd)
			if err := unix.Bind(fd, tracer.Sockaddr(netip.AddrPortFrom(loopback, b.port))); err != nil {
				t.Fatal(err)
			}
		}
	})
	// Both listens written: the IPv6 one's v6only was looked up while its
	// socket was open.
	waitCount(t, w.out, `"event":"listen"`, 2)
	for _, fd := range fds {
		unix.Close(fd)
	}
	waitCount(t, w.out, `"event":"closed"`, 3)
	w.stop(t)
	counts := schematest.CheckLines(t, schematest.Watch, []byte(w.out.String()))
	if counts["snapshot"] == 0 || counts["bind"] < 5 || counts["listen"] < 2 {
		t.Errorf("lines by event: %v\n%s", counts, w.out.String())
	}
	if !strings.Contains(w.out.String(), `"v6only":false`) {
		t.Errorf("the IPv6 listener's v6only was not looked up:\n%s", w.out.String())
	}
}

// waitCount waits until s has said want n times.
func waitCount(t *testing.T, s *tracer.SyncBuilder, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("never said %q %d times:\n%s", want, n, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// who --wait writes the sockets on the port now, a bind that found the
// port in use (and waits on), then the bind that took it, each after its
// schema.
func TestKernelSchemaWhoWait(t *testing.T) {
	ns := tracer.NewNetns(t)
	var ln int
	var port uint16
	ns.Run(t, func() {
		ln = tracer.ListenTCP(t, netip.AddrPortFrom(loopback, 0))
		port = tracer.LocalPort(t, ln)
	})
	defer unix.Close(ln)
	cfg := ports.DefaultWhoConfig()
	cfg.Netns, cfg.Wait, cfg.Timeout, cfg.Output = []string{ns.Path()}, true, 20*time.Second, "json"
	if err := cfg.ParseTarget(fmt.Sprintf("%d/tcp", port)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Backend = tracer.Backend(t)
	out, errOut := &tracer.SyncBuilder{}, &tracer.SyncBuilder{}
	done := make(chan error, 1)
	go func() { done <- ports.RunWho(context.Background(), cfg, out, errOut) }()
	waitText(t, errOut, "waiting for a bind", done, cfg.Backend)
	addr := tracer.Sockaddr(netip.AddrPortFrom(loopback, port))
	ns.Run(t, func() {
		fd := tracer.NewSocket(t, tracer.TCP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, addr); err != unix.EADDRINUSE {
			t.Fatalf("bind: %v, want EADDRINUSE", err)
		}
	})
	waitText(t, out, `"errno":"EADDRINUSE"`, done, cfg.Backend)
	unix.Close(ln)
	ns.Run(t, func() {
		fd := tracer.NewSocket(t, tracer.TCP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, addr); err != nil {
			t.Fatal(err)
		}
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("who --wait did not end on the bind:\n%s", out.String())
	}
	counts := schematest.CheckLines(t, schematest.Who, []byte(out.String()))
	if counts["who"] != 1 || counts["bind"] != 2 || !strings.Contains(out.String(), `"start":"`) || !strings.Contains(out.String(), `"held":true`) {
		t.Errorf("lines by event: %v\n%s", counts, out.String())
	}
}
