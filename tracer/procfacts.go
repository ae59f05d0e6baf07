package tracer

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// procFacts is what /proc says of one process. Every view that names a
// process (the stream's enrichment, ports and who holders, who --wait)
// reads it here, so they agree on what a deleted executable or a cgroup
// path is.
type procFacts struct {
	comm       string
	exe        string
	exeDeleted bool // the executable's file has no links left
	cgroup     string
	ppid, uid  uint32 // uid: effective
	start      time.Time
	hasStat    bool // ppid and start were read
	hasUID     bool
}

// What readProcFacts reads: each costs a file or two.
type factSet uint8

const (
	factExe    factSet = 1 << iota // exe, exeDeleted
	factCgroup                     // cgroup
	factComm                       // comm
	factStat                       // ppid, start
	factUID                        // uid
	factsAll   = factExe | factCgroup | factComm | factStat | factUID
)

// readProcFacts reads the facts in what of process pid under procRoot
// ("/proc"). A fact that cannot be read (the process exited, porttrace
// may not look) is left at its zero value.
func readProcFacts(procRoot string, pid uint32, what factSet) procFacts {
	var f procFacts
	dir := procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
	if what&factExe != 0 {
		f.exe, f.exeDeleted = readExe(dir)
	}
	if what&factCgroup != 0 {
		if b, err := os.ReadFile(dir + "/cgroup"); err == nil {
			f.cgroup = cgroupPath(b)
		}
	}
	if what&factComm != 0 {
		if b, err := os.ReadFile(dir + "/comm"); err == nil {
			f.comm = strings.TrimSuffix(string(b), "\n")
		}
	}
	if what&(factStat|factUID) == 0 {
		return f
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return f
	}
	p, err := fs.Proc(int(pid))
	if err != nil {
		return f
	}
	if what&factStat != 0 {
		if st, err := p.Stat(); err == nil {
			f.ppid, f.hasStat = uint32(st.PPID), true
			if start, err := st.StartTime(); err == nil {
				f.start = time.Unix(0, int64(start*1e9))
			}
		}
	}
	if what&factUID != 0 {
		if status, err := p.NewStatus(); err == nil {
			f.uid, f.hasUID = uint32(status.UIDs[1]), true
		}
	}
	return f
}

// readExe reads a process's executable path and whether its file was
// deleted. The kernel appends " (deleted)" to the link of an unlinked
// file, but a file may also be named so: what decides is the link count
// of the file itself (stat follows /proc/PID/exe to it, deleted or not),
// and only then is the suffix taken off.
func readExe(dir string) (path string, deleted bool) {
	link, err := os.Readlink(dir + "/exe")
	if err != nil {
		return "", false
	}
	var st unix.Stat_t
	if unix.Stat(dir+"/exe", &st) == nil && st.Nlink == 0 {
		return strings.TrimSuffix(link, " (deleted)"), true
	}
	return link, false
}

// cgroupPath picks the cgroup v2 path ("0::/system.slice/x.service") out of
// /proc/PID/cgroup.
func cgroupPath(b []byte) string {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			return string(rest)
		}
	}
	return ""
}
