package churn

import (
	"cmp"
	"math"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// How far back the growth of usage is measured for the exhaustion
// estimate, and how long the allocation-rate history runs.
const (
	growthWindow = 10 * time.Second
	historyLen   = 60
	topN         = 5
)

// Report is one interval of churn: rates, usage and estimates per
// network namespace.
type Report struct {
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
	InUse        int // ports of the range held, each once (PortUsage.InUse)
	Sockets      int // sockets holding them
	TimeWait     int
	UsagePct     float64 // InUse of RangeSize, so never over 100
	// Exhaustion is the time until some destination, or the range itself,
	// runs out at the current growth; negative when usage is not growing.
	Exhaustion time.Duration
	History    []float64 // allocations/s, oldest first
	Dests      []DestReport
	Procs      []ProcReport
	// Workloads are the containers (or pods) the processes called from,
	// and Pods the pods, busiest first; none where no process was in one.
	Workloads []WorkloadReport
	Pods      []WorkloadReport
	UsageErr  string // why usage could not be read, if it could not
}

// WorkloadReport is the churn of the processes of one container (or of a
// pod's cgroup outside its containers).
type WorkloadReport struct {
	Workload     workload.Identity
	Names        workload.Names
	AllocsPerSec float64
	FailsPerSec  float64
	Allocs       uint64
	Fails        uint64
}

// DestReport is the churn towards one destination.
type DestReport struct {
	Dest          tracer.Dest
	AllocsPerSec  float64
	FailsPerSec   float64
	Allocs, Fails uint64 // since porttrace started: /metrics's counters
	InUse         int
	Headroom      int
	Exhaustion    time.Duration // negative: not growing
}

// ProcReport is the churn of one process.
type ProcReport struct {
	PID          uint32
	Comm         string
	CgroupID     uint64
	Workload     workload.Identity // the container and pod it called from, if any
	Names        workload.Names
	AllocsPerSec float64
	FailsPerSec  float64
	Allocs       uint64
	Fails        uint64
}

type usageSample struct {
	t     time.Time
	inUse int
}

// State turns successive kernel totals and usage readings into
// reports. Not safe for concurrent use.
//
// A namespace is reported while the kernel counts allocations in it; the
// host's always, or with --netns each namespace it names instead (the
// host's, outside that scope, counts nothing); and one found at risk by a
// look at every namespace in scope (at start, then every scanEvery), so
// that a namespace already exhausted, whose connects all fail before they
// allocate or that sees none during the run, is there too.
type State struct {
	prev     *tracer.ChurnTotals
	history  map[uint32][]float64
	nsGrowth map[usageKey][]usageSample
	growth   map[tracer.DestKey][]usageSample
	host     uint32
	scope    map[uint32]bool // --netns; nil: every namespace
	atRisk   map[uint32]bool
	scanned  time.Time
	Summary  Summary

	// What was deleted from the kernel's maps, and what may be next.
	retired    retired
	retiredAt  time.Time
	quietProcs []quietProc
	quietNetns []uint32
	procAlive  func(tracer.ProcKey) bool
	unheld     func([]uint32) []uint32

	// Workload names the container and pod a cgroup id is in (nil:
	// no workload rows).
	Workload func(cgroupID uint64) (workload.Identity, workload.Names)

	// usage reads a namespace's PortUsage; namespaces lists every
	// namespace there is. Tests replace both.
	usage      func(netns uint32) (*PortUsage, error)
	namespaces func() []uint32
}

// usageKey names what a namespace's own exhaustion estimate follows: the
// ports of one protocol that no new destination may share.
type usageKey struct {
	netns uint32
	proto uint16
}

// scanEvery spaces the looks at every namespace for one at risk.
const scanEvery = 10 * time.Second

// Summary is the whole run, for the line printed on exit.
type Summary struct {
	PeakAllocsPerSec float64
	PeakUsagePct     float64
	Allocs           uint64
	Fails            map[string]uint64
	Busiest          tracer.Dest
	BusiestAllocs    uint64
}

// NewState starts from the totals read right after attaching. scope is
// the namespaces --netns named (nil: all of them).
func NewState(first *tracer.ChurnTotals, scope []uint32) *State {
	finder := netns.NewFinder()
	var in map[uint32]bool
	if len(scope) > 0 {
		in = map[uint32]bool{}
		for _, ns := range scope {
			in[ns] = true
		}
	}
	return &State{
		scope:     in,
		prev:      first,
		history:   map[uint32][]float64{},
		nsGrowth:  map[usageKey][]usageSample{},
		growth:    map[tracer.DestKey][]usageSample{},
		host:      netns.Self(),
		atRisk:    map[uint32]bool{},
		Summary:   Summary{Fails: map[string]uint64{}},
		retired:   retired{fails: map[string]uint64{}, workloads: map[retiredCgroup]*WorkloadReport{}},
		procAlive: procAlive,
		unheld:    netns.Unheld,
		usage: func(netns uint32) (*PortUsage, error) {
			fd, err := finder.Open(netns)
			if err != nil {
				return nil, err
			}
			defer unix.Close(fd)
			return ReadUsage(fd)
		},
		namespaces: finder.All,
	}
}

// atRiskOf reports whether u has run out, or nearly (a twentieth of the
// range left), for some destination or for any new one.
func atRiskOf(u *PortUsage) bool {
	low := u.Size() / 20
	for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
		if u.NewHeadroom(proto) <= low {
			return true
		}
	}
	for d := range u.ByDest {
		if u.Headroom(d) <= low {
			return true
		}
	}
	return false
}

