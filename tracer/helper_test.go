package tracer

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// HelperMain is the test binary re-executed as a separate process (for a
// different uid, or a binary deleted after start). It waits for a line on
// stdin, binds PT_ADDR over PT_PROTO (with SO_REUSEPORT if PT_REUSEPORT is
// set; and listens if PT_LISTEN is set, or
// connects to PT_CONNECT if that is),
// prints "ok PORT" or "err ERRNO", and exits when stdin closes.
func HelperMain() int {
	if os.Getenv("PORTTRACE_HELPER") == "blackhole" {
		return blackholeMain()
	}
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
	if err == nil && os.Getenv("PT_REUSEPORT") != "" {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err == nil {
		err = unix.Bind(fd, Sockaddr(ap))
	}
	if err == nil && os.Getenv("PT_LISTEN") != "" {
		err = unix.Listen(fd, 8)
	}
	if to := os.Getenv("PT_CONNECT"); err == nil && to != "" {
		err = unix.Connect(fd, Sockaddr(netip.MustParseAddrPort(to)))
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

// blackholeMain, told to on stdin, opens PT_COUNT non-blocking TCP connects
// to PT_CONNECT (an address that never answers), prints "ok N" with how
// many are in progress, and exits when stdin closes, which closes them all.
func blackholeMain() int {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 3
	}
	to := netip.MustParseAddrPort(os.Getenv("PT_CONNECT"))
	count, _ := strconv.Atoi(os.Getenv("PT_COUNT"))
	// Room for every socket: above the hard limit where root may (a
	// guest's init), else up to it.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		want := uint64(count) + 64
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: max(want, lim.Cur), Max: max(want, lim.Max)}) != nil {
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim.Max, Max: lim.Max})
		}
	}
	n := 0
	for range count {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			fmt.Printf("err %v\n", err)
			return 1
		}
		if err := unix.Connect(fd, Sockaddr(to)); err == unix.EINPROGRESS {
			n++
		}
	}
	fmt.Printf("ok %d\n", n)
	_, _ = io.Copy(io.Discard, in)
	return 0
}

// HelperExe is a copy of the test binary that any user may run: go test
// builds it in a directory only root can enter.
func HelperExe(t *testing.T) string {
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

// CopyHelper copies the helper binary to path, so that a test can give a
// process the name (or the deleted file) it is about.
func CopyHelper(t *testing.T, path string) {
	t.Helper()
	if err := copyFile(HelperExe(t), path); err != nil {
		t.Fatal(err)
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// Helper is a running Helper process.
type Helper struct {
	Cmd   *exec.Cmd
	Stdin io.WriteCloser
	Out   *bufio.Reader
}

// StartHelper starts exe (the test binary or a copy) inside n as uid,
// ready to bind addr when told.
func StartHelper(t *testing.T, n *NS, exe string, uid int, proto, addr string, env ...string) *Helper {
	t.Helper()
	return RunHelper(t, n, HelperCmd(exe, uid, proto, addr, env...))
}

// HelperCmd is the command startHelper runs, for a test to adjust.
func HelperCmd(exe string, uid int, proto, addr string, env ...string) *exec.Cmd {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "PORTTRACE_HELPER=bind", "PT_ADDR="+addr, "PT_PROTO="+proto)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	return cmd
}

// StartHelperIn is StartHelper with the helper started in cgroup cg (an
// open cgroup v2 directory: clone3's CLONE_INTO_CGROUP, 5.7+).
func StartHelperIn(t *testing.T, n *NS, cg *os.File, proto, addr string, env ...string) *Helper {
	t.Helper()
	cmd := HelperCmd(HelperExe(t), 0, proto, addr, env...)
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	return RunHelper(t, n, cmd)
}

// BindIn binds addr once from a helper in cgroup cg, lets it exit, and
// returns its pid.
func BindIn(t *testing.T, n *NS, cg *os.File, proto, addr string) uint32 {
	t.Helper()
	h := StartHelperIn(t, n, cg, proto, addr)
	if _, errno := h.Bind(t); errno != "" {
		t.Fatalf("bind %s/%s in %s: %s", addr, proto, cg.Name(), errno)
	}
	h.Stdin.Close()
	_ = h.Cmd.Wait()
	return uint32(h.Cmd.Process.Pid)
}

// RunHelper starts a helper command inside n, or where cmd's own
// SysProcAttr puts it when n is nil (a namespace of its own through
// Cloneflags, or porttrace's).
func RunHelper(t *testing.T, n *NS, cmd *exec.Cmd) *Helper {
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
	if n != nil {
		n.Run(t, func() { startErr = cmd.Start() })
	} else {
		startErr = cmd.Start()
	}
	if startErr != nil {
		t.Fatal(startErr)
	}
	h := &Helper{Cmd: cmd, Stdin: stdin, Out: bufio.NewReader(stdout)}
	t.Cleanup(func() { h.Stdin.Close(); _ = h.Cmd.Wait() })
	return h
}

// Bind tells the helper to Bind and returns its answer: the port, or the errno name.
func (h *Helper) Bind(t *testing.T) (port uint16, errno string) {
	t.Helper()
	if _, err := io.WriteString(h.Stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := h.Out.ReadString('\n')
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
