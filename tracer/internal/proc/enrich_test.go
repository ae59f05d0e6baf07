package proc

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
)

// The enricher reads /proc once per process: again only after procTTL or
// when the main thread's name changes (an exec), not when another thread
// has a name of its own.
func TestEnricherCache(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	setExe := func(exe string) {
		os.Remove(filepath.Join(dir, "exe"))
		if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	setExe("/usr/bin/server")
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::/system.slice/server.service\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	setThread(t, dir, 42, "server")
	setThread(t, dir, 43, "worker-1")
	en := NewEnricher()
	en.procRoot = root
	t0 := time.Unix(1000, 0)
	ev := event.Event{PID: 42, TID: 42, Comm: "server", Time: t0}
	en.Enrich(&ev)
	if ev.Exe != "/usr/bin/server" || ev.Cgroup != "/system.slice/server.service" {
		t.Fatalf("exe %q cgroup %q", ev.Exe, ev.Cgroup)
	}
	setExe("/usr/bin/other")
	setThread(t, dir, 42, "other")
	for _, tc := range []struct {
		name string
		ev   event.Event
		want string
	}{
		{"another thread with its own name: cached", event.Event{PID: 42, TID: 43, Comm: "worker-1", Time: t0.Add(time.Second)}, "/usr/bin/server"},
		{"within the TTL: cached", event.Event{PID: 42, TID: 42, Comm: "server", Time: t0.Add(time.Second)}, "/usr/bin/server"},
		{"main thread renamed (exec): read again", event.Event{PID: 42, TID: 42, Comm: "other", Time: t0.Add(time.Second)}, "/usr/bin/other"},
	} {
		ev := tc.ev
		en.Enrich(&ev)
		if ev.Exe != tc.want {
			t.Errorf("%s: exe %q, want %q", tc.name, ev.Exe, tc.want)
		}
	}
	setExe("/usr/bin/third")
	ev = event.Event{PID: 42, TID: 43, Comm: "worker-1", Time: t0.Add(time.Second + procTTL + time.Millisecond)}
	en.Enrich(&ev)
	if ev.Exe != "/usr/bin/third" {
		t.Errorf("after the TTL: exe %q, want it read again", ev.Exe)
	}
	gone := event.Event{PID: 99, TID: 99, Comm: "gone", Time: t0}
	en.Enrich(&gone)
	if gone.Exe != "" || gone.Comm != "gone" {
		t.Errorf("an exited process: exe %q comm %q", gone.Exe, gone.Comm)
	}
}

// setThread makes thread tid of the process at dir, named comm.
func setThread(t *testing.T, dir string, tid int, comm string) {
	t.Helper()
	task := filepath.Join(dir, "task", strconv.Itoa(tid))
	if err := os.MkdirAll(task, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(task, "comm"), []byte(comm+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// What /proc says of a process is kept only if the thread that made the
// call is still there under the name the event gives it, or, gone, the
// main thread has that name: otherwise the process has exec'd another
// program since (the thread is renamed after it), or exited and its pid
// is another's, and its exe is left out rather than another program's
// given.
func TestEnricherProcessChangedSinceEvent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		threads map[int]string // of pid 42 when /proc is read
		ev      event.Event
		want    string
	}{
		{"the main thread, as at the call", map[int]string{42: "server"}, event.Event{PID: 42, TID: 42, Comm: "server"}, "/usr/bin/sleep"},
		{"another thread, as at the call", map[int]string{42: "server", 43: "worker"}, event.Event{PID: 42, TID: 43, Comm: "worker"}, "/usr/bin/sleep"},
		{"exec'd since: the thread renamed", map[int]string{42: "sleep"}, event.Event{PID: 42, TID: 42, Comm: "server"}, ""},
		{"exec'd from another thread: the caller gone", map[int]string{42: "sleep"}, event.Event{PID: 42, TID: 43, Comm: "worker"}, ""},
		{"exited, the pid another's", map[int]string{42: "bash"}, event.Event{PID: 42, TID: 42, Comm: "server"}, ""},
		{"another thread that ended, named as the process", map[int]string{42: "server"}, event.Event{PID: 42, TID: 43, Comm: "server"}, "/usr/bin/sleep"},
		{"another thread that ended, named otherwise: left out", map[int]string{42: "server"}, event.Event{PID: 42, TID: 43, Comm: "worker"}, ""},
		{"exited, nothing on the pid", nil, event.Event{PID: 42, TID: 42, Comm: "server"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "42")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.threads != nil {
				if err := os.Symlink("/usr/bin/sleep", filepath.Join(dir, "exe")); err != nil {
					t.Fatal(err)
				}
			}
			for tid, comm := range tc.threads {
				setThread(t, dir, tid, comm)
			}
			if main, ok := tc.threads[42]; ok {
				if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(main+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			en := NewEnricherAt(root)
			ev := tc.ev
			en.Enrich(&ev)
			if ev.Exe != tc.want {
				t.Errorf("exe %q, want %q", ev.Exe, tc.want)
			}
		})
	}
}

// --comm asks the enricher for the process's name when a worker thread,
// named otherwise, made the call.
func TestEnricherMainComm(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "comm"), []byte("python3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	en := NewEnricher()
	en.procRoot = root
	worker := event.Event{PID: 42, TID: 43, Comm: "tokio-runtime-w", Time: time.Unix(1000, 0)}
	if got := en.MainComm(&worker); got != "python3" {
		t.Errorf("mainComm = %q, want python3", got)
	}
	gone := event.Event{PID: 99, TID: 100, Comm: "worker", Time: time.Unix(1000, 0)}
	if got := en.MainComm(&gone); got != "" {
		t.Errorf("mainComm of an exited process = %q, want empty", got)
	}
}

// A user lookup that failed for want of descriptors gives the number for
// that event only; once /etc/passwd can be read the name is given and
// cached. "No such user" is an answer and is cached. Lookups are retried at
// most once a second.
func TestEnricherUser(t *testing.T) {
	emfile := &os.PathError{Op: "open", Path: "/etc/passwd", Err: syscall.EMFILE}
	root := &user.User{Uid: "0", Username: "root"}
	type result struct {
		u   *user.User
		err error
	}
	type step struct {
		later   bool   // a second has passed since the previous event
		want    string // user of the event
		lookups int    // lookups made so far
	}
	for _, tc := range []struct {
		name    string
		uid     uint32
		results []result // of successive lookups
		steps   []step
	}{
		{"found: cached", 0, []result{{root, nil}}, []step{{false, "root", 1}, {true, "root", 1}}},
		{"out of descriptors, then freed", 0, []result{{nil, emfile}, {root, nil}},
			[]step{{false, "0", 1}, {false, "0", 1}, {true, "root", 2}, {true, "root", 2}}},
		{"no such user: the number is cached", 4242, []result{{nil, user.UnknownUserIdError(4242)}},
			[]step{{false, "4242", 1}, {true, "4242", 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			en := NewEnricher()
			lookups := 0
			en.lookupUser = func(uid string) (*user.User, error) {
				r := tc.results[min(lookups, len(tc.results)-1)]
				lookups++
				return r.u, r.err
			}
			for i, s := range tc.steps {
				if s.later {
					for uid := range en.userRetry {
						en.userRetry[uid] = time.Time{}
					}
				}
				if got := en.User(tc.uid); got != s.want || lookups != s.lookups {
					t.Errorf("event %d: user %q after %d lookups, want %q after %d", i, got, lookups, s.want, s.lookups)
				}
			}
		})
	}
}

// The stream's workers enrich at once (run with -race, as make test does):
// each event gets its own process's facts and user, whichever worker read
// them into whichever shard, and each process is cached once.
func TestEnricherConcurrent(t *testing.T) {
	root := t.TempDir()
	const procs, workers, rounds = 200, 8, 50
	for pid := 1000; pid < 1000+procs; pid++ {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(fmt.Sprintf("/usr/bin/server-%d", pid), filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
		setThread(t, dir, pid, "server")
	}
	en := NewEnricherAt(root, t.TempDir())
	en.lookupUser = func(uid string) (*user.User, error) { return &user.User{Username: "u" + uid}, nil }
	t0 := time.Unix(1000, 0)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for r := range rounds {
				for i := range procs {
					pid := uint32(1000 + (i+w*31)%procs)
					ev := event.Event{PID: pid, TID: pid, UID: pid % 3, Comm: "server", Time: t0.Add(time.Duration(r) * time.Millisecond)}
					en.Enrich(&ev)
					if want := fmt.Sprintf("/usr/bin/server-%d", pid); ev.Exe != want || ev.User != fmt.Sprintf("u%d", pid%3) {
						errs <- fmt.Errorf("pid %d: exe %q user %q, want %q and u%d", pid, ev.Exe, ev.User, want, pid%3)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	cached := 0
	for i := range en.procs {
		cached += len(en.procs[i].m)
	}
	if cached != procs {
		t.Errorf("%d processes cached, want %d", cached, procs)
	}
}
