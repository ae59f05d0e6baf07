package tracer

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Metrics holds what /metrics serves: counts from the event stream and the
// latest churn report. Labels stay low-cardinality (netns, proto, errno,
// event, result) unless per-destination series are asked for, and then at
// most MaxDests of them.
type Metrics struct {
	mu       sync.Mutex
	events   map[[2]string]float64 // {event, result}
	lost     float64
	churn    *ChurnReport
	MaxDests int
	port     uint16 // where Serve listens
	addr     string // the same, as host:port
	limits   serverLimits

	eventsDesc, lostDesc, allocsDesc, failsDesc, inUseDesc, timeWaitDesc,
	rangeDesc, etaDesc, overflowDesc, destInUseDesc, destAllocsDesc *prometheus.Desc
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("porttrace_"+name, help, labels, nil)
	}
	return &Metrics{
		limits:         defaultServerLimits,
		events:         map[[2]string]float64{},
		eventsDesc:     d("events_total", "Socket events reported, by event and result.", "event", "result"),
		lostDesc:       d("lost_events_total", "Events dropped because the ring buffer was full."),
		allocsDesc:     d("ephemeral_allocations_total", "Ephemeral ports allocated (connect autobind, bind to port 0).", "netns", "call"),
		failsDesc:      d("ephemeral_failures_total", "Ephemeral port allocations that failed, by errno.", "netns", "errno"),
		inUseDesc:      d("ephemeral_ports_in_use", "Sockets holding a port of the ephemeral range, TIME_WAIT included.", "netns"),
		timeWaitDesc:   d("ephemeral_ports_time_wait", "Sockets in TIME_WAIT holding a port of the ephemeral range.", "netns"),
		rangeDesc:      d("ephemeral_range_size", "Ports in ip_local_port_range less ip_local_reserved_ports.", "netns"),
		etaDesc:        d("ephemeral_exhaustion_seconds", "Time until a destination or the range runs out at the current growth (absent when not growing).", "netns"),
		overflowDesc:   d("churn_map_overflow_total", "Churn keys not counted because a kernel map was full."),
		destInUseDesc:  d("ephemeral_destination_ports_in_use", "Ephemeral ports in use towards one destination (--metrics-destinations).", "netns", "proto", "destination"),
		destAllocsDesc: d("ephemeral_destination_allocations_per_second", "Allocation rate towards one destination (--metrics-destinations).", "netns", "proto", "destination"),
	}
}

// Event counts one event of the stream.
func (m *Metrics) Event(ev *event.Event) {
	m.mu.Lock()
	m.events[[2]string{ev.Kind.String(), ev.Result.String()}]++
	m.mu.Unlock()
}

// Lost adds dropped events.
func (m *Metrics) Lost(n uint64) {
	m.mu.Lock()
	m.lost += float64(n)
	m.mu.Unlock()
}

