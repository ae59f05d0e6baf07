package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperMain is the test binary run again as a helper process, named by
// PORTTRACE_FAULT_HELPER:
//
//   - "setup": in a mount namespace of its own, private, it applies
//     PT_MOUNTS (umount:PATH and bind:FROM:TO, separated by ";"), drops
//     the capabilities in PT_DROP_CAPS (numbers) from its bounding set,
//     lowers RLIMIT_MEMLOCK to PT_MEMLOCK bytes, then execs PT_EXEC (a JSON
//     array): the command starts in the world the test made for it.
//   - "bind-then": binds TCP 127.0.0.1:PT_PORT, then execs PT_THEN (a JSON
//     array) at once, or exits when PT_THEN is empty.
func helperMain(name string) int {
	var err error
	switch name {
	case "setup":
		err = setupThenExec()
	case "bind-then":
		err = bindThen()
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
	return 100
}

func setupThenExec() error {
	// The main thread (TestMain locked it) enters the namespace alone and
	// execs from there.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	for op := range strings.SplitSeq(os.Getenv("PT_MOUNTS"), ";") {
		if op == "" {
			continue
		}
		f := strings.Split(op, ":")
		switch {
		case f[0] == "umount" && len(f) == 2:
			// EINVAL: not mounted there, which is what is wanted.
			if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil && err != unix.EINVAL {
				return fmt.Errorf("umount %s: %w", f[1], err)
			}
		case f[0] == "bind" && len(f) == 3:
			if err := unix.Mount(f[1], f[2], "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s on %s: %w", f[1], f[2], err)
			}
		default:
			return fmt.Errorf("bad PT_MOUNTS %q", op)
		}
	}
	for c := range strings.SplitSeq(os.Getenv("PT_DROP_CAPS"), ",") {
		if c == "" {
			continue
		}
		n, err := strconv.Atoi(c)
		if err != nil {
			return err
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(n), 0, 0, 0); err != nil {
			return fmt.Errorf("dropping capability %d: %w", n, err)
		}
	}
	if v := os.Getenv("PT_MEMLOCK"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return err
		}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("RLIMIT_MEMLOCK: %w", err)
		}
	}
	return execJSON(os.Getenv("PT_EXEC"))
}

func execJSON(s string) error {
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil || len(argv) == 0 {
		return fmt.Errorf("bad command %q: %v", s, err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

func bindThen() error {
	port, err := strconv.Atoi(os.Getenv("PT_PORT"))
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if os.Getenv("PT_THEN") == "" {
		os.Exit(0)
	}
	return execJSON(os.Getenv("PT_THEN"))
}

// helper is the command that runs helperMain's name with env.
func helper(name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), "PORTTRACE_FAULT_HELPER="+name), env...)
	return cmd
}

// jsonArgs is argv as PT_EXEC and PT_THEN take it.
func jsonArgs(argv ...string) string {
	b, _ := json.Marshal(argv)
	return string(b)
}
