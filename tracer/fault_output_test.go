package tracer_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
)

// outputCase is a command whose output the fault tests break, and the
// calls in its namespace that give it something to write.
type outputCase struct {
	name    string
	args    func(ns *tracer.NS) []string
	ready   bool                              // it says it is tracing before writing
	prepare func(t *testing.T, ns *tracer.NS) // before it starts
	traffic func(t *testing.T, ns *tracer.NS) // one call it writes of; nil: none
	json    bool                              // its lines are JSON objects
}

func outputCases() []outputCase {
	backend := tracer.BackendName()
	bind := func(t *testing.T, ns *tracer.NS) { bindUDP(t, ns, lo4(0)) }
	connect := func(t *testing.T, ns *tracer.NS) { connectUDP(t, ns, 9) }
	return []outputCase{
		{name: "stream json", ready: true, traffic: bind, json: true,
			args: func(ns *tracer.NS) []string {
				return []string{"--backend", backend, "-o", "json", "--netns", ns.Path()}
			}},
		{name: "stream table", ready: true, traffic: bind,
			args: func(ns *tracer.NS) []string { return []string{"--backend", backend, "--netns", ns.Path()} }},
		{name: "churn json", ready: true, traffic: connect, json: true,
			args: func(ns *tracer.NS) []string {
				return []string{"churn", "--backend", backend, "-o", "json", "-i", "100ms", "--netns", ns.Path()}
			}},
		// More than a pipe holds (64 KiB): ports is still writing when
		// the reader leaves.
		{name: "ports", prepare: holdSockets(3000),
			args: func(ns *tracer.NS) []string { return []string{"ports", "--netns", ns.Path()} }},
	}
}

