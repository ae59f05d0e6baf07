package proc

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// FuzzProcFiles feeds the /proc parsers any bytes, and lines the kernel
// would write with any command name, parent, start and user in them. On
// any bytes they do not panic and the cgroup path is one line of its
// file; on the kernel's lines they read back what was written.
func FuzzProcFiles(f *testing.F) {
	f.Add([]byte("7839 (cat) R 7837 7837 865 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 3936554 3133440 409 18446744073709551615 93972153835520 0 17 0 0 0 0 0 0 0\n"),
		[]byte("Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t7839\nPPid:\t7837\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\n"),
		[]byte("0::/system.slice/nginx.service\n"), []byte("cpu  1 2 3 4\nbtime 1796000137\nprocesses 9\n"),
		"nginx", uint32(1), uint64(3936554), uint32(33), "/system.slice/nginx.service")
	f.Add([]byte("42 (a) b) (c) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n"), []byte("Uid:\t0\t0\t0\t0\n"),
		[]byte("12:pids:/user.slice\n1:name=systemd:/user.slice/user-0.slice\n0::/kubepods.slice/kubepods-pod6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope\n"),
		[]byte("btime 0\n"), ") (\n\x00", uint32(4294967295), uint64(18446744073709551615), uint32(4294967295), "/")
	f.Add([]byte("1 (x)"), []byte("Uid:\t1\t2\t3\t4\t5\n"), []byte(""), []byte(""), "", uint32(0), uint64(0), uint32(0), "")
	f.Fuzz(func(t *testing.T, stat, status, cgroup, procStat []byte, comm string, ppid uint32, ticks uint64, uid uint32, path string) {
		parseStat(stat)
		parseStatusUID(status)
		if boot, ok := parseBootTime(procStat); ok {
			startTime(boot, ticks)
		}
		if p := CgroupPath(cgroup); strings.Contains(p, "\n") || !bytes.Contains(cgroup, []byte(p)) {
			t.Fatalf("cgroup %q is not a line of %q", p, cgroup)
		}

		line := fmt.Sprintf("4242 (%s) S %d 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %d 1000 10 18446744073709551615 1 2\n", comm, ppid, ticks)
		if gotPPID, gotTicks, ok := parseStat([]byte(line)); !ok || gotPPID != ppid || gotTicks != ticks {
			t.Fatalf("%q read as parent %d, start %d (%t)", line, gotPPID, gotTicks, ok)
		}
		st := fmt.Sprintf("Name:\t%s\nUid:\t%d\t%d\t%d\t%d\nGid:\t0\t0\t0\t0\n", strings.ReplaceAll(comm, "\n", "\\n"), uid+1, uid, uid, uid)
		if got, ok := parseStatusUID([]byte(st)); !ok || got != uid {
			t.Fatalf("%q read as user %d (%t)", st, got, ok)
		}
		if boot, ok := parseBootTime(fmt.Appendf(nil, "cpu  1 2 3\nbtime %d\n", ppid)); !ok || boot != int64(ppid) {
			t.Fatalf("btime %d read as %d (%t)", ppid, boot, ok)
		}
		if !strings.Contains(path, "\n") {
			cg := "12:pids:/x\n0::" + path + "\n"
			if got := CgroupPath([]byte(cg)); got != path {
				t.Fatalf("%q read as cgroup %q", cg, got)
			}
		}
	})
}
