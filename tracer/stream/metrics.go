package stream

import (
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/event"
)

// Metrics is what the event stream's /metrics serves: events by kind and
// result, and the events lost. Labels stay low-cardinality.
type Metrics struct {
	mu     sync.Mutex
	events map[[2]string]float64 // {event, result}
	lost   float64
	port   uint16 // where the server listens, to leave its own accepts out

	eventsDesc, lostDesc *prometheus.Desc
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		events:     map[[2]string]float64{},
		eventsDesc: prometheus.NewDesc("porttrace_events_total", "Socket events reported, by event and result.", []string{"event", "result"}, nil),
		lostDesc:   prometheus.NewDesc("porttrace_lost_events_total", "Events dropped because the ring buffer was full.", nil, nil),
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

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.eventsDesc
	ch <- m.lostDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.events {
		ch <- prometheus.MustNewConstMetric(m.eventsDesc, prometheus.CounterValue, v, k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(m.lostDesc, prometheus.CounterValue, m.lost)
}

// ownAccept reports whether ev is porttrace accepting a scrape of its own
// metrics: noise in the stream it is watching.
func (m *Metrics) ownAccept(ev *event.Event) bool {
	return m.port != 0 && ev.Kind == event.KindAccept && ev.PID == uint32(os.Getpid()) && ev.Local.Port() == m.port
}
