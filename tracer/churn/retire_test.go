package churn

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// fakeMaps stands for the kernel's churn maps: what is added to them
// stays until forget deletes it, as in the kernel.
type fakeMaps struct{ ct *tracer.ChurnTotals }

func newFakeMaps() *fakeMaps {
	return &fakeMaps{totals(time.Time{}, map[tracer.DestKey]tracer.ChurnCounts{})}
}

// alloc counts n allocations by p towards d in p's namespace.
func (m *fakeMaps) alloc(p tracer.ProcKey, d tracer.Dest, n uint64) {
	ns := m.ct.Netns[p.Netns]
	if ns == nil {
		ns = &tracer.NetnsChurn{Netns: p.Netns, Allocs: map[string]uint64{}, Fails: map[string]uint64{}}
		m.ct.Netns[p.Netns] = ns
	}
	ns.Allocs["connect tcp"] += n
	dk := tracer.DestKey{Netns: p.Netns, Dest: d}
	c := m.ct.Dests[dk]
	c.Allocs += n
	m.ct.Dests[dk] = c
	c = m.ct.Procs[p]
	c.Allocs += n
	m.ct.Procs[p] = c
}

// read is a reading of the maps at at, sharing nothing with them.
func (m *fakeMaps) read(at time.Time) *tracer.ChurnTotals {
	ct := &tracer.ChurnTotals{Time: at, Netns: map[uint32]*tracer.NetnsChurn{}, Dests: maps.Clone(m.ct.Dests), Procs: maps.Clone(m.ct.Procs)}
	for ns, n := range m.ct.Netns {
		ct.Netns[ns] = &tracer.NetnsChurn{Netns: ns, Allocs: maps.Clone(n.Allocs), Fails: maps.Clone(n.Fails)}
	}
	return ct
}

func (m *fakeMaps) forget(procs []tracer.ProcKey, netns []uint32) (*tracer.ChurnTotals, error) {
	last := totals(time.Time{}, map[tracer.DestKey]tracer.ChurnCounts{})
	for _, ns := range netns {
		if n := m.ct.Netns[ns]; n != nil {
			last.Netns[ns] = n
			delete(m.ct.Netns, ns)
		}
		for k, c := range m.ct.Dests {
			if k.Netns == ns {
				last.Dests[k] = c
				delete(m.ct.Dests, k)
			}
		}
		for k, c := range m.ct.Procs {
			if k.Netns == ns {
				last.Procs[k] = c
				delete(m.ct.Procs, k)
			}
		}
	}
	for _, k := range procs {
		if c, ok := m.ct.Procs[k]; ok {
			last.Procs[k] = c
			delete(m.ct.Procs, k)
		}
	}
	return last, nil
}

