package proc

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// The walk finds this process's socket by inode, at its fd, and passes
// over the processes keep turns down and the sockets want does.
func TestSocketOwners(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	other, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	inode, otherInode := socketIno(t, fd), socketIno(t, other)
	self := os.Getpid()
	for _, tc := range []struct {
		name      string
		keep      func(pid int) bool
		want      func(inode uint32) bool
		holders   []SocketFD
		otherKept bool
	}{
		{"every process", nil, nil, []SocketFD{{self, fd}}, true},
		{"this one", func(pid int) bool { return pid == self }, nil, []SocketFD{{self, fd}}, true},
		{"the others", func(pid int) bool { return pid != self }, nil, nil, false},
		{"one socket", nil, func(i uint32) bool { return i == inode }, []SocketFD{{self, fd}}, false},
		{"another socket", nil, func(i uint32) bool { return i == otherInode }, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := SocketOwners(tc.keep, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.ByInode[inode]; !slices.Equal(got, tc.holders) {
				t.Errorf("holders of socket %d: %v, want %v", inode, got, tc.holders)
			}
			if _, kept := s.ByInode[otherInode]; kept != tc.otherKept {
				t.Errorf("socket %d kept: %t, want %t", otherInode, kept, tc.otherKept)
			}
			for i := range s.ByInode {
				if tc.want != nil && !tc.want(i) {
					t.Errorf("socket %d kept, which want turns down", i)
				}
			}
		})
	}
}

func socketIno(t *testing.T, fd int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

func TestNetnsOf(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	if inode, err := NetnsOf(os.Getpid()); err != nil || inode != uint32(st.Ino) {
		t.Errorf("NetnsOf(self) = %d, %v, want %d", inode, err, st.Ino)
	}
	if _, err := NetnsOf(-1); err == nil {
		t.Error("NetnsOf(-1) did not fail")
	}
}