// Churn replaces the churn report served.
func (m *Metrics) Churn(r *ChurnReport) {
	m.mu.Lock()
	m.churn = r
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.eventsDesc, m.lostDesc, m.allocsDesc, m.failsDesc, m.inUseDesc,
		m.timeWaitDesc, m.rangeDesc, m.etaDesc, m.overflowDesc, m.destInUseDesc, m.destAllocsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.events {
		ch <- prometheus.MustNewConstMetric(m.eventsDesc, prometheus.CounterValue, v, k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(m.lostDesc, prometheus.CounterValue, m.lost)
	r := m.churn
	if r == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.overflowDesc, prometheus.CounterValue, float64(r.Overflow))
	for _, n := range r.Netns {
		ns := strconv.FormatUint(uint64(n.Netns), 10)
		for call, v := range n.AllocsTotal {
			ch <- prometheus.MustNewConstMetric(m.allocsDesc, prometheus.CounterValue, float64(v), ns, call)
		}
		for errno, v := range n.FailsTotal {
			ch <- prometheus.MustNewConstMetric(m.failsDesc, prometheus.CounterValue, float64(v), ns, errno)
		}
		if n.UsageErr != "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.inUseDesc, prometheus.GaugeValue, float64(n.InUse), ns)
		ch <- prometheus.MustNewConstMetric(m.timeWaitDesc, prometheus.GaugeValue, float64(n.TimeWait), ns)
		ch <- prometheus.MustNewConstMetric(m.rangeDesc, prometheus.GaugeValue, float64(n.RangeSize), ns)
		if n.Exhaustion >= 0 {
			ch <- prometheus.MustNewConstMetric(m.etaDesc, prometheus.GaugeValue, n.Exhaustion.Seconds(), ns)
		}
		for _, d := range n.Dests[:min(m.MaxDests, len(n.Dests))] {
			proto, dest := event.ProtoName(d.Dest.Proto), d.Dest.Remote.String()
			ch <- prometheus.MustNewConstMetric(m.destInUseDesc, prometheus.GaugeValue, float64(d.InUse), ns, proto, dest)
			ch <- prometheus.MustNewConstMetric(m.destAllocsDesc, prometheus.GaugeValue, d.AllocsPerSec, ns, proto, dest)
		}
	}
}

// serverLimits bound what a client of /metrics can hold: without them an
// idle or half-sent connection keeps its file descriptor for ever, and
// enough of them starve porttrace of descriptors.
type serverLimits struct {
	readHeader, read, write, idle time.Duration
	conns                         int
}

// defaultServerLimits: a scrape is one small request answered from memory,
// so 5s to send its header and 10s to read or write it (Prometheus's
// default scrape_timeout) are generous; 30s idle keeps a connection across
// scrapes 15s apart. 32 connections serve several scrapers and a few curls
// while staying far below a 1024 descriptor limit.
var defaultServerLimits = serverLimits{
	readHeader: 5 * time.Second,
	read:       10 * time.Second,
	write:      10 * time.Second,
	idle:       30 * time.Second,
	conns:      32,
}

// metricsFDs is what a /metrics server may hold: its listener, a
// connection for each of serverLimits.conns, and the odd one accepted
// while at the limit.
var metricsFDs = defaultServerLimits.conns + 4

// Serve serves /metrics on addr until the returned stop function is
// called. It fails at once if addr cannot be listened on. What goes wrong
// later is reported on stderr.
func (m *Metrics) Serve(addr string, stderr io.Writer) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	m.port = uint16(ln.Addr().(*net.TCPAddr).Port)
	m.addr = ln.Addr().String()
	logger := log.New(newOnceWriter(stderr, "porttrace: metrics server: "), "", 0)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: logger}))
	lim := m.limits
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		ErrorLog:          logger,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(newLimitListener(ln, lim.conns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Print(err)
		}
	}()
	return func() { srv.Close(); <-done }, nil
}

// Addr is the address Serve listens on, with the port the kernel chose
// when it was given port 0.
func (m *Metrics) Addr() string {
	return m.addr
}

// limitListener accepts at most n connections at a time; beyond that,
// Accept waits for one to close and new clients wait in the kernel's
// backlog instead of taking descriptors.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close also wakes an Accept waiting for a free slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	releaseOnce sync.Once
	release     func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(c.release)
	return err
}

// repeatEvery is how often a message that keeps recurring is said again.
const repeatEvery = time.Minute

// onceWriter says each distinct message once, and again at most once per
// repeatEvery while it recurs: out of descriptors, net/http reports the
// same accept error every second. Numbers (ports, retry delays) do not
// make a message distinct. Messages are escaped so that no control byte
// from a client reaches a terminal.
type onceWriter struct {
	w      io.Writer
	prefix string
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*seenMessage
}

type seenMessage struct {
	said time.Time
	held int // repeats not said since
}

// maxSeen bounds the distinct messages remembered; past it, all are
// forgotten and may be said again.
const maxSeen = 256

func newOnceWriter(w io.Writer, prefix string) *onceWriter {
	return &onceWriter{w: w, prefix: prefix, now: time.Now, seen: map[string]*seenMessage{}}
}

// Write takes one message, as log.Logger writes them.
func (o *onceWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	key := messageKey(msg)
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	s := o.seen[key]
	if s != nil && now.Sub(s.said) < repeatEvery {
		s.held++
		return len(p), nil
	}
	line := o.prefix + textout.Printable(msg)
	if s != nil && s.held > 0 {
		line += fmt.Sprintf(" (and %d more like it since %s)", s.held, s.said.Format(time.TimeOnly))
	}
	if s == nil {
		if len(o.seen) >= maxSeen {
			clear(o.seen)
		}
		s = &seenMessage{}
		o.seen[key] = s
	}
	s.said, s.held = now, 0
	if _, err := io.WriteString(o.w, line+"\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}

// messageKey is msg without net/http's "; retrying in 5ms" and without
// digits, so that repeats differing only in a delay or a port match.
func messageKey(msg string) string {
	if i := strings.LastIndex(msg, "; retrying in "); i >= 0 {
		msg = msg[:i]
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, msg)
}

// ownAccept reports whether ev is porttrace accepting a scrape of its own
// metrics: noise in the stream it is watching.
func (m *Metrics) ownAccept(ev *event.Event) bool {
	return m.port != 0 && ev.Kind == event.KindAccept && ev.PID == uint32(os.Getpid()) && ev.Local.Port() == m.port
}
