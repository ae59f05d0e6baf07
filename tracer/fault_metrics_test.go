package tracer_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// exportingCase is a command with --metrics, and how to see that it goes
// on with its work.
type exportingCase struct {
	name string
	args func(ns *tracer.NS) []string
	// working fails t unless the command writes on, from output line
	// from, within 10s.
	working func(t *testing.T, ns *tracer.NS, out *lineReader, from int)
}

func exportingCases() []exportingCase {
	backend := tracer.BackendName()
	return []exportingCase{
		{name: "stream",
			args: func(ns *tracer.NS) []string {
				return []string{"--backend", backend, "-o", "json", "--netns", ns.Path(), "--metrics", "127.0.0.1:0"}
			},
			working: func(t *testing.T, ns *tracer.NS, out *lineReader, from int) {
				const marker = 24252
				bindUDP(t, ns, lo4(marker))
				if !out.waitFor(from, `"local_port":`+strconv.Itoa(marker)+`,`, 10*time.Second) {
					t.Errorf("no bind of port %d written within 10s", marker)
				}
			}},
		{name: "churn",
			args: func(ns *tracer.NS) []string {
				return []string{"churn", "--backend", backend, "-o", "json", "-i", "200ms", "--netns", ns.Path(), "--metrics", "127.0.0.1:0"}
			},
			working: func(t *testing.T, ns *tracer.NS, out *lineReader, from int) {
				connectUDP(t, ns, 9)
				if !out.waitFor(from, `"interval_s":`, 10*time.Second) {
					t.Errorf("no churn report written within 10s")
				}
			}},
	}
}

// startExporting starts c with its stdout read line by line.
func startExporting(t *testing.T, c exportingCase, ns *tracer.NS) (*running, *lineReader, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p := startPorttrace(t, w, true, c.args(ns)...)
	return p, readLines(r), p.metricsURL(t)
}

// goroutinesSettle waits up to 10s for go_goroutines on url to come back
// within bound of before, and returns the last count.
func goroutinesSettle(t *testing.T, url string, before float64, bound float64) float64 {
	t.Helper()
	var after float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		after, _ = metric(t, url, "go_goroutines")
		if after <= before+bound {
			break
		}
	}
	if after > before+bound {
		t.Errorf("go_goroutines %.0f before, %.0f 10s after: more than %.0f leaked", before, after, bound)
	}
	return after
}

// goroutineSlack is how many more goroutines than before a storm or a
// bad client may leave: the runtime's own come and go.
const goroutineSlack = 3

// TestFaultMetricsScrapeStorm: 200 scrapes at once of the stream's and
// churn's /metrics. The connection cap (32) holds the rest in the kernel's
// backlog rather than refusing them: each is answered, or refused cleanly
// (a reset or a refusal, never a hang or a broken answer), the command
// goes on writing, and no goroutine is left behind.
func TestFaultMetricsScrapeStorm(t *testing.T) {
	const scrapes = 200
	for _, c := range exportingCases() {
		t.Run(c.name, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			p, out, url := startExporting(t, c, ns)
			before, ok := metric(t, url, "go_goroutines")
			if !ok {
				t.Fatal("no go_goroutines on /metrics")
			}
			var answered, refused, failed int
			var slowest time.Duration
			var mu sync.Mutex
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range scrapes {
				wg.Go(func() {
					client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
					<-start
					began := time.Now()
					resp, err := client.Get(url)
					var body []byte
					if err == nil {
						body, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					mu.Lock()
					defer mu.Unlock()
					slowest = max(slowest, time.Since(began))
					switch {
					case err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), "porttrace_build_info"):
						answered++
					case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
						refused++
					default:
						failed++
						if failed <= 3 {
							t.Errorf("scrape: %v", err)
						}
					}
				})
			}
			began := time.Now()
			close(start)
			wg.Wait()
			took := time.Since(began)
			if p.exited() {
				t.Fatalf("porttrace ended under the scrapes, status %d:\n%s", p.code, p.stderr.String())
			}
			c.working(t, ns, out, len(out.snapshot()))
			after := goroutinesSettle(t, url, before, goroutineSlack)
			t.Logf("%d scrapes at once: %d answered, %d refused, %d failed, in %v (slowest %v); go_goroutines %.0f before, %.0f after",
				scrapes, answered, refused, failed, took.Round(time.Millisecond), slowest.Round(time.Millisecond), before, after)
			if answered+refused != scrapes {
				t.Errorf("%d of %d scrapes neither answered nor refused", scrapes-answered-refused, scrapes)
			}
			if answered == 0 {
				t.Error("no scrape answered")
			}
			p.stop(t)
			if p.code != 0 {
				t.Errorf("status %d, want 0:\n%s", p.code, p.stderr.String())
			}
		})
	}
}

