// Package proc is what porttrace knows of processes beyond the kernel's
// event: the one reader of /proc (Facts: executable and whether it was
// deleted, cgroup, parent, user, start time) and the per-process cache
// the stream enriches its events from (Enricher), with user names and
// cgroup paths by the cgroup id in the event.
package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Facts is what /proc says of one process. Every view that names a
// process (the stream's enrichment, ports and who holders, who --wait)
// reads it here, so they agree on what a deleted executable or a cgroup
// path is.
type Facts struct {
	Comm       string
	Exe        string
	ExeDeleted bool // the executable's file has no links left
	Cgroup     string
	PPID       uint32
	UID        uint32 // effective
	Start      time.Time
	HasStat    bool // ppid and start were read
	HasUID     bool
}

// What readProcFacts reads: each costs a file or two.
type What uint8

const (
	FactExe    What = 1 << iota // exe, exeDeleted
	FactCgroup                  // cgroup
	FactComm                    // comm
	FactStat                    // ppid, start
	FactUID                     // uid
	FactsAll   = FactExe | FactCgroup | FactComm | FactStat | FactUID
)

// ReadFacts reads the facts in what of process pid under procRoot
// ("/proc"). A fact that cannot be read (the process exited, porttrace
// may not look) is left at its zero value.
func ReadFacts(procRoot string, pid uint32, what What) Facts {
	var f Facts
	dir := procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
	if what&FactExe != 0 {
		f.Exe, f.ExeDeleted = readExe(dir)
	}
	if what&FactCgroup != 0 {
		if b, err := os.ReadFile(dir + "/cgroup"); err == nil {
			f.Cgroup = CgroupPath(b)
		}
	}
	if what&FactComm != 0 {
		if b, err := os.ReadFile(dir + "/comm"); err == nil {
			f.Comm = strings.TrimSuffix(string(b), "\n")
		}
	}
	if what&FactStat != 0 {
		if b, err := os.ReadFile(dir + "/stat"); err == nil {
			var ticks uint64
			if f.PPID, ticks, f.HasStat = parseStat(b); f.HasStat {
				if b, err := os.ReadFile(procRoot + "/stat"); err == nil {
					if boot, ok := parseBootTime(b); ok {
						f.Start, _ = startTime(boot, ticks)
					}
				}
			}
		}
	}
	if what&FactUID != 0 {
		if b, err := os.ReadFile(dir + "/status"); err == nil {
			f.UID, f.HasUID = parseStatusUID(b)
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

// CgroupPath picks the cgroup v2 path ("0::/system.slice/x.service") out of
// /proc/PID/cgroup.
func CgroupPath(b []byte) string {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			return string(rest)
		}
	}
	return ""
}
