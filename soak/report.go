package main

import (
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The bounds a soak holds each porttrace process to after the warm-up,
// against its first look after the warm-up.
const (
	rssSlackKB   = 10 << 10 // RSS never more than 10 MiB above it
	trendSlackKB = 4 << 10  // the last tenth's mean RSS at most 4 MiB above the second tenth's
	goroutineMax = 10       // goroutines never more than 10 above it
	fdMax        = 10       // open files never more than 10 above it
)

// result is what a soak saw.
type result struct {
	opts       options
	cgroup     string
	inodes     map[string]uint64
	elapsed    time.Duration
	gen        *tally
	stream     streamCount
	churnLines uint64
	portsLines uint64
	churnBad   []string // lines of churn's and of ports --watch's output that are not JSON
	portsBad   []string
	churnFinal []byte
	bystanders bystanderTally
	procs      []*tracerProc
	exitErrs   []string
}

func (r *result) proc(name string) *tracerProc {
	for _, p := range r.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// print writes the summary table.
func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "\nsoak: %s of load (warm-up %s), cgroup %s, netns load %d, denied %d, exhaust %d\n",
		r.elapsed.Round(time.Second), r.opts.warmup, r.cgroup, r.inodes["load"], r.inodes["denied"], r.inodes["exhaust"])
	fmt.Fprintf(w, "%-36s %12s %12s\n", "event/result", "generated", "delivered")
	keys := slices.Sorted(maps.Keys(r.gen.Events))
	for k := range r.stream.Events {
		if _, ok := r.gen.Events[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		fmt.Fprintf(w, "%-36s %12d %12d\n", k, r.gen.Events[k], r.stream.Events[k])
	}
	fmt.Fprintf(w, "%-36s %12d %12d  lost %d\n", "total", sum(r.gen.Events), sum(r.stream.Events), r.stream.Lost)
	fmt.Fprintf(w, "load: %d exhaust cycles of %d ports, %d short-lived children each in a netns of its own; churn wrote %d lines, ports --watch %d\n",
		r.gen.Cycles, exhaustHigh-exhaustLow+1, r.gen.Children, r.churnLines, r.portsLines)
	fmt.Fprintf(w, "bystanders: %d files (sockets) held outside every tracer's scope by %d processes for %s, %d times\n",
		r.opts.bystander, r.bystanders.Procs, bystanderHold, r.bystanders.Bursts)
	overflow, _ := metricSum(r.churnFinal, "porttrace_churn_map_overflow_total", nil)
	fmt.Fprintf(w, "churn /metrics: %d namespaces exported, %d churn keys not counted because a kernel map was full\n",
		strings.Count(string(r.churnFinal), "\nporttrace_ephemeral_range_size{"), int64(overflow))
	for _, ns := range []string{"load", "denied", "exhaust"} {
		a, f := r.churnCounts(ns)
		fmt.Fprintf(w, "churn /metrics, netns %-8s allocations %d (load made %d), failures %d (load saw %d)\n",
			ns, int64(a), r.gen.Allocs[ns], int64(f), r.gen.Fails[ns])
	}
	fmt.Fprintf(w, "%-7s %-22s %-14s %-14s %-14s %-21s %s\n", "process", "RSS MiB start/max/end", "goroutines", "fds", "threads", "BPF maps/progs/links", "looks (missed)")
	for _, p := range r.procs {
		if len(p.samples) == 0 {
			continue
		}
		first, last := p.samples[0], p.samples[len(p.samples)-1]
		mx := func(f func(sample) int64) int64 {
			m := f(first)
			for _, s := range p.samples {
				m = max(m, f(s))
			}
			return m
		}
		trio := func(f func(sample) int64) string {
			if f(first) < 0 {
				return "-"
			}
			return fmt.Sprintf("%d/%d/%d", f(first), mx(f), f(last))
		}
		mib := func(kb int64) string { return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) }
		fmt.Fprintf(w, "%-7s %-22s %-14s %-14s %-14s %-21s %d (%d)\n", p.name,
			mib(first.rssKB)+"/"+mib(mx(func(s sample) int64 { return s.rssKB }))+"/"+mib(last.rssKB),
			trio(func(s sample) int64 { return s.goroutines }), trio(func(s sample) int64 { return s.fds }),
			trio(func(s sample) int64 { return s.threads }), fmt.Sprintf("%d/%d/%d", last.maps, last.progs, last.links),
			len(p.samples), p.missed)
	}
}

// churnCounts are churn's allocations and failures in one of the load's
// namespaces, from its last scrape.
func (r *result) churnCounts(ns string) (allocs, fails float64) {
	label := map[string]string{"netns": strconv.FormatUint(r.inodes[ns], 10)}
	allocs, _ = metricSum(r.churnFinal, "porttrace_ephemeral_allocations_total", label)
	fails, _ = metricSum(r.churnFinal, "porttrace_ephemeral_failures_total", label)
	return allocs, fails
}

var (
	summaryRe = regexp.MustCompile(`^porttrace: (\d+) events \(([^)]*)\).* (\d+) lost`)
	lossRe    = regexp.MustCompile(`^porttrace: (\d+) events lost`)
)

