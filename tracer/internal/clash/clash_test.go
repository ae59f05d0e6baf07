package clash

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// holdEnv makes the test binary the helper process of
// TestFindOtherProcess: it holds a TCP listener on the address it names.
const holdEnv = "PORTTRACE_CLASH_TEST_HOLD"

// holdComm is the helper's name, so that Find's is seen to be its own.
const holdComm = "clash-holder"

func TestMain(m *testing.M) {
	if addr := os.Getenv(holdEnv); addr != "" {
		os.Exit(hold(addr))
	}
	os.Exit(m.Run())
}

// hold listens on addr with SO_REUSEADDR, says the socket's inode on
// stdout and keeps it until stdin closes.
func hold(addr string) int {
	if err := os.WriteFile("/proc/self/comm", []byte(holdComm), 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fd, err := sock{unix.SOCK_STREAM, addr, event.OptReuseAddr, "", true}.open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(inodeOf(fd))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// sock is a socket a test makes: options set, bound, and listening if
// asked.
type sock struct {
	typ    int    // unix.SOCK_STREAM or unix.SOCK_DGRAM
	addr   string // "127.0.0.1:5000", "[::]:5000"
	opts   event.SockOpts
	dev    string // SO_BINDTODEVICE
	listen bool
}

func (s sock) open() (int, error) {
	ap := netip.MustParseAddrPort(s.addr)
	family := uint8(unix.AF_INET6)
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	fd, err := unix.Socket(int(family), s.typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, o := range optsFor(family) {
		// V6ONLY is always set, either way, so that the sysctl
		// net.ipv6.bindv6only does not decide.
		if s.opts&o.opt != 0 || o.opt == event.OptV6Only {
			v := 0
			if s.opts&o.opt != 0 {
				v = 1
			}
			if err = unix.SetsockoptInt(fd, o.level, o.name, v); err != nil {
				err = fmt.Errorf("setsockopt %s: %w", o.opt, err)
				break
			}
		}
	}
	if err == nil && s.dev != "" {
		err = unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.dev)
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err == nil && s.listen {
		err = unix.Listen(fd, 16)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (s sock) proto() uint16 {
	if s.typ == unix.SOCK_DGRAM {
		return event.ProtoUDP
	}
	return event.ProtoTCP
}

func inodeOf(fd int) uint32 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}

// testNS is a network namespace of a test's own, with a thread inside it
// that makes the test's socket calls.
type testNS struct {
	inode uint32
	calls chan func()
}

// newNetns unshares a network namespace on a thread of its own, brings lo
// up and keeps the thread for run. The thread is never unlocked: it dies
// with its goroutine when the test ends, and the namespace with it once
// the test's sockets are closed.
func newNetns(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: unshare(CLONE_NEWNET), pidfd_getfd")
	}
	ns := &testNS{calls: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		ns.inode = uint32(st.Ino)
		if err == nil {
			var lo netlink.Link
			if lo, err = netlink.LinkByName("lo"); err == nil {
				err = netlink.LinkSetUp(lo)
			}
		}
		errc <- err
		if err != nil {
			return
		}
		for fn := range ns.calls {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() { close(ns.calls) })
	return ns
}

// run calls fn on the thread inside the namespace.
func (ns *testNS) run(fn func()) {
	done := make(chan struct{})
	ns.calls <- func() { defer close(done); fn() }
	<-done
}

// open makes s inside the namespace; the test closes it at its end.
func (ns *testNS) open(t *testing.T, s sock) int {
	t.Helper()
	var fd int
	var err error
	ns.run(func() { fd, err = s.open() })
	if err != nil {
		t.Fatalf("%+v: %v", s, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// bind tries the bind whose failure Find explains, and takes back the
// socket if it succeeds.
func (ns *testNS) bind(s sock) error {
	var err error
	ns.run(func() {
		var fd int
		if fd, err = s.open(); err == nil {
			unix.Close(fd)
		}
	})
	return err
}

// findAfter binds b in ns, checks the bind's error, and returns what Find
// says of it.
func findAfter(t *testing.T, ns *testNS, b sock, wantErr error) []Holder {
	t.Helper()
	if err := ns.bind(b); !errors.Is(err, wantErr) {
		t.Fatalf("bind %s %s: %v, want %v", event.ProtoName(b.proto()), b.addr, err, wantErr)
	}
	ap := netip.MustParseAddrPort(b.addr)
	got, err := Find(ns.inode, b.proto(), ap, b.opts&event.OptV6Only != 0)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	return got
}

func checkHolders(t *testing.T, got, want []Holder) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("holders:\n%s\nwant:\n%s", listHolders(got), listHolders(want))
	}
}

func listHolders(hs []Holder) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "\t%+v\n", h)
	}
	return b.String()
}

func selfComm(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

const (
	tcp = unix.SOCK_STREAM
	udp = unix.SOCK_DGRAM
)

// Each case makes sockets in a namespace of its own, tries a bind there
// (as a socket with no options but v6only would) and checks that Find
// names the sockets in its way, with this process, its name and the
// options each socket has.
func TestFind(t *testing.T) {
	const v4all = event.OptReuseAddr | event.OptFreebind | event.OptTransparent | event.OptBindNoPort
	const v6all = event.OptReuseAddr | event.OptFreebind | event.OptTransparent | event.OptV6Only
	for _, tc := range []struct {
		name    string
		have    []sock
		bind    sock
		wantErr error
		want    []int // the sockets of have that Find names, in its order
	}{
		{"listener with SO_REUSEPORT", []sock{{tcp, "127.0.0.1:5000", event.OptReusePort, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"two SO_REUSEPORT listeners", []sock{{tcp, "127.0.0.1:5000", event.OptReusePort, "", true}, {tcp, "127.0.0.1:5000", event.OptReusePort, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0, 1}},
		{"wildcard listener, specific bind", []sock{{tcp, "0.0.0.0:5000", 0, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"IPv4 wildcard, dual-stack bind", []sock{{tcp, "0.0.0.0:5000", 0, "", true}},
			sock{typ: tcp, addr: "[::]:5000"}, unix.EADDRINUSE, []int{0}},
		{"dual-stack listener, IPv4 bind", []sock{{tcp, "[::]:5000", 0, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"v6only listener leaves IPv4 free", []sock{{tcp, "[::]:5000", event.OptV6Only, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, nil, nil},
		{"UDP socket", []sock{{udp, "127.0.0.1:5000", 0, "", false}},
			sock{typ: udp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"IPv4-mapped UDP socket, IPv4 bind", []sock{{udp, "[::ffff:127.0.0.1]:5000", 0, "", false}},
			sock{typ: udp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"SO_BINDTODEVICE", []sock{{tcp, "127.0.0.1:5000", 0, "lo", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"IPv4 options", []sock{{tcp, "127.0.0.1:5000", v4all, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE, []int{0}},
		{"IPv6 options", []sock{{udp, "[::1]:5000", v6all, "", false}},
			sock{typ: udp, addr: "[::1]:5000"}, unix.EADDRINUSE, []int{0}},
		{"another port", []sock{{tcp, "127.0.0.1:5001", 0, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, nil, nil},
		{"another protocol", []sock{{udp, "127.0.0.1:5000", 0, "", false}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, nil, nil},
		{"another address", []sock{{tcp, "127.0.0.2:5000", 0, "", true}},
			sock{typ: tcp, addr: "127.0.0.1:5000"}, nil, nil},
		{"free port", nil, sock{typ: tcp, addr: "127.0.0.1:5000"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			comm := selfComm(t)
			var holders []Holder
			for _, s := range tc.have {
				fd := ns.open(t, s)
				state := "LISTEN"
				if !s.listen {
					state = "UNCONN"
				}
				holders = append(holders, held(event.Holder{Proto: s.proto(), Local: netip.MustParseAddrPort(s.addr), State: state,
					PID: os.Getpid(), Comm: comm, SockOpts: s.opts, HasSockOpts: true, BoundIf: s.dev}, inodeOf(fd)))
			}
			var want []Holder
			for _, i := range tc.want {
				want = append(want, holders[i])
			}
			checkHolders(t, findAfter(t, ns, tc.bind, tc.wantErr), want)
		})
	}
}

// The port of a connection's active closer stays in TIME-WAIT, which no
// process holds, and keeps a bind without SO_REUSEADDR off it.
func TestFindTimeWait(t *testing.T) {
	ns := newNetns(t)
	var err error
	ns.run(func() {
		var lfd, cfd, afd int
		if lfd, err = (sock{tcp, "127.0.0.1:5000", 0, "", true}).open(); err != nil {
			return
		}
		defer unix.Close(lfd)
		if cfd, err = (sock{typ: tcp, addr: "127.0.0.1:5001"}).open(); err != nil {
			return
		}
		if err = unix.Connect(cfd, &unix.SockaddrInet4{Port: 5000, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(cfd)
			return
		}
		if afd, _, err = unix.Accept(lfd); err != nil {
			unix.Close(cfd)
			return
		}
		unix.Close(cfd) // the active close: 5001 goes to TIME-WAIT
		unix.Close(afd)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ns, 5001, sockdiag.TCPTimeWait)
	got := findAfter(t, ns, sock{typ: tcp, addr: "127.0.0.1:5001"}, unix.EADDRINUSE)
	checkHolders(t, got, []Holder{held(event.Holder{Proto: event.ProtoTCP, Local: netip.MustParseAddrPort("127.0.0.1:5001"),
		Remote: netip.MustParseAddrPort("127.0.0.1:5000"), State: "TIME-WAIT"}, 0)})
}

// waitState waits until the TCP socket on port in ns reaches state.
func waitState(t *testing.T, ns *testNS, port uint16, state uint8) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var socks []sockdiag.Socket
		var err error
		ns.run(func() { socks, err = sockdiag.DumpPort(unix.AF_INET, event.ProtoTCP, sockdiag.AllStates, port) })
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.Local.Port() == port && s.State == state {
				return
			}
		}
	}
	t.Fatalf("port %d never reached %s", port, sockdiag.StateName(state))
}

// A listener's accepted connections hold its port too, and come after it;
// the connecting end, on a port of its own, is not named.
func TestFindConnections(t *testing.T) {
	ns := newNetns(t)
	comm := selfComm(t)
	lfd := ns.open(t, sock{tcp, "127.0.0.1:5000", 0, "", true})
	cfd := ns.open(t, sock{typ: tcp, addr: "127.0.0.1:0"})
	var afd int
	var err error
	ns.run(func() {
		if err = unix.Connect(cfd, &unix.SockaddrInet4{Port: 5000, Addr: [4]byte{127, 0, 0, 1}}); err == nil {
			afd, _, err = unix.Accept(lfd)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(afd) })
	sa, err := unix.Getsockname(cfd)
	if err != nil {
		t.Fatal(err)
	}
	client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	local := netip.MustParseAddrPort("127.0.0.1:5000")
	got := findAfter(t, ns, sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE)
	checkHolders(t, got, []Holder{
		held(event.Holder{Proto: event.ProtoTCP, Local: local, State: "LISTEN", PID: os.Getpid(), Comm: comm, HasSockOpts: true}, inodeOf(lfd)),
		held(event.Holder{Proto: event.ProtoTCP, Local: local, Remote: client, State: "ESTAB", PID: os.Getpid(), Comm: comm, HasSockOpts: true},
			inodeOf(afd)),
	})
}

// A holder in another process is named with its pid and name; it lives in
// the namespace, so the first walk of /proc finds it.
func TestFindOtherProcess(t *testing.T) {
	ns := newNetns(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"=127.0.0.1:5000")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Started from the thread inside the namespace, the helper lives there.
	ns.run(func() { err = cmd.Start() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	})
	var inode uint32
	if _, err := fmt.Fscan(stdout, &inode); err != nil {
		t.Fatalf("reading the helper's socket: %v", err)
	}
	got := findAfter(t, ns, sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE)
	checkHolders(t, got, []Holder{held(event.Holder{Proto: event.ProtoTCP, Local: netip.MustParseAddrPort("127.0.0.1:5000"), State: "LISTEN",
		PID: cmd.Process.Pid, Comm: holdComm, SockOpts: event.OptReuseAddr, HasSockOpts: true}, inode)})
}

// A TCP socket bound but neither listening nor connected holds its port;
// sock_diag dumps it from Linux 6.10.
func TestFindBoundOnly(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil || major < 6 || major == 6 && minor < 10 {
		t.Skipf("kernel %s: sock_diag dumps bound-only TCP sockets from 6.10", unix.ByteSliceToString(u.Release[:]))
	}
	ns := newNetns(t)
	fd := ns.open(t, sock{typ: tcp, addr: "127.0.0.1:5000"})
	got := findAfter(t, ns, sock{typ: tcp, addr: "127.0.0.1:5000"}, unix.EADDRINUSE)
	checkHolders(t, got, []Holder{held(event.Holder{Proto: event.ProtoTCP, Local: netip.MustParseAddrPort("127.0.0.1:5000"), State: "UNCONN",
		PID: os.Getpid(), Comm: selfComm(t), HasSockOpts: true}, inodeOf(fd))})
}

// Namespace 0 is porttrace's own, as is its inode.
func TestFindOwnNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd")
	}
	fd, err := sock{tcp, "127.0.0.1:0", 0, "", true}.open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	want := []Holder{held(event.Holder{Proto: event.ProtoTCP, Local: local, State: "LISTEN", PID: os.Getpid(),
		Comm: selfComm(t), HasSockOpts: true}, inodeOf(fd))}
	for _, ns := range []uint32{0, netns.Self()} {
		got, err := Find(ns, event.ProtoTCP, local, false)
		if err != nil {
			t.Fatalf("Find(%d): %v", ns, err)
		}
		checkHolders(t, got, want)
	}
}

// A bind to port 0 fails only when the ephemeral range is used up: no one
// socket is in its way.
func TestFindPortZero(t *testing.T) {
	got, err := Find(0, event.ProtoTCP, netip.MustParseAddrPort("127.0.0.1:0"), false)
	if got != nil || err != nil {
		t.Errorf("Find of port 0: %v, %v", got, err)
	}
}

func TestFindNoNetns(t *testing.T) {
	if _, err := Find(1, event.ProtoTCP, netip.MustParseAddrPort("127.0.0.1:80"), false); err == nil {
		t.Error("Find in namespace 1 (no such namespace) did not fail")
	}
}

// describe names the first holder still there: one that exited since the
// walk of /proc is passed over, and a socket with no live holder has no
// PID. An fd that no longer refers to the socket leaves the options
// unread.
func TestDescribe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd")
	}
	exited := exec.Command("/bin/true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	dead := exited.Process.Pid
	fd, err := sock{typ: udp, addr: "127.0.0.1:0", opts: event.OptReuseAddr}.open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	self, comm := os.Getpid(), selfComm(t)
	for _, tc := range []struct {
		name string
		fds  []proc.SocketFD
		want Holder
	}{
		{"live", []proc.SocketFD{{PID: self, FD: fd}},
			held(event.Holder{PID: self, Comm: comm, SockOpts: event.OptReuseAddr, HasSockOpts: true}, 0)},
		{"exited, then live", []proc.SocketFD{{PID: dead, FD: fd}, {PID: self, FD: fd}},
			held(event.Holder{PID: self, Comm: comm, SockOpts: event.OptReuseAddr, HasSockOpts: true}, 0)},
		{"exited", []proc.SocketFD{{PID: dead, FD: fd}}, Holder{}},
		{"fd reused", []proc.SocketFD{{PID: self, FD: 0}}, held(event.Holder{PID: self, Comm: comm}, 0)},
		{"shared", []proc.SocketFD{{PID: self, FD: fd}, {PID: dead + 2, FD: 3}, {PID: dead + 1, FD: 3}, {PID: self, FD: 9}},
			Holder{Holder: event.Holder{PID: self, Comm: comm, SockOpts: event.OptReuseAddr, HasSockOpts: true}, OtherPIDs: []int{dead + 1, dead + 2}}},
		{"none", nil, Holder{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Holder{Inode: inodeOf(fd)}
			describe(&h, unix.AF_INET, tc.fds)
			tc.want.Inode = h.Inode
			checkHolders(t, []Holder{h}, []Holder{tc.want})
		})
	}
}

// held is the Holder of socket inode that h describes.
func held(h event.Holder, inode uint32) Holder { return Holder{Holder: h, Inode: inode} }
