package promserve

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// shortLimits make the server's timeouts testable in well under a second.
var shortLimits = Limits{
	ReadHeader: 200 * time.Millisecond,
	Read:       400 * time.Millisecond,
	Write:      400 * time.Millisecond,
	Idle:       300 * time.Millisecond,
	Conns:      2,
}

// testCollector is a collector with one series to scrape.
func testCollector() prometheus.Collector {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "porttrace_test_total", Help: "A counter to scrape."})
	c.Add(3)
	return c
}

// syncBuf is a strings.Builder safe for the server's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveTest serves a test collector with lim on a port of 127.0.0.1 the
// kernel picks, and stops it when the test ends. What the server reports
// goes to errOut.
func serveTest(t *testing.T, lim Limits) (m *Server, errOut *syncBuf) {
	t.Helper()
	errOut = &syncBuf{}
	m, err := Serve(Config{Addr: "127.0.0.1:0", Limits: lim}, testCollector(), errOut)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, errOut
}

// closedWithin reads c until the server closes it, and fails the test if
// that takes longer than d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection still open after %v", d)
	}
}

// A client that sends nothing, half a header, a header without the body it
// announced, or nothing more after a scrape is cut off by the server, so
// that it does not hold a file descriptor for ever.
func TestServerServerTimeouts(t *testing.T) {
	m, errOut := serveTest(t, shortLimits)
	for _, tc := range []struct {
		name, send string
	}{
		{"idle, nothing sent", ""},
		{"half a request header", "GET /metrics HTTP/1.1\r\nHost: porttrace\r\n"},
		{"body announced, never sent", "POST /metrics HTTP/1.1\r\nHost: porttrace\r\nContent-Length: 1000\r\n\r\n"},
		{"idle after a scrape (keep-alive)", "GET /metrics HTTP/1.1\r\nHost: porttrace\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", m.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			closedWithin(t, c, 3*time.Second)
		})
	}
	if s := errOut.String(); s != "" {
		t.Errorf("timeouts reported on stderr: %q", s)
	}
}

// A header over the limit is refused with 431 and the connection closed,
// and one within it is answered.
func TestServerHeaderLimit(t *testing.T) {
	lim := shortLimits
	lim.HeaderBytes = 1 << 10
	m, _ := serveTest(t, lim)
	for _, tc := range []struct {
		name   string
		header int
		want   string
	}{
		{"within", 512, "HTTP/1.1 200 "},
		{"over, by more than net/http's slack", lim.HeaderBytes + 8<<10, "HTTP/1.1 431 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", m.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: porttrace\r\nConnection: close\r\nX-Pad: "+strings.Repeat("a", tc.header)+"\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			// The server closes with the rest of the header unread: a
			// reset may follow its answer.
			got, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("reading the answer: %v", err)
			}
			if !strings.HasPrefix(string(got), tc.want) {
				t.Errorf("answer %.40q, want %q", got, tc.want)
			}
		})
	}
}

// More idle connections than the limit wait in the kernel's backlog rather
// than taking descriptors; once they time out, a scrape is answered.
func TestServerServerConnLimit(t *testing.T) {
	m, _ := serveTest(t, shortLimits)
	for range shortLimits.Conns + 3 {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + m.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "porttrace_test_total") {
		t.Errorf("scrape: %s, body %q", resp.Status, body)
	}
	if took := time.Since(start); took < shortLimits.ReadHeader {
		t.Errorf("scrape answered after %v, before any idle connection timed out: no limit", took)
	}
}

// Stopping the server does not wait for a connection slot to free.
func TestServerServerStopWhileFull(t *testing.T) {
	lim := DefaultLimits
	lim.Conns = 1
	m, err := Serve(Config{Addr: "127.0.0.1:0", Limits: lim}, testCollector(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	stop := m.Close
	for range 3 {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			stop()
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond) // let Accept take the one slot and wait for another
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("stop still waiting after 2s")
	}
}

// Addr is where the server really listens, not the port 0 it was given.
func TestServerAddr(t *testing.T) {
	m, _ := serveTest(t, DefaultLimits)
	ap, err := netip.ParseAddrPort(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 || ap.Port() != m.Port() {
		t.Errorf("Addr() = %s, port %d; want 127.0.0.1 and the port listened on", m.Addr(), m.Port())
	}
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatalf("dialing Addr(): %v", err)
	}
	c.Close()
}

// Out of descriptors, net/http reports a failed accept every second, each
// time with another retry delay: stderr gets it once, then at most once a
// minute with a count.
func TestServerErrorLogOnce(t *testing.T) {
	const accept = "http: Accept error: accept tcp 127.0.0.1:9100: accept4: too many open files; retrying in "
	const prefix = "porttrace: metrics server: "
	type msg struct {
		after time.Duration // since the previous message
		text  string
	}
	for _, tc := range []struct {
		name string
		msgs []msg
		want string
	}{
		{
			name: "repeated accept error said once",
			msgs: []msg{{0, accept + "5ms"}, {5 * time.Millisecond, accept + "10ms"}, {time.Second, accept + "1s"}, {time.Second, accept + "1s"}},
			want: prefix + accept + "5ms\n",
		},
		{
			name: "said again after a minute, with a count",
			msgs: []msg{{0, accept + "1s"}, {time.Second, accept + "1s"}, {time.Second, accept + "1s"}, {time.Minute, accept + "1s"}},
			want: prefix + accept + "1s\n" + prefix + accept + "1s (and 2 more like it since 00:00:00)\n",
		},
		{
			name: "distinct messages each said",
			msgs: []msg{{0, accept + "5ms"}, {0, "http: panic serving 127.0.0.1:4000: boom"}, {0, accept + "10ms"}},
			want: prefix + accept + "5ms\n" + prefix + "http: panic serving 127.0.0.1:4000: boom\n",
		},
		{
			name: "control bytes escaped",
			msgs: []msg{{0, "http: bad \x1b[2J request\nline two"}},
			want: prefix + `http: bad \x1b[2J request\x0aline two` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			now := time.Date(2000, 1, 1, 0, 0, 0, 0, time.Local)
			w := newOnceWriter(&out, prefix)
			w.now = func() time.Time { return now }
			logger := log.New(w, "", 0)
			for _, m := range tc.msgs {
				now = now.Add(m.after)
				logger.Print(m.text)
			}
			if out.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}
