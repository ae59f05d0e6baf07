package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/fdwalk"
)

// Held is a namespace porttrace holds open: Path reaches it through
// porttrace's own fd (/proc/self/fd/N), valid whatever becomes of Named,
// the path it was given as.
type Held struct {
	Named string
	Path  string
	Inode uint32
	fd    int
}

// Close lets the namespace go.
func (h *Held) Close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

// Hold opens the namespaces named in spec; "all" and no namespace hold
// none.
func Hold(spec []string) ([]*Held, error) {
	if len(spec) == 0 || (len(spec) == 1 && spec[0] == "all") {
		return nil, nil
	}
	var held []*Held
	for _, p := range spec {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		var st unix.Stat_t
		if err == nil {
			err = unix.Fstat(fd, &st)
		}
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			for _, h := range held {
				h.Close()
			}
			return nil, fmt.Errorf("opening netns %s: %w", p, err)
		}
		held = append(held, &Held{Named: p, Path: "/proc/self/fd/" + strconv.Itoa(fd), Inode: uint32(st.Ino), fd: fd})
	}
	return held, nil
}

// Orphaned reports whether only porttrace keeps the held namespace: its
// name leads elsewhere or nowhere, /run/netns names it no more, no process
// or thread is in it (but porttrace's own) and no fd but this one holds it
// open. Nothing can then bind in it again: it is gone but for porttrace's
// fd. A bind mount of it outside /run/netns, or in another mount
// namespace, or a socket of it held outside it, is not seen. The walk of
// every fd is made only where nothing cheaper found it.
func (h *Held) Orphaned() bool {
	if h.fd < 0 {
		return true
	}
	want := fmt.Sprintf("net:[%d]", h.Inode)
	is := func(path string) bool {
		target, err := os.Readlink(path)
		return err == nil && target == want
	}
	var st unix.Stat_t
	if unix.Stat(h.Named, &st) == nil && uint32(st.Ino) == h.Inode {
		return false
	}
	// porttrace's own threads there are only looking (Do), and one that
	// just did may not have ended yet.
	self := fmt.Sprintf("/proc/%d/", os.Getpid())
	for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/task/[0-9]*/ns/net"} {
		m, _ := filepath.Glob(pattern)
		for _, p := range m {
			if pattern == "/run/netns/*" {
				if unix.Stat(p, &st) == nil && uint32(st.Ino) == h.Inode {
					return false
				}
			} else if !strings.HasPrefix(p, self) && is(p) {
				return false
			}
		}
	}
	held := false
	_, _ = fdwalk.Walk(nil, func(f fdwalk.FD) bool {
		held = f.Target == want && (f.PID != os.Getpid() || f.Num != h.fd)
		return !held
	})
	return !held
}
