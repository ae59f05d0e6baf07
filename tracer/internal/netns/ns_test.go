package netns

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Check tells a network namespace file from anything setns(2) would only
// call an invalid argument: a regular file, a namespace of another kind.
func TestCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want string // "" for a network namespace
	}{
		{"/proc/self/ns/net", ""},
		{file, "not a network namespace file (want /run/netns/NAME or /proc/PID/ns/net)"},
		{"/proc/self/ns/pid", "not a network namespace file (a pid namespace)"},
		{"/proc/self/ns/uts", "not a network namespace file (a uts namespace)"},
	} {
		fd, err := unix.Open(tc.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = Check(fd)
		unix.Close(fd)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.want != "" && (!errors.Is(err, ErrNotNamespace) || err.Error() != tc.want):
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
	}
}

// Files resolves --netns: nothing is porttrace's own namespace, all is
// every namespace a process lives in (its own first), a list is itself.
func TestFiles(t *testing.T) {
	own, err := Files(nil)
	if err != nil || len(own) != 1 || own[0] != "/proc/self/ns/net" {
		t.Errorf("no --netns: %v %v", own, err)
	}
	all, err := Files([]string{"all"})
	if err != nil || len(all) < 2 || all[0] != "/proc/self/ns/net" {
		t.Errorf("all: %v %v", all, err)
	}
	for _, f := range all[1:] {
		if !strings.HasPrefix(f, "/run/netns/") && !strings.HasPrefix(f, "/proc/") {
			t.Errorf("all: %s is no namespace file", f)
		}
	}
	if _, err := Files([]string{"/nonexistent"}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	set, err := Filter([]string{"/proc/self/ns/net"})
	if err != nil || len(set) != 1 || !set[Self()] {
		t.Errorf("Filter of our own namespace: %v %v, want {%d}", set, err, Self())
	}
	if set, err := Filter([]string{"all"}); set != nil || err != nil {
		t.Errorf("Filter(all): %v %v, want nil: every namespace", set, err)
	}
}

// Do runs on a thread that is in the namespace, without setns where the
// thread is there already (which needs no privilege).
func TestDoOwnNamespace(t *testing.T) {
	fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var inside uint64
	err = Do(fd, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		return nil
	})
	if err != nil || uint32(inside) != Self() {
		t.Errorf("ran in netns %d (%v), want %d", inside, err, Self())
	}
}

// The sysctls read as the kernel has them in this namespace.
func TestSysctls(t *testing.T) {
	rng, err := LocalPortRange()
	if err != nil || rng[0] == 0 || rng[1] < rng[0] {
		t.Errorf("ip_local_port_range %v, %v", rng, err)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(b)); len(f) != 2 || f[0] != strconv.Itoa(int(rng[0])) || f[1] != strconv.Itoa(int(rng[1])) {
		t.Errorf("ip_local_port_range %v, the file says %q", rng, b)
	}
	if _, err := UnprivilegedPortStart(); err != nil {
		t.Error(err)
	}
}
