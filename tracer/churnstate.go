package tracer

import (
	"cmp"
	"math"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// How far back the growth of usage is measured for the exhaustion
// estimate, and how long the allocation-rate history runs.
const (
	growthWindow = 10 * time.Second
	historyLen   = 60
	topN         = 5
)

// ChurnReport is one interval of churn: rates, usage and estimates per
// network namespace.
type ChurnReport struct {
	Time     time.Time
	Interval time.Duration
	Netns    []NetnsReport
	Overflow uint64
}

// NetnsReport is the churn of one network namespace.
type NetnsReport struct {
	Netns        uint32
	Range        [2]uint16
	RangeSize    int
	Reserved     int
	AllocsPerSec float64
	FailsPerSec  float64
	AllocsTotal  map[string]uint64
	FailsTotal   map[string]uint64
	InUse        int
	TimeWait     int
	UsagePct     float64
	// Exhaustion is the time until some destination, or the range itself,
	// runs out at the current growth; negative when usage is not growing.
	Exhaustion time.Duration
	History    []float64 // allocations/s, oldest first
	Dests      []DestReport
	Procs      []ProcReport
	UsageErr   string // why usage could not be read, if it could not
}

// DestReport is the churn towards one destination.
type DestReport struct {
	Dest         Dest
	AllocsPerSec float64
	FailsPerSec  float64
	InUse        int
	Headroom     int
	Exhaustion   time.Duration // negative: not growing
}

// ProcReport is the churn of one process.
type ProcReport struct {
	PID          uint32
	Comm         string
	AllocsPerSec float64
	FailsPerSec  float64
	Allocs       uint64
	Fails        uint64
}

type usageSample struct {
	t     time.Time
	inUse int
}

// ChurnState turns successive kernel totals and usage readings into
// reports. Not safe for concurrent use.
type ChurnState struct {
	prev     *ChurnTotals
	history  map[uint32][]float64
	nsGrowth map[uint32][]usageSample
	growth   map[DestKey][]usageSample
	finder   *netnsFinder
	host     uint32
	Summary  ChurnSummary
}

// ChurnSummary is the whole run, for the line printed on exit.
type ChurnSummary struct {
	PeakAllocsPerSec float64
	PeakUsagePct     float64
	Allocs           uint64
	Fails            map[string]uint64
	Busiest          Dest
	BusiestAllocs    uint64
}

// NewChurnState starts from the totals read right after attaching.
func NewChurnState(first *ChurnTotals) *ChurnState {
	return &ChurnState{
		prev:     first,
		history:  map[uint32][]float64{},
		nsGrowth: map[uint32][]usageSample{},
		growth:   map[DestKey][]usageSample{},
		finder:   newNetnsFinder(),
		host:     hostNetns(),
		Summary:  ChurnSummary{Fails: map[string]uint64{}},
	}
}

// Next computes the report for the interval that ends with cur.
func (s *ChurnState) Next(cur *ChurnTotals) *ChurnReport {
	dt := cur.Time.Sub(s.prev.Time).Seconds()
	if dt <= 0 {
		dt = 1e-9
	}
	r := &ChurnReport{Time: cur.Time, Interval: cur.Time.Sub(s.prev.Time), Overflow: cur.Overflow}
	netns := map[uint32]bool{s.host: true}
	for ns := range cur.Netns {
		netns[ns] = true
	}
	for ns := range netns {
		nr := s.netnsReport(ns, cur, dt)
		if nr.UsageErr != "" && nr.AllocsPerSec == 0 && nr.FailsPerSec == 0 {
			continue // a namespace that is gone and quiet: nothing to watch
		}
		r.Netns = append(r.Netns, nr)
	}
	// Busiest first, then the fullest.
	slices.SortFunc(r.Netns, func(a, b NetnsReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.InUse, a.InUse), cmp.Compare(a.Netns, b.Netns))
	})
	s.prev = cur
	return r
}

