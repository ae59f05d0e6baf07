package tracer_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
	"github.com/porttrace/porttrace/tracer/ports"
)

// who on a held port names the holder; on a free port it says so and
// returns ports.ErrNobody, and so it does on a port where only a TIME-WAIT
// socket is left, which it lists.
func TestKernelWho(t *testing.T) {
	ns := tracer.NewNetns(t)
	var fd int
	ns.Run(t, func() {
		fd = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:10101"))
		closedConnection(t, netip.MustParseAddrPort("127.0.0.1:10105"))
	})
	defer unix.Close(fd)
	for _, tc := range []struct {
		target string
		err    error
		want   string
	}{
		{"10101", nil, fmt.Sprintf("pid %d (", os.Getpid())},
		{"10101/tcp", nil, "127.0.0.1:10101  LISTEN (loopback only)"},
		{"10101/udp", ports.ErrNobody, "port 10101/udp: nobody holds it"},
		{"10102", ports.ErrNobody, "port 10102/tcp,udp: nobody holds it"},
		{"10105/tcp", ports.ErrNobody, "  no process: the kernel keeps this closed connection in TIME-WAIT\n" +
			"port 10105/tcp: nobody holds it, only closed connections linger\n"},
	} {
		cfg := ports.DefaultWhoConfig()
		cfg.Netns = []string{ns.Path()}
		if err := cfg.ParseTarget(tc.target); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		err := ports.RunWho(context.Background(), cfg, &out, &strings.Builder{})
		if !errors.Is(err, tc.err) && err != tc.err {
			t.Errorf("who %s: error %v, want %v", tc.target, err, tc.err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("who %s said:\n%s\nwant it to contain %q", tc.target, out.String(), tc.want)
		}
	}
}

// closedConnection leaves a TIME-WAIT socket on server, and nothing else:
// the server side closes first, then the client, then the listener.
func closedConnection(t *testing.T, server netip.AddrPort) {
	t.Helper()
	ln := tracer.ListenTCP(t, server)
	c := tracer.NewSocket(t, tracer.TCP4)
	if err := unix.Connect(c, tracer.Sockaddr(server)); err != nil {
		t.Fatal(err)
	}
	a, _, err := unix.Accept(ln)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(ln)
	unix.Close(a)
	// Wait for the client to have the server's FIN, so that the server
	// side goes on to TIME-WAIT rather than stay in FIN-WAIT-2.
	if n, err := unix.Read(c, make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("reading the server's close: %d, %v", n, err)
	}
	unix.Close(c)
	deadline := time.Now().Add(5 * time.Second)
	for {
		socks, err := netlink.SocketDiagTCP(unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, s := range socks {
			if s.ID.SourcePort == server.Port() {
				states = append(states, sockdiag.StateName(s.State))
			}
		}
		if slices.Equal(states, []string{"TIME-WAIT"}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets on %s are %q, want one in TIME-WAIT", server, states)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// who --wait reports the next process that binds the port, the moment it
// does, with its exe, start time and cgroup, and exits; with nothing bound
// it times out, or when stopped says that nothing was bound.
func TestKernelWhoWait(t *testing.T) {
	ns := tracer.NewNetns(t)
	h := tracer.StartHelper(t, ns, tracer.HelperExe(t), 0, "tcp", "127.0.0.1:10103")
	cfg, out, done := startWhoWait(t, ns, "10103/tcp")
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", h.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(fmt.Sprintf(`bind tcp 127\.0\.0\.1:10103 netns \d+ by pid %d \(.+\), user \S+, exe %s, parent %d, `+
		`started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\), cgroup %s\n`,
		h.Cmd.Process.Pid, regexp.QuoteMeta(tracer.HelperExe(t)), os.Getpid(), regexp.QuoteMeta(proc.CgroupPath(cg))))
	if !want.MatchString(out.String()) {
		t.Errorf("who --wait said:\n%s\nwant it to match %s", out.String(), want)
	}

	cfg.Timeout = 300 * time.Millisecond
	if err := cfg.ParseTarget("10104/tcp"); err != nil {
		t.Fatal(err)
	}
	if err := ports.RunWho(context.Background(), cfg, &strings.Builder{}, &strings.Builder{}); !errors.Is(err, ports.ErrTimeout) {
		t.Errorf("who --wait on a port nobody binds: %v, want a timeout", err)
	}

	// Ctrl-C: nothing was bound, and the exit status must say so.
	cfg.Timeout = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errOut := &tracer.SyncBuilder{}
	go func() { done <- ports.RunWho(ctx, cfg, &strings.Builder{}, errOut) }()
	waitText(t, errOut, "waiting for a bind", done, cfg.Backend)
	cancel()
	if err := <-done; !errors.Is(err, ports.ErrInterrupted) {
		t.Errorf("who --wait stopped before any bind: %v, want ports.ErrInterrupted", err)
	}
}

// startWhoWait runs who --wait TARGET in ns in the background (for at
// most 20 s) and returns once it waits, so that a bind from then on counts.
func startWhoWait(t *testing.T, ns *tracer.NS, target string) (ports.WhoConfig, *tracer.SyncBuilder, chan error) {
	t.Helper()
	cfg := ports.DefaultWhoConfig()
	cfg.Netns = []string{ns.Path()}
	cfg.Wait = true
	cfg.Timeout = 20 * time.Second
	if err := cfg.ParseTarget(target); err != nil {
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
	return cfg, out, done
}

// who --wait waits for a bind that holds the port or is refused it: one
// that fails otherwise (the address in use) is told as it happens, and the
// wait goes on.
func TestKernelWhoWaitFailedBind(t *testing.T) {
	ns := tracer.NewNetns(t)
	var fd int
	ns.Run(t, func() { fd = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:10107")) })
	defer unix.Close(fd)
	inUse := tracer.StartHelper(t, ns, tracer.HelperExe(t), 0, "tcp", "127.0.0.1:10107")
	later := tracer.StartHelper(t, ns, tracer.HelperExe(t), 0, "tcp", "127.0.0.1:10107")
	cfg, out, done := startWhoWait(t, ns, "10107/tcp")
	if _, errno := inUse.Bind(t); errno != "EADDRINUSE" {
		t.Fatalf("bind of a held port: %q, want EADDRINUSE", errno)
	}
	failed := fmt.Sprintf("bind tcp 127.0.0.1:10107 netns %d by pid %d ", ns.Inode, inUse.Cmd.Process.Pid)
	waitText(t, out, "  EADDRINUSE: another socket holds this address and port\n", done, cfg.Backend)
	unix.Close(fd)
	if _, errno := later.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	if err := <-done; err != nil {
		t.Fatalf("who --wait: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	bound := fmt.Sprintf("bind tcp 127.0.0.1:10107 netns %d by pid %d ", ns.Inode, later.Cmd.Process.Pid)
	if n := len(lines); n < 3 || !strings.Contains(lines[n-2], failed) || !strings.Contains(lines[n-1], bound) ||
		strings.Contains(lines[n-1], "EADDRINUSE") {
		t.Errorf("who --wait said:\n%s\nwant the failed bind (%s...) and then the one that held the port (%s...)", out.String(), failed, bound)
	}
}

// who names the container and pod of a holder in a container's cgroup, as
// ports' JSON does, for the layouts of the kubelet and each runtime.
func TestKernelWhoNamesWorkload(t *testing.T) {
	ns := tracer.NewNetns(t)
	for i, l := range tracer.WorkloadLayouts(t)[:3] {
		t.Run(strings.ReplaceAll(l.Name, " ", "-"), func(t *testing.T) {
			port := 10110 + i
			cg, _ := tracer.MakeCgroup(t, l.Path)
			h := tracer.StartHelperIn(t, ns, cg, "tcp", fmt.Sprintf("127.0.0.1:%d", port), "PT_LISTEN=1")
			if _, errno := h.Bind(t); errno != "" {
				t.Fatal(errno)
			}
			want := "container " + l.ContainerID[:12]
			if l.Runtime != "" {
				want = "container " + l.Runtime + " " + l.ContainerID[:12]
			}
			if l.UID != "" {
				want = "pod " + l.UID + ", " + want
			}
			for _, output := range []string{"text", "json"} {
				cfg := ports.DefaultWhoConfig()
				cfg.Netns = []string{ns.Path()}
				cfg.Output = output
				if err := cfg.ParseTarget(fmt.Sprint(port)); err != nil {
					t.Fatal(err)
				}
				if err := cfg.Validate(); err != nil {
					t.Fatal(err)
				}
				var out strings.Builder
				if err := ports.RunWho(context.Background(), cfg, &out, &strings.Builder{}); err != nil {
					t.Fatal(err)
				}
				if output == "json" {
					want = fmt.Sprintf(`"container_id":%q`, l.ContainerID)
					if l.UID != "" {
						want += fmt.Sprintf(`,"pod_uid":%q`, l.UID)
					}
				}
				if !strings.Contains(out.String(), want) {
					t.Errorf("who %d -o %s said:\n%s\nwant it to contain %q", port, output, out.String(), want)
				}
			}
		})
	}
}
