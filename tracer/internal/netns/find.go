package netns

import (
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/fdwalk"
)

// Finder finds a network namespace known by inode number, where the
// kernel events name only the inode: the host's, a named one (/run/netns),
// or one a process or thread lives in or holds open. It remembers the path
// that led there, not an open fd, so a namespace that is gone can go.
type Finder struct {
	paths  map[uint32]string
	misses map[uint32]time.Time // a namespace not found is looked for again after missRetry
}

// missRetry spaces out the /proc walks for a namespace that is gone.
const missRetry = 10 * time.Second

func NewFinder() *Finder {
	return &Finder{paths: map[uint32]string{}, misses: map[uint32]time.Time{}}
}

// Open returns an fd of the namespace; the caller closes it.
func (f *Finder) Open(inode uint32) (int, error) {
	if path, ok := f.paths[inode]; ok {
		if fd, ok := openIfInode(path, inode); ok {
			return fd, nil
		}
		delete(f.paths, inode) // the process moved on or exited
	}
	if at, ok := f.misses[inode]; ok && time.Since(at) < missRetry {
		return -1, fmt.Errorf("network namespace %d: no process or mount holds it", inode)
	}
	path, fd, ok := Search(inode)
	if !ok {
		f.misses[inode] = time.Now()
		return -1, fmt.Errorf("network namespace %d: no process or mount holds it", inode)
	}
	delete(f.misses, inode)
	f.paths[inode] = path
	return fd, nil
}

// All lists every network namespace a process lives in or /run/netns
// names, and remembers the way to each.
func (f *Finder) All() []uint32 {
	var inodes []uint32
	seen := map[uint32]bool{}
	for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || seen[uint32(st.Ino)] {
				continue
			}
			ino := uint32(st.Ino)
			seen[ino] = true
			inodes = append(inodes, ino)
			if _, ok := f.paths[ino]; !ok {
				f.paths[ino] = p
			}
		}
	}
	return inodes
}

func Search(inode uint32) (path string, fd int, ok bool) {
	candidates := []string{"/proc/self/ns/net"}
	for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net", "/proc/[0-9]*/task/[0-9]*/ns/net"} {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	for _, p := range candidates {
		if fd, ok := openIfInode(p, inode); ok {
			return p, fd, true
		}
	}
	// Held open by an fd only (a namespace with no process in it yet).
	want := fmt.Sprintf("net:[%d]", inode)
	path, fd = "", -1
	_, _ = fdwalk.Walk(nil, func(f fdwalk.FD) bool {
		if f.Target == want {
			if nfd, ok := openIfInode(f.Path(), inode); ok {
				path, fd = f.Path(), nfd
				return false
			}
		}
		return true
	})
	return path, fd, fd >= 0
}

// openIfInode opens path if it is the namespace inode; fstat after open, so
// the answer is about the fd returned.
func openIfInode(path string, inode uint32) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || uint32(st.Ino) != inode {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}

// Self is the inode of porttrace's own network namespace: the calling
// thread's (/proc/thread-self, Linux 3.17+), which is porttrace's own on
// any goroutine not locked into another namespace. /proc/self/ns/net is
// the main thread's, and the main thread can be elsewhere: a goroutine
// that Do ran on it and that entered another namespace does not end the
// main thread as it ends any other, but parks it there for good.
func Self() uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/net", &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}
