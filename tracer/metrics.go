package tracer

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
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
	limits   promserve.Limits

	eventsDesc, lostDesc, allocsDesc, failsDesc, inUseDesc, timeWaitDesc,
	rangeDesc, etaDesc, overflowDesc, destInUseDesc, destAllocsDesc *prometheus.Desc
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("porttrace_"+name, help, labels, nil)
	}
	return &Metrics{
		limits:         promserve.DefaultLimits,
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

// serveAndSay serves m on addr and says where on stderr, as cmd (the
// command's name) says things.
func (m *Metrics) serveAndSay(addr, cmd string, stderr io.Writer) (stop func(), err error) {
	stop, err = m.Serve(addr, stderr)
	if err == nil {
		fmt.Fprintf(stderr, "%s: serving metrics on http://%s/metrics\n", cmd, m.Addr())
	}
	return stop, err
}

// Serve serves m on addr's /metrics until the returned stop function is
// called (see promserve.Serve).
func (m *Metrics) Serve(addr string, stderr io.Writer) (stop func(), err error) {
	srv, err := promserve.Serve(addr, m, m.limits, stderr)
	if err != nil {
		return nil, err
	}
	m.port, m.addr = srv.Port(), srv.Addr()
	return srv.Close, nil
}

// Addr is the address Serve listens on, with the port the kernel chose
// when it was given port 0.
func (m *Metrics) Addr() string {
	return m.addr
}

// ownAccept reports whether ev is porttrace accepting a scrape of its own
// metrics: noise in the stream it is watching.
func (m *Metrics) ownAccept(ev *event.Event) bool {
	return m.port != 0 && ev.Kind == event.KindAccept && ev.PID == uint32(os.Getpid()) && ev.Local.Port() == m.port
}
