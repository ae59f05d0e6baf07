package churn

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// netnsTotals is one namespace's kernel counts: allocations, failures.
func netnsTotals(ns uint32, allocs, fails uint64) *tracer.NetnsChurn {
	return &tracer.NetnsChurn{Netns: ns, Allocs: map[string]uint64{"connect tcp": allocs}, Fails: map[string]uint64{"EADDRNOTAVAIL": fails}}
}

// A reading at the same instant as the last gives rates of 0, never NaN.
func TestSameInstant(t *testing.T) {
	t0 := time.Unix(1000, 0)
	first := totals(t0, nil)
	first.Netns[1] = netnsTotals(1, 5, 1)
	f := newFakeChurn(first, 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, nil)}})
	cur := totals(t0, nil)
	cur.Netns[1] = netnsTotals(1, 5, 1)
	n := netnsOf(t, f.Next(cur), 1)
	if n.AllocsPerSec != 0 || n.FailsPerSec != 0 {
		t.Errorf("rates %v and %v, want 0 and 0", n.AllocsPerSec, n.FailsPerSec)
	}
}

// A namespace whose usage cannot be read (gone since) is reported while
// the kernel counts in it, with no estimate, and dropped once quiet.
func TestGoneNamespace(t *testing.T) {
	d := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	t0 := time.Unix(1000, 0)
	counts := func(at time.Duration, allocs, fails uint64) *tracer.ChurnTotals {
		ct := totals(t0.Add(at), map[tracer.DestKey]tracer.ChurnCounts{{Netns: 5, Dest: d}: {Allocs: allocs, Fails: fails}})
		ct.Netns[5] = netnsTotals(5, allocs, fails)
		return ct
	}
	for _, tc := range []struct {
		name          string
		allocs, fails uint64
		reported      bool
	}{
		{"allocating", 10, 0, true},
		{"failing", 0, 3, true},
		{"quiet", 0, 0, false},
	} {
		f := newFakeChurn(counts(0, 0, 0), 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, nil)}})
		r := f.Next(counts(time.Second, tc.allocs, tc.fails))
		var n *NetnsReport
		for i := range r.Netns {
			if r.Netns[i].Netns == 5 {
				n = &r.Netns[i]
			}
		}
		if (n != nil) != tc.reported {
			t.Errorf("%s: reported %t, want %t", tc.name, n != nil, tc.reported)
			continue
		}
		if n == nil {
			continue
		}
		if n.UsageErr != errNoSuchNetns.Error() || n.Exhaustion != -1 || len(n.Dests) != 1 || n.Dests[0].Exhaustion != -1 || n.Dests[0].Headroom != 0 {
			t.Errorf("%s: %+v, want the error, no estimate, one destination with none", tc.name, n)
		}
	}
}

// Namespaces, destinations and processes come busiest first, failures
// counting as much as allocations; processes as busy as each other, the
// one with the larger totals first. They come from maps: the order must
// not depend on the order the maps give them in, so it is asked for more
// than once.
func TestBusiestFirst(t *testing.T) {
	for range 20 {
		busiestFirst(t)
	}
}

