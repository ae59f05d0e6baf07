package tracer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
	"github.com/porttrace/porttrace/tracer/ports"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Listeners of several kinds (IPv6 wildcards dual-stack and IPv6-only
// among them), one held by a process whose binary was deleted, one by an
// interpreter running as another user and one by an interpreter under
// another name: each is listed with its holder (exe, user, start time,
// cgroup), scope, class and flags, and the list agrees with ss -tulnp run
// in the same namespace.
func TestKernelPortsListeners(t *testing.T) {
	ns := tracer.NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_unprivileged_port_start", "8000")
	ns.Run(t, func() { addAddr(t, "lo", "10.99.0.1/24") })
	exe := filepath.Join(t.TempDir(), "implant")
	if err := tracer.CopyFile(tracer.HelperExe(t), exe); err != nil {
		t.Fatal(err)
	}
	h := tracer.StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:31337", "PT_LISTEN=1")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	// An interpreter, as nobody: its name is what gives it away.
	python := filepath.Join(worldDir(t), "python3")
	if err := tracer.CopyFile(tracer.HelperExe(t), python); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	py := tracer.StartHelper(t, ns, python, 65534, "tcp", "0.0.0.0:8022", "PT_LISTEN=1")
	after := time.Now()
	if _, errno := py.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	// A "#!/usr/bin/python3" script named sshd: comm is the script's name,
	// exe the interpreter's. A symlink does the same to comm.
	dir := t.TempDir()
	interp := filepath.Join(dir, "python3.11")
	if err := tracer.CopyFile(tracer.HelperExe(t), interp); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(interp, filepath.Join(dir, "sshd")); err != nil {
		t.Fatal(err)
	}
	script := tracer.StartHelper(t, ns, filepath.Join(dir, "sshd"), 0, "tcp", "0.0.0.0:22", "PT_LISTEN=1")
	if _, errno := script.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	type listener struct {
		sock   tracer.SockSpec
		addr   string
		v6only int
	}
	ours := []listener{
		{tracer.TCP4, "0.0.0.0:8080", 0},
		{tracer.TCP4, "127.0.0.1:7999", 0},
		{tracer.TCP4, "10.99.0.1:8081", 0},
		{tracer.TCP6, "[::]:8443", 1},
		{tracer.TCP6, "[::]:8444", 0},
		{tracer.UDP4, "0.0.0.0:5353", 0},
		{tracer.UDP6, "[::1]:5354", 1},
		{tracer.UDP6, "[::]:5355", 0},
		{tracer.UDP6, "[::]:5356", 1},
	}
	ns.Run(t, func() {
		for _, l := range ours {
			openListener(t, l.sock, netip.MustParseAddrPort(l.addr), l.v6only)
		}
	})
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{ns.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range socks {
		who := "nobody"
		if len(s.Holders) > 0 {
			switch s.Holders[0].PID {
			case uint32(os.Getpid()):
				who = "self"
			case uint32(h.Cmd.Process.Pid):
				who = fmt.Sprintf("implant deleted=%t", s.Holders[0].ExeDeleted)
			case uint32(py.Cmd.Process.Pid):
				who = "python3"
			case uint32(script.Cmd.Process.Pid):
				who = s.Holders[0].Comm
			}
		}
		got = append(got, fmt.Sprintf("%s %s %s %s %s priv=%t %s %q",
			event.ProtoName(s.Proto), ports.LocalAddr(&s), s.State, s.Scope, s.PortClass, s.Privileged, who, s.Suspicious))
	}
	implant := fmt.Sprintf("executable deleted: %s (pid %d)", exe, h.Cmd.Process.Pid)
	pyFlag := fmt.Sprintf("python3 (pid %d) is a shell, interpreter or relay listening", py.Cmd.Process.Pid)
	scriptFlag := fmt.Sprintf("sshd (pid %d) runs %s, a shell, interpreter or relay, listening", script.Cmd.Process.Pid, interp)
	want := []string{
		`tcp 0.0.0.0:22 LISTEN all interfaces well-known priv=true sshd ["` + scriptFlag + `"]`,
		`tcp 127.0.0.1:7999 LISTEN loopback only registered priv=true self []`,
		`tcp 0.0.0.0:8022 LISTEN all interfaces registered priv=false python3 ["` + pyFlag + `"]`,
		`tcp 0.0.0.0:8080 LISTEN all interfaces registered priv=false self []`,
		`tcp 10.99.0.1:8081 LISTEN only 10.99.0.1 registered priv=false self []`,
		`tcp [::]:8443 LISTEN all IPv6 interfaces registered priv=false self []`,
		`tcp *:8444 LISTEN all interfaces, IPv4 and IPv6 registered priv=false self []`,
		`tcp 0.0.0.0:31337 LISTEN all interfaces registered priv=false implant deleted=true ["` + implant + `"]`,
		`udp 0.0.0.0:5353 UNCONN all interfaces registered priv=true self []`,
		`udp [::1]:5354 UNCONN loopback only registered priv=true self []`,
		`udp *:5355 UNCONN all interfaces, IPv4 and IPv6 registered priv=true self []`,
		`udp [::]:5356 UNCONN all IPv6 interfaces registered priv=true self []`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range socks {
		if s.Local.Port() == 8022 && len(s.Holders) > 0 {
			checkHolder(t, &s.Holders[0], py.Cmd.Process.Pid, python, 65534, before, after)
		}
	}
	crossCheckSS(t, ns, socks)
}

// openListener makes a listener on addr, TCP listening or UDP bound, with
// IPV6_V6ONLY set to v6only for IPv6, open until the test ends.
func openListener(t *testing.T, sock tracer.SockSpec, addr netip.AddrPort, v6only int) {
	t.Helper()
	fd := tracer.NewSocket(t, sock)
	t.Cleanup(func() { unix.Close(fd) })
	if sock.Family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, tracer.Sockaddr(addr)); err != nil {
		t.Fatal(err)
	}
	if sock.Type == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 8); err != nil {
			t.Fatal(err)
		}
	}
}

