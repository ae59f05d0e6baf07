package churn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Run counts ephemeral port allocations in the kernel and reports
// them every interval until ctx is done or --duration passes, then prints a
// summary of the whole run on stderr.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	nsScope, err := netns.Inodes(cfg.Netns)
	if err != nil {
		return err
	}
	var metrics *Collector
	if cfg.Metrics != "" {
		metrics = NewCollector(cfg.MetricsDests, cfg.MetricsWorkloads)
	}
	t, _, detach, err := tracer.Attach(tracer.Options{Backend: cfg.Backend, Events: tracer.KindsOf(event.KindBind, event.KindConnect), Churn: true,
		Cgroups: cfg.KernelCgroups(), Netns: nsScope},
		metrics, cfg.server(), "porttrace churn", "counting", cfg.Verbose, stderr)
	if err != nil {
		return err
	}
	defer detach()
	// A namespace of --netns destroyed (deleted, its last process gone)
	// ends the trace once none is left, said on stderr.
	ctx, stopGone := netns.UntilGone(ctx, cfg.Netns, stderr, "porttrace churn")
	defer stopGone()
	// Rows and series by container name where a runtime's API answers.
	names := workload.NewResolver(cfg.RuntimeSockets...)
	defer names.Close()
	names.Announce(stderr, "porttrace churn", false)
	// Counted in the kernel, churn has no call to judge: a workload that
	// starts later is counted from the scan that finds it.
	scope, err := tracer.ScopeWorkloads(ctx, t, cfg.Workloads, names, "porttrace churn", stderr)
	if err != nil {
		return err
	}
	defer scope.Stop() // before detach: no verdict is set on closed maps
	first, err := t.ReadChurn()
	if err != nil {
		return err
	}
	state := NewState(first, nsScope)
	en := proc.NewEnricher()
	en.NameContainers(names)
	state.Workload = func(id uint64) (workload.Identity, workload.Names) { return en.CgroupWorkload(id, time.Now()) }
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	sw := textout.NewStopWriter(ctx, stdout)
	defer sw.Close()
	_, tty := textout.TerminalWidth(stdout)
	v := &churnView{cfg: cfg, out: bufio.NewWriter(sw), clearScreen: cfg.Output == "table" && tty, metrics: metrics}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
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
		if done && cur.Time.Sub(state.prev.Time) < cfg.Interval/2 {
			break // a stub of an interval says nothing about rates
		}
		if err := v.report(state.Next(cur)); errors.Is(err, textout.ErrStalled) {
			break
		} else if err != nil {
			return err
		}
		// What is gone leaves the kernel's maps once its last counts are
		// read, kept in the totals.
		if err := state.Retire(t.ForgetChurn); err != nil {
			return err
		}
	}
	// The kernel's counts as they are now: the last report may be old
	// when a stalled output held the loop up.
	last, err := t.ReadChurn()
	if err != nil {
		last = state.prev
	}
	state.AddTotals(last)
	sayChurnSummary(stderr, &state.Summary, sw.Stalled())
	return nil
}

// churnView writes each interval's report where it goes.
type churnView struct {
	cfg         Config
	out         *bufio.Writer
	clearScreen bool // a terminal: each report replaces the last
	metrics     *Collector
	buf         []byte
}

func (v *churnView) report(r *Report) error {
	if v.metrics != nil {
		v.metrics.Set(r)
	}
	var err error
	if v.cfg.Output == "json" {
		v.buf = AppendJSON(v.buf[:0], r)
		_, err = v.out.Write(v.buf)
	} else {
		if v.clearScreen {
			_, _ = v.out.WriteString("\x1b[H\x1b[2J")
		} else {
			_, _ = v.out.WriteString("\n")
		}
		err = WriteTable(v.out, r)
	}
	if err == nil {
		err = v.out.Flush()
	}
	if err != nil && !errors.Is(err, textout.ErrStalled) {
		return textout.OutputError(err)
	}
	return err
}

// sayChurnSummary is the line on stderr at the end of a churn run.
func sayChurnSummary(stderr io.Writer, s *Summary, stalled bool) {
	fmt.Fprintf(stderr, "porttrace churn: %d %s, peak %s/s, peak usage %.1f%%, failures: %s",
		s.Allocs, textout.Plural(int(s.Allocs), "allocation", "allocations"), rate(s.PeakAllocsPerSec), s.PeakUsagePct, orNone(failString(s.Fails)))
	if s.BusiestAllocs > 0 {
		fmt.Fprintf(stderr, ", busiest destination %s (%d %s)", s.Busiest, s.BusiestAllocs, textout.Plural(int(s.BusiestAllocs), "allocation", "allocations"))
	}
	fmt.Fprintln(stderr)
	if stalled {
		fmt.Fprintln(stderr, "porttrace churn: stopped while the output was not being read: the last report was not delivered")
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
