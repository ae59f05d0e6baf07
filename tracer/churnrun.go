package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
	"github.com/porttrace/porttrace/tracer/textout"
)

// RunChurn counts ephemeral port allocations in the kernel and reports
// them every interval until ctx is done or --duration passes, then prints a
// summary of the whole run on stderr.
func RunChurn(ctx context.Context, cfg ChurnConfig, stdout, stderr io.Writer) error {
	opts := Options{Backend: cfg.Backend, Events: kindSet(event.KindBind, event.KindConnect), Churn: true}
	if cfg.Metrics != "" {
		opts.ExtraFDs = promserve.DefaultLimits.FDs()
	}
	t, err := New(opts)
	if err != nil {
		return err
	}
	defer t.Close()
	var metrics *Metrics
	if cfg.Metrics != "" {
		metrics = NewMetrics()
		metrics.MaxDests = cfg.MetricsDests
		stop, err := metrics.Serve(cfg.Metrics, stderr)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(stderr, "porttrace churn: serving metrics on http://%s/metrics\n", metrics.Addr())
	}
	fmt.Fprintf(stderr, "porttrace churn: counting with %s\n", t.Describe(cfg.Verbose))

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
	sw := textout.NewStopWriter(ctx, stdout)
	defer sw.Close()
	out := bufio.NewWriter(sw)
	_, tty := textout.TerminalWidth(stdout)
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
		if errors.Is(err, textout.ErrStalled) {
			break
		}
		if err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	// The kernel's counts as they are now: the last report may be old
	// when a stalled output held the loop up.
	if cur, err := t.ReadChurn(); err == nil {
		last = cur
	}
	state.AddTotals(last)
	s := state.Summary
	fmt.Fprintf(stderr, "porttrace churn: %d %s, peak %s/s, peak usage %.1f%%, failures: %s",
		s.Allocs, textout.Plural(int(s.Allocs), "allocation", "allocations"), rate(s.PeakAllocsPerSec), s.PeakUsagePct, orNone(failString(s.Fails)))
	if s.BusiestAllocs > 0 {
		fmt.Fprintf(stderr, ", busiest destination %s (%d %s)", s.Busiest, s.BusiestAllocs, textout.Plural(int(s.BusiestAllocs), "allocation", "allocations"))
	}
	fmt.Fprintln(stderr)
	if sw.Stalled() {
		fmt.Fprintln(stderr, "porttrace churn: stopped while the output was not being read: the last report was not delivered")
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func kindSet(kinds ...event.Kind) KindSet {
	var s KindSet
	for _, k := range kinds {
		s.set |= 1 << k
	}
	return s
}
