package churn

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// Collector is what churn's /metrics serves: the latest report, by
// namespace, with the MaxDests busiest destinations of each as series of
// their own when asked for (labels stay low-cardinality otherwise). What
// the kernel counts is exported as counters of the totals since porttrace
// started, never as rates: Prometheus takes rate() over whatever window
// the query asks, where a rate of porttrace's interval would be sampled.
type Collector struct {
	mu           sync.Mutex
	report       *Report
	maxDests     int
	maxWorkloads int

	allocsDesc, failsDesc, inUseDesc, timeWaitDesc, rangeDesc, etaDesc,
	overflowDesc, destInUseDesc, destAllocsDesc, destFailsDesc, workloadAllocsDesc, workloadFailsDesc, podAllocsDesc, podFailsDesc *prometheus.Desc
}

// workloadLabels name a container, or a pod outside its containers: ids
// always, names where the runtime gave them (empty otherwise).
var workloadLabels = []string{"netns", "container_id", "pod_uid", "container", "pod", "k8s_namespace"}

// podLabels name a pod: its UID always, its names where the runtime gave them.
var podLabels = []string{"netns", "pod_uid", "pod", "k8s_namespace"}

// NewCollector serves no report until Set; maxDests destinations and
// maxWorkloads containers of each namespace are exported.
func NewCollector(maxDests, maxWorkloads int) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("porttrace_"+name, help, labels, nil)
	}
	return &Collector{
		maxDests:     maxDests,
		maxWorkloads: maxWorkloads,
		workloadAllocsDesc: d("ephemeral_workload_allocations_total",
			"Ephemeral ports allocated by the processes of one container (--metrics-workloads).", workloadLabels...),
		workloadFailsDesc: d("ephemeral_workload_failures_total",
			"Ephemeral port allocations that failed in one container (--metrics-workloads).", workloadLabels...),
		podAllocsDesc: d("ephemeral_pod_allocations_total",
			"Ephemeral ports allocated by the containers of one Kubernetes pod (--metrics-workloads).", podLabels...),
		podFailsDesc: d("ephemeral_pod_failures_total",
			"Ephemeral port allocations that failed in one Kubernetes pod (--metrics-workloads).", podLabels...),
		allocsDesc:     d("ephemeral_allocations_total", "Ephemeral ports allocated (connect autobind, bind to port 0).", "netns", "call"),
		failsDesc:      d("ephemeral_failures_total", "Ephemeral port allocations that failed, by errno.", "netns", "errno"),
		inUseDesc:      d("ephemeral_ports_in_use", "Ports of the ephemeral range some socket holds, each counted once, TIME_WAIT included.", "netns"),
		timeWaitDesc:   d("ephemeral_ports_time_wait", "Sockets in TIME_WAIT holding a port of the ephemeral range.", "netns"),
		rangeDesc:      d("ephemeral_range_size", "Ports in ip_local_port_range less ip_local_reserved_ports.", "netns"),
		etaDesc:        d("ephemeral_exhaustion_seconds", "Time until a destination or the range runs out at the current growth (absent when not growing).", "netns"),
		overflowDesc:   d("churn_map_overflow_total", "Churn keys not counted because a kernel map was full."),
		destInUseDesc:  d("ephemeral_destination_ports_in_use", "Ephemeral ports in use towards one destination (--metrics-destinations).", "netns", "proto", "destination"),
		destAllocsDesc: d("ephemeral_destination_allocations_total", "Ephemeral ports allocated towards one destination (--metrics-destinations).", "netns", "proto", "destination"),
		destFailsDesc:  d("ephemeral_destination_failures_total", "Ephemeral port allocations towards one destination that failed (--metrics-destinations).", "netns", "proto", "destination"),
	}
}

// Set replaces the report served.
func (c *Collector) Set(r *Report) {
	c.mu.Lock()
	c.report = r
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.allocsDesc, c.failsDesc, c.inUseDesc, c.timeWaitDesc, c.rangeDesc,
		c.etaDesc, c.overflowDesc, c.destInUseDesc, c.destAllocsDesc, c.destFailsDesc, c.workloadAllocsDesc, c.workloadFailsDesc,
		c.podAllocsDesc, c.podFailsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.report
	if r == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.overflowDesc, prometheus.CounterValue, float64(r.Overflow))
	for i := range r.Netns {
		c.collectNetns(ch, &r.Netns[i])
	}
}

func (c *Collector) collectNetns(ch chan<- prometheus.Metric, n *NetnsReport) {
	ns := strconv.FormatUint(uint64(n.Netns), 10)
	for call, v := range n.AllocsTotal {
		ch <- prometheus.MustNewConstMetric(c.allocsDesc, prometheus.CounterValue, float64(v), ns, call)
	}
	for errno, v := range n.FailsTotal {
		ch <- prometheus.MustNewConstMetric(c.failsDesc, prometheus.CounterValue, float64(v), ns, errno)
	}
	for _, w := range n.Workloads[:min(c.maxWorkloads, len(n.Workloads))] {
		labels := []string{ns, w.Workload.ContainerID, w.Workload.PodUID, w.Names.Container, w.Names.Pod, w.Names.Namespace}
		ch <- prometheus.MustNewConstMetric(c.workloadAllocsDesc, prometheus.CounterValue, float64(w.Allocs), labels...)
		ch <- prometheus.MustNewConstMetric(c.workloadFailsDesc, prometheus.CounterValue, float64(w.Fails), labels...)
	}
	for _, p := range n.Pods[:min(c.maxWorkloads, len(n.Pods))] {
		labels := []string{ns, p.Workload.PodUID, p.Names.Pod, p.Names.Namespace}
		ch <- prometheus.MustNewConstMetric(c.podAllocsDesc, prometheus.CounterValue, float64(p.Allocs), labels...)
		ch <- prometheus.MustNewConstMetric(c.podFailsDesc, prometheus.CounterValue, float64(p.Fails), labels...)
	}
	if n.UsageErr != "" {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.inUseDesc, prometheus.GaugeValue, float64(n.InUse), ns)
	ch <- prometheus.MustNewConstMetric(c.timeWaitDesc, prometheus.GaugeValue, float64(n.TimeWait), ns)
	ch <- prometheus.MustNewConstMetric(c.rangeDesc, prometheus.GaugeValue, float64(n.RangeSize), ns)
	if n.Exhaustion >= 0 {
		ch <- prometheus.MustNewConstMetric(c.etaDesc, prometheus.GaugeValue, n.Exhaustion.Seconds(), ns)
	}
	for _, d := range n.Dests[:min(c.maxDests, len(n.Dests))] {
		proto, dest := event.ProtoName(d.Dest.Proto), d.Dest.Remote.String()
		ch <- prometheus.MustNewConstMetric(c.destInUseDesc, prometheus.GaugeValue, float64(d.InUse), ns, proto, dest)
		ch <- prometheus.MustNewConstMetric(c.destAllocsDesc, prometheus.CounterValue, float64(d.Allocs), ns, proto, dest)
		ch <- prometheus.MustNewConstMetric(c.destFailsDesc, prometheus.CounterValue, float64(d.Fails), ns, proto, dest)
	}
}

// server is how --metrics serves.
func (c *Config) server() promserve.Config {
	return promserve.Config{Addr: c.Metrics, WebConfig: c.WebConfig, Version: c.BuildVersion}
}
