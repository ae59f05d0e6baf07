package tracer_test

import (
	"bufio"
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
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/ports"
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
	tracer.CopyHelper(t, exe)
	h := tracer.StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:31337", "PT_LISTEN=1")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	// An interpreter, as nobody: its name is what gives it away.
	python := filepath.Join(worldDir(t), "python3")
	tracer.CopyHelper(t, python)
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
	tracer.CopyHelper(t, interp)
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
