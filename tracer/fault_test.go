package tracer_test

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
)

// The fault tests run the real porttrace binary, as root, against the
// real kernel, and break what is around it: its output's reader leaves,
// the disk is full, nobody reads, /metrics is stormed or sent garbage.
// They are TestFault*, not TestKernel*: they build the binary with the Go
// toolchain and run head(1), which the kernel matrix's guests lack. Each
// scopes porttrace to a network namespace of its own (--netns), so that
// only its own calls reach the output.

// running is porttrace started by a test, killed at the test's end if it
// is still running.
type running struct {
	cmd    *exec.Cmd
	stderr *tracer.SyncBuilder
	done   chan struct{}
	code   int // the exit status once done; -1 for a signal
	ended  time.Time
}

// startPorttrace runs porttrace with args, its stdout out (a pipe's or a
// device's end, closed here once the child has it), and returns once it
// says it is tracing or counting (ready false: at once, for ports and
// who).
func startPorttrace(t *testing.T, out *os.File, ready bool, args ...string) *running {
	t.Helper()
	cmd := exec.Command(tracer.PorttraceBinary(t), args...)
	r := &running{cmd: cmd, stderr: &tracer.SyncBuilder{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	go func() {
		err := cmd.Wait()
		r.ended = time.Now()
		r.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			r.code = -2
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			cmd.Process.Kill()
			<-r.done
		}
	})
	if !ready {
		return r
	}
	re := regexp.MustCompile(`(?m)^porttrace( churn)?: (tracing|counting) with `)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-r.done:
			t.Fatalf("porttrace %s ended before tracing, status %d:\n%s", strings.Join(args, " "), r.code, r.stderr.String())
		default:
		}
		if re.MatchString(r.stderr.String()) {
			return r
		}
	}
	t.Fatalf("porttrace %s: not tracing within 20s:\n%s", strings.Join(args, " "), r.stderr.String())
	return nil
}

// wait waits up to d for porttrace to end, and reports whether it did.
func (r *running) wait(d time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exited reports whether porttrace has ended.
func (r *running) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// metricsURL is the /metrics address porttrace announced on stderr.
func (r *running) metricsURL(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^porttrace( churn)?: serving metrics on (\S+)$`).FindStringSubmatch(r.stderr.String())
	if m == nil {
		t.Fatalf("no line announcing /metrics:\n%s", r.stderr.String())
	}
	return m[2]
}

// rss is the resident memory of porttrace now, in bytes.
func (r *running) rss(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(r.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// stop sends SIGINT, as Ctrl-C does, and waits up to 10s for the end.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGINT)
	if !r.wait(10 * time.Second) {
		t.Fatalf("still running 10s after SIGINT:\n%s", r.stderr.String())
	}
}

// lo4 is 127.0.0.1:port.
func lo4(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

// connectUDP connects a UDP socket in ns to 127.0.0.1:port and closes it:
// an ephemeral port allocated, which churn counts.
func connectUDP(t *testing.T, ns *tracer.NS, port uint16) {
	t.Helper()
	ns.Run(t, func() {
		fd := tracer.NewSocket(t, tracer.UDP4)
		defer unix.Close(fd)
		if err := unix.Connect(fd, tracer.Sockaddr(lo4(port))); err != nil {
			t.Error(err)
		}
	})
}

// lineReader reads r's lines on a goroutine of its own, each kept, until
// EOF.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	cond  chan struct{} // closed and replaced on each line
	eof   chan struct{}
}

func readLines(r io.Reader) *lineReader {
	l := &lineReader{cond: make(chan struct{}), eof: make(chan struct{})}
	go func() {
		defer close(l.eof)
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.cond)
			l.cond = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// snapshot is the lines read so far.
func (l *lineReader) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// waitFor waits up to d for a line, from the from'th on, that has sub.
func (l *lineReader) waitFor(from int, sub string, d time.Duration) bool {
	deadline := time.After(d)
	for ended := false; ; {
		l.mu.Lock()
		for _, line := range l.lines[min(from, len(l.lines)):] {
			if strings.Contains(line, sub) {
				l.mu.Unlock()
				return true
			}
		}
		cond := l.cond
		l.mu.Unlock()
		if ended {
			return false
		}
		select {
		case <-cond:
		case <-l.eof:
			ended = true // one more look: the last lines came before it
		case <-deadline:
			return false
		}
	}
}

// metric scrapes url and returns the value of the first sample of name,
// and whether there was one.
func metric(t *testing.T, url, name string) (float64, bool) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s, %v", url, resp.Status, err)
	}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", name, line, err)
		}
		return v, true
	}
	return 0, false
}
