package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
)

// A process whose executable was deleted after it started: the classic
// backdoor. The event says so, from the kernel, with the path it ran from.
func TestKernelDeletedBinary(t *testing.T) {
	ns := NewNetns(t)
	exe := filepath.Join(t.TempDir(), "backdoor")
	CopyHelper(t, exe)
	h := StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:31337")
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	en := proc.NewEnricher()
	en.Enrich(&evs[0])
	if !evs[0].ExeDeleted || evs[0].Comm != "backdoor" || evs[0].Exe != exe {
		t.Errorf("exe_deleted %t comm %q exe %q, want true backdoor %q", evs[0].ExeDeleted, evs[0].Comm, evs[0].Exe, exe)
	}
}

// The cgroup comes from the id in the event, not from /proc: a process
// that has exited (here: no /proc at all) is still placed in the cgroup
// it bound from.
func TestKernelCgroupFromEvent(t *testing.T) {
	ns := NewNetns(t)
	cg := newCgroup(t)
	dir := cg.Name()
	root, name := filepath.Dir(dir), filepath.Base(dir)
	cmd := HelperCmd(HelperExe(t), 0, "tcp", "127.0.0.1:31338")
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	h := RunHelper(t, ns, cmd)
	c := startTracer(t, Options{PID: uint32(h.Cmd.Process.Pid)})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	h.Stdin.Close()
	_ = h.Cmd.Wait()
	evs := c.stop(t, ns)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if evs[0].CgroupID != st.Ino {
		t.Errorf("cgroup_id %d, want %d (the inode of %s)", evs[0].CgroupID, st.Ino, dir)
	}
	en := proc.NewEnricherAt(t.TempDir(), root)
	en.Enrich(&evs[0])
	if evs[0].Cgroup != "/"+name {
		t.Errorf("cgroup %q, want %q", evs[0].Cgroup, "/"+name)
	}
}

// cgroup2Mount returns where cgroup v2 is mounted, mounting it for the
// test where nothing has.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	if root, ok := proc.Cgroup2Root(); ok {
		return root
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mounting cgroup2: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Calls that fail before they reach the protocol code never pass the
// fentry and kprobe hooks: listen or accept on a UDP socket, a bind whose
// address is too short, a bind refused by a cgroup BPF program (systemd's
// SocketBindDeny=) or an LSM. The syscall tracepoints see them all.
func TestKernelFailuresBeforeProtocol(t *testing.T) {
	cases := []struct {
		name string
		want string // kind, result and errno of the one event
		call func(t *testing.T, ns *NS) (pid int, err error)
	}{
		{"udp-listen", "listen failed EOPNOTSUPP", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, UDP4)
				defer unix.Close(fd)
				if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:9301"))); err != nil {
					t.Fatal(err)
				}
				err = unix.Listen(fd, 1)
			})
			return os.Getpid(), err
		}},
		{"udp-accept", "accept failed EOPNOTSUPP", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, UDP4)
				defer unix.Close(fd)
				_, _, err = unix.Accept(fd)
			})
			return os.Getpid(), err
		}},
		{"short-address", "bind failed EINVAL", func(t *testing.T, ns *NS) (int, error) {
			var err error
			ns.Run(t, func() {
				fd := NewSocket(t, TCP4)
				defer unix.Close(fd)
				sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: 0x5e24} // 9310, network order
				_, _, errno := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), 8)
				err = errno
			})
			return os.Getpid(), err
		}},
		{"cgroup-bpf-deny", "bind denied EPERM", func(t *testing.T, ns *NS) (int, error) {
			cg := newCgroup(t)
			attachSockAddr(t, cg, ebpf.AttachCGroupInet4Bind, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
			h := StartHelperIn(t, ns, cg, "tcp", "127.0.0.1:9303")
			if _, errno := h.Bind(t); errno != "EPERM" {
				return h.Cmd.Process.Pid, fmt.Errorf("bind in the cgroup: %q", errno)
			}
			return h.Cmd.Process.Pid, unix.EPERM
		}},
	}
	// One tracer, one call after another; each call's failure is told
	// apart by process and kind.
	ns := NewNetns(t)
	c := startTracer(t, Options{})
	pids := make([]int, len(cases))
	for i, tc := range cases {
		pid, err := tc.call(t, ns)
		if err == nil {
			t.Fatalf("%s: the call did not fail", tc.name)
		}
		pids[i] = pid
	}
	evs := c.stop(t, ns)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			kind, _, _ := strings.Cut(tc.want, " ")
			for _, ev := range evs {
				if ev.PID == uint32(pids[i]) && ev.Kind.String() == kind && ev.Result != event.ResultOK {
					got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, ev.Result, ev.ErrnoName()))
				}
			}
			var want []string
			if c.tr.Backend() == event.BackendTracepoint {
				want = []string{tc.want}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s backend: got %q, want %q", c.tr.Backend(), got, want)
			}
		})
	}
}

// MakeCgroup makes the cgroup v2 path rel (its missing directories) for
// one test, removing what it made at the test's end, and returns it open
// (for clone3's CLONE_INTO_CGROUP) with the root it is under.
func MakeCgroup(t *testing.T, rel string) (*os.File, string) {
	t.Helper()
	root := cgroup2Mount(t)
	var made []string
	dir := root
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err == nil {
			made = append(made, dir)
		} else if !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i])
		}
	})
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, root
}

// attachSockAddr loads insns as a cgroup sock_addr program for at and
// attaches it to cg until the test ends.
func attachSockAddr(t *testing.T, cg *os.File, at ebpf.AttachType, insns asm.Instructions) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSockAddr, AttachType: at, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Name(), Attach: at, Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

// newCgroup makes a cgroup v2 child for one test, removed at its end.
func newCgroup(t *testing.T) *os.File {
	t.Helper()
	dir := filepath.Join(cgroup2Mount(t), fmt.Sprintf("porttrace-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
