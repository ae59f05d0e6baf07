package workload

import (
	"context"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Selector picks workloads: --container (ids, or a prefix of one, and
// names), --pod (names and UIDs), --k8s-namespace. A container is picked
// when it matches one value of every kind given.
type Selector struct {
	Containers []string
	Pods       []string
	Namespaces []string
}

// Empty reports whether no workload is asked for.
func (s Selector) Empty() bool {
	return len(s.Containers) == 0 && len(s.Pods) == 0 && len(s.Namespaces) == 0
}

// NeedsNames reports whether matching takes the runtime's names: any
// value that is not a container id prefix or a pod UID.
func (s Selector) NeedsNames() bool {
	if len(s.Namespaces) > 0 {
		return true
	}
	for _, c := range s.Containers {
		if !isHexPrefix(c) {
			return true
		}
	}
	for _, p := range s.Pods {
		if !isUID(p) {
			return true
		}
	}
	return false
}

// String is the selector as the flags gave it, for messages.
func (s Selector) String() string {
	var parts []string
	for _, f := range []struct {
		flag   string
		values []string
	}{{"--container", s.Containers}, {"--pod", s.Pods}, {"--k8s-namespace", s.Namespaces}} {
		for _, v := range f.values {
			parts = append(parts, f.flag+" "+v)
		}
	}
	return strings.Join(parts, " ")
}

// matches reports whether the container id names n picks.
func (s Selector) matches(id Identity, n Names) bool {
	if len(s.Containers) > 0 && !slices.ContainsFunc(s.Containers, func(c string) bool {
		return c == n.Container || isHexPrefix(c) && strings.HasPrefix(id.ContainerID, c)
	}) {
		return false
	}
	if len(s.Pods) > 0 && !slices.ContainsFunc(s.Pods, func(p string) bool {
		return p == id.PodUID || n.Pod != "" && p == n.Pod
	}) {
		return false
	}
	if len(s.Namespaces) > 0 && (n.Pod == "" || !slices.Contains(s.Namespaces, n.Namespace)) {
		return false
	}
	return true
}

// isHexPrefix: 4 to 64 lowercase hex digits, how container ids are
// written short.
func isHexPrefix(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

// ScanEvery is how often Watch looks for workloads that started.
const ScanEvery = 250 * time.Millisecond

// Watcher keeps the verdicts on cgroups of a scope: the cgroups of the
// workloads its selector picks are in (a container's own cgroup when
// containers are picked, else its pod's, so that the pod's later
// containers are in too), every other one is out.
type Watcher struct {
	root  string
	sel   Selector
	names *Resolver
	// set gives the kernel a verdict on a cgroup: in (with everything
	// below it) or out.
	set func(id uint64, in bool) error

	mu      sync.Mutex
	verdict map[uint64]bool // by cgroup id, those given to set
	inPaths []string        // the cgroups in scope, relative to root

	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the scans have stopped
}

// Watch finds the cgroups of the workloads sel picks under the cgroup v2
// root: those there now, before it returns (found says how many), and
// those that appear later, in the background every ScanEvery until ctx
// ends or Stop is called. A call from a cgroup that no scan has judged
// yet is judged by Judge, so none is lost to the time between scans.
// names answers for names (nil: ids and UIDs only).
func Watch(ctx context.Context, root string, sel Selector, names *Resolver, set func(id uint64, in bool) error) (*Watcher, int, error) {
	w := &Watcher{root: root, sel: sel, names: names, set: set, verdict: map[uint64]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	found, err := w.scan(ctx)
	if err != nil {
		return nil, found, err
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(ScanEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.stop:
				return
			case <-t.C:
				_, _ = w.scan(ctx) // a failed set is tried again at the next scan
			}
		}
	}()
	return w, found, nil
}

// Stop ends the scans and waits for the one under way: after it, set is
// not called again (from scans; Judge still may).
func (w *Watcher) Stop() {
	if w == nil {
		return
	}
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// scan walks the cgroup tree once and judges the container cgroups it
// has not judged, giving the kernel the verdicts of those in scope.
func (w *Watcher) scan(ctx context.Context) (int, error) {
	n := 0
	var firstErr error
	_ = filepath.WalkDir(w.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed while walking
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		ino := info.Sys().(*syscall.Stat_t).Ino
		rel := relPath(w.root, path)
		if FromCgroup(rel).ContainerID == "" {
			return nil // not a container: judged by its containers, or when it calls
		}
		in, added, err := w.judge(ctx, ino, rel)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if in && added {
			n++
		}
		return nil
	})
	return n, firstErr
}

// relPath is the directory path under the cgroup v2 root as events name it:
// "/kubepods.slice/...".
func relPath(root, path string) string {
	return "/" + strings.TrimPrefix(strings.TrimPrefix(path, root), "/")
}

// Judge says whether the calls of cgroup id, at path p relative to the
// cgroup v2 root (as events' cgroup field has it), are in scope, and
// gives the kernel the verdict, so that its next call is decided there.
// The first call of a container that no scan has seen yet may wait for
// its names (askTimeout at most). Without p, the cgroup is looked for by
// its id; one that is gone is out, and not remembered.
func (w *Watcher) Judge(ctx context.Context, id uint64, p string) bool {
	w.mu.Lock()
	v, ok := w.verdict[id]
	w.mu.Unlock()
	if ok {
		return v
	}
	if p == "" {
		if p = w.find(id); p == "" {
			return false
		}
	}
	in, _, _ := w.judge(ctx, id, p)
	return in
}

// find walks the cgroup tree for the cgroup whose id is id.
func (w *Watcher) find(id uint64) string {
	var found string
	_ = filepath.WalkDir(w.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Sys().(*syscall.Stat_t).Ino == id {
			found = relPath(w.root, path)
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// judge decides on cgroup id at rel once; added says the decision is new
// and put a cgroup in scope.
func (w *Watcher) judge(ctx context.Context, id uint64, rel string) (in, added bool, err error) {
	w.mu.Lock()
	if v, ok := w.verdict[id]; ok {
		w.mu.Unlock()
		return v, false, nil
	}
	for _, p := range w.inPaths {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			w.mu.Unlock()
			return true, false, w.decide(id, rel, true)
		}
	}
	w.mu.Unlock()

	wl := FromCgroup(rel)
	if wl.ContainerID == "" {
		return false, false, w.decide(id, rel, false)
	}
	var names Names
	if w.sel.NeedsNames() {
		wctx, cancel := context.WithTimeout(ctx, askTimeout)
		var ok bool
		names, ok = w.names.WaitOf(wctx, wl)
		cancel()
		if !ok && w.names.Active() && !w.names.Unknown(wl.ContainerID) {
			return false, false, nil // the runtime did not answer: judged again at its next call or scan
		}
	}
	if !w.sel.matches(wl, names) {
		return false, false, w.decide(id, rel, false)
	}
	if len(w.sel.Containers) == 0 && wl.PodUID != "" {
		// A pod is picked: its cgroup goes in scope, and with it the
		// pod's containers, this one and those to come.
		pod := podDir(rel)
		if podID, err := statIno(filepath.Join(w.root, pod)); err == nil {
			if err := w.decide(podID, pod, true); err != nil {
				return true, false, err
			}
		}
	}
	return true, true, w.decide(id, rel, true)
}

// decide records a verdict and gives it to the kernel.
func (w *Watcher) decide(id uint64, rel string, in bool) error {
	if err := w.set(id, in); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.verdict[id]; !ok && in {
		w.inPaths = append(w.inPaths, rel)
	}
	w.verdict[id] = in
	return nil
}

// podDir is the pod's cgroup above container cgroup path: the nearest
// directory whose name holds the pod UID.
func podDir(path string) string {
	for dir := filepath.Dir(path); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if _, ok := podUID(filepath.Base(dir)); ok {
			return dir
		}
	}
	return path
}

func statIno(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// AnyContainer reports whether a container's cgroup is under root now: a
// host that runs containers gets a CONTAINER column in the stream.
func AnyContainer(root string) bool {
	found := false
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && FromCgroup(relPath(root, path)).ContainerID != "" {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
