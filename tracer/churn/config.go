// Package churn is `porttrace churn`: ephemeral port allocations counted
// in the kernel (tracer's churn mode), read once an interval, joined with
// the usage of each namespace's range from sock_diag, and turned into
// rates, headroom and time to exhaustion per namespace, destination and
// process; shown as a table, JSON or Prometheus metrics.
package churn

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// Config is what `porttrace churn` takes on the command line.
type Config struct {
	Interval     time.Duration
	Output       string
	Duration     time.Duration
	Metrics      string
	MetricsDests int
	Verbose      bool
	Backend      event.Backend
	backend      string
	// Scope is --cgroup, --netns, --container, --pod, --k8s-namespace
	// and --runtime-socket.
	flagcheck.Scope
	// MetricsWorkloads is --metrics-workloads: how many containers a
	// namespace exports as series.
	MetricsWorkloads int
	// WebConfig is --web.config.file: TLS and basic auth for --metrics.
	WebConfig string
	// BuildVersion is the binary's version, which cmd/porttrace sets:
	// porttrace_build_info and the landing page of --metrics show it.
	BuildVersion string
}

// DefaultConfig refreshes every second, as a table.
func DefaultConfig() Config {
	return Config{Interval: time.Second, Output: "table", backend: "auto"}
}

// AddFlags registers the churn flags on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVarP(&c.Interval, "interval", "i", c.Interval, "refresh every `DURATION`")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output `FORMAT`: table or json (one object per interval)")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "stop after this long: a `DURATION` such as 30s or 5m")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics on this `ADDR` (HOST:PORT or :PORT, e.g. :9477)")
	fs.IntVar(&c.MetricsDests, "metrics-destinations", c.MetricsDests, "also export the `N` busiest destinations per netns as series")
	fs.StringVar(&c.WebConfig, "web.config.file", c.WebConfig, promserve.WebConfigHelp)
	c.Scope.AddFlags(fs)
	fs.IntVar(&c.MetricsWorkloads, "metrics-workloads", c.MetricsWorkloads, "also export the `N` busiest containers per netns as series")
	fs.StringVar(&c.backend, "backend", c.backend, "the kernel hooks, a `BACKEND`: auto, fentry, kprobe or tracepoint")
	fs.BoolVarP(&c.Verbose, "verbose", "v", c.Verbose, flagcheck.VerboseHelp)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	if err := flagcheck.First(flagcheck.Output(c.Output, "table", "json"), flagcheck.Interval(c.Interval), flagcheck.Duration(c.Duration),
		flagcheck.MetricsAddr(c.Metrics), promserve.CheckWebConfig(c.WebConfig, c.Metrics)); err != nil {
		return err
	}
	if c.MetricsDests < 0 || c.MetricsDests > 1000 {
		return fmt.Errorf("invalid --metrics-destinations %d: want 0 to 1000", c.MetricsDests)
	}
	if c.MetricsDests > 0 && c.Metrics == "" {
		return errors.New("--metrics-destinations needs --metrics")
	}
	if c.MetricsWorkloads < 0 || c.MetricsWorkloads > 1000 {
		return fmt.Errorf("invalid --metrics-workloads %d: want 0 to 1000", c.MetricsWorkloads)
	}
	if c.MetricsWorkloads > 0 && c.Metrics == "" {
		return errors.New("--metrics-workloads needs --metrics")
	}
	var err error
	if c.Backend, err = flagcheck.Backend(c.backend); err != nil {
		return err
	}
	return c.Scope.Validate()
}
