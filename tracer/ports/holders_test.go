package ports

import (
	"maps"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// socketHolders describes the holders of the sockets asked about and of
// no other.
func TestSocketHoldersWanted(t *testing.T) {
	inodes := make([]uint32, 2)
	for i := range inodes {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		inodes[i] = uint32(st.Ino)
	}
	for _, want := range []map[uint32]bool{{inodes[0]: true}, {inodes[1]: true}, {inodes[0]: true, inodes[1]: true}, {}} {
		hi, err := socketHolders(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(hi.bySocket)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
			t.Errorf("asked about %v, described the holders of %v", slices.Sorted(maps.Keys(want)), got)
		}
		for inode, hs := range hi.bySocket {
			if len(hs) != 1 || hs[0].PID != uint32(os.Getpid()) {
				t.Errorf("socket %d: holders %+v, want this process alone", inode, hs)
			}
		}
	}
}
