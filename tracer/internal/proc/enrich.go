package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// maxCached bounds each cache; past it, the cache (or a shard of the
// process cache) starts over.
const maxCached = 8192

// procShards is how many parts the process cache is split into, by pid, so
// that the stream's workers, each enriching a batch of its own, seldom
// take the same lock.
const procShards = 64

// procTTL is how long what /proc said about a process is trusted: long
// enough that a busy process costs one read a while, short enough that an
// exec shows soon.
const procTTL = 2 * time.Second

// Enricher adds what the kernel event does not carry: executable path,
// cgroup path (from the event's cgroup id where it can) and user name. Each process is read from /proc once per
// procTTL, or again when its main thread's name changes (an exec); the
// name of any other thread says nothing, since threads name themselves.
// A process that has already exited, or exec'd another program since the
// call, keeps its kernel fields and simply lacks these (readProc).
//
// It is safe for concurrent use: the stream enriches on several workers at
// once. The process cache is sharded by pid, each shard under its own lock
// and on its own cache line, and /proc is read outside any lock; the
// users, cgroups and workloads, few and read far more than written, are
// read without a lock.
type Enricher struct {
	procRoot string
	procs    [procShards]procShard
	users    sync.Map // uid → name
	userMu   sync.Mutex
	cgroups  cgroupIndex
	// workloads caches what each cgroup path says of its workload.
	workloads     sync.Map // path → workload.Identity
	workloadCount atomic.Int64
	// names, when set, names containers from their runtime's API.
	names *workload.Resolver

	// lookupUser is user.LookupId; tests replace it.
	lookupUser func(uid string) (*user.User, error)
	userRetry  map[uint32]time.Time // when a uid whose lookup failed may be tried again (under userMu)
}

type procShard struct {
	mu sync.Mutex
	m  map[uint32]procInfo
	_  cpu.CacheLinePad
}

type procInfo struct {
	comm   string // of the main thread, when known
	exe    string
	cgroup string
	read   time.Time
}

func NewEnricher() *Enricher { return NewEnricherAt("/proc") }

// NewEnricherAt reads the process facts under procRoot instead of /proc,
// and cgroup v2 under cgroup2Roots if any are given (tests, benchmarks).
func NewEnricherAt(procRoot string, cgroup2Roots ...string) *Enricher {
	if len(cgroup2Roots) == 0 {
		cgroup2Roots = defaultCgroup2Roots
	}
	en := &Enricher{procRoot: procRoot, cgroups: cgroupIndex{roots: cgroup2Roots},
		lookupUser: user.LookupId, userRetry: map[uint32]time.Time{}}
	for i := range en.procs {
		en.procs[i].m = map[uint32]procInfo{}
	}
	return en
}

func (en *Enricher) Enrich(ev *event.Event) {
	ev.User = en.User(ev.UID)
	p := en.proc(ev)
	ev.Exe, ev.Cgroup = p.exe, p.cgroup
	if path, ok := en.cgroups.path(ev.CgroupID, ev.Time); ok {
		ev.Cgroup = path
	}
	ev.Workload = en.Workload(ev.Cgroup)
	ev.Names, _ = en.names.NamesOf(ev.Workload)
}

// CgroupWorkload is the workload in cgroup id, from its path, and its
// names where the runtime has told them (without waiting for them).
func (en *Enricher) CgroupWorkload(id uint64, now time.Time) (workload.Identity, workload.Names) {
	path, ok := en.cgroups.path(id, now)
	if !ok {
		return workload.Identity{}, workload.Names{}
	}
	w := en.Workload(path)
	n, _ := en.names.NamesOf(w)
	return w, n
}

// NameContainers has Enrich name containers through r (nil: ids only).
// Call it before enriching.
func (en *Enricher) NameContainers(r *workload.Resolver) { en.names = r }

