package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/internal/ifup"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

// The kernel tests make real socket calls inside a network namespace each
// test creates, with a real tracer attached, and assert the events.
// PORTTRACE_BACKEND picks the backend (default: auto).

func TestMain(m *testing.M) {
	if os.Getenv("PORTTRACE_HELPER") != "" {
		os.Exit(helperMain())
	}
	textout.DisplayZone = time.UTC // golden files hold UTC clock times
	code := m.Run()
	if helperPath != "" {
		os.RemoveAll(filepath.Dir(helperPath))
	}
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to load BPF programs and create network namespaces")
	}
}

// testBackendName is PORTTRACE_BACKEND, or auto.
func testBackendName() string {
	if name := os.Getenv("PORTTRACE_BACKEND"); name != "" {
		return name
	}
	return "auto"
}

func testBackend(t *testing.T) event.Backend {
	t.Helper()
	name := os.Getenv("PORTTRACE_BACKEND")
	if name == "" {
		return event.BackendAuto
	}
	b, err := event.ParseBackend(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testNS is a network namespace owned by one test, loopback up. It is made
// with unshare(2) and kept alive by an open fd, with no help from ip(8), so
// the tests also run in a bare VM initramfs.
type testNS struct {
	fd    int
	inode uint32
}

func newNetns(t *testing.T) *testNS {
	t.Helper()
	needRoot(t)
	n := &testNS{fd: -1}
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace and dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		n.fd = fd
		errc <- ifup.Up("lo")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(n.drop)
	var st unix.Stat_t
	if err := unix.Fstat(n.fd, &st); err != nil {
		t.Fatal(err)
	}
	n.inode = uint32(st.Ino)
	return n
}

// drop closes the test's hold on the namespace: with no process in it,
// it is gone.
func (n *testNS) drop() {
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}

// path names the namespace for --netns.
func (n *testNS) path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.fd) }

func (n *testNS) sysctl(t *testing.T, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	n.run(t, func() {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			t.Errorf("sysctl %s=%s: %v", key, value, err)
		}
	})
}

// run calls fn on a fresh OS thread inside the namespace and waits for it.
// The thread is never unlocked, so it dies with its goroutine instead of
// carrying the namespace back into the runtime's pool.
func (n *testNS) run(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns: %w", err)
			return
		}
		finished := false
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			} else if !finished {
				// t.Fatal on this goroutine: the test has failed, and its
				// goroutine must not wait here for ever.
				done <- errors.New("stopped inside the namespace (t.Fatal above)")
			}
		}()
		fn()
		finished = true
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// goRun is run without waiting: for a call that blocks, like accept.
func (n *testNS) goRun(fn func()) {
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			panic(err)
		}
		fn()
	}()
}

// collector is a running tracer gathering events in the background.
type collector struct {
	tr     *Tracer
	mu     sync.Mutex
	events []event.Event
	done   chan struct{}
}

func startTracer(t *testing.T, o Options) *collector {
	t.Helper()
	needRoot(t)
	if o.Backend == event.BackendAuto {
		o.Backend = testBackend(t)
	}
	if o.Events.Empty() {
		o.Events = AllKinds()
	}
	tr := newTracer(t, o)
	c := &collector{tr: tr, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			var ev event.Event
			if err := tr.Read(&ev); err != nil {
				return
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { tr.Close() })
	return c
}

// newTracer starts a tracer, or skips the test, naming the backend, where
// this kernel does not support it.
func newTracer(t *testing.T, o Options) *Tracer {
	t.Helper()
	tr, err := New(o)
	skipUnsupported(t, o.Backend, err)
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	return tr
}

func skipUnsupported(t *testing.T, b event.Backend, err error) {
	t.Helper()
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("backend %s not supported by this kernel: %v", b, err)
	}
}

// stop detaches the tracer and returns every event it produced in netns n
// (all events when n is nil).
func (c *collector) stop(t *testing.T, n *testNS) []event.Event {
	t.Helper()
	c.tr.Stop()
	<-c.done
	var out []event.Event
	for _, ev := range c.events {
		if n == nil || ev.Netns == n.inode {
			out = append(out, ev)
		}
	}
	lost, err := c.tr.Lost()
	if err != nil {
		t.Fatal(err)
	}
	if lost != 0 {
		t.Errorf("%d events lost", lost)
	}
	return out
}

// waitFor polls until some event matches; for events that come from
// another process whose timing the test does not control.
func (c *collector) waitFor(t *testing.T, match func(*event.Event) bool) event.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, ev := range c.events {
			if match(&ev) {
				c.mu.Unlock()
				return ev
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no matching event within 10s")
	return event.Event{}
}

// brief renders the fields a test asserts, so one string compares them all.
func brief(ev *event.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", ev.Kind, ev.Result)
	if ev.Errno != 0 {
		fmt.Fprintf(&b, " %s", ev.ErrnoName())
	}
	fmt.Fprintf(&b, " %s %s", event.ProtoName(ev.Proto), event.FamilyName(ev.Family))
	fmt.Fprintf(&b, " local=%s remote=%s", apString(ev.Local), apString(ev.Remote))
	fmt.Fprintf(&b, " eph=%t class=%s priv=%t", ev.Ephemeral, ev.PortClass, ev.Privileged)
	if ev.Direction != event.DirNone {
		fmt.Fprintf(&b, " dir=%s", ev.Direction)
	}
	return b.String()
}

func apString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "-"
	}
	return ap.String()
}