func busiestFirst(t *testing.T) {
	t.Helper()
	a := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	b := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.2:443")}
	t0 := time.Unix(1000, 0)
	first := totals(t0, nil)
	p1 := tracer.ProcKey{PID: 1, Netns: 1, Comm: "a"}
	p2 := tracer.ProcKey{PID: 2, Netns: 1, Comm: "b"}
	p3 := tracer.ProcKey{PID: 3, Netns: 1, Comm: "c"}
	first.Procs = map[tracer.ProcKey]tracer.ChurnCounts{p1: {Allocs: 100}, p2: {Allocs: 60, Fails: 50}}
	cur := totals(t0.Add(time.Second), map[tracer.DestKey]tracer.ChurnCounts{
		{Netns: 1, Dest: a}: {Allocs: 10}, {Netns: 1, Dest: b}: {Allocs: 4, Fails: 8}, {Netns: 2, Dest: a}: {Allocs: 1},
	})
	cur.Netns[1], cur.Netns[2] = netnsTotals(1, 10, 0), netnsTotals(2, 4, 8)
	cur.Procs = map[tracer.ProcKey]tracer.ChurnCounts{p1: {Allocs: 105}, p2: {Allocs: 65, Fails: 50}, p3: {Allocs: 2, Fails: 4}}
	f := newFakeChurn(first, 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, nil)}, 2: {usageOf(1000, 1999, 0, 0, nil)}})
	r := f.Next(cur)
	var order []uint32
	for _, n := range r.Netns {
		order = append(order, n.Netns)
	}
	if !slices.Equal(order, []uint32{2, 1}) {
		t.Errorf("namespaces %v, want 2 (12/s) then 1 (10/s)", order)
	}
	n := netnsOf(t, r, 1)
	if len(n.Dests) != 2 || n.Dests[0].Dest != b || n.Dests[1].Dest != a || n.FailsPerSec != 0 || netnsOf(t, r, 2).FailsPerSec != 8 {
		t.Errorf("namespace 1's destinations %+v: want only its own, %s (12/s) then %s (10/s)", n.Dests, b, a)
	}
	if len(n.Procs) != 3 || n.Procs[0].PID != 3 || n.Procs[1].PID != 2 || n.Procs[2].PID != 1 {
		t.Errorf("processes %+v: want pid 3 (6/s), then pid 2 (5/s, 115 in all), then pid 1 (5/s, 105)", n.Procs)
	}
	if f.Summary.Busiest != a || f.Summary.BusiestAllocs != 10 {
		t.Errorf("busiest %s with %d, want %s with 10", f.Summary.Busiest, f.Summary.BusiestAllocs, a)
	}
}

// A destination known only from its sockets, with nothing counted, is
// not the busiest.
func TestBusiestNeedsAllocations(t *testing.T) {
	d := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, map[tracer.Dest]int{d: 3})}})
	f.Next(totals(t0.Add(time.Second), nil))
	if f.Summary.Busiest != (tracer.Dest{}) {
		t.Errorf("busiest %s, want none", f.Summary.Busiest)
	}
}

// A range the reserved ports fill has no usage to speak of: 0%, not NaN.
func TestUsageOfEmptyRange(t *testing.T) {
	u := usageOf(1000, 1009, 0, 0, nil)
	u.Reserved = 10
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{1: {u}})
	n := netnsOf(t, f.Next(totals(t0.Add(time.Second), nil)), 1)
	if n.RangeSize != 0 || n.UsagePct != 0 || math.IsNaN(n.UsagePct) {
		t.Errorf("range size %d, usage %v%%; want 0 and 0", n.RangeSize, n.UsagePct)
	}
}

// Containers and pods come busiest first too, failures counting, then by
// their totals.
func TestWorkloadOrder(t *testing.T) {
	w := func(c string) workload.Identity {
		return workload.Identity{Runtime: "podman", ContainerID: strings.Repeat(c, 64)}
	}
	procs := []ProcReport{
		{PID: 1, AllocsPerSec: 10, Allocs: 100, Workload: w("a")},
		{PID: 2, AllocsPerSec: 4, FailsPerSec: 8, Allocs: 40, Workload: w("b")},
		{PID: 3, AllocsPerSec: 1, Allocs: 20, Workload: w("c")},
		{PID: 4, AllocsPerSec: 1, Allocs: 15, Fails: 10, Workload: w("d")},
	}
	// Whatever order the processes come in.
	for _, in := range [][]ProcReport{procs, {procs[1], procs[0], procs[3], procs[2]}, {procs[3], procs[2], procs[1], procs[0]}} {
		var got []string
		for _, r := range byWorkload(in) {
			got = append(got, r.Workload.ContainerID[:1])
		}
		if strings.Join(got, "") != "badc" {
			t.Errorf("order %q, want b (12/s), a (10/s), d (1/s, 25 in all), c (1/s, 20)", got)
		}
	}
}
