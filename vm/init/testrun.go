package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// event is one line of test2json's output (go doc cmd/test2json).
type event struct {
	Action string // run, output, pass, fail, skip (and others, ignored)
	Test   string // empty for output outside any test
	Output string
}

// test is what one test or subtest reported in one run.
type test struct {
	name   string
	result string // pass, fail or skip; empty if it started and never ended
	output lines  // its own lines, without the === and --- framing
	hasSub bool   // it ran subtests
}

// run is what one run of the test binary reported.
type run struct {
	tests map[string]*test
	order []string // test names in the order they started
	tail  lines    // output outside any test: a crash's traceback, say
	exit  int      // the binary's exit status; -1 if it was killed or never ran
	err   error    // non-nil when exit is not 0
}

// keep is how many lines of a test's output a report shows.
const keep = 12

// lines keeps what a report shows of a stream of output: its last lines,
// and the start of its first panic, which the end of a long traceback would
// push out of them.
type lines struct {
	last  []string
	panic []string
}

func (l *lines) add(s string) {
	switch {
	case len(l.panic) > 0 && len(l.panic) < keep:
		l.panic = append(l.panic, s)
	case l.panic == nil && (strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ")):
		l.panic = []string{s}
	}
	if len(l.last) == keep {
		l.last = append(l.last[:0], l.last[1:]...)
	}
	l.last = append(l.last, s)
}

// show returns the start of the panic if there was one, else the last lines.
func (l *lines) show() []string {
	if l.panic != nil {
		return l.panic
	}
	return l.last
}

// framing matches the lines the testing package prints around a test.
var framing = regexp.MustCompile(`^\s*(=== (RUN|PAUSE|CONT|NAME)\b|--- (PASS|FAIL|SKIP|BENCH): )`)

// parse reads test2json's events, copying the tests' output to echo.
func parse(rd io.Reader, echo io.Writer) *run {
	r := &run{tests: map[string]*test{}}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(echo, sc.Text())
			r.tail.add(sc.Text())
			continue
		}
		switch e.Action {
		case "run":
			r.get(e.Test)
		case "output":
			io.WriteString(echo, e.Output)
			line := strings.TrimRight(e.Output, "\n")
			switch {
			case line == "" || framing.MatchString(line):
			case e.Test == "":
				r.tail.add(line)
			default:
				r.get(e.Test).output.add(strings.TrimSpace(line))
			}
		case "pass", "fail", "skip":
			if e.Test != "" {
				r.get(e.Test).result = e.Action
			}
		}
	}
	if err := sc.Err(); err != nil {
		r.tail.add("reading test2json: " + err.Error())
	}
	return r
}

// get returns the test named name, recording its start if it is new.
func (r *run) get(name string) *test {
	if t, ok := r.tests[name]; ok {
		return t
	}
	t := &test{name: name}
	r.tests[name] = t
	r.order = append(r.order, name)
	for p := name; strings.Contains(p, "/"); {
		p = p[:strings.LastIndex(p, "/")]
		if parent, ok := r.tests[p]; ok {
			parent.hasSub = true
			break
		}
	}
	return t
}

// top returns the top-level test that name belongs to.
func top(name string) string {
	t, _, _ := strings.Cut(name, "/")
	return t
}

// failedBelow reports whether a subtest of name failed or never ended.
func (r *run) failedBelow(name string) bool {
	for n, t := range r.tests {
		if strings.HasPrefix(n, name+"/") && t.result != "pass" && t.result != "skip" {
			return true
		}
	}
	return false
}

// failedTops returns the top-level tests that reported a failure.
func (r *run) failedTops() []string {
	var tops []string
	for _, n := range r.order {
		if !strings.Contains(n, "/") && r.tests[n].result == "fail" {
			tops = append(tops, n)
		}
	}
	return tops
}

// unfinished returns the tests that started and never ended.
func (r *run) unfinished() []string {
	var names []string
	for _, n := range r.order {
		if r.tests[n].result == "" {
			names = append(names, n)
		}
	}
	return names
}

// runner runs the kernel-test binary, in a guest or on the host.
type runner struct {
	testBin   string    // the binary of go test -c ./tracer
	test2json string    // Go's cmd/test2json, built static
	dir       string    // the tests' working directory
	env       []string  // the tests' environment, less PORTTRACE_BACKEND
	deadline  time.Time // when the last test binary must have finished
	echo      io.Writer // where the tests' output goes
}

// timeout is the -test.timeout for a run starting now: what is left
// before the deadline, so that a test that hangs is named by the testing
// package before the whole run is cut short.
func (c *runner) timeout() time.Duration {
	return max(time.Until(c.deadline), minRun).Round(time.Second)
}

// minRun is the least time worth starting the test binary for.
const minRun = 10 * time.Second

func (c *runner) command(backend string, args ...string) *exec.Cmd {
	cmd := exec.Command(c.testBin, args...)
	cmd.Env = append(append([]string{}, c.env...), "PORTTRACE_BACKEND="+backend)
	cmd.Dir = c.dir
	return cmd
}

// list returns the top-level tests that pattern selects.
func (c *runner) list(backend, pattern string) ([]string, error) {
	// -test.list matches top-level names only: keep the pattern's first level.
	first, _, _ := strings.Cut(pattern, "/")
	cmd := c.command(backend, "-test.list", first)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing tests: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// run runs the tests that pattern selects with backend, through test2json.
func (c *runner) run(backend, pattern string) *run {
	cmd := c.command(backend, "-test.v=test2json", "-test.count=1", "-test.run", pattern, "-test.timeout", c.timeout().String())
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	r, err := c.start(cmd)
	if err != nil {
		r = &run{tests: map[string]*test{}, exit: -1, err: err}
	}
	return r
}

func (c *runner) start(cmd *exec.Cmd) (*run, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	conv := exec.Command(c.test2json)
	conv.Stdin, conv.Stderr = pr, c.echo
	out, err := conv.StdoutPipe()
	if err == nil {
		err = conv.Start()
	}
	if err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("starting test2json: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	pr.Close()
	if err != nil {
		conv.Wait()
		return nil, fmt.Errorf("starting %s: %w", c.testBin, err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// A helper the tests started and left behind would hold the pipe
		// open and test2json would wait for it forever.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		exited <- err
	}()
	r := parse(out, c.echo)
	testErr, convErr := <-exited, conv.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(testErr, &ee):
		r.exit, r.err = ee.ExitCode(), testErr // -1 when killed by a signal
	case testErr != nil:
		r.exit, r.err = -1, testErr
	case convErr != nil:
		r.exit, r.err = -1, fmt.Errorf("test2json: %w", convErr)
	}
	return r, nil
}