func (s *ChurnState) netnsReport(ns uint32, cur *ChurnTotals, dt float64) NetnsReport {
	nr := NetnsReport{Netns: ns, AllocsTotal: map[string]uint64{}, FailsTotal: map[string]uint64{}, Exhaustion: -1}
	if n := cur.Netns[ns]; n != nil {
		nr.AllocsTotal, nr.FailsTotal = n.Allocs, n.Fails
		var prevAllocs, prevFails uint64
		if p := s.prev.Netns[ns]; p != nil {
			prevAllocs, prevFails = p.TotalAllocs(), p.TotalFails()
		}
		nr.AllocsPerSec = float64(n.TotalAllocs()-prevAllocs) / dt
		nr.FailsPerSec = float64(n.TotalFails()-prevFails) / dt
	}
	h := append(s.history[ns], nr.AllocsPerSec)
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	s.history[ns] = h
	nr.History = h

	var u *PortUsage
	fd, err := s.finder.open(ns)
	if err == nil {
		u, err = ReadUsage(fd)
		unix.Close(fd)
	}
	if err != nil {
		nr.UsageErr = err.Error()
		u = &PortUsage{ByDest: map[Dest]int{}}
	} else {
		nr.Range, nr.Reserved, nr.RangeSize = u.Range, u.Reserved, u.Size()
		nr.InUse, nr.TimeWait = u.InUse, u.TimeWait
		if nr.RangeSize > 0 {
			nr.UsagePct = 100 * float64(u.InUse) / float64(nr.RangeSize)
		}
		nr.Exhaustion = eta(max(0, nr.RangeSize-u.InUse), grow(s.nsGrowth, ns, cur.Time, u.InUse))
	}

	// Destinations: the kernel's counts joined with the sockets now open.
	dests := map[Dest]bool{}
	for k := range cur.Dests {
		if k.Netns == ns {
			dests[k.Dest] = true
		}
	}
	for d := range u.ByDest {
		dests[d] = true
	}
	for d := range dests {
		key := DestKey{ns, d}
		c, p := cur.Dests[key], s.prev.Dests[key]
		dr := DestReport{
			Dest:         d,
			AllocsPerSec: float64(c.Allocs-p.Allocs) / dt,
			FailsPerSec:  float64(c.Fails-p.Fails) / dt,
			InUse:        u.ByDest[d],
			Exhaustion:   -1,
		}
		if nr.UsageErr == "" {
			dr.Headroom = u.Headroom(d)
			dr.Exhaustion = eta(dr.Headroom, grow(s.growth, key, cur.Time, dr.InUse))
			if dr.Exhaustion >= 0 && (nr.Exhaustion < 0 || dr.Exhaustion < nr.Exhaustion) {
				nr.Exhaustion = dr.Exhaustion
			}
		}
		nr.Dests = append(nr.Dests, dr)
		if c.Allocs > s.Summary.BusiestAllocs {
			s.Summary.Busiest, s.Summary.BusiestAllocs = d, c.Allocs
		}
	}
	slices.SortFunc(nr.Dests, func(a, b DestReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.InUse, a.InUse), cmp.Compare(a.Dest.String(), b.Dest.String()))
	})

	for k, c := range cur.Procs {
		if k.Netns != ns {
			continue
		}
		p := s.prev.Procs[k]
		nr.Procs = append(nr.Procs, ProcReport{
			PID: k.PID, Comm: k.Comm, Allocs: c.Allocs, Fails: c.Fails,
			AllocsPerSec: float64(c.Allocs-p.Allocs) / dt, FailsPerSec: float64(c.Fails-p.Fails) / dt,
		})
	}
	slices.SortFunc(nr.Procs, func(a, b ProcReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.Allocs+b.Fails, a.Allocs+a.Fails), cmp.Compare(a.PID, b.PID))
	})

	s.Summary.PeakAllocsPerSec = math.Max(s.Summary.PeakAllocsPerSec, nr.AllocsPerSec)
	s.Summary.PeakUsagePct = math.Max(s.Summary.PeakUsagePct, nr.UsagePct)
	return nr
}

// grow records a usage sample under key and returns the growth per second
// over the window.
func grow[K comparable](m map[K][]usageSample, key K, t time.Time, inUse int) float64 {
	samples := append(m[key], usageSample{t, inUse})
	for len(samples) > 1 && t.Sub(samples[0].t) > growthWindow {
		samples = samples[1:]
	}
	m[key] = samples
	if d := t.Sub(samples[0].t).Seconds(); d > 0 {
		return float64(inUse-samples[0].inUse) / d
	}
	return 0
}

// eta is how long headroom lasts at rate per second; -1 if it is not
// shrinking, 0 if it is gone.
func eta(headroom int, rate float64) time.Duration {
	if headroom <= 0 {
		return 0
	}
	if rate <= 0 {
		return -1
	}
	return time.Duration(float64(headroom) / rate * float64(time.Second))
}

// AddTotals folds the final kernel totals into the summary.
func (s *ChurnState) AddTotals(cur *ChurnTotals) {
	s.Summary.Allocs = 0
	clear(s.Summary.Fails)
	for _, n := range cur.Netns {
		s.Summary.Allocs += n.TotalAllocs()
		for errno, v := range n.Fails {
			s.Summary.Fails[errno] += v
		}
	}
}
