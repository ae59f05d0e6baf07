// Package promtest checks what porttrace exports with Prometheus's own
// tools, for tests: promtool's lint of a scrape, a real Prometheus server
// scraping porttrace and queried through its HTTP API, and a web
// configuration with TLS and basic auth to serve with (tests only). The
// tools come from Debian's prometheus package, which CI installs; without
// them the tests that need them skip, saying so.
package promtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// need returns the path of tool, or skips t when it is not installed.
func need(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s is not installed (Debian package prometheus; .ci/run installs it): %v", tool, err)
	}
	return path
}

// CheckMetrics runs `promtool check metrics` on a scrape, which parses it
// as the exposition format and lints it as Prometheus's own conventions
// want (counters end in _total, base units, help on every metric), and
// fails t with what promtool says when it finds a problem.
func CheckMetrics(t *testing.T, scrape []byte) {
	t.Helper()
	cmd := exec.Command(need(t, "promtool"), "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// Get fetches url with c (http.DefaultClient when nil) and fails t
// unless the answer is 200; it returns the body.
func Get(t *testing.T, c *http.Client, url string) []byte {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v\n%s", url, resp.Status, err, body)
	}
	return body
}

// Server is a Prometheus server that a test runs.
type Server struct {
	URL string // http://127.0.0.1:PORT, its API and UI
}

// StartPrometheus runs the prometheus binary on a free port of 127.0.0.1,
// with its storage under a temporary directory and a configuration that
// scrapes target's /metrics every second (job "porttrace"), and waits
// until it is ready. It is killed when the test ends.
func StartPrometheus(t *testing.T, target string) *Server {
	t.Helper()
	bin := need(t, "prometheus")
	dir := t.TempDir()
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"+
		"scrape_configs:\n  - job_name: porttrace\n    static_configs:\n      - targets: [%q]\n", target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.console.templates="+dir, "--web.console.libraries="+dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus's log:\n%s", log.String())
		}
	})
	s := &Server{URL: "http://" + addr}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("prometheus exited at start:\n%s", log.String())
		default:
		}
		if resp, err := http.Get(s.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s after 30s", addr)
		}
	}
}

// freePort is an address of 127.0.0.1 with a port no one listened on a
// moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Sample is one series of an instant query's answer.
type Sample struct {
	Labels map[string]string
	Value  string
}

// Query asks the server's HTTP API (/api/v1/query) for expr now.
func (s *Server) Query(expr string) ([]Sample, error) {
	resp, err := http.Get(s.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return nil, fmt.Errorf("query %s: %s: %w", expr, resp.Status, err)
	}
	if answer.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", expr, answer.Error)
	}
	var out []Sample
	for _, r := range answer.Data.Result {
		out = append(out, Sample{Labels: r.Metric, Value: fmt.Sprint(r.Value[1])})
	}
	return out, nil
}

// WaitFor queries expr until it returns a series or timeout passes, and
// returns the series; what the server's targets say is in the error.
func (s *Server) WaitFor(expr string, timeout time.Duration) ([]Sample, error) {
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		got, err := s.Query(expr)
		if err == nil && len(got) > 0 {
			return got, nil
		}
		last = err
	}
	return nil, errors.Join(fmt.Errorf("no series for %s after %v", expr, timeout), last, s.targets())
}

// targets says how the server's scrapes went: the first thing to read
// when a series never comes.
func (s *Server) targets() error {
	resp, err := http.Get(s.URL + "/api/v1/targets")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fmt.Errorf("targets: %s", strings.TrimSpace(string(body)))
}

// Scrape is what /metrics would serve of c alone, in the text format,
// through a pedantic registry (which refuses inconsistent metrics).
func Scrape(t *testing.T, c prometheus.Collector) []byte {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}
