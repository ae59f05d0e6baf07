package tracer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/stream"
)

// A loss is reported where the user looks: a {"event":"lost"} line in the
// JSON stream, a line on stderr and the count in the summary; and what was
// delivered and what was lost add up. The output is held up while the
// binds are made, more than the merge and the stream's pipeline hold, so
// the small ring buffer overflows.
func TestKernelRunLost(t *testing.T) {
	const n = 5000
	ns := tracer.NewNetns(t)
	cfg := stream.DefaultConfig()
	cfg.Output = "json"
	cfg.PID = uint32(os.Getpid())
	cfg.Events = tracer.KindsOf(event.KindBind)
	cfg.Backend = tracer.Backend(t)
	cfg.RingBufferSize = 4096
	out := &heldWriter{first: make(chan struct{}), release: make(chan struct{})}
	var stderr strings.Builder
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, cfg, out, &stderr) }()
	bind := func(port int) { bindUDP(t, ns, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))) }
	// Bind until the first event reaches the output (Run attaches in the
	// background); the output then stays blocked.
	bindUntilFirst(t, bind, out.first, done, cfg.Backend)
	for i := range n {
		bind(21000 + i)
	}
	close(out.release)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	delivered, lost := 0, -1
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev struct {
			Event string `json:"event"`
			Port  int    `json:"local_port"`
			Count int    `json:"count"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		switch {
		case ev.Event == "lost":
			if lost != -1 {
				t.Errorf("a second lost line: %s", line)
			}
			lost = ev.Count
		case ev.Port >= 21000 && ev.Port < 21000+n:
			delivered++
		}
	}
	if lost <= 0 || delivered+lost != n {
		t.Fatalf("delivered %d + lost %d, want a loss and a sum of %d", delivered, lost, n)
	}
	for _, want := range []string{
		fmt.Sprintf("porttrace: %d events lost: the ring buffer", lost),
		fmt.Sprintf(", %d lost\n", lost),
		// The output was held: the advice names it, with what to do instead.
		"porttrace: the output takes events more slowly than they come (",
		"--sample N sends one in N",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	// With a ring a CPU, the line says which were full, and how many each
	// lost: together, all of them.
	if m := regexp.MustCompile(`lost: the ring buffers of (.*) were full`).FindStringSubmatch(stderr.String()); m != nil && !strings.Contains(m[1], "more") {
		sum := 0
		for _, c := range regexp.MustCompile(`CPU \d+ \((\d+)\)`).FindAllStringSubmatch(m[1], -1) {
			n, _ := strconv.Atoi(c[1])
			sum += n
		}
		if sum != lost {
			t.Errorf("the CPUs named lost %d, want %d: %s", sum, lost, m[0])
		}
	}
}

// heldWriter blocks its first Write until release is closed, and says on
// first when that Write began.
type heldWriter struct {
	tracer.SyncBuilder
	first, release chan struct{}
	once           sync.Once
}

func (w *heldWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.first)
		<-w.release
	})
	return w.SyncBuilder.Write(p)
}

// checkJSONBind checks every field of a JSON bind event made by this
// process on 127.0.0.1 over UDP, enrichment included, against what the
// process knows of itself.
func checkJSONBind(t *testing.T, line string, ns *tracer.NS, threads map[int]tracer.Thread, b event.Backend) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["time"]))
	if err != nil || time.Since(ts) < 0 || time.Since(ts) > time.Minute {
		t.Errorf("time %v: %v", got["time"], err)
	}
	port := int(got["local_port"].(float64))
	th, ok := threads[port]
	if !ok {
		t.Fatalf("a bind of port %d, which the test did not make: %s", port, line)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	// Without a passwd entry (a bare VM initramfs) the user is its number.
	name := fmt.Sprint(os.Getuid())
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	cgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	backend := b.String()
	if b == event.BackendAuto {
		backend = fmt.Sprint(got["backend"]) // checked against the others below
	}
	want := map[string]any{
		"time": got["time"], "event": "bind", "result": "ok",
		"pid": os.Getpid(), "tid": th.TID, "ppid": os.Getppid(), "uid": os.Getuid(), "user": name,
		"comm": th.Comm, "exe": exe, "exe_deleted": false, "cgroup": proc.CgroupPath(cgroup), "cgroup_id": got["cgroup_id"],
		"netns": ns.Inode, "proto": "udp", "family": "ipv4", "local_addr": "127.0.0.1", "local_port": port, "inode": th.Inode,
		"sock_opts": []any{}, "ephemeral": false, "port_class": "registered", "privileged": false, "backend": backend,
	}
	if id, _ := got["cgroup_id"].(float64); id == 0 {
		t.Errorf("cgroup_id %v", got["cgroup_id"])
	}
	if backend != "fentry" && backend != "kprobe" && backend != "tracepoint" {
		t.Errorf("backend %q", backend)
	}
	wantJSON, _ := json.Marshal(want)
	var norm map[string]any
	_ = json.Unmarshal(wantJSON, &norm)
	if !reflect.DeepEqual(got, norm) {
		t.Errorf("got  %s\nwant %s", line, wantJSON)
	}
}

// The command's loop end to end: JSON lines out, --count stops it, the
// summary goes to stderr.
func TestKernelRunJSON(t *testing.T) {
	ns := tracer.NewNetns(t)
	cfg := stream.DefaultConfig()
	cfg.Output = "json"
	cfg.PID = uint32(os.Getpid())
	cfg.Count = 3
	cfg.Events = tracer.KindsOf(event.KindBind)
	cfg.Backend = tracer.Backend(t)
	var stdout, stderr strings.Builder
	done := make(chan error, 1)
	go func() { done <- stream.Run(t.Context(), cfg, &stdout, &stderr) }()
	// Bind until Run has seen three (it attaches in the background).
	deadline := time.Now().Add(10 * time.Second)
	threads := map[int]tracer.Thread{} // by port
	for port := 20000; ; port++ {
		ns.Run(t, func() {
			th := tracer.Self()
			fd := tracer.NewSocket(t, tracer.UDP4)
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				t.Fatal(err)
			}
			th.Inode = st.Ino
			threads[port] = th
			if err := unix.Bind(fd, tracer.Sockaddr(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))); err != nil {
				t.Fatal(err)
			}
		})
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, cfg.Backend, err)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 3 {
				t.Fatalf("got %d lines, want 3:\n%s", len(lines), stdout.String())
			}
			for _, l := range lines {
				checkJSONBind(t, l, ns, threads, cfg.Backend)
			}
			if !strings.Contains(stderr.String(), "porttrace: 3 events (bind 3, listen 0, connect 0, accept 0), 0 denied, 0 failed, 0 lost") {
				t.Errorf("summary missing from stderr:\n%s", stderr.String())
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not stop after 3 events; stdout:\n%s", stdout.String())
		}
	}
}

// Told to stop while nobody reads its output, the stream stops at once,
// says so, and counts the events it could not write.
func TestKernelStreamStopWhileOutputStalled(t *testing.T) {
	ns := tracer.NewNetns(t)
	stderr := stopStalled(t, ns, func(ctx context.Context, out, stderr io.Writer) error {
		cfg := stream.DefaultConfig()
		cfg.Output = "json"
		cfg.PID = uint32(os.Getpid())
		cfg.Backend = tracer.Backend(t)
		return stream.Run(ctx, cfg, out, stderr)
	})
	m := regexp.MustCompile(`porttrace: stopped while the output was not being read: (\d+) events? not written`).FindStringSubmatch(stderr)
	if m == nil || m[1] == "0" {
		t.Errorf("the stream's summary does not count the events it could not write:\n%s", stderr)
	}
}

// bindUDP binds a UDP socket to addr in ns, and closes it.
func bindUDP(t *testing.T, ns *tracer.NS, addr netip.AddrPort) {
	ns.Run(t, func() {
		fd := tracer.NewSocket(t, tracer.UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, tracer.Sockaddr(addr)); err != nil {
			t.Fatal(err)
		}
	})
}

// bindUntilFirst binds ports from 20000 up until a stream that attaches in
// the background (done says if it ended) writes its first event.
func bindUntilFirst(t *testing.T, bind func(port int), first <-chan struct{}, done <-chan error, b event.Backend) {
	t.Helper()
	for port := 20000; ; port++ {
		bind(port)
		select {
		case <-first:
			return
		case err := <-done:
			tracer.SkipUnsupported(t, b, err)
			t.Fatalf("the stream ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
