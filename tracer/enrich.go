package tracer

import (
	"bytes"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// maxCached bounds the per-process cache; past it, the cache starts over.
const maxCached = 8192

// procTTL is how long what /proc said about a process is trusted: long
// enough that a busy process costs one read a while, short enough that an
// exec shows soon.
const procTTL = 2 * time.Second

// enricher adds what the kernel event does not carry: executable path,
// cgroup path and user name. Each process is read from /proc once per
// procTTL, or again when its main thread's name changes (an exec); the
// name of any other thread says nothing, since threads name themselves.
// A process that has already exited keeps its kernel fields and simply
// lacks these.
type enricher struct {
	procRoot string
	procs    map[uint32]*procInfo
	users    map[uint32]string
}

type procInfo struct {
	comm   string // of the main thread, when known
	exe    string
	cgroup string
	read   time.Time
}

func newEnricher() *enricher {
	return &enricher{procRoot: "/proc", procs: map[uint32]*procInfo{}, users: map[uint32]string{}}
}

func (en *enricher) enrich(ev *Event) {
	ev.User = en.user(ev.UID)
	p := en.procs[ev.PID]
	stale := p == nil || ev.Time.Sub(p.read) > procTTL || (ev.TID == ev.PID && p.comm != ev.Comm)
	if stale {
		if len(en.procs) >= maxCached {
			clear(en.procs)
		}
		p = en.readProc(ev.PID)
		p.read = ev.Time
		if ev.TID == ev.PID {
			p.comm = ev.Comm
		}
		en.procs[ev.PID] = p
	}
	ev.Exe, ev.Cgroup = p.exe, p.cgroup
}

func (en *enricher) readProc(pid uint32) *procInfo {
	dir := en.procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
	p := &procInfo{}
	if exe, err := os.Readlink(dir + "/exe"); err == nil {
		p.exe = strings.TrimSuffix(exe, " (deleted)")
	}
	if b, err := os.ReadFile(dir + "/cgroup"); err == nil {
		p.cgroup = cgroupPath(b)
	}
	return p
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

func (en *enricher) user(uid uint32) string {
	if name, ok := en.users[uid]; ok {
		return name
	}
	id := strconv.FormatUint(uint64(uid), 10)
	name := id
	if u, err := user.LookupId(id); err == nil {
		name = u.Username
	}
	en.users[uid] = name
	return name
}
