package tracer_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/ports"
)

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
