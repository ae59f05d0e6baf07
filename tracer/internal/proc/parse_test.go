package proc

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// This process's own files parse into what the kernel says of it.
func TestParseSelf(t *testing.T) {
	f := ReadFacts("/proc", uint32(os.Getpid()), FactsAll)
	if !f.HasStat || f.PPID != uint32(os.Getppid()) {
		t.Errorf("parent %d (read: %t), want %d", f.PPID, f.HasStat, os.Getppid())
	}
	if !f.HasUID || f.UID != uint32(os.Geteuid()) {
		t.Errorf("user %d (read: %t), want %d", f.UID, f.HasUID, os.Geteuid())
	}
	if age := time.Since(f.Start); age < 0 || age > time.Hour {
		t.Errorf("started %s, %s ago", f.Start, age)
	}
}

// Files cut short or odd say nothing rather than panic or say root:
// each of these made ReadFacts panic, or read uid 0, when it parsed with
// procfs.
func TestReadFactsOddFiles(t *testing.T) {
	const stat = "1 (x) S 7 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n"
	for _, tc := range []struct {
		name, stat, status string
		hasStat, hasUID    bool
	}{
		{"stat ends at the name", "1 (x)", "Uid:\t0\t0\t0\t0\n", false, true},
		{"stat's ) before its (", "1 )(x S 1", "Uid:\t0\t0\t0\t0\n", false, true},
		{"five uids", stat, "Uid:\t1\t2\t3\t4\t5\n", true, false},
		{"one uid", stat, "Uid:\t1000\n", true, false},
		{"no uid line", stat, "Name:\tx\n", true, false},
		{"empty", "", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, b := range map[string]string{"1/stat": tc.stat, "1/status": tc.status, "stat": "btime 1\n"} {
				if err := os.MkdirAll(filepath.Join(root, "1"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, name), []byte(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f := ReadFacts(root, 1, FactStat|FactUID)
			if f.HasStat != tc.hasStat || f.HasUID != tc.hasUID {
				t.Errorf("read stat %t, uid %t (%d); want %t, %t", f.HasStat, f.HasUID, f.UID, tc.hasStat, tc.hasUID)
			}
			if f.HasStat && (f.PPID != 7 || !f.Start.Equal(time.Unix(2, 0))) {
				t.Errorf("parent %d, start %s; want 7, %s", f.PPID, f.Start, time.Unix(2, 0))
			}
		})
	}
}
