package netns

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// newHeldNetns makes a network namespace from a thread that then ends, so
// only the fd returned holds it.
func newHeldNetns(t *testing.T) (fd int, inode uint32) {
	t.Helper()
	type made struct {
		fd  int
		err error
	}
	c := make(chan made, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- made{-1, err}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		c <- made{fd, err}
	}()
	m := <-c
	if m.err != nil {
		t.Fatalf("making a network namespace: %v", m.err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(m.fd, &st); err != nil {
		t.Fatal(err)
	}
	return m.fd, uint32(st.Ino)
}

// A namespace is held while a process or thread lives in it, a mount names
// it or an fd holds it; once nothing does, Unheld names it.
func TestUnheld(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creating network namespaces")
	}
	for _, tc := range []struct {
		name     string
		keepFD   bool
		hold     func(t *testing.T, fd int) (release func())
		wantGone bool
	}{
		{name: "held by an fd", keepFD: true, hold: func(*testing.T, int) func() { return func() {} }},
		{name: "let go", hold: func(*testing.T, int) func() { return func() {} }, wantGone: true},
		{name: "bind-mounted", hold: func(t *testing.T, fd int) func() {
			p := filepath.Join(t.TempDir(), "ns")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), p, "", unix.MS_BIND, ""); err != nil {
				t.Skipf("bind-mounting a namespace: %v", err)
			}
			return func() { _ = unix.Unmount(p, unix.MNT_DETACH) }
		}},
		{name: "a thread lives in it", hold: func(t *testing.T, fd int) func() {
			in, out := make(chan error), make(chan struct{})
			go func() {
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				in <- unix.Setns(fd, unix.CLONE_NEWNET)
				<-out
			}()
			if err := <-in; err != nil {
				t.Fatal(err)
			}
			return func() { close(out) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, inode := newHeldNetns(t)
			release := tc.hold(t, fd)
			defer release()
			if tc.keepFD {
				defer unix.Close(fd)
			} else {
				unix.Close(fd) // only the hold of the case keeps it
			}
			self := Self()
			gone := Unheld([]uint32{self, inode})
			if slices.Contains(gone, self) {
				t.Errorf("porttrace's own namespace %d said gone", self)
			}
			if slices.Contains(gone, inode) != tc.wantGone {
				t.Errorf("namespace %d gone: %v, want %v", inode, slices.Contains(gone, inode), tc.wantGone)
			}
		})
	}
}