// Workload is what cgroup path p says of the workload in it.
func (en *Enricher) Workload(p string) workload.Identity {
	if p == "" {
		return workload.Identity{}
	}
	if w, ok := en.workloads.Load(p); ok {
		return w.(workload.Identity)
	}
	if en.workloadCount.Add(1) > maxCached {
		en.workloads.Clear()
		en.workloadCount.Store(1)
	}
	w := workload.FromCgroup(p)
	en.workloads.Store(p, w)
	return w
}

// MainComm is the name of ev's process's main thread (empty when the
// process is gone). Only --comm asks, so /proc/PID/comm is read here, when
// no event of the main thread has named it, not for every process.
func (en *Enricher) MainComm(ev *event.Event) string {
	p := en.proc(ev)
	if p.comm != "" {
		return p.comm
	}
	comm := ReadFacts(en.procRoot, ev.PID, FactComm).Comm
	s := &en.procs[ev.PID%procShards]
	s.mu.Lock()
	if q, ok := s.m[ev.PID]; ok && q.read.Equal(p.read) && q.comm == "" {
		q.comm = comm
		s.m[ev.PID] = q
	}
	s.mu.Unlock()
	return comm
}

// proc is what /proc says of ev's process, read again when stale. Two
// workers that find the same process stale at once both read it: the
// reads agree, and neither waits for the other's.
func (en *Enricher) proc(ev *event.Event) procInfo {
	s := &en.procs[ev.PID%procShards]
	s.mu.Lock()
	p, ok := s.m[ev.PID]
	s.mu.Unlock()
	if ok && ev.Time.Sub(p.read) <= procTTL && (ev.TID != ev.PID || p.comm == ev.Comm) {
		return p
	}
	p = en.readProc(ev)
	p.read = ev.Time
	if ev.TID == ev.PID {
		p.comm = ev.Comm
	}
	s.mu.Lock()
	if len(s.m) >= maxCached/procShards {
		clear(s.m)
	}
	s.m[ev.PID] = p
	s.mu.Unlock()
	return p
}

// readProc reads what /proc says of ev's process, if it is still the
// process that made the call. Between the call and this read the process
// may have exec'd another program, or exited and had its pid taken by
// another: its exe would then be the other program's. So the thread that
// made the call is looked at after the read. If it is there, it must
// still have the name the kernel put in the event: an exec renames it
// after the new program. If it is gone (it ended, or an exec in another
// thread ended it) or has not that name, the main thread must have it: most threads
// keep the process's name, and an exec'd program's main thread has its
// own. Else what was read is left out. An exec into a program of the same
// name, or a thread renamed back, is not told apart; a thread with a name
// of its own that ended before the read loses its exe: missing rather
// than another program's.
func (en *Enricher) readProc(ev *event.Event) procInfo {
	f := ReadFacts(en.procRoot, ev.PID, FactExe|FactCgroup)
	dir := fmt.Sprintf("%s/%d", en.procRoot, ev.PID)
	comm, err := os.ReadFile(fmt.Sprintf("%s/task/%d/comm", dir, ev.TID))
	if (err != nil || strings.TrimSuffix(string(comm), "\n") != ev.Comm) && ev.TID != ev.PID {
		// Gone, or on its way out (a thread exiting may answer ESRCH or
		// no name): the main thread tells whether the process exec'd.
		comm, err = os.ReadFile(dir + "/comm")
	}
	if err != nil || strings.TrimSuffix(string(comm), "\n") != ev.Comm {
		return procInfo{}
	}
	return procInfo{exe: f.Exe, cgroup: f.Cgroup}
}

// User names uid. A lookup that failed for want of a file descriptor or a
// readable /etc/passwd says nothing of the uid: the number stands for this
// event, is not cached, and the lookup is tried again a second later, not
// on every event of a storm. "No such User" is an answer: the number is
// cached.
func (en *Enricher) User(uid uint32) string {
	if name, ok := en.users.Load(uid); ok {
		return name.(string)
	}
	en.userMu.Lock()
	defer en.userMu.Unlock()
	if name, ok := en.users.Load(uid); ok { // looked up while this waited
		return name.(string)
	}
	id := strconv.FormatUint(uint64(uid), 10)
	now := time.Now()
	if now.Before(en.userRetry[uid]) {
		return id
	}
	name := id
	u, err := en.lookupUser(id)
	if err == nil {
		name = u.Username
	} else if _, unknown := errors.AsType[user.UnknownUserIdError](err); !unknown {
		if len(en.userRetry) >= maxCached {
			clear(en.userRetry)
		}
		en.userRetry[uid] = now.Add(time.Second)
		return id
	}
	delete(en.userRetry, uid)
	en.users.Store(uid, name)
	return name
}