// holdSockets binds n UDP sockets on 127.0.0.1 in ns, held until the
// test's end.
func holdSockets(n int) func(t *testing.T, ns *tracer.NS) {
	return func(t *testing.T, ns *tracer.NS) {
		ns.Run(t, func() {
			for range n {
				fd := tracer.NewSocket(t, tracer.UDP4)
				t.Cleanup(func() { unix.Close(fd) })
				if err := unix.Bind(fd, tracer.Sockaddr(lo4(0))); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestFaultReaderGone: `porttrace ... | head -1`. Once head has its line
// and exits, porttrace ends at once, status 0, with nothing more on
// stderr, as a filter does: whether another event comes (its write finds
// EPIPE) or none does (it watches the pipe for its reader leaving).
func TestFaultReaderGone(t *testing.T) {
	for _, c := range outputCases() {
		modes := []string{"then an event", "no event"}
		if c.traffic == nil {
			modes = []string{"mid-write"}
		}
		for _, mode := range modes {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				ns := tracer.NewNetns(t)
				if c.prepare != nil {
					c.prepare(t, ns)
				}
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				var headOut strings.Builder
				head := exec.Command("head", "-1")
				head.Stdin, head.Stdout = r, &headOut
				if err := head.Start(); err != nil {
					t.Skipf("head(1): %v", err)
				}
				r.Close()
				headDone := make(chan time.Time, 1)
				go func() { head.Wait(); headDone <- time.Now() }()
				p := startPorttrace(t, w, c.ready, c.args(ns)...)

				var headEnded time.Time
				for deadline := time.Now().Add(10 * time.Second); headEnded.IsZero(); {
					if time.Now().After(deadline) {
						t.Fatalf("head had no line within 10s:\n%s", p.stderr.String())
					}
					if c.traffic != nil {
						c.traffic(t, ns)
					}
					select {
					case headEnded = <-headDone:
					case <-time.After(20 * time.Millisecond):
					}
				}
				said := p.stderr.String()
				if mode == "then an event" {
					c.traffic(t, ns)
				}
				if !p.wait(time.Second) {
					// Where it is, from the runtime: SIGQUIT dumps every
					// goroutine on stderr.
					p.cmd.Process.Signal(syscall.SIGQUIT)
					p.wait(5 * time.Second)
					t.Fatalf("still running 1s after head exited:\n%s", p.stderr.String())
				}
				took := p.ended.Sub(headEnded)
				t.Logf("ended %v after head exited, status %d", took.Round(time.Millisecond), p.code)
				if p.code != 0 {
					t.Errorf("status %d, want 0", p.code)
				}
				if after := strings.TrimPrefix(p.stderr.String(), said); after != "" {
					t.Errorf("said on stderr after head exited: %q", after)
				}
				line := strings.TrimSuffix(headOut.String(), "\n")
				if line == "" || strings.Contains(line, "\n") {
					t.Errorf("head got %q, want one line", headOut.String())
				}
				if c.json && !json.Valid([]byte(line)) {
					t.Errorf("head's line is no JSON object: %q", line)
				}
			})
		}
	}
}

// TestFaultFullDisk: stdout /dev/full, where every write fails with
// ENOSPC. Each command says so on one line of stderr and exits 3 (it
// could not run, README's exit statuses), without a hang or a stack.
func TestFaultFullDisk(t *testing.T) {
	const whoPort = 24250
	cases := outputCases()
	cases = append(cases[:len(cases)-1],
		outputCase{name: "ports", prepare: holdSockets(10),
			args: func(ns *tracer.NS) []string { return []string{"ports", "--netns", ns.Path()} }},
		outputCase{name: "who json", prepare: holdSocketOn(whoPort),
			args: func(ns *tracer.NS) []string {
				return []string{"who", "-o", "json", "--netns", ns.Path(), strconv.Itoa(whoPort)}
			}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			if c.prepare != nil {
				c.prepare(t, ns)
			}
			full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
			if err != nil {
				t.Skipf("no /dev/full: %v", err)
			}
			p := startPorttrace(t, full, c.ready, c.args(ns)...)
			for deadline := time.Now().Add(10 * time.Second); ; {
				if c.traffic != nil {
					c.traffic(t, ns)
				}
				if p.wait(20 * time.Millisecond) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("still running 10s into a full disk:\n%s", p.stderr.String())
				}
			}
			stderr := p.stderr.String()
			cmd := "porttrace"
			if sub := c.args(ns)[0]; !strings.HasPrefix(sub, "-") {
				cmd += " " + sub
			}
			want := cmd + ": writing output: no space left on device\n"
			if !strings.HasSuffix(stderr, want) || strings.Count(stderr, "no space left") != 1 {
				t.Errorf("stderr does not end with %q, once:\n%s", want, stderr)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Errorf("a stack on stderr:\n%s", stderr)
			}
			if p.code != 3 {
				t.Errorf("status %d, want 3", p.code)
			}
		})
	}
}

// holdSocketOn binds a UDP socket to 127.0.0.1:port in ns, held until the
// test's end: someone holds the port, for who.
func holdSocketOn(port uint16) func(t *testing.T, ns *tracer.NS) {
	return func(t *testing.T, ns *tracer.NS) {
		ns.Run(t, func() {
			fd := tracer.NewSocket(t, tracer.UDP4)
			t.Cleanup(func() { unix.Close(fd) })
			if err := unix.Bind(fd, tracer.Sockaddr(lo4(port))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFaultReaderGoneNoOutput: `-o none` writes nothing to stdout, so
// its reader leaving (a journal restarted, say) ends nothing: the exporter
// goes on serving.
func TestFaultReaderGoneNoOutput(t *testing.T) {
	ns := tracer.NewNetns(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startPorttrace(t, w, true, "--backend", tracer.BackendName(), "-o", "none", "--netns", ns.Path(), "--metrics", "127.0.0.1:0")
	url := p.metricsURL(t)
	r.Close()
	if p.wait(2 * time.Second) {
		t.Fatalf("ended, status %d, when the reader of an output it does not write left:\n%s", p.code, p.stderr.String())
	}
	if _, ok := metric(t, url, "porttrace_build_info"); !ok {
		t.Error("no porttrace_build_info on /metrics")
	}
	p.stop(t)
	if p.code != 0 {
		t.Errorf("status %d, want 0:\n%s", p.code, p.stderr.String())
	}
}