// worldDir is a temporary directory any user may enter, for a binary run
// as another user.
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "porttrace-ports-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// addAddr adds an address to a link of the calling thread's namespace.
func addAddr(t *testing.T, link, cidr string) {
	t.Helper()
	l, err := netlink.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		t.Fatalf("adding %s to %s: %v", cidr, link, err)
	}
}

// userName is uid's name, or the number where no user database has it
// (the kernel matrix's initramfs).
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// checkHolder asserts what ports and who say about a process against what
// the test knows of it and what /proc says.
func checkHolder(t *testing.T, h *ports.Holder, pid int, exe string, uid int, before, after time.Time) {
	t.Helper()
	wantUser := userName(uid)
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if h.PID != uint32(pid) || h.PPID != uint32(os.Getpid()) || h.Exe != exe || h.ExeDeleted ||
		h.UID != uint32(uid) || h.User != wantUser || h.Cgroup != proc.CgroupPath(cg) || h.Cgroup == "" {
		t.Errorf("holder %+v, want pid %d, parent %d, exe %s, uid %d (%s), cgroup %q",
			*h, pid, os.Getpid(), exe, uid, wantUser, proc.CgroupPath(cg))
	}
	// The start time is boot time, whole seconds in /proc/stat, plus clock ticks.
	if h.Start.Before(before.Add(-2*time.Second)) || h.Start.After(after.Add(2*time.Second)) {
		t.Errorf("holder started %s, want between %s and %s", h.Start, before, after)
	}
}

