package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"
)

// ChurnConfig is what `porttrace churn` takes on the command line.
type ChurnConfig struct {
	Interval     time.Duration
	Output       string
	Duration     time.Duration
	Metrics      string
	MetricsDests int
	Backend      Backend
	backend      string
}

// DefaultChurnConfig refreshes every second, as a table.
func DefaultChurnConfig() ChurnConfig {
	return ChurnConfig{Interval: time.Second, Output: "table", backend: "auto"}
}

// AddFlags registers the churn flags on fs.
func (c *ChurnConfig) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVarP(&c.Interval, "interval", "i", c.Interval, "refresh every interval")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: table or json (one object per interval)")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "stop after this long")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics on this address (e.g. :9477)")
	fs.IntVar(&c.MetricsDests, "metrics-destinations", c.MetricsDests, "also export the N busiest destinations per netns as series")
	fs.StringVar(&c.backend, "backend", c.backend, "kernel hooks: auto, fentry, kprobe or tracepoint")
}

// Validate checks the flags.
func (c *ChurnConfig) Validate() error {
	if err := checkOutput(c.Output, "table", "json"); err != nil {
		return err
	}
	if err := checkInterval(c.Interval); err != nil {
		return err
	}
	if err := checkDuration(c.Duration); err != nil {
		return err
	}
	if c.MetricsDests < 0 || c.MetricsDests > 1000 {
		return fmt.Errorf("invalid --metrics-destinations %d: want 0 to 1000", c.MetricsDests)
	}
	if c.MetricsDests > 0 && c.Metrics == "" {
		return errors.New("--metrics-destinations needs --metrics")
	}
	b, err := backendFlag(c.backend)
	if err != nil {
		return err
	}
	c.Backend = b
	return nil
}

// RunChurn counts ephemeral port allocations in the kernel and reports
// them every interval until ctx is done or --duration passes, then prints a
// summary of the whole run on stderr.
func RunChurn(ctx context.Context, cfg ChurnConfig, stdout, stderr io.Writer) error {
	var metrics *Metrics
	if cfg.Metrics != "" {
		metrics = NewMetrics()
		metrics.MaxDests = cfg.MetricsDests
		stop, err := metrics.Serve(cfg.Metrics)
		if err != nil {
			return err
		}
		defer stop()
	}
	t, err := New(Options{Backend: cfg.Backend, Events: kindSet(KindBind, KindConnect), UID: -1, Churn: true})
	if err != nil {
		return err
	}
	defer t.Close()
	fmt.Fprintf(stderr, "porttrace churn: counting with %s\n", t)

	first, err := t.ReadChurn()
	if err != nil {
		return err
	}
	state := NewChurnState(first)
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	out := bufio.NewWriter(stdout)
	_, tty := terminalWidth(stdout)
	clearScreen := cfg.Output == "table" && tty
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var last *ChurnTotals = first
	var buf []byte
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		cur, err := t.ReadChurn()
		if err != nil {
			return err
		}
		last = cur
		if done && cur.Time.Sub(state.prev.Time) < cfg.Interval/2 {
			break // a stub of an interval says nothing about rates
		}
		r := state.Next(cur)
		if metrics != nil {
			metrics.Churn(r)
		}
		if cfg.Output == "json" {
			buf = AppendChurnJSON(buf[:0], r)
			_, err = out.Write(buf)
		} else {
			if clearScreen {
				_, _ = out.WriteString("\x1b[H\x1b[2J")
			} else {
				_, _ = out.WriteString("\n")
			}
			err = WriteChurnTable(out, r)
		}
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	state.AddTotals(last)
	s := state.Summary
	fmt.Fprintf(stderr, "porttrace churn: %d allocations, peak %s/s, peak usage %.1f%%, failures: %s",
		s.Allocs, rate(s.PeakAllocsPerSec), s.PeakUsagePct, orNone(failString(s.Fails)))
	if s.BusiestAllocs > 0 {
		fmt.Fprintf(stderr, ", busiest destination %s (%d allocations)", s.Busiest, s.BusiestAllocs)
	}
	fmt.Fprintln(stderr)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func kindSet(kinds ...Kind) KindSet {
	var s KindSet
	for _, k := range kinds {
		s.set |= 1 << k
	}
	return s
}