// badClient is a client of /metrics that breaks the rules, and the
// answer's status line it must get (one of them; "": none, the connection
// closed).
type badClient struct {
	name   string
	send   func(c net.Conn) // what it sends, then it reads until closed
	status []string
	within time.Duration // closed within this
}

func badClients() []badClient {
	sendString := func(s string) func(c net.Conn) {
		return func(c net.Conn) { io.WriteString(c, s) }
	}
	const closeAfter = "Host: porttrace\r\nConnection: close\r\n\r\n"
	return []badClient{
		{"garbage bytes", sendString("\x00\xff\xfe\x7fgarbage\r\n\r\n"), []string{"HTTP/1.1 400 Bad Request"}, time.Second},
		{"HTTP/1.1 without Host", sendString("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"), []string{"HTTP/1.1 400 Bad Request: missing required Host header"}, time.Second},
		{"a 1 MB header", func(c net.Conn) {
			io.WriteString(c, "GET /metrics HTTP/1.1\r\nX-Big: "+strings.Repeat("a", 1<<20)+"\r\n"+closeAfter)
		}, []string{"HTTP/1.1 431 Request Header Fields Too Large"}, 2 * time.Second},
		// One byte a second: the header's 5s (DefaultLimits.ReadHeader)
		// run out, and the connection is closed, with a 400 (net/http
		// since 1.2x) or without an answer.
		{"slowloris, a byte a second", func(c net.Conn) {
			for _, b := range []byte("GET /metrics HTTP/1.1\r\nHost: porttrace\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}, []string{"HTTP/1.1 400 Bad Request", ""}, 7 * time.Second},
		{"POST", sendString("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n" + closeAfter), []string{"HTTP/1.1 405 Method Not Allowed"}, time.Second},
		{"DELETE", sendString("DELETE /metrics HTTP/1.1\r\n" + closeAfter), []string{"HTTP/1.1 405 Method Not Allowed"}, time.Second},
		{"a path with %00", sendString("GET /metrics%00 HTTP/1.1\r\n" + closeAfter), []string{"HTTP/1.1 404 Not Found"}, time.Second},
		{"a raw NUL in the path", sendString("GET /metrics\x00 HTTP/1.1\r\n" + closeAfter), []string{"HTTP/1.1 400 Bad Request"}, time.Second},
	}
}

// TestFaultMetricsBadClients: clients of the stream's and churn's
// /metrics that break the rules each get the right status or a close,
// within the server's timeouts, all at once; a TLS handshake on the plain
// port is answered in plain HTTP. None crashes porttrace, stops its work
// or leaves a goroutine behind.
func TestFaultMetricsBadClients(t *testing.T) {
	for _, c := range exportingCases() {
		t.Run(c.name, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			p, out, url := startExporting(t, c, ns)
			addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics")
			before, _ := metric(t, url, "go_goroutines")
			var wg sync.WaitGroup
			for _, bc := range badClients() {
				wg.Go(func() {
					conn, err := net.Dial("tcp", addr)
					if err != nil {
						t.Errorf("%s: %v", bc.name, err)
						return
					}
					defer conn.Close()
					began := time.Now()
					go bc.send(conn)
					conn.SetReadDeadline(began.Add(bc.within + time.Second))
					got, err := io.ReadAll(conn)
					took := time.Since(began)
					// A close with part of the request unread may end in a
					// reset, after the answer.
					if err != nil && !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("%s: not closed within %v: %v", bc.name, bc.within+time.Second, err)
						return
					}
					status, _, _ := strings.Cut(string(got), "\r\n")
					t.Logf("%s: %q, closed after %v", bc.name, status, took.Round(time.Millisecond))
					if !slices.Contains(bc.status, status) {
						t.Errorf("%s: answered %q, want one of %q", bc.name, status, bc.status)
					}
					if took > bc.within {
						t.Errorf("%s: closed after %v, want within %v", bc.name, took, bc.within)
					}
				})
			}
			wg.Go(func() {
				began := time.Now()
				conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
				if err == nil {
					conn.Close()
					t.Error("TLS handshake: a plain HTTP port completed it")
					return
				}
				var rh tls.RecordHeaderError
				t.Logf("TLS handshake: %v, after %v", err, time.Since(began).Round(time.Millisecond))
				if !errors.As(err, &rh) || !strings.HasPrefix(string(rh.RecordHeader[:]), "HTTP/") {
					t.Errorf("TLS handshake: %v, want an answer in plain HTTP", err)
				}
			})
			wg.Wait()
			if p.exited() {
				t.Fatalf("porttrace ended, status %d:\n%s", p.code, p.stderr.String())
			}
			c.working(t, ns, out, len(out.snapshot()))
			after := goroutinesSettle(t, url, before, goroutineSlack)
			t.Logf("go_goroutines %.0f before, %.0f after", before, after)
			p.stop(t)
			if p.code != 0 {
				t.Errorf("status %d, want 0:\n%s", p.code, p.stderr.String())
			}
		})
	}
}