// What is gone leaves the kernel's maps and the state's own, and every
// total shown goes on from where it was: the run's summary, and a
// container's row, which /metrics exports as a counter. A key made again
// after it was retired is counted from zero, without a negative rate.
func TestChurnRetire(t *testing.T) {
	const host, pod = 1, 2
	web := workload.Identity{ContainerID: "c1"}
	dest := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:80")}
	procA := tracer.ProcKey{PID: 10, Netns: host, Comm: "job", CgroupID: 7}
	procB := tracer.ProcKey{PID: 11, Netns: host, Comm: "job", CgroupID: 7}
	procP := tracer.ProcKey{PID: 20, Netns: pod, Comm: "curl", CgroupID: 8}
	for _, tc := range []struct {
		name       string
		deadProcs  []tracer.ProcKey
		goneNetns  []uint32
		wantKeys   int // process keys left in the maps
		wantWeb    uint64
		wantNsRows int
	}{
		{name: "nothing gone", wantKeys: 3, wantWeb: 8, wantNsRows: 2},
		{name: "a process exited", deadProcs: []tracer.ProcKey{procA}, wantKeys: 2, wantWeb: 8, wantNsRows: 2},
		{name: "a namespace gone", deadProcs: []tracer.ProcKey{procP}, goneNetns: []uint32{pod}, wantKeys: 2, wantWeb: 8, wantNsRows: 1},
		{name: "both", deadProcs: []tracer.ProcKey{procA, procB, procP}, goneNetns: []uint32{pod}, wantKeys: 0, wantWeb: 8, wantNsRows: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			km := newFakeMaps()
			t0 := time.Unix(1000, 0)
			f := newFakeChurn(km.read(t0), host, map[uint32][]*PortUsage{host: {usageOf(1000, 1999, 0, 0, nil)}, pod: {usageOf(1000, 1999, 0, 0, nil)}})
			f.Workload = func(id uint64) (workload.Identity, workload.Names) {
				if id == 7 {
					return web, workload.Names{Container: "web"}
				}
				return workload.Identity{}, workload.Names{}
			}
			f.procAlive = func(k tracer.ProcKey) bool { return !slices.Contains(tc.deadProcs, k) }
			f.unheld = func(inodes []uint32) (gone []uint32) {
				for _, ns := range inodes {
					if slices.Contains(tc.goneNetns, ns) {
						gone = append(gone, ns)
						delete(f.readings, ns) // its usage can no longer be read
					}
				}
				return gone
			}
			km.alloc(procA, dest, 5)
			km.alloc(procB, dest, 3)
			km.alloc(procP, dest, 4)
			f.Next(km.read(t0.Add(time.Second)))
			f.AddTotals(km.read(t0.Add(time.Second)))
			wantSummary := f.Summary.Allocs
			// Quiet for an interval: the dead may go.
			r := f.Next(km.read(t0.Add(2 * time.Second)))
			before := workloadAllocs(t, r, host, web)
			if err := f.Retire(km.forget); err != nil {
				t.Fatal(err)
			}
			if len(km.ct.Procs) != tc.wantKeys {
				t.Errorf("process keys left in the maps: %v, want %d", km.ct.Procs, tc.wantKeys)
			}
			for _, ns := range tc.goneNetns {
				if km.ct.Netns[ns] != nil || f.history[ns] != nil || f.prev.Netns[ns] != nil {
					t.Errorf("namespace %d still kept: maps %v, history %v", ns, km.ct.Netns[ns], f.history[ns])
				}
				for k := range f.growth {
					if k.Netns == ns {
						t.Errorf("growth of %v still kept", k)
					}
				}
			}
			for _, k := range tc.deadProcs {
				if _, ok := f.prev.Procs[k]; ok {
					t.Errorf("%+v still in the last reading", k)
				}
			}
			r = f.Next(km.read(t0.Add(3 * time.Second)))
			if len(r.Netns) != tc.wantNsRows {
				t.Errorf("%d namespace rows, want %d", len(r.Netns), tc.wantNsRows)
			}
			if got := workloadAllocs(t, r, host, web); got != before || got != tc.wantWeb {
				t.Errorf("container's allocations %d after retiring, %d before, want %d", got, before, tc.wantWeb)
			}
			f.AddTotals(km.read(t0.Add(3 * time.Second)))
			if f.Summary.Allocs != wantSummary {
				t.Errorf("summary %d allocations after retiring, want %d", f.Summary.Allocs, wantSummary)
			}
			// The pid of A again, a new process of the same name: counted
			// from zero, at the rate of its own allocations.
			km.alloc(procA, dest, 2)
			r = f.Next(km.read(t0.Add(4 * time.Second)))
			for _, n := range r.Netns {
				for _, p := range n.Procs {
					if p.AllocsPerSec < 0 || p.AllocsPerSec > 2 {
						t.Errorf("rate of %d/%s: %v/s, want at most 2", p.PID, p.Comm, p.AllocsPerSec)
					}
				}
				if n.AllocsPerSec != 2 && n.Netns == host {
					t.Errorf("host's rate %v/s, want 2", n.AllocsPerSec)
				}
			}
			if got := workloadAllocs(t, r, host, web); got != tc.wantWeb+2 {
				t.Errorf("container's allocations %d, want %d", got, tc.wantWeb+2)
			}
		})
	}
}

func workloadAllocs(t *testing.T, r *Report, ns uint32, id workload.Identity) uint64 {
	t.Helper()
	for _, w := range netnsOf(t, r, ns).Workloads {
		if w.Workload == id {
			return w.Allocs
		}
	}
	return 0
}