// crossCheckSS compares the listeners with ss -tulnp run in the same
// namespace: addresses as ss writes them (which tells a dual-stack IPv6
// wildcard from an IPv6-only one), protocols and holding pids.
func crossCheckSS(t *testing.T, ns *tracer.NS, socks []ports.Socket) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Fatal("ss(8) is not installed (package iproute2): the listener list is cross-checked against it")
	}
	var out []byte
	var err error
	ns.Run(t, func() { out, err = exec.Command("ss", "-Htulnp").Output() })
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
		local := f[4]
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
		fromUs = append(fromUs, event.ProtoName(s.Proto)+" "+ports.LocalAddr(&s)+" "+pid)
	}
	slices.Sort(fromSS)
	slices.Sort(fromUs)
	if !slices.Equal(fromSS, fromUs) {
		t.Errorf("ss -tulnp lists\n%s\nporttrace ports lists\n%s", strings.Join(fromSS, "\n"), strings.Join(fromUs, "\n"))
	}
}

// --netns all looks into every namespace a process lives in, each once
// however many processes share it; one whose process has exited since the
// glob is skipped without a word, one porttrace may not open is skipped
// and returned.
func TestKernelPortsNetnsAll(t *testing.T) {
	a, b := tracer.NewNetns(t), tracer.NewNetns(t)
	// Namespaces held by a process, as --netns all finds them; two in a.
	ha1 := tracer.StartHelper(t, a, tracer.HelperExe(t), 0, "tcp", "127.0.0.1:7101", "PT_LISTEN=1")
	ha2 := tracer.StartHelper(t, a, tracer.HelperExe(t), 0, "udp", "0.0.0.0:7102")
	hb := tracer.StartHelper(t, b, tracer.HelperExe(t), 0, "tcp", "[::]:7103", "PT_LISTEN=1")
	for _, h := range []*tracer.Helper{ha1, ha2, hb} {
		if _, errno := h.Bind(t); errno != "" {
			t.Fatal(errno)
		}
	}
	socks, unopened, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{"all"}})
	if err != nil {
		t.Fatal(err)
	}
	name := map[uint32]string{a.Inode: "a", b.Inode: "b"}
	pids := map[uint32]string{uint32(ha1.Cmd.Process.Pid): "ha1", uint32(ha2.Cmd.Process.Pid): "ha2", uint32(hb.Cmd.Process.Pid): "hb"}
	var got []string
	seen := map[[2]uint32]bool{}
	for _, s := range socks {
		if seen[[2]uint32{s.Netns, s.Inode}] {
			t.Errorf("listed twice: netns %d %s %s", s.Netns, event.ProtoName(s.Proto), s.Local)
		}
		seen[[2]uint32{s.Netns, s.Inode}] = true
		if n, ok := name[s.Netns]; ok && len(s.Holders) > 0 {
			got = append(got, fmt.Sprintf("%s %s %s %s", n, event.ProtoName(s.Proto), s.Local, pids[s.Holders[0].PID]))
		}
	}
	want := []string{"a tcp 127.0.0.1:7101 ha1", "a udp 0.0.0.0:7102 ha2", "b tcp [::]:7103 hb"}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, u := range unopened {
		if netns.Vanished(u.Err) || !strings.HasPrefix(u.Path, "/proc/") {
			t.Errorf("unopened %s: %v", u.Path, u.Err)
		}
	}

	// A process that has exited: its namespace file is gone.
	gone := exec.Command(tracer.HelperExe(t))
	gone.Env = append(os.Environ(), "PORTTRACE_HELPER=bind") // stdin at EOF: exits at once
	_ = gone.Run()
	files := []string{a.Path(), fmt.Sprintf("/proc/%d/ns/net", gone.Process.Pid)}
	socks, unopened, err = ports.SnapshotFiles(files, true, false)
	if err != nil || len(unopened) != 0 || len(socks) != 2 {
		t.Errorf("with a vanished namespace: %d sockets, unopened %v, error %v; want a's 2, nothing unopened", len(socks), unopened, err)
	}
	if _, _, err := ports.SnapshotFiles(files, false, false); !errors.Is(err, unix.ENOENT) {
		t.Errorf("a named namespace that does not exist: %v, want ENOENT", err)
	}

	t.Run("watch", func(t *testing.T) {
		// Each look takes a new snapshot of every namespace: none may fail
		// the command, and a skipped one is reported once.
		interval := 50 * time.Millisecond
		w := startWatch(t, []string{"all"}, interval, "table")
		select {
		case err := <-w.done:
			t.Fatalf("ended: %v\n%s", err, w.errOut.String())
		case <-time.After(10 * interval):
		}
		w.stop(t)
		if n := strings.Count(w.errOut.String(), "skipped"); n > 1 {
			t.Errorf("skipped namespaces reported %d times:\n%s", n, w.errOut.String())
		}
	})
}