// check returns a line for each breach.
func (r *result) check() []string {
	var bad []string
	fail := func(format string, a ...any) { bad = append(bad, fmt.Sprintf(format, a...)) }
	bad = append(bad, r.exitErrs...)
	for _, l := range append(r.churnBad, r.portsBad...) {
		fail("a line of output that is not JSON: %.200q", l)
	}
	for _, l := range r.stream.Bad {
		fail("a line of the stream that is no event: %.200q", l)
	}
	// Every call the load made is delivered or counted lost: none more
	// than made, and the sum exact.
	for _, k := range []string{"bind/ok", "bind/denied/EACCES", "bind/failed/EADDRINUSE", "listen/ok", "connect/ok",
		"connect/failed/EADDRNOTAVAIL", "accept/ok"} {
		if r.gen.Events[k] == 0 {
			fail("the load made no %s", k)
		}
	}
	if r.opts.bystander > 0 && r.bystanders.Bursts == 0 {
		fail("no burst of bystanders' files came after the warm-up: the run is too short for one")
	}
	if r.churnLines == 0 || r.portsLines == 0 {
		fail("churn wrote %d lines and ports --watch %d: each should have written some", r.churnLines, r.portsLines)
	}
	for k, n := range r.stream.Events {
		if n > r.gen.Events[k] {
			fail("the stream delivered %d %s, the load made %d", n, k, r.gen.Events[k])
		}
	}
	if g, d := sum(r.gen.Events), sum(r.stream.Events); g != d+r.stream.Lost {
		fail("the load made %d calls; the stream delivered %d and lost %d: %d unaccounted for", g, d, r.stream.Lost, int64(g)-int64(d+r.stream.Lost))
	}
	// The stream's own summary and loss lines agree with its output.
	var summary []string
	var told uint64
	for _, l := range r.proc("stream").stderrLines() {
		if m := summaryRe.FindStringSubmatch(l); m != nil {
			summary = m
		}
		if m := lossRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			told += n
		}
	}
	if summary == nil {
		fail("the stream wrote no summary")
	} else {
		n, _ := strconv.ParseUint(summary[1], 10, 64)
		lost, _ := strconv.ParseUint(summary[3], 10, 64)
		if n != sum(r.stream.Events) || lost != r.stream.Lost || told != lost {
			fail("the stream's summary says %s events and %s lost, its lost lines %d on stderr; its JSON had %d events and %d lost",
				summary[1], summary[3], told, sum(r.stream.Events), r.stream.Lost)
		}
		byKind := map[string]uint64{}
		for k, v := range r.stream.Events {
			byKind[strings.SplitN(k, "/", 2)[0]] += v
		}
		for _, part := range strings.Split(summary[2], ", ") {
			var kind string
			var n uint64
			if _, err := fmt.Sscanf(part, "%s %d", &kind, &n); err == nil && byKind[kind] != n {
				fail("the stream's summary says %s, its JSON had %d", part, byKind[kind])
			}
		}
	}
	for _, ns := range []string{"load", "denied", "exhaust"} {
		a, f := r.churnCounts(ns)
		if uint64(a) != r.gen.Allocs[ns] || uint64(f) != r.gen.Fails[ns] {
			fail("churn counted %d allocations and %d failures in netns %s, the load made %d and %d",
				int64(a), int64(f), ns, r.gen.Allocs[ns], r.gen.Fails[ns])
		}
	}
	for _, p := range r.procs {
		bad = append(bad, r.flat(p)...)
		if looks := len(p.samples) + p.missed; p.missed*50 > looks {
			bad = append(bad, fmt.Sprintf("%s: /metrics missed %d looks of %d, more than 2%%; the last: %v", p.name, p.missed, looks, p.lastMiss))
		}
	}
	return bad
}

// flat checks one process's samples after the warm-up.
func (r *result) flat(p *tracerProc) []string {
	var bad []string
	i := slices.IndexFunc(p.samples, func(s sample) bool { return s.at >= r.opts.warmup })
	if i < 0 || len(p.samples) < 10 {
		return []string{fmt.Sprintf("%s: too few looks after the warm-up (%d in all)", p.name, len(p.samples))}
	}
	base, after := p.samples[i], p.samples[i:]
	for _, s := range p.samples {
		if f, b := p.samples[0], s; b.maps != f.maps || b.progs != f.progs || b.links != f.links {
			bad = append(bad, fmt.Sprintf("%s: BPF maps/progs/links went from %d/%d/%d to %d/%d/%d at %s",
				p.name, f.maps, f.progs, f.links, b.maps, b.progs, b.links, b.at.Round(time.Second)))
			break
		}
	}
	for _, s := range after {
		at := s.at.Round(time.Second)
		switch {
		case s.rssKB > base.rssKB+rssSlackKB:
			bad = append(bad, fmt.Sprintf("%s: RSS %d KiB at %s, more than %d KiB above %d KiB after the warm-up", p.name, s.rssKB, at, rssSlackKB, base.rssKB))
		case s.goroutines > base.goroutines+goroutineMax:
			bad = append(bad, fmt.Sprintf("%s: %d goroutines at %s, more than %d above %d after the warm-up", p.name, s.goroutines, at, goroutineMax, base.goroutines))
		case s.fds > base.fds+fdMax:
			bad = append(bad, fmt.Sprintf("%s: %d open files at %s, more than %d above %d after the warm-up", p.name, s.fds, at, fdMax, base.fds))
		default:
			continue
		}
		break // the first breach says it
	}
	tenth := len(p.samples) / 10
	mean := func(ss []sample) float64 {
		var t int64
		for _, s := range ss {
			t += s.rssKB
		}
		return float64(t) / float64(len(ss))
	}
	second, last := mean(p.samples[tenth:2*tenth]), mean(p.samples[len(p.samples)-tenth:])
	if last > second+trendSlackKB {
		bad = append(bad, fmt.Sprintf("%s: RSS grows: the last tenth's mean %.0f KiB is more than %d KiB above the second tenth's %.0f KiB",
			p.name, last, trendSlackKB, second))
	}
	return bad
}