// A key whose count went down was deleted and made anew in the kernel
// between two readings: its count is all new, never a negative rate (nor,
// unsigned, a huge one).
func TestChurnCountedAgain(t *testing.T) {
	const host = 1
	dest := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:80")}
	p := tracer.ProcKey{PID: 10, Netns: host, Comm: "job"}
	for _, tc := range []struct {
		name         string
		before, then uint64
		want         float64
	}{
		{"grew", 5, 7, 2},
		{"counted again from zero", 5, 2, 2},
		{"deleted, not made again", 5, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			km := newFakeMaps()
			t0 := time.Unix(1000, 0)
			km.alloc(p, dest, tc.before)
			f := newFakeChurn(km.read(t0), host, map[uint32][]*PortUsage{host: {usageOf(1000, 1999, 0, 0, nil)}})
			km = newFakeMaps()
			if tc.then > 0 {
				km.alloc(p, dest, tc.then)
			}
			n := netnsOf(t, f.Next(km.read(t0.Add(time.Second))), host)
			var procRate float64
			for _, r := range n.Procs {
				procRate = r.AllocsPerSec
			}
			var destRate float64
			for _, d := range n.Dests {
				destRate = d.AllocsPerSec
			}
			if n.AllocsPerSec != tc.want || procRate != tc.want || destRate != tc.want {
				t.Errorf("rates: namespace %v/s, process %v/s, destination %v/s, want %v/s", n.AllocsPerSec, procRate, destRate, tc.want)
			}
		})
	}
}

// Retire looks at most every scanEvery, whether processes or namespaces
// are quiet: a look within it leaves what is gone in the maps, one at
// scanEvery deletes it.
func TestRetireSpacing(t *testing.T) {
	const host, pod = 1, 2
	dest := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:80")}
	job := tracer.ProcKey{PID: 10, Netns: host, Comm: "job"}
	for _, tc := range []struct {
		name      string
		procs     []tracer.ProcKey // that exit, one a look
		netns     bool             // pod's namespace goes too, at the second look
		after     time.Duration    // from the first look to the second
		wantProcs int              // process keys left after the second look
	}{
		{"within scanEvery", []tracer.ProcKey{job, {PID: 11, Netns: host, Comm: "job"}}, false, scanEvery - time.Second, 1},
		{"at scanEvery", []tracer.ProcKey{job, {PID: 11, Netns: host, Comm: "job"}}, false, scanEvery, 0},
		{"a process and a namespace", []tracer.ProcKey{job, {PID: 20, Netns: pod, Comm: "curl"}}, true, scanEvery, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			km := newFakeMaps()
			t0 := time.Unix(1000, 0)
			f := newFakeChurn(km.read(t0), host, map[uint32][]*PortUsage{host: {usageOf(1000, 1999, 0, 0, nil)}, pod: {usageOf(1000, 1999, 0, 0, nil)}})
			dead := map[tracer.ProcKey]bool{}
			f.procAlive = func(k tracer.ProcKey) bool { return !dead[k] }
			f.unheld = func(inodes []uint32) (gone []uint32) {
				for _, ns := range inodes {
					if tc.netns && ns == pod && dead[tc.procs[1]] {
						gone = append(gone, ns)
						delete(f.readings, ns)
					}
				}
				return gone
			}
			for _, p := range tc.procs {
				km.alloc(p, dest, 1)
			}
			f.Next(km.read(t0.Add(time.Second)))
			f.Next(km.read(t0.Add(2 * time.Second)))
			dead[tc.procs[0]] = true
			if err := f.Retire(km.forget); err != nil {
				t.Fatal(err)
			}
			if _, ok := km.ct.Procs[tc.procs[0]]; ok {
				t.Fatalf("the first look left %+v", tc.procs[0])
			}
			dead[tc.procs[1]] = true
			f.Next(km.read(t0.Add(2*time.Second + tc.after)))
			if err := f.Retire(km.forget); err != nil {
				t.Fatal(err)
			}
			if len(km.ct.Procs) != tc.wantProcs {
				t.Errorf("process keys left: %v, want %d", km.ct.Procs, tc.wantProcs)
			}
			if gone := km.ct.Netns[pod] == nil; tc.netns && !gone {
				t.Errorf("the pod's namespace is still in the maps")
			}
		})
	}
}