// defaultCgroup2Roots are where cgroup v2 is mounted: alone, or beside v1
// ("hybrid", systemd before 247 and some distributions since).
var defaultCgroup2Roots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// cgroupIndex maps cgroup v2 ids to paths. The id in an event is the
// cgroup the task was in when it made the call (bpf_get_current_cgroup_id,
// 4.18+), and it is the inode number of that cgroup's directory. So the
// path does not depend on /proc: a command that binds and exits at once,
// or moves to another cgroup, is reported in the cgroup it called from.
// A cgroup created since the last scan is found by scanning again, at
// most once a second; one already removed is not found, and the /proc
// path (or none) stands.
//
// Lookups take no lock: a scan makes a new index and swaps it in whole.
type cgroupIndex struct {
	roots   []string
	mu      sync.Mutex // one scan at a time
	paths   atomic.Pointer[map[uint64]string]
	scanned atomic.Int64 // the event time of the last scan, in ns
}

func (c *cgroupIndex) path(id uint64, now time.Time) (string, bool) {
	if id == 0 || len(c.roots) == 0 {
		return "", false
	}
	paths := c.paths.Load()
	if paths != nil {
		if p, ok := (*paths)[id]; ok {
			return p, true
		}
		if now.UnixNano()-c.scanned.Load() < int64(time.Second) {
			return "", false
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.paths.Load(); cur != paths { // another worker scanned while this waited
		p, ok := (*cur)[id]
		return p, ok
	}
	fresh := c.scan()
	c.paths.Store(&fresh)
	c.scanned.Store(now.UnixNano())
	p, ok := fresh[id]
	return p, ok
}

// Cgroup2Root is where cgroup v2 is mounted: the first of roots (by
// default /sys/fs/cgroup, then the hybrid layout's /sys/fs/cgroup/unified)
// that is a cgroup2 file system.
func Cgroup2Root(roots ...string) (string, bool) {
	if len(roots) == 0 {
		roots = defaultCgroup2Roots
	}
	for _, root := range roots {
		var st unix.Statfs_t
		if unix.Statfs(root, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return root, true
		}
	}
	return "", false
}

// scan indexes every directory of the cgroup v2 mount.
func (c *cgroupIndex) scan() map[uint64]string {
	paths := map[uint64]string{}
	if root, ok := Cgroup2Root(c.roots...); ok {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil // a cgroup removed while walking
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				rel := strings.TrimPrefix(path, root)
				if rel == "" {
					rel = "/"
				}
				paths[st.Ino] = rel
			}
			return nil
		})
	}
	return paths
}

// CgroupByPath finds the cgroup v2 directory p names, as events print it
// (relative to the cgroup v2 root: "/system.slice/ssh.service") or as a
// path in the file system ("/sys/fs/cgroup/system.slice/ssh.service"), and
// returns its id (the directory's inode, as the kernel's events carry it).
func CgroupByPath(p string, roots ...string) (uint64, error) {
	root, ok := Cgroup2Root(roots...)
	if !ok {
		return 0, errors.New("no cgroup v2 file system is mounted (at /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	}
	dir := filepath.Join(root, p)
	if rel, err := filepath.Rel(root, filepath.Clean(p)); err == nil && !strings.HasPrefix(rel, "..") && filepath.IsAbs(p) {
		dir = filepath.Clean(p) // already under the root
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("no cgroup %s under %s", p, root)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup v2 directory (cgroup v2 is at %s)", dir, root)
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("no cgroup %s under %s", p, root)
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}
