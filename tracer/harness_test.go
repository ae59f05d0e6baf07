package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

// The kernel tests make real socket calls inside a network namespace each
// test creates, with a real tracer attached, and assert the events.
// PORTTRACE_BACKEND picks the backend (default: auto);
// PORTTRACE_WITHOUT_HELPERS=1 has the tracer do without the helpers that
// older kernels lack (bpf_get_current_task_btf, bpf_task_pt_regs), as it
// does there, on a kernel that has them.

func TestMain(m *testing.M) {
	// As porttrace's main does: the main thread stays the main
	// goroutine's, so no test's thread in another namespace becomes it.
	runtime.LockOSThread()
	if os.Getenv("PORTTRACE_HELPER") != "" {
		os.Exit(HelperMain())
	}
	if os.Getenv("PORTTRACE_HOLD_TRACER") != "" {
		os.Exit(holdTracer()) // kernel_cleanup_test.go
	}
	if os.Getenv("PORTTRACE_WITHOUT_HELPERS") == "1" {
		forceHelpers = func(h *helpers) { *h = helpers{} }
	}
	// The first tracer reads the kernel's BTF and the object; the rest
	// start from what it read (see kept): porttrace itself starts one.
	kept.keep = true
	textout.DisplayZone = time.UTC // golden files hold UTC clock times
	code := m.Run()
	if helperPath != "" {
		os.RemoveAll(filepath.Dir(helperPath))
	}
	if binaryPath != "" {
		os.RemoveAll(filepath.Dir(binaryPath)) // fault_test.go
	}
	os.Exit(code)
}

func NeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to load BPF programs and create network namespaces")
	}
}

// BackendName is PORTTRACE_BACKEND, or auto.
func BackendName() string {
	if name := os.Getenv("PORTTRACE_BACKEND"); name != "" {
		return name
	}
	return "auto"
}

func Backend(t *testing.T) event.Backend {
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

// NS is a network namespace owned by one test, loopback up. It is made
// with unshare(2) and kept alive by an open fd, with no help from ip(8), so
// the tests also run in a bare VM initramfs.
type NS struct {
	FD    int
	Inode uint32
}

func NewNetns(t *testing.T) *NS {
	t.Helper()
	NeedRoot(t)
	n := &NS{FD: -1}
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
		n.FD = fd
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(n.Drop)
	var st unix.Stat_t
	if err := unix.Fstat(n.FD, &st); err != nil {
		t.Fatal(err)
	}
	n.Inode = uint32(st.Ino)
	return n
}

// Drop closes the test's hold on the namespace: with no process in it,
// it is gone.
func (n *NS) Drop() {
	if n.FD >= 0 {
		unix.Close(n.FD)
		n.FD = -1
	}
}

// Path names the namespace for --netns.
func (n *NS) Path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.FD) }

func (n *NS) Sysctl(t *testing.T, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	n.Run(t, func() {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			t.Errorf("sysctl %s=%s: %v", key, value, err)
		}
	})
}

// Run calls fn on a fresh OS thread inside the namespace and waits for it.
// The thread is never unlocked, so it dies with its goroutine instead of
// carrying the namespace back into the runtime's pool.
func (n *NS) Run(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.FD, unix.CLONE_NEWNET); err != nil {
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

// GoRun is run without waiting: for a call that blocks, like accept.
func (n *NS) GoRun(fn func()) {
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.FD, unix.CLONE_NEWNET); err != nil {
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
	NeedRoot(t)
	if o.Backend == event.BackendAuto {
		o.Backend = Backend(t)
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
	SkipUnsupported(t, o.Backend, err)
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	return tr
}

func SkipUnsupported(t *testing.T, b event.Backend, err error) {
	t.Helper()
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("backend %s not supported by this kernel: %v", b, err)
	}
}

// stop detaches the tracer and returns every event it produced in netns n
// (all events when n is nil).
func (c *collector) stop(t *testing.T, n *NS) []event.Event {
	t.Helper()
	c.tr.Stop()
	<-c.done
	var out []event.Event
	for _, ev := range c.events {
		if n == nil || ev.Netns == n.Inode {
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

// Brief renders the fields a test asserts, so one string compares them all.
func Brief(ev *event.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", ev.Kind, ev.Result)
	if ev.Errno != 0 {
		fmt.Fprintf(&b, " %s", ev.ErrnoName())
	}
	fmt.Fprintf(&b, " %s %s", event.ProtoName(ev.Proto), event.FamilyName(ev.Family))
	fmt.Fprintf(&b, " local=%s remote=%s", AddrString(ev.Local), AddrString(ev.Remote))
	fmt.Fprintf(&b, " eph=%t class=%s priv=%t", ev.Ephemeral, ev.PortClass, ev.Privileged)
	if ev.Direction != event.DirNone {
		fmt.Fprintf(&b, " dir=%s", ev.Direction)
	}
	return b.String()
}

func AddrString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "-"
	}
	return ap.String()
}

// Only returns the events of one kind.
func Only(evs []event.Event, k event.Kind) []event.Event {
	var out []event.Event
	for _, ev := range evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// Thread identifies the calling Thread, for checkTask; call it on the
// Thread that makes the socket call.
type Thread struct {
	TID   int
	Comm  string
	Inode uint64 // of the socket the thread made, where a test records it
}

func Self() Thread {
	tid := unix.Gettid()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", tid))
	return Thread{TID: tid, Comm: strings.TrimSpace(string(b))}
}

// CheckTask asserts the process fields against this process and thread th.
func CheckTask(t *testing.T, ev *event.Event, th Thread) {
	t.Helper()
	if ev.PID != uint32(os.Getpid()) || ev.TID != uint32(th.TID) || ev.PPID != uint32(os.Getppid()) {
		t.Errorf("pid/tid/ppid = %d/%d/%d, want %d/%d/%d", ev.PID, ev.TID, ev.PPID, os.Getpid(), th.TID, os.Getppid())
	}
	if ev.UID != uint32(os.Getuid()) {
		t.Errorf("uid = %d, want %d", ev.UID, os.Getuid())
	}
	if th.Comm == "" || ev.Comm != th.Comm {
		t.Errorf("comm = %q, want %q", ev.Comm, th.Comm)
	}
}

// Socket helpers: raw syscalls, so the test controls each call exactly.

type SockSpec struct {
	Family int // unix.AF_INET or unix.AF_INET6
	Type   int // unix.SOCK_STREAM or unix.SOCK_DGRAM
}

func (s SockSpec) Proto() string {
	if s.Type == unix.SOCK_DGRAM {
		return "udp"
	}
	return "tcp"
}

func (s SockSpec) Fam() string {
	return map[int]string{unix.AF_INET: "ipv4", unix.AF_INET6: "ipv6"}[s.Family]
}

func NewSocket(t *testing.T, s SockSpec) int {
	fd, err := unix.Socket(s.Family, s.Type|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	return fd
}

func Sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func LocalPort(t *testing.T, fd int) uint16 {
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

var (
	helperOnce sync.Once
	helperPath string
	helperErr  error
)

func ListenTCP(t *testing.T, ap netip.AddrPort) int {
	t.Helper()
	fd := NewSocket(t, TCP4)
	if err := unix.Bind(fd, Sockaddr(ap)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	return fd
}

// SyncBuilder is a strings.Builder safe to read while another goroutine writes.
type SyncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
