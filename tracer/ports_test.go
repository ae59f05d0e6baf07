package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Listeners of several kinds, one of them held by a process whose binary
// was deleted: each is listed with its holder, scope, class and flags, and
// the list agrees with ss -tulnp run in the same namespace.
func TestKernelPortsListeners(t *testing.T) {
	ns := newNetns(t)
	ns.sysctl(t, "net.ipv4.ip_unprivileged_port_start", "8000")
	exe := filepath.Join(t.TempDir(), "implant")
	if err := copyFile(helperExe(t), exe); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, ns, exe, 0, "tcp", "0.0.0.0:31337", "PT_LISTEN=1")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if _, errno := h.bind(t); errno != "" {
		t.Fatal(errno)
	}
	type listener struct {
		sock sockSpec
		addr string
	}
	ours := []listener{
		{tcp4, "0.0.0.0:8080"},
		{tcp4, "127.0.0.1:7999"},
		{tcp6, "[::]:8443"},
		{udp4, "0.0.0.0:5353"},
		{udp6, "[::1]:5354"},
	}
	var fds []int
	ns.run(t, func() {
		for _, l := range ours {
			fd := newSocket(t, l.sock)
			fds = append(fds, fd)
			if l.sock.family == unix.AF_INET6 {
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
			if err := unix.Bind(fd, sockaddr(netip.MustParseAddrPort(l.addr))); err != nil {
				t.Fatal(err)
			}
			if l.sock.typ == unix.SOCK_STREAM {
				if err := unix.Listen(fd, 8); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	socks, err := Snapshot(SnapshotOptions{Netns: []string{ns.path()}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range socks {
		pid, deleted := uint32(0), false
		if len(s.Holders) > 0 {
			pid, deleted = s.Holders[0].PID, s.Holders[0].ExeDeleted
		}
		who := "self"
		if pid != uint32(os.Getpid()) {
			who = fmt.Sprintf("pid=%t deleted=%t", pid == uint32(h.cmd.Process.Pid), deleted)
		}
		got = append(got, fmt.Sprintf("%s %s %s %s %s priv=%t %s suspicious=%d",
			ProtoName(s.Proto), s.Local, s.State, s.Scope, s.PortClass, s.Privileged, who, len(s.Suspicious)))
	}
	want := []string{
		"tcp 127.0.0.1:7999 LISTEN loopback only registered priv=true self suspicious=0",
		"tcp 0.0.0.0:8080 LISTEN all interfaces registered priv=false self suspicious=0",
		"tcp [::]:8443 LISTEN all interfaces registered priv=false self suspicious=0",
		"tcp 0.0.0.0:31337 LISTEN all interfaces registered priv=false pid=true deleted=true suspicious=1",
		"udp 0.0.0.0:5353 UNCONN all interfaces registered priv=true self suspicious=0",
		"udp [::1]:5354 UNCONN loopback only registered priv=true self suspicious=0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range socks {
		if s.Local.Port() == 31337 && !strings.Contains(strings.Join(s.Suspicious, ";"), "executable deleted") {
			t.Errorf("backdoor not flagged: %q", s.Suspicious)
		}
	}

	if _, err := exec.LookPath("ss"); err != nil {
		t.Log("ss(8) is not installed: no cross-check")
		return
	}
	var out []byte
	ns.run(t, func() { out, err = exec.Command("ss", "-Htulnp").Output() })
	if err != nil {
		t.Fatal(err)
	}
	var fromSS, fromUs []string
	pidRe := regexp.MustCompile(`pid=(\d+)`)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text()) // netid state recv-q send-q local peer users
		if len(f) < 5 {
			continue
		}
		local := strings.Replace(f[4], "*:", "0.0.0.0:", 1)
		pid := ""
		if m := pidRe.FindStringSubmatch(sc.Text()); m != nil {
			pid = m[1]
		}
		fromSS = append(fromSS, f[0]+" "+local+" "+pid)
	}
	for _, s := range socks {
		pid := ""
		if len(s.Holders) > 0 {
			pid = fmt.Sprint(s.Holders[0].PID)
		}
		fromUs = append(fromUs, ProtoName(s.Proto)+" "+s.Local.String()+" "+pid)
	}
	slices.Sort(fromSS)
	slices.Sort(fromUs)
	if !slices.Equal(fromSS, fromUs) {
		t.Errorf("ss -tulnp lists\n%s\nporttrace ports lists\n%s", strings.Join(fromSS, "\n"), strings.Join(fromUs, "\n"))
	}
}

// Direction as an operator infers it: the side on the listening port is
// the server. A client of a local well-known port (mail to port 25) is
// outbound on its side and inbound on the server's.
func TestKernelPortsDirection(t *testing.T) {
	ns := newNetns(t)
	smtp := netip.MustParseAddrPort("127.0.0.1:25")
	var fds []int
	var client uint16
	ns.run(t, func() {
		ln := newSocket(t, tcp4)
		fds = append(fds, ln)
		if err := unix.Bind(ln, sockaddr(smtp)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 8); err != nil {
			t.Fatal(err)
		}
		c := newSocket(t, tcp4)
		fds = append(fds, c)
		if err := unix.Connect(c, sockaddr(smtp)); err != nil {
			t.Fatal(err)
		}
		client = localPort(t, c)
		a, _, err := unix.Accept(ln)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, a)
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	socks, err := Snapshot(SnapshotOptions{All: true, Netns: []string{ns.path()}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range socks {
		got = append(got, fmt.Sprintf("%s %s %s eph=%t dir=%s", s.Local, apString(s.Remote), s.State, s.Ephemeral, s.Direction))
	}
	cl := netip.AddrPortFrom(smtp.Addr(), client)
	want := []string{
		fmt.Sprintf("%s - LISTEN eph=false dir=", smtp),
		fmt.Sprintf("%s %s ESTAB eph=false dir=inbound", smtp, cl),
		fmt.Sprintf("%s %s ESTAB eph=true dir=outbound", cl, smtp),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// who on a held port names the holder; on a free port it says so and
// returns ErrNobody.
func TestKernelWho(t *testing.T) {
	ns := newNetns(t)
	var fd int
	ns.run(t, func() {
		fd = listenTCP(t, netip.MustParseAddrPort("127.0.0.1:10101"))
	})
	defer unix.Close(fd)
	for _, tc := range []struct {
		target string
		err    error
		want   string
	}{
		{"10101", nil, fmt.Sprintf("pid %d (", os.Getpid())},
		{"10101/tcp", nil, "127.0.0.1:10101  LISTEN (loopback only)"},
		{"10101/udp", ErrNobody, "port 10101/udp: nobody holds it"},
		{"10102", ErrNobody, "port 10102/tcp,udp: nobody holds it"},
	} {
		cfg := DefaultWhoConfig()
		cfg.Netns = []string{ns.path()}
		if err := cfg.ParseTarget(tc.target); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		err := RunWho(context.Background(), cfg, &out, &strings.Builder{})
		if !errors.Is(err, tc.err) && err != tc.err {
			t.Errorf("who %s: error %v, want %v", tc.target, err, tc.err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("who %s said:\n%s\nwant it to contain %q", tc.target, out.String(), tc.want)
		}
	}
}

// who --wait reports the next process that binds the port, the moment it
// does, and exits; with nothing bound it times out.
func TestKernelWhoWait(t *testing.T) {
	ns := newNetns(t)
	h := startHelper(t, ns, helperExe(t), 0, "tcp", "127.0.0.1:10103")
	cfg := DefaultWhoConfig()
	cfg.Netns = []string{ns.path()}
	cfg.Wait = true
	cfg.Timeout = 20 * time.Second
	cfg.backend = testBackendName()
	if err := cfg.ParseTarget("10103/tcp"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out, errOut := &syncBuilder{}, &syncBuilder{}
	done := make(chan error, 1)
	go func() { done <- RunWho(context.Background(), cfg, out, errOut) }()
	waitText(t, errOut, "waiting for a bind", done, cfg.Backend) // bind once who is waiting
	if _, errno := h.bind(t); errno != "" {
		t.Fatal(errno)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("bind tcp 127.0.0.1:10103 by pid %d (", h.cmd.Process.Pid); !strings.Contains(out.String(), want) {
		t.Errorf("who --wait said:\n%s\nwant %q", out.String(), want)
	}

	cfg.Timeout = 300 * time.Millisecond
	if err := cfg.ParseTarget("10104/tcp"); err != nil {
		t.Fatal(err)
	}
	if err := RunWho(context.Background(), cfg, &strings.Builder{}, &strings.Builder{}); !errors.Is(err, ErrTimeout) {
		t.Errorf("who --wait on a port nobody binds: %v, want a timeout", err)
	}
}

// ports --watch prints the snapshot, then each new bind and listen as the
// tracer sees it, and each listener that goes away.
func TestKernelPortsWatch(t *testing.T) {
	ns := newNetns(t)
	cfg := DefaultPortsConfig()
	cfg.Netns = []string{ns.path()}
	cfg.Watch = true
	cfg.Interval = 100 * time.Millisecond
	cfg.backend = testBackendName()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &syncBuilder{}, &syncBuilder{}
	done := make(chan error, 1)
	go func() { done <- RunPorts(ctx, cfg, out, errOut) }()
	waitText(t, errOut, "watching with", done, cfg.Backend)
	var fd int
	ns.run(t, func() {
		fd = listenTCP(t, netip.MustParseAddrPort("0.0.0.0:6666"))
	})
	waitText(t, out, fmt.Sprintf("+ listen tcp *:6666 pid %d", os.Getpid()), done, cfg.Backend)
	time.Sleep(3 * cfg.Interval) // the listener is in a snapshot before it goes
	unix.Close(fd)
	waitText(t, out, "- closed tcp *:6666", done, cfg.Backend)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// syncBuilder is a strings.Builder safe to read while another goroutine writes.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitText waits until w has said want, failing if the command ends first.
func waitText(t *testing.T, w *syncBuilder, want string, done chan error, b Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.String(), want) {
		select {
		case err := <-done:
			skipUnsupported(t, b, err)
			t.Fatalf("ended before saying %q: %v\n%s", want, err, w.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never said %q:\n%s", want, w.String())
		}
	}
}