// only returns the events of one kind.
func only(evs []event.Event, k event.Kind) []event.Event {
	var out []event.Event
	for _, ev := range evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// thread identifies the calling thread, for checkTask; call it on the
// thread that makes the socket call.
type thread struct {
	tid   int
	comm  string
	inode uint64 // of the socket the thread made, where a test records it
}

func self() thread {
	tid := unix.Gettid()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", tid))
	return thread{tid: tid, comm: strings.TrimSpace(string(b))}
}

// checkTask asserts the process fields against this process and thread th.
func checkTask(t *testing.T, ev *event.Event, th thread) {
	t.Helper()
	if ev.PID != uint32(os.Getpid()) || ev.TID != uint32(th.tid) || ev.PPID != uint32(os.Getppid()) {
		t.Errorf("pid/tid/ppid = %d/%d/%d, want %d/%d/%d", ev.PID, ev.TID, ev.PPID, os.Getpid(), th.tid, os.Getppid())
	}
	if ev.UID != uint32(os.Getuid()) {
		t.Errorf("uid = %d, want %d", ev.UID, os.Getuid())
	}
	if th.comm == "" || ev.Comm != th.comm {
		t.Errorf("comm = %q, want %q", ev.Comm, th.comm)
	}
}

// Socket helpers: raw syscalls, so the test controls each call exactly.

type sockSpec struct {
	family int // unix.AF_INET or unix.AF_INET6
	typ    int // unix.SOCK_STREAM or unix.SOCK_DGRAM
}

func (s sockSpec) proto() string {
	if s.typ == unix.SOCK_DGRAM {
		return "udp"
	}
	return "tcp"
}

func (s sockSpec) fam() string {
	return map[int]string{unix.AF_INET: "ipv4", unix.AF_INET6: "ipv6"}[s.family]
}

func newSocket(t *testing.T, s sockSpec) int {
	fd, err := unix.Socket(s.family, s.typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	return fd
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func localPort(t *testing.T, fd int) uint16 {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port)
	case *unix.SockaddrInet6:
		return uint16(a.Port)
	}
	t.Fatalf("unexpected sockaddr %T", sa)
	return 0
}

// helperMain is the test binary re-executed as a separate process (for a
// different uid, or a binary deleted after start). It waits for a line on
// stdin, binds PT_ADDR over PT_PROTO (and listens if PT_LISTEN is set, or
// connects to PT_CONNECT if that is),
// prints "ok PORT" or "err ERRNO", and exits when stdin closes.
func helperMain() int {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 3
	}
	ap := netip.MustParseAddrPort(os.Getenv("PT_ADDR"))
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	if ap.Addr().Is6() {
		family = unix.AF_INET6
	}
	if os.Getenv("PT_PROTO") == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ, 0)
	if err == nil {
		err = unix.Bind(fd, sockaddr(ap))
	}
	if err == nil && os.Getenv("PT_LISTEN") != "" {
		err = unix.Listen(fd, 8)
	}
	if to := os.Getenv("PT_CONNECT"); err == nil && to != "" {
		err = unix.Connect(fd, sockaddr(netip.MustParseAddrPort(to)))
	}
	if err != nil {
		fmt.Printf("err %s\n", unix.ErrnoName(err.(unix.Errno)))
	} else {
		sa, _ := unix.Getsockname(fd)
		port := 0
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			port = a.Port
		case *unix.SockaddrInet6:
			port = a.Port
		}
		fmt.Printf("ok %d\n", port)
	}
	_, _ = io.Copy(io.Discard, in)
	return 0
}

var (
	helperOnce sync.Once
	helperPath string
	helperErr  error
)

// helperExe is a copy of the test binary that any user may run: go test
// builds it in a directory only root can enter.
func helperExe(t *testing.T) string {
	t.Helper()
	helperOnce.Do(func() {
		var dir, self string
		if dir, helperErr = os.MkdirTemp("", "porttrace-helper-"); helperErr != nil {
			return
		}
		if helperErr = os.Chmod(dir, 0o755); helperErr != nil {
			return
		}
		if self, helperErr = os.Executable(); helperErr != nil {
			return
		}
		helperPath = dir + "/porttrace-helper"
		helperErr = copyFile(self, helperPath)
	})
	if helperErr != nil {
		t.Fatalf("copying the test binary: %v", helperErr)
	}
	return helperPath
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHelper starts exe (the test binary or a copy) inside n as uid,
// ready to bind addr when told.
func startHelper(t *testing.T, n *testNS, exe string, uid int, proto, addr string, env ...string) *helper {
	t.Helper()
	return runHelper(t, n, helperCmd(exe, uid, proto, addr, env...))
}

// helperCmd is the command startHelper runs, for a test to adjust.
func helperCmd(exe string, uid int, proto, addr string, env ...string) *exec.Cmd {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "PORTTRACE_HELPER=bind", "PT_ADDR="+addr, "PT_PROTO="+proto)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	return cmd
}

// runHelper starts a helper command inside n.
func runHelper(t *testing.T, n *testNS, cmd *exec.Cmd) *helper {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	// Forked from a thread inside n, the child starts inside n.
	var startErr error
	n.run(t, func() { startErr = cmd.Start() })
	if startErr != nil {
		t.Fatal(startErr)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() { h.stdin.Close(); _ = h.cmd.Wait() })
	return h
}

// bind tells the helper to bind and returns its answer: the port, or the errno name.
func (h *helper) bind(t *testing.T) (port uint16, errno string) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	word, val, _ := strings.Cut(strings.TrimSpace(line), " ")
	if word == "err" {
		return 0, val
	}
	p, err := strconv.ParseUint(val, 10, 16)
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	return uint16(p), ""
}
