// Package promserve serves a Prometheus collector on /metrics as an
// exporter: beside the collector, porttrace_build_info and the Go and
// process collectors, a landing page on /, TLS and basic auth from an
// exporter toolkit web configuration; hardened for a tool run on machines
// in trouble: timeouts for every phase of a request, a cap on connections,
// and its own errors said once rather than every second, escaped.
package promserve

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/porttrace/porttrace/tracer/textout"
)

// Limits bound what a client of /metrics can hold: without them an idle
// or half-sent connection keeps its file descriptor for ever, and enough
// of them starve porttrace of descriptors.
type Limits struct {
	ReadHeader, Read, Write, Idle time.Duration
	Conns                         int
	// HeaderBytes caps a request's header (net/http allows 4 KiB more);
	// 0 is net/http's 1 MiB.
	HeaderBytes int
}

// DefaultLimits: a scrape is one small request answered from memory,
// so 5s to send its header and 10s to read or write it (Prometheus's
// default scrape_timeout) are generous; 30s idle keeps a connection across
// scrapes 15s apart. 32 connections serve several scrapers and a few curls
// while staying far below a 1024 descriptor limit. A scrape's header is a
// few hundred bytes (Accept, User-Agent, the scrape timeout, perhaps
// Authorization): 32 KiB leaves room for proxies, where net/http's 1 MiB
// would let each connection hold a megabyte, 32 MiB in all.
var DefaultLimits = Limits{
	ReadHeader:  5 * time.Second,
	Read:        10 * time.Second,
	Write:       10 * time.Second,
	Idle:        30 * time.Second,
	Conns:       32,
	HeaderBytes: 32 << 10,
}

// FDs is how many file descriptors a server under l may hold: its
// listener, a connection for each of Conns, and the odd one accepted while
// at the limit.
func (l Limits) FDs() int { return l.Conns + 4 }

// Config is how a server serves: where, with what TLS and
// authentication, and what it says of the binary besides the collector.
type Config struct {
	// Addr is --metrics: where to listen.
	Addr string
	// WebConfig is --web.config.file: the exporter toolkit's web
	// configuration (TLS, basic auth), read again on each connection so
	// that a renewed certificate needs no restart; "" for plain HTTP.
	WebConfig string
	// Version is the binary's version ("unknown" when empty) and Backend
	// the tracer's: both label porttrace_build_info, and the landing page
	// shows them.
	Version, Backend string
	// Limits bound the clients; DefaultLimits when zero.
	Limits Limits
}

// Server is a running /metrics server.
type Server struct {
	addr string
	port uint16
	url  string
	stop func()
}

// Serve serves c on cfg.Addr's /metrics, with porttrace_build_info and the
// Go and process collectors beside it and a landing page on /, until
// Close. It fails at once if the web configuration is bad or cfg.Addr
// cannot be listened on; what goes wrong later is said on stderr.
func Serve(cfg Config, c prometheus.Collector, stderr io.Writer) (*Server, error) {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	tlsOn, err := readWebConfig(cfg.WebConfig)
	if err != nil {
		return nil, err
	}
	reg, err := newRegistry(c, cfg)
	if err != nil {
		return nil, err
	}
	landing, err := newLanding(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	said := newOnceWriter(stderr, "porttrace: metrics server: ")
	logger := log.New(said, "", 0)
	// GET (and HEAD) alone: a scrape is a GET, and a POST that announces
	// a body and never sends it would hold the answer until the timeouts.
	// Any other path is 404.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: logger})))
	mux.Handle("GET /{$}", landing)
	lim := cfg.Limits
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: lim.ReadHeader,
		ReadTimeout:       lim.Read,
		WriteTimeout:      lim.Write,
		IdleTimeout:       lim.Idle,
		MaxHeaderBytes:    lim.HeaderBytes,
		ErrorLog:          logger,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		flags := &web.FlagConfig{WebConfigFile: &cfg.WebConfig}
		if err := web.Serve(newLimitListener(ln, lim.Conns), srv, flags, slogTo(said)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Print(err)
		}
	}()
	addr := ln.Addr().String()
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	return &Server{addr: addr, port: uint16(ln.Addr().(*net.TCPAddr).Port), url: scheme + "://" + addr + "/metrics",
		stop: func() { srv.Close(); <-done }}, nil
}

// Addr is the address the server listens on, with the port the kernel
// chose when it was given port 0.
func (s *Server) Addr() string { return s.addr }

// Port is the port of Addr.
func (s *Server) Port() uint16 { return s.port }

// URL is where to scrape: https when the web configuration turns TLS on.
func (s *Server) URL() string { return s.url }

// Close stops the server and waits for it.
func (s *Server) Close() { s.stop() }

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
