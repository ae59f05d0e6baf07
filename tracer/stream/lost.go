package stream

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

// lostReport tells of events the kernel dropped, each loss once: on
// stderr, as a lost line of the output, and in the metrics. Two losses are
// counted apart: events the ring buffer had no room for, and the
// connect_done of connects that the kernel could not follow because
// maxConnecting were already in progress.
type lostReport struct {
	counter interface {
		Lost() (uint64, error)
		LostByCPU() ([]uint64, error)
		Unfollowed() (uint64, error)
		SampledOut() (uint64, error)
	}
	maxConnecting int // connects in progress the kernel follows at once
	out           writer
	stderr        io.Writer
	metrics       *Metrics
	reported      uint64 // the kernel's count when last told
	reportedByCPU []uint64
	unfollowed    uint64 // likewise, of connects not followed
	pace          pace   // how fast the output takes events, for the advice on a first loss
	advised       bool
}

// pace measures, between two looks, the events written and the share of
// the loop's working time (its time not spent waiting for events) that
// went waiting for the output to take them.
type pace struct {
	busy     *time.Duration       // time the output took, all told
	waited   func() time.Duration // time spent waiting for events, all told
	written  *uint64              // events written, all told
	since    time.Time
	busy0    time.Duration
	waited0  time.Duration
	written0 uint64
}

// look returns what happened since the last look: how long ago that was,
// events written a second and the share of the working time the output
// took (all 0 without the measures).
func (p *pace) look() (wall time.Duration, perSec float64, outputShare float64) {
	now := time.Now()
	wall = now.Sub(p.since)
	if wall <= 0 || p.busy == nil || p.written == nil || p.waited == nil {
		return 0, 0, 0
	}
	waited := p.waited()
	perSec = float64(*p.written-p.written0) / wall.Seconds()
	if working := wall - (waited - p.waited0); working > 0 {
		outputShare = min(1, float64(*p.busy-p.busy0)/float64(working))
	}
	p.since, p.busy0, p.waited0, p.written0 = now, *p.busy, waited, *p.written
	return wall, perSec, outputShare
}

// advice is said once, at the first loss: whether the output or the
// reading is the bottleneck, at what rates, and what to do instead of
// losing events.
func advice(writtenPerSec, lostPerSec, outputShare float64) string {
	rates := fmt.Sprintf("%.0f events a second written, %.0f lost", writtenPerSec, lostPerSec)
	if outputShare >= 0.5 {
		return fmt.Sprintf("porttrace: the output takes events more slowly than they come (%s; %.0f%% of the time waiting for it): "+
			"a slow terminal or reader; --sample N sends one in N, -o json into a file keeps up longer, --buffer absorbs bursts, porttrace churn counts without events\n",
			rates, 100*outputShare)
	}
	return fmt.Sprintf("porttrace: events come faster than porttrace reads them (%s): --sample N sends one in N; "+
		"-p, --pid, --cgroup or --netns leave the rest out in the kernel\n", rates)
}

// timedWriter counts the time its writes take: the output's pace.
type timedWriter struct {
	w    io.Writer
	busy time.Duration
}

func (t *timedWriter) Write(p []byte) (int, error) {
	start := time.Now()
	n, err := t.w.Write(p)
	t.busy += time.Since(start)
	return n, err
}

// check reports what the kernel dropped since the last check.
func (l *lostReport) check() {
	wall, perSec, share := l.pace.look()
	if lost, err := l.counter.Lost(); err == nil && lost > l.reported {
		n := lost - l.reported
		l.reported = lost
		fmt.Fprintf(l.stderr, "porttrace: %d %s lost: %s\n", n, textout.Plural(int(n), "event", "events"), l.where())
		if !l.advised && wall > 0 {
			l.advised = true
			fmt.Fprint(l.stderr, advice(perSec, float64(n)/wall.Seconds(), share))
		}
		l.tell(n, "")
	}
	if n, err := l.counter.SampledOut(); err == nil && n > 0 && l.metrics != nil {
		l.metrics.SampledOut(n)
	}
	if lost, err := l.counter.Unfollowed(); err == nil && lost > l.unfollowed {
		n := lost - l.unfollowed
		l.unfollowed = lost
		fmt.Fprintf(l.stderr, "porttrace: %d connect_done %s lost: more than %d connects were in progress at once\n",
			n, textout.Plural(int(n), "event", "events"), l.maxConnecting)
		l.tell(n, event.KindConnectDone.String())
	}
}

// where says which CPUs' rings were full since the last loss told, the
// three that lost most.
func (l *lostReport) where() string {
	byCPU, err := l.counter.LostByCPU()
	if err != nil || len(byCPU) < 2 {
		return "the ring buffer was full"
	}
	type cpuLost struct {
		cpu int
		n   uint64
	}
	var full []cpuLost
	for cpu, n := range byCPU {
		if cpu < len(l.reportedByCPU) {
			n -= l.reportedByCPU[cpu]
		}
		if n > 0 {
			full = append(full, cpuLost{cpu, n})
		}
	}
	l.reportedByCPU = byCPU
	slices.SortStableFunc(full, func(a, b cpuLost) int { return cmp.Compare(b.n, a.n) })
	var parts []string
	for i, c := range full {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more", len(full)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("CPU %d (%d)", c.cpu, c.n))
	}
	if len(parts) == 0 {
		return "the ring buffers were full"
	}
	return "the ring buffers of " + textout.List(parts) + " were full"
}

func (l *lostReport) tell(n uint64, kind string) {
	l.out.Lost(n, kind)
	if l.metrics != nil {
		l.metrics.Lost(n)
	}
}
