package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroup is the soak's own cgroup v2: the load and its children are
// started into it (clone3's CLONE_INTO_CGROUP, Linux 5.7), so that from
// their first instruction porttrace's --cgroup filter passes their calls,
// and only theirs.
type cgroup struct {
	dir string // its path under the cgroup v2 mount
	rel string // as porttrace's cgroup field prints it
	fd  int
}

func newCgroup() (*cgroup, error) {
	var root string
	for _, r := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(r, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = r
			break
		}
	}
	if root == "" {
		return nil, errors.New("no cgroup v2 file system at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	// A soak killed outright (SIGKILL) leaves its cgroup behind, empty:
	// its processes die with it (their parent-death signal).
	old, _ := filepath.Glob(filepath.Join(root, "porttrace-soak-*"))
	for _, dir := range old {
		if _, err := os.Stat("/proc/" + strings.TrimPrefix(filepath.Base(dir), "porttrace-soak-")); errors.Is(err, os.ErrNotExist) {
			os.Remove(dir)
		}
	}
	rel := fmt.Sprintf("/porttrace-soak-%d", os.Getpid())
	cg := &cgroup{dir: filepath.Join(root, rel), rel: rel}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the cgroup: %w", err)
	}
	fd, err := unix.Open(cg.dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(cg.dir)
		return nil, fmt.Errorf("opening the cgroup: %w", err)
	}
	cg.fd = fd
	return cg, nil
}

// remove kills whatever is left in the cgroup (cgroup.kill, Linux 5.14;
// else each process by its pid) and removes it.
func (cg *cgroup) remove() {
	unix.Close(cg.fd)
	if os.WriteFile(filepath.Join(cg.dir, "cgroup.kill"), []byte("1"), 0) != nil {
		procs, _ := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	for range 50 {
		if err := os.Remove(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "soak: could not remove %s\n", cg.dir)
}
