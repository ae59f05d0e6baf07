package stream

import (
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// Metrics is what the event stream's /metrics serves: events by kind,
// result and errno, how TCP connects ended and how long their handshakes
// took, and the events lost. Labels stay low-cardinality: kinds and
// results are enums, and errno is bounded by errnoLabel.
type Metrics struct {
	mu       sync.Mutex
	events   map[[3]string]float64 // {event, result, errno}
	outcomes map[[2]string]float64 // {result, errno}
	latency  *prometheus.HistogramVec
	lost     float64
	port     uint16 // where the server listens, to leave its own accepts out

	sampled float64 // left out by --sample

	eventsDesc, outcomesDesc, lostDesc, sampledDesc *prometheus.Desc
}

// LatencyBuckets are the connect latency histogram's upper bounds in
// seconds: from a loopback handshake to the SYN timeout of Linux's default
// tcp_syn_retries (6: 127 s).
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 130}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		events:   map[[3]string]float64{},
		outcomes: map[[2]string]float64{},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "porttrace_connect_latency_seconds",
			Help:    "Time from a TCP connect call to the end of its handshake, by result.",
			Buckets: LatencyBuckets,
		}, []string{"result"}),
		eventsDesc: prometheus.NewDesc("porttrace_events_total",
			`Socket events reported, by event, result and errno ("" when the call succeeded).`, []string{"event", "result", "errno"}, nil),
		outcomesDesc: prometheus.NewDesc("porttrace_connect_outcomes_total",
			"TCP connects whose handshake ended, by result and errno (blocking connects and connect_done).", []string{"result", "errno"}, nil),
		lostDesc: prometheus.NewDesc("porttrace_lost_events_total", "Events dropped because the ring buffer was full.", nil, nil),
		sampledDesc: prometheus.NewDesc("porttrace_sampled_out_events_total",
			"Events left out by --sample, counted in the kernel.", nil, nil),
	}
}

// Event counts one event of the stream; a TCP connect whose handshake
// ended also counts as an outcome, with its latency.
func (m *Metrics) Event(ev *event.Event) {
	m.mu.Lock()
	errno := errnoLabel(ev)
	m.events[[3]string{ev.Kind.String(), ev.Result.String(), errno}]++
	ended := ev.Kind == event.KindConnectDone ||
		(ev.Kind == event.KindConnect && ev.Result != event.ResultInProgress && ev.HasLatency)
	if ended {
		m.outcomes[[2]string{ev.Result.String(), errno}]++
	}
	m.mu.Unlock()
	if ended && ev.HasLatency {
		m.latency.WithLabelValues(ev.Result.String()).Observe(ev.Latency.Seconds())
	}
}

// Lost adds dropped events.
func (m *Metrics) Lost(n uint64) {
	m.mu.Lock()
	m.lost += float64(n)
	m.mu.Unlock()
}

// SampledOut sets the events --sample left out, all told.
func (m *Metrics) SampledOut(n uint64) {
	m.mu.Lock()
	m.sampled = float64(n)
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.eventsDesc
	ch <- m.outcomesDesc
	ch <- m.lostDesc
	ch <- m.sampledDesc
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.events {
		ch <- prometheus.MustNewConstMetric(m.eventsDesc, prometheus.CounterValue, v, k[0], k[1], k[2])
	}
	for k, v := range m.outcomes {
		ch <- prometheus.MustNewConstMetric(m.outcomesDesc, prometheus.CounterValue, v, k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(m.lostDesc, prometheus.CounterValue, m.lost)
	ch <- prometheus.MustNewConstMetric(m.sampledDesc, prometheus.CounterValue, m.sampled)
	m.latency.Collect(ch)
}

// ownAccept reports whether ev is porttrace accepting a scrape of its own
// metrics: noise in the stream it is watching.
func (m *Metrics) ownAccept(ev *event.Event) bool {
	return m.port != 0 && ev.Kind == event.KindAccept && ev.PID == uint32(os.Getpid()) && ev.Local.Port() == m.port
}

// errnoLabel is ev's errno as a label value: "" when the call succeeded,
// as the JSON leaves errno out then (Prometheus stores an empty label as
// no label, so an ok call's series has event and result alone), the name
// ErrnoName gives it otherwise, and "other" for a number the kernel
// returned that has no name. ErrnoName's names are a fixed table
// (golang.org/x/sys's Linux errnos and the kernel's restart codes), so the
// label takes a bounded set of values; only its fallback, "errno" and the
// number, could grow with whatever a kernel returns, and it is folded.
func errnoLabel(ev *event.Event) string {
	name := ev.ErrnoName()
	if strings.HasPrefix(name, "errno") {
		return "other"
	}
	return name
}

// server is how --metrics serves.
func (c *Config) server() promserve.Config {
	return promserve.Config{Addr: c.Metrics, WebConfig: c.WebConfig, Version: c.BuildVersion}
}