// scan looks at every namespace in scope that the kernel has counted
// nothing in yet and remembers those at risk.
func (s *State) scan(now time.Time, counted map[uint32]bool) {
	if !s.scanned.IsZero() && now.Sub(s.scanned) < scanEvery {
		return
	}
	s.scanned = now
	for _, ns := range s.namespaces() {
		if counted[ns] || s.atRisk[ns] || (s.scope != nil && !s.scope[ns]) {
			continue
		}
		if u, err := s.usage(ns); err == nil && atRiskOf(u) {
			s.atRisk[ns] = true
		}
	}
}

// Next computes the report for the interval that ends with cur.
func (s *State) Next(cur *tracer.ChurnTotals) *Report {
	dt := cur.Time.Sub(s.prev.Time).Seconds()
	if dt <= 0 {
		dt = 1e-9
	}
	r := &Report{Time: cur.Time, Interval: cur.Time.Sub(s.prev.Time), Overflow: cur.Overflow}
	netns := map[uint32]bool{}
	if s.scope == nil {
		netns[s.host] = true
	}
	for ns := range s.scope {
		netns[ns] = true
	}
	for ns := range cur.Netns {
		netns[ns] = true
	}
	s.scan(cur.Time, netns)
	for ns := range s.atRisk {
		netns[ns] = true
	}
	for ns := range netns {
		nr := s.netnsReport(ns, cur, dt)
		// A namespace that is gone and quiet: nothing to watch. One that
		// --netns named stays, with why its usage is unknown (a missing
		// CAP_SYS_ADMIN), rather than vanish from the report.
		if nr.UsageErr != "" && nr.AllocsPerSec == 0 && nr.FailsPerSec == 0 && !s.scope[ns] {
			delete(s.atRisk, ns)
			continue
		}
		r.Netns = append(r.Netns, nr)
	}
	// Busiest first, then the fullest.
	slices.SortFunc(r.Netns, func(a, b NetnsReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.InUse, a.InUse), cmp.Compare(a.Netns, b.Netns))
	})
	s.noteQuiet(r, cur)
	s.prev = cur
	return r
}

func (s *State) netnsReport(ns uint32, cur *tracer.ChurnTotals, dt float64) NetnsReport {
	nr := NetnsReport{Netns: ns, AllocsTotal: map[string]uint64{}, FailsTotal: map[string]uint64{}, Exhaustion: -1}
	if n := cur.Netns[ns]; n != nil {
		nr.AllocsTotal, nr.FailsTotal = n.Allocs, n.Fails
		var prevAllocs, prevFails uint64
		if p := s.prev.Netns[ns]; p != nil {
			prevAllocs, prevFails = p.TotalAllocs(), p.TotalFails()
		}
		nr.AllocsPerSec = float64(delta(n.TotalAllocs(), prevAllocs)) / dt
		nr.FailsPerSec = float64(delta(n.TotalFails(), prevFails)) / dt
	}
	h := append(s.history[ns], nr.AllocsPerSec)
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	s.history[ns] = h
	nr.History = h

	u, err := s.usage(ns)
	if err != nil {
		nr.UsageErr = err.Error()
		u = newPortUsage()
	} else {
		s.rangeUsage(&nr, u, cur.Time)
	}
	nr.Dests = s.destReports(&nr, u, cur, dt)
	nr.Procs = s.procReports(ns, cur, dt)
	nr.Workloads = byWorkload(slices.Concat(nr.Procs, s.retiredRows(ns)))
	nr.Pods = byPod(nr.Workloads)
	s.Summary.PeakAllocsPerSec = math.Max(s.Summary.PeakAllocsPerSec, nr.AllocsPerSec)
	s.Summary.PeakUsagePct = math.Max(s.Summary.PeakUsagePct, nr.UsagePct)
	return nr
}

