// Package netns is how porttrace reaches network namespaces: telling a
// namespace file from anything else, resolving --netns, running code on a
// thread inside a namespace (without setns where the thread is already
// there), holding a namespace open, finding one by the inode an event
// names, and reading its port sysctls.
package netns

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Vanished reports whether opening a namespace failed because its process
// exited after the glob found it.
func Vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

var ErrEntering = errors.New("entering netns")

// AdminHint is what to add to err, where setns(2) refused with EPERM: what
// entering a namespace takes, since setns says only "operation not
// permitted". Said where one namespace fails, not in lists of those
// skipped.
func AdminHint(err error) string {
	if errors.Is(err, ErrEntering) && errors.Is(err, unix.EPERM) {
		return " (entering another network namespace needs root or CAP_SYS_ADMIN)"
	}
	return ""
}

// ErrNotNamespace is a --netns file that is no network namespace: setns(2)
// would say only "invalid argument".
var ErrNotNamespace = errors.New("not a network namespace file")

// Check tells a network namespace file from anything else before
// setns(2) does, to say what is wrong: a file of nsfs (Linux 3.19+) is a
// namespace, and NS_GET_NSTYPE (4.11+) tells which kind. A kernel without
// the ioctl leaves the kind to setns.
func Check(fd int) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return err
	}
	if fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%w (want /run/netns/NAME or /proc/PID/ns/net)", ErrNotNamespace)
	}
	kind, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil || kind == unix.CLONE_NEWNET {
		return nil
	}
	return fmt.Errorf("%w (a %s namespace)", ErrNotNamespace, nsKind(kind))
}

// nsKind names a CLONE_NEW* namespace type as /proc/PID/ns does.
func nsKind(kind int) string {
	switch kind {
	case unix.CLONE_NEWCGROUP:
		return "cgroup"
	case unix.CLONE_NEWIPC:
		return "ipc"
	case unix.CLONE_NEWNS:
		return "mnt"
	case unix.CLONE_NEWPID:
		return "pid"
	case unix.CLONE_NEWTIME:
		return "time"
	case unix.CLONE_NEWUSER:
		return "user"
	case unix.CLONE_NEWUTS:
		return "uts"
	}
	return fmt.Sprintf("type %#x", kind)
}

// Do calls fn on a thread inside the network namespace open at
// fd. The thread that is already there needs no setns, which takes
// CAP_SYS_ADMIN: so porttrace without it can still list its own
// namespace, as ss can. A thread that did enter another namespace is never
// unlocked and dies with its goroutine rather than rejoin the pool there.
func Do(fd int, fn func() error) error {
	var want unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var st unix.Stat_t
		if unix.Stat("/proc/thread-self/ns/net", &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			defer runtime.UnlockOSThread()
		} else if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%w: %w", ErrEntering, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Files resolves --netns: none means porttrace's own namespace;
// "all" every namespace a process lives in or /run/netns names.
func Files(spec []string) ([]string, error) {
	if len(spec) == 0 {
		return []string{"/proc/self/ns/net"}, nil
	}
	if len(spec) == 1 && spec[0] == "all" {
		files := []string{"/proc/self/ns/net"}
		for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net"} {
			m, _ := filepath.Glob(pattern)
			files = append(files, m...)
		}
		return files, nil
	}
	for _, p := range spec {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("--netns %s: %w", p, err)
		}
	}
	return spec, nil
}

// Filter returns the inodes of the namespaces --netns names, or nil
// for "all": the live parts of ports and who report events from these only.
func Filter(spec []string) (map[uint32]bool, error) {
	if len(spec) == 1 && spec[0] == "all" {
		return nil, nil
	}
	files, err := Files(spec)
	if err != nil {
		return nil, err
	}
	set := map[uint32]bool{}
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			return nil, fmt.Errorf("--netns %s: %w", f, err)
		}
		set[uint32(st.Ino)] = true
	}
	return set, nil
}

// Inodes returns the inodes of the namespaces --netns names, to scope a
// trace in the kernel: nil for none given or "all", every namespace.
func Inodes(spec []string) ([]uint32, error) {
	if len(spec) == 0 {
		return nil, nil
	}
	set, err := Filter(spec)
	if set == nil || err != nil {
		return nil, err
	}
	inodes := make([]uint32, 0, len(set))
	for ino := range set {
		inodes = append(inodes, ino)
	}
	return inodes, nil
}
