package faults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// The helpers below enter namespaces and exec on this thread.
	runtime.LockOSThread()
	if name := os.Getenv("PORTTRACE_FAULT_HELPER"); name != "" {
		os.Exit(helperMain(name))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fault test: runs porttrace, which needs root")
	}
}

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

// backend is the --backend the tests run porttrace with:
// PORTTRACE_BACKEND, else tracepoint, which every kernel porttrace runs on
// has, and which adds nothing to tracefs's kprobe_events, which a test of
// ./tracer, run beside these by go test ./..., counts across the machine.
func backend() string {
	if b := os.Getenv("PORTTRACE_BACKEND"); b != "" && b != "auto" {
		return b
	}
	return "tracepoint"
}

// porttraceBin builds the command once per test binary.
func porttraceBin(t *testing.T) string {
	t.Helper()
	needRoot(t)
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "porttrace-faults-"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "porttrace"), "../cmd/porttrace").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "porttrace")
}

// run is one porttrace process: its JSON lines as they come, its stderr.
type run struct {
	cmd    *exec.Cmd
	lines  chan map[string]any
	stderr syncBuffer
	ready  chan struct{}
	done   chan struct{}
	err    error // of Wait, once done is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readyWriter closes ready at the first line porttrace writes to stderr:
// once attached, it says with which backend it traces.
type readyWriter struct {
	r    *run
	once sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	n, err := w.r.stderr.Write(p)
	if strings.Contains(w.r.stderr.String(), "\n") {
		w.once.Do(func() { close(w.r.ready) })
	}
	return n, err
}

// start runs cmd (porttrace with -o json or its like), decoding stdout
// line by line; the test's end kills it if it still runs.
func start(t *testing.T, cmd *exec.Cmd) *run {
	t.Helper()
	r := &run{cmd: cmd, lines: make(chan map[string]any, 1<<16), ready: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &readyWriter{r: r}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				r.lines <- m
			} else {
				r.lines <- map[string]any{"unparsed": sc.Text()}
			}
		}
		io.Copy(io.Discard, out)
		r.err = cmd.Wait()
		close(r.lines)
		close(r.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.done
	})
	return r
}

// waitReady waits for porttrace's first line on stderr: it has attached.
func (r *run) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.ready:
	case <-r.done:
		t.Fatalf("porttrace ended before it attached: %v: %s", r.err, r.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("porttrace not attached after 60s: %s", r.stderr.String())
	}
}

// wait waits for the process to end and returns its exit status.
func (r *run) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		r.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, on stderr
		<-r.done
		t.Fatalf("porttrace still running after %s; stderr: %s", within, r.stderr.String())
	}
	return r.cmd.ProcessState.ExitCode()
}

// drain returns every JSON line porttrace wrote, once it has ended.
func (r *run) drain() []map[string]any {
	var all []map[string]any
	for m := range r.lines {
		all = append(all, m)
	}
	return all
}

// freePorts finds n TCP ports free on 127.0.0.1 now, below the
// ephemeral range (ip_local_port_range): no other process on the machine
// gets one of them from the kernel between this look and the test's bind,
// as it could a port the kernel chose.
func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	if low < 12000 {
		t.Skipf("ip_local_port_range starts at %d: no room below it", low)
	}
	var ports []uint16
	seen := map[uint16]bool{}
	for tries := 0; len(ports) < n && tries < 100*n; tries++ {
		p := uint16(low - 10000 + rand.IntN(10000))
		if !seen[p] && bind(p) == nil {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	if len(ports) < n {
		t.Fatalf("found %d free ports of %d", len(ports), n)
	}
	return ports
}

// bind binds a TCP socket to 127.0.0.1:port and closes it.
func bind(port uint16) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: netip.MustParseAddr("127.0.0.1").As4()}); err != nil {
		return fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	return nil
}

// portList is ports as -p takes them.
func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

// num is a JSON number field as an int (-1 when absent).
func num(m map[string]any, key string) int {
	if f, ok := m[key].(float64); ok {
		return int(f)
	}
	return -1
}