// rangeUsage fills in what u says of the namespace's range, and when a
// destination not used yet would find no port: when the ports no one may
// share fill the range.
func (s *State) rangeUsage(nr *NetnsReport, u *PortUsage, now time.Time) {
	nr.Range, nr.Reserved, nr.RangeSize = u.Range, u.Reserved, u.Size()
	nr.InUse, nr.Sockets, nr.TimeWait = u.InUse, u.Sockets, u.TimeWait
	if nr.RangeSize > 0 {
		nr.UsagePct = 100 * float64(u.InUse) / float64(nr.RangeSize)
	}
	for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
		k := usageKey{nr.Netns, proto}
		nr.Exhaustion = sooner(nr.Exhaustion, eta(u.NewHeadroom(proto), grow(s.nsGrowth, k, now, u.Exclusive(proto))))
	}
}

// destReports joins the kernel's counts by destination with the sockets
// now open to each, busiest first; the namespace's estimate becomes the
// soonest of theirs.
func (s *State) destReports(nr *NetnsReport, u *PortUsage, cur *tracer.ChurnTotals, dt float64) []DestReport {
	dests := map[tracer.Dest]bool{}
	for k := range cur.Dests {
		if k.Netns == nr.Netns {
			dests[k.Dest] = true
		}
	}
	for d := range u.ByDest {
		dests[d] = true
	}
	var reports []DestReport
	for d := range dests {
		key := tracer.DestKey{Netns: nr.Netns, Dest: d}
		c, p := cur.Dests[key], s.prev.Dests[key]
		dr := DestReport{
			Dest:         d,
			AllocsPerSec: float64(delta(c.Allocs, p.Allocs)) / dt,
			FailsPerSec:  float64(delta(c.Fails, p.Fails)) / dt,
			Allocs:       c.Allocs, Fails: c.Fails,
			InUse:      u.ByDest[d],
			Exhaustion: -1,
		}
		if nr.UsageErr == "" {
			dr.Headroom = u.Headroom(d)
			dr.Exhaustion = eta(dr.Headroom, grow(s.growth, key, cur.Time, u.Size()-dr.Headroom))
			nr.Exhaustion = sooner(nr.Exhaustion, dr.Exhaustion)
		}
		reports = append(reports, dr)
		if c.Allocs > s.Summary.BusiestAllocs {
			s.Summary.Busiest, s.Summary.BusiestAllocs = d, c.Allocs
		}
	}
	slices.SortFunc(reports, func(a, b DestReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.InUse, a.InUse), cmp.Compare(a.Dest.String(), b.Dest.String()))
	})
	return reports
}

// procReports are the processes of namespace ns, busiest first.
func (s *State) procReports(ns uint32, cur *tracer.ChurnTotals, dt float64) []ProcReport {
	var reports []ProcReport
	for k, c := range cur.Procs {
		if k.Netns != ns {
			continue
		}
		p := s.prev.Procs[k]
		r := ProcReport{
			PID: k.PID, Comm: k.Comm, CgroupID: k.CgroupID, Allocs: c.Allocs, Fails: c.Fails,
			AllocsPerSec: float64(delta(c.Allocs, p.Allocs)) / dt, FailsPerSec: float64(delta(c.Fails, p.Fails)) / dt,
		}
		if s.Workload != nil {
			r.Workload, r.Names = s.Workload(k.CgroupID)
		}
		reports = append(reports, r)
	}
	slices.SortFunc(reports, func(a, b ProcReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.Allocs+b.Fails, a.Allocs+a.Fails), cmp.Compare(a.PID, b.PID))
	})
	return reports
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

// sooner is the earlier of two estimates, where negative means never.
func sooner(a, b time.Duration) time.Duration {
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	}
	return min(a, b)
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

// AddTotals folds the final kernel totals into the summary, with what
// the keys retired from the kernel's maps had counted.
func (s *State) AddTotals(cur *tracer.ChurnTotals) {
	s.Summary.Allocs = s.retired.allocs
	clear(s.Summary.Fails)
	for errno, v := range s.retired.fails {
		s.Summary.Fails[errno] = v
	}
	for _, n := range cur.Netns {
		s.Summary.Allocs += n.TotalAllocs()
		for errno, v := range n.Fails {
			s.Summary.Fails[errno] += v
		}
	}
}