// Run by someone who may not open or enter every namespace, ports and who
// --netns all list what they can, and say in one line what they skipped.
func TestKernelPortsNetnsAllUnprivileged(t *testing.T) {
	if pid := os.Getenv("PORTTRACE_PORTS_UNPRIVILEGED"); pid != "" {
		netnsAllUnprivileged(t, pid)
		return
	}
	// A process of the same user in a namespace of root's: its namespace
	// file opens, but entering it takes CAP_SYS_ADMIN.
	h := tracer.StartHelper(t, tracer.NewNetns(t), tracer.HelperExe(t), 65534, "udp", "127.0.0.1:0")
	cmd := exec.Command(tracer.HelperExe(t), "-test.run=^TestKernelPortsNetnsAllUnprivileged$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORTTRACE_PORTS_UNPRIVILEGED=%d", h.Cmd.Process.Pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

func netnsAllUnprivileged(t *testing.T, helperPid string) {
	entered := "/proc/" + helperPid + "/ns/net"
	_, unopened, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{"all"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(unopened, func(u ports.Unopened) bool { return u.Path == entered && errors.Is(u.Err, unix.EPERM) }) {
		t.Errorf("unopened %v, want %s (EPERM) among them", unopened, entered)
	}
	// Root's init, which nobody may open: the glob hides it, but a
	// process can turn that way between glob and open.
	self, init := "/proc/self/ns/net", "/proc/1/ns/net"
	_, unopened, err = ports.SnapshotFiles([]string{self, init}, true, false)
	if err != nil || len(unopened) != 1 || unopened[0].Path != init || !errors.Is(unopened[0].Err, unix.EACCES) {
		t.Errorf("%s: unopened %v, error %v; want it unopened with EACCES", init, unopened, err)
	}
	if _, _, err := ports.SnapshotFiles([]string{self, init}, false, false); !errors.Is(err, unix.EACCES) {
		t.Errorf("--netns %s: %v, want EACCES", init, err)
	}
	// Named on the command line, a namespace it may open but not enter
	// fails, saying what entering takes rather than only EPERM.
	want := "netns " + entered + ": entering netns: operation not permitted (entering another network namespace needs root or CAP_SYS_ADMIN)"
	if _, _, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{entered}}); !errors.Is(err, unix.EPERM) || err.Error() != want {
		t.Errorf("--netns %s: %v, want %q", entered, err, want)
	}

	cfg := ports.DefaultConfig()
	cfg.Netns = []string{"all"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := ports.Run(context.Background(), cfg, &out, &errOut); err != nil {
		t.Fatalf("ports --netns all: %v", err)
	}
	checkSkipLine(t, "ports", errOut.String())
	if !strings.HasPrefix(out.String(), "NETNS") {
		t.Errorf("ports --netns all printed\n%s", out.String())
	}
	w := ports.DefaultWhoConfig()
	w.Netns = []string{"all"}
	if err := w.ParseTarget("1/udp"); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if err := ports.RunWho(context.Background(), w, &strings.Builder{}, &errOut); !errors.Is(err, ports.ErrNobody) {
		t.Fatalf("who --netns all: %v, want ports.ErrNobody", err)
	}
	checkSkipLine(t, "who", errOut.String())
}

// checkSkipLine asserts that cmd said, in one line, which namespaces it
// skipped: the first few by name, the rest counted, however many the
// host has besides the test's own.
func checkSkipLine(t *testing.T, cmd, stderr string) {
	t.Helper()
	re := regexp.MustCompile(`^porttrace ` + cmd + `: --netns all: skipped (\d+) namespaces? it may not look into: ((?:/\S+ \([^)]+\)(?:, )?)+)(?: and (\d+) more)?\n$`)
	m := re.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("%s said on stderr:\n%s\nwant one line matching %s", cmd, stderr, re)
	}
	total, _ := strconv.Atoi(m[1])
	more, _ := strconv.Atoi(m[3])
	if named := strings.Count(m[2], " ("); named+more != total || named > 3 {
		t.Errorf("%s: %d named and %d more, of %d skipped:\n%s", cmd, named, more, total, stderr)
	}
}

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

// A listener no process holds: its only file is in flight over a unix
// socket, the sender's copy closed. ports flags it and who says so.
func TestKernelPortsOrphan(t *testing.T) {
	ns := tracer.NewNetns(t)
	var ln int
	ns.Run(t, func() { ln = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7200")) })
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(ln), nil, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(ln)
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{ns.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 1 || len(socks[0].Holders) != 0 || len(socks[0].Suspicious) != 1 {
		t.Fatalf("got %+v, want the one listener, held by nobody and flagged", socks)
	}
	why := socks[0].Suspicious[0]
	if !strings.HasPrefix(why, "no ") || !strings.Contains(why, " holds it") {
		t.Errorf("flagged %q, want it to say no process holds it", why)
	}
	cfg := ports.DefaultWhoConfig()
	cfg.Netns = []string{ns.Path()}
	if err := cfg.ParseTarget("7200"); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := ports.RunWho(context.Background(), cfg, &out, &strings.Builder{}); err != nil {
		t.Errorf("who on a port a socket in flight holds: %v, want it held", err)
	}
	if !strings.Contains(out.String(), "  ! "+why) {
		t.Errorf("who said\n%s\nwant %q", out.String(), why)
	}
}

// Run in a pid namespace of its own with its own /proc, as in a container,
// porttrace cannot see the process holding a listener of a namespace it
// shares with the host, and must not claim that no live process does.
func TestKernelPortsPidns(t *testing.T) {
	if os.Getenv("PORTTRACE_PORTS_PIDNS") != "" {
		portsInPidns(t)
		return
	}
	ns := tracer.NewNetns(t)
	var fd int
	ns.Run(t, func() { fd = tracer.ListenTCP(t, netip.MustParseAddrPort("127.0.0.1:7300")) })
	defer unix.Close(fd)
	dup, err := unix.Dup(ns.FD)
	if err != nil {
		t.Fatal(err)
	}
	nsFile := os.NewFile(uintptr(dup), "netns") // ns keeps its own fd
	defer nsFile.Close()
	cmd := exec.Command(tracer.HelperExe(t), "-test.run=^TestKernelPortsPidns$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "PORTTRACE_PORTS_PIDNS=1")
	cmd.ExtraFiles = []*os.File{nsFile} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in a pid namespace: %v\n%s", err, out)
	}
}

func portsInPidns(t *testing.T) {
	// The mounts stay in this mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		t.Fatal(err)
	}
	if !ports.InChildPidns() {
		t.Fatal("pid 1 of a new pid namespace with its own /proc does not know it")
	}
	socks, _, err := ports.Snapshot(ports.SnapshotOptions{Netns: []string{"/proc/self/fd/3"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"no process visible in this pid namespace holds it"}
	if len(socks) != 1 || socks[0].Local.Port() != 7300 || !slices.Equal(socks[0].Suspicious, want) {
		t.Fatalf("got %+v, want the listener on 7300 flagged %q", socks, want)
	}
}

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

// ports --watch prints the snapshot, then each new bind and listen as the
// tracer sees it, with the scope and flags a snapshot row has, and each
// listener that goes away: also one that lived only between two looks,
// known from its listen alone. In JSON each object says what it reports,
// when and in which namespace; a table line says which namespace when the
// watch spans several.
func TestKernelPortsWatch(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			netns := []string{ns.Path()}
			if output == "table" {
				netns = append(netns, tracer.NewNetns(t).Path())
			}
			var fd int
			ns.Run(t, func() { fd = tracer.ListenTCP(t, netip.MustParseAddrPort("0.0.0.0:6665")) })
			defer unix.Close(fd)
			exe := filepath.Join(t.TempDir(), "implant")
			if err := tracer.CopyFile(tracer.HelperExe(t), exe); err != nil {
				t.Fatal(err)
			}
			h := tracer.StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:6666", "PT_LISTEN=1")
			if err := os.Remove(exe); err != nil {
				t.Fatal(err)
			}
			w := startWatch(t, netns, time.Second, output)
			// The looks fall about a second apart from now: the listener
			// lives from 0.35 s to 0.65 s, in none of them.
			t0 := time.Now()
			time.Sleep(time.Until(t0.Add(350 * time.Millisecond)))
			if _, errno := h.Bind(t); errno != "" {
				t.Fatal(errno)
			}
			time.Sleep(time.Until(t0.Add(650 * time.Millisecond)))
			h.Stdin.Close()
			_ = h.Cmd.Wait()
			pid := h.Cmd.Process.Pid
			if output == "table" {
				w.wait(t, fmt.Sprintf("+ listen tcp 0.0.0.0:6666 netns %d pid %d implant (%s)  all interfaces; ! executable deleted: %s (pid %d)\n",
					ns.Inode, pid, userName(0), exe, pid))
				w.wait(t, fmt.Sprintf("- closed tcp 0.0.0.0:6666 netns %d (was pid %d implant)\n", ns.Inode, pid))
			} else {
				w.wait(t, `"event":"closed"`)
			}
			w.stop(t)
			if output == "json" {
				checkWatchJSON(t, w.out.String(), ns.Inode, pid, exe)
			}
		})
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

// watching is a ports --watch running in the background.
type watching struct {
	out, errOut *tracer.SyncBuilder
	done        chan error
	cancel      context.CancelFunc
	backend     event.Backend
}

// startWatch runs ports --watch --netns netns and returns once it watches.
func startWatch(t *testing.T, netns []string, interval time.Duration, output string) *watching {
	t.Helper()
	cfg := ports.DefaultConfig()
	cfg.Netns = netns
	cfg.Watch = true
	cfg.Interval = interval
	cfg.Output = output
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Backend = tracer.Backend(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{out: &tracer.SyncBuilder{}, errOut: &tracer.SyncBuilder{}, done: make(chan error, 1), cancel: cancel, backend: cfg.Backend}
	t.Cleanup(cancel)
	go func() { w.done <- ports.Run(ctx, cfg, w.out, w.errOut) }()
	waitText(t, w.errOut, "watching with", w.done, w.backend)
	return w
}

// wait waits until the watch has printed want.
func (w *watching) wait(t *testing.T, want string) {
	t.Helper()
	waitText(t, w.out, want, w.done, w.backend)
}

// stop ends the watch as Ctrl-C does; it must end without an error.
func (w *watching) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
}

// checkWatchJSON asserts the JSON of a --watch run in namespace netns: the
// snapshot row of port 6665, the bind and listen of 6666 (the listen with
// its scope and flags), and its close, each with its time and namespace.
func checkWatchJSON(t *testing.T, out string, netns uint32, pid int, exe string) {
	t.Helper()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var o struct {
			Time       string
			Event      string
			Netns      uint32
			LocalPort  int `json:"local_port"`
			PID        int
			Scope      *string
			Suspicious []string
		}
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if o.Event == "" {
			t.Errorf("no event key: %s", line)
		}
		if at, err := time.Parse(textout.TimeLayout, o.Time); err != nil || len(o.Time) != len("2006-01-02T15:04:05.000000000Z") ||
			time.Since(at) > time.Minute || time.Since(at) < 0 {
			t.Errorf("time %q (%v), want now in RFC 3339 UTC with nanoseconds: %s", o.Time, err, line)
		}
		if o.Netns != netns {
			t.Errorf("netns %d, want %d: %s", o.Netns, netns, line)
		}
		scope := "-"
		if o.Scope != nil {
			scope = *o.Scope
		}
		got = append(got, fmt.Sprintf("%s %d %d %s %q", o.Event, o.LocalPort, o.PID, scope, o.Suspicious))
	}
	flag := fmt.Sprintf("executable deleted: %s (pid %d)", exe, pid)
	want := []string{
		fmt.Sprintf("snapshot 6665 %d all interfaces []", os.Getpid()),
		fmt.Sprintf("bind 6666 %d - []", pid),
		fmt.Sprintf("listen 6666 %d all interfaces [%q]", pid, flag),
		fmt.Sprintf("closed 6666 %d all interfaces [%q]", pid, flag),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s\nfrom\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
}

// waitText waits until w has said want, failing if the command ends first.
func waitText(t *testing.T, w *tracer.SyncBuilder, want string, done chan error, b event.Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.String(), want) {
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, b, err)
			t.Fatalf("ended before saying %q: %v\n%s", want, err, w.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never said %q:\n%s", want, w.String())
		}
	}
}

// An IPv6 wildcard listener that --watch knows from its event alone (no
// event carries IPV6_V6ONLY) is looked up at once: a dual-stack one reads
// *:PORT and reaches IPv4 too, an IPv6-only one [::]:PORT, as in the
// snapshot; in JSON v6only says which.
func TestKernelPortsWatchV6Only(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			w := startWatch(t, []string{ns.Path()}, time.Second, output)
			var th tracer.Thread
			ns.Run(t, func() {
				th = tracer.Self()
				openListener(t, tracer.TCP6, netip.MustParseAddrPort("[::]:6667"), 0)
				openListener(t, tracer.TCP6, netip.MustParseAddrPort("[::]:6668"), 1)
				openListener(t, tracer.UDP6, netip.MustParseAddrPort("[::]:6669"), 0)
			})
			if output == "table" {
				by := fmt.Sprintf(" pid %d %s (%s)  ", os.Getpid(), th.Comm, userName(0))
				w.wait(t, "+ listen tcp *:6667"+by+"all interfaces, IPv4 and IPv6\n")
				w.wait(t, "+ listen tcp [::]:6668"+by+"all IPv6 interfaces\n")
				w.wait(t, "+ bind udp *:6669"+by+"all interfaces, IPv4 and IPv6\n")
				w.stop(t)
				return
			}
			w.wait(t, `"local_port":6669`)
			w.stop(t)
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
				var o struct {
					Event     string
					LocalAddr string `json:"local_addr"`
					LocalPort int    `json:"local_port"`
					V6Only    *bool
					Scope     string
				}
				if err := json.Unmarshal([]byte(line), &o); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if o.Event == "bind" && o.LocalPort != 6669 {
					continue // a TCP bind makes no listener
				}
				v6only := "-"
				if o.V6Only != nil {
					v6only = strconv.FormatBool(*o.V6Only)
				}
				got = append(got, fmt.Sprintf("%s %s %d v6only=%s %s", o.Event, o.LocalAddr, o.LocalPort, v6only, o.Scope))
			}
			want := []string{
				"listen :: 6667 v6only=false all interfaces, IPv4 and IPv6",
				"listen :: 6668 v6only=true all IPv6 interfaces",
				"bind :: 6669 v6only=false all interfaces, IPv4 and IPv6",
			}
			if !slices.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
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
