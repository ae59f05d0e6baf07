package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/internal/bpfheld"
)

// tracerProc is one porttrace process the soak runs: its stderr kept, its
// stdout read by a consumer of its own, and what /proc and /metrics say
// of it each second.
type tracerProc struct {
	name    string
	cmd     *exec.Cmd
	metrics string // the /metrics URL, or "" when the command has none
	stderr  []string
	mu      sync.Mutex
	done    chan struct{} // stdout and stderr read to the end
	samples []sample
	// missed counts the looks skipped because /metrics did not answer in
	// time (a machine loaded by others can stall it for seconds);
	// missedRun those in a row until the last.
	missed, missedRun int
	lastMiss          error
}

// startTracer runs bin with args in a process group of its own (an
// interrupt of the soak stops it through the soak, so that its summary is
// read) and with SIGKILL as its parent-death signal, so that a killed
// soak leaves no tracer behind. It returns once porttrace says what it
// is tracing with.
func startTracer(name, bin, metrics string, args []string, consume func(io.Reader)) (*tracerProc, error) {
	p := &tracerProc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	if metrics != "" {
		p.metrics = "http://" + metrics + "/metrics"
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	started := make(chan bool, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		consume(out)
		io.Copy(io.Discard, out)
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(errPipe)
		said := false
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			p.mu.Unlock()
			if !said && strings.Contains(sc.Text(), " with the ") {
				said = true
				started <- true
			}
		}
		if !said {
			started <- false
		}
	}()
	go func() { wg.Wait(); close(p.done) }()
	select {
	case ok := <-started:
		if ok {
			return p, nil
		}
	case <-time.After(30 * time.Second):
	}
	p.stop()
	return nil, fmt.Errorf("%s did not start: %s", name, strings.Join(p.stderrLines(), " | "))
}

func (p *tracerProc) stderrLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stderr...)
}

// stop asks porttrace to stop as Ctrl-C would, waits for its output to
// end and kills it if it takes more than 10 s. It returns the exit error.
func (p *tracerProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.cmd.Wait()
		return fmt.Errorf("%s did not stop within 10 s of SIGINT: killed", p.name)
	}
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

// sample is one second's look at a porttrace process.
type sample struct {
	at         time.Duration // since the load started
	rssKB      int64
	threads    int64
	fds        int64
	goroutines int64 // -1: no /metrics
	maps       int   // BPF objects it holds, by distinct id
	progs      int
	links      int
}

// look samples the process now; scrape is the /metrics text (nil when the
// command has none).
func (p *tracerProc) look(at time.Duration, scrape []byte) (sample, error) {
	pid := p.cmd.Process.Pid
	s := sample{at: at, goroutines: -1}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("%s is gone: %w", p.name, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.rssKB, _ = strconv.ParseInt(f[0], 10, 64)
		case "Threads":
			s.threads, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	held, err := bpfheld.Of(pid)
	if err != nil {
		return s, err
	}
	s.fds = int64(held.Files)
	s.maps, s.progs, s.links = len(held.Maps), len(held.Progs), len(held.Links)
	if scrape != nil {
		g, ok := metricSum(scrape, "go_goroutines", nil)
		if !ok {
			return s, fmt.Errorf("%s: no go_goroutines on /metrics", p.name)
		}
		s.goroutines = int64(g)
	}
	return s, nil
}

var client = &http.Client{Timeout: 5 * time.Second}

// scrape reads the process's /metrics.
func (p *tracerProc) scrape() ([]byte, error) {
	if p.metrics == "" {
		return nil, nil
	}
	resp, err := client.Get(p.metrics)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", p.name, err)
	}
	return b, nil
}

// metricSum adds up the samples of a metric in the text format whose
// labels include every pair of want.
func metricSum(text []byte, name string, want map[string]string) (float64, bool) {
	sum, found := 0.0, false
	for _, line := range bytes.Split(text, []byte("\n")) {
		l := string(line)
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := "", rest
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			labels, value = rest[1:end], rest[end+1:]
		}
		match := true
		for k, v := range want {
			if !strings.Contains(","+labels+",", fmt.Sprintf(",%s=%q,", k, v)) {
				match = false
			}
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if match && err == nil {
			sum, found = sum+f, true
		}
	}
	return sum, found
}

// streamCount is what the stream's JSON said: events by
// "kind/result[/errno]", and the losses its lost lines told.
type streamCount struct {
	Events map[string]uint64
	Lost   uint64
	Lines  uint64
	Bad    []string // lines that are not JSON
}

// readStream parses each line of the stream's -o json.
func readStream(c *streamCount) func(io.Reader) {
	return func(r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev struct {
				Event, Result, Errno string
				Count                uint64
			}
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Event == "" {
				if len(c.Bad) < 3 {
					c.Bad = append(c.Bad, sc.Text())
				}
				continue
			}
			c.Lines++
			if ev.Event == "lost" {
				c.Lost += ev.Count
				continue
			}
			key := ev.Event + "/" + ev.Result
			if ev.Errno != "" {
				key += "/" + ev.Errno
			}
			c.Events[key]++
		}
	}
}

// readLines counts the JSON lines of a command's output.
func readLines(n *uint64, bad *[]string) func(io.Reader) {
	return func(r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if !json.Valid(sc.Bytes()) && len(*bad) < 3 {
				*bad = append(*bad, sc.Text())
			}
			*n++
		}
	}
}
