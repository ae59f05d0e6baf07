package fdwalk

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The walk finds every fd of this process, each once, with its link's
// target; it passes over the processes keep turns down, and stops when
// told.
func TestWalk(t *testing.T) {
	// More fds than a batch, so that a process's table is read in several.
	var fds []int
	for range 3 * batch {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	want := map[int]string{}
	for _, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		want[fd] = fmt.Sprintf("socket:[%d]", st.Ino)
	}
	self := os.Getpid()

	seen := map[int]int{}
	others := 0
	if _, err := Walk(nil, func(f FD) bool {
		if f.PID != self {
			others++
			return true
		}
		if w, ok := want[f.Num]; ok {
			seen[f.Num]++
			if f.Target != w {
				t.Errorf("fd %d: target %q, want %q", f.Num, f.Target, w)
			}
			if got, err := os.Readlink(f.Path()); err != nil || got != w {
				t.Errorf("fd %d: %s links to %q (%v), want %q", f.Num, f.Path(), got, err, w)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if seen[fd] != 1 {
			t.Errorf("fd %d seen %d times, want once", fd, seen[fd])
		}
	}
	if others == 0 {
		t.Error("no fd of another process seen: the walk stopped at this one")
	}

	if _, err := Walk(func(pid int) bool { return pid != self }, func(f FD) bool {
		if f.PID == self {
			t.Fatalf("fd %d of a process keep turned down", f.Num)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}

	n := 0
	if _, err := Walk(nil, func(FD) bool { n++; return n < 5 }); err != nil || n != 5 {
		t.Errorf("told to stop at the fifth fd, saw %d (%v)", n, err)
	}
}

func TestInode(t *testing.T) {
	for _, tc := range []struct {
		link, kind string
		inode      uint32
		ok         bool
	}{
		{"socket:[12345]", "socket", 12345, true},
		{"socket:[4294967295]", "socket", 4294967295, true},
		{"socket:[4294967296]", "socket", 0, false},
		{"pipe:[12345]", "socket", 0, false},
		{"/dev/null", "socket", 0, false},
		{"socket:[]", "socket", 0, false},
		{"net:[4026531840]", "net", 4026531840, true},
		{"net:[4026531840]", "socket", 0, false},
		{"socket:[12345]", "net", 0, false},
		{"net:[x]", "net", 0, false},
	} {
		if inode, ok := Inode(tc.link, tc.kind); inode != tc.inode || ok != tc.ok {
			t.Errorf("Inode(%q, %q) = %d, %t, want %d, %t", tc.link, tc.kind, inode, ok, tc.inode, tc.ok)
		}
	}
}
