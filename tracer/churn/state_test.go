package churn

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// usageOf builds the reading of a namespace whose range is lo-hi: the
// ports of each protocol held exclusively, from lo up, and the sockets
// connected to each destination.
func usageOf(lo, hi uint16, tcpExclusive, udpExclusive int, byDest map[tracer.Dest]int) *PortUsage {
	u := newPortUsage()
	u.Range = [2]uint16{lo, hi}
	for i := range tcpExclusive {
		u.exclusive[event.ProtoTCP].add(lo + uint16(i))
	}
	for i := range udpExclusive {
		u.exclusive[event.ProtoUDP].add(lo + uint16(i))
	}
	for d, n := range byDest {
		u.ByDest[d] = n
		u.Sockets += n
	}
	return u
}

// fakeChurn is a ChurnState over made-up namespaces: readings[ns] is what
// their usage reads, in turn (the last one stays).
type fakeChurn struct {
	*State
	readings map[uint32][]*PortUsage
}

func newFakeChurn(first *tracer.ChurnTotals, host uint32, readings map[uint32][]*PortUsage) *fakeChurn {
	f := &fakeChurn{State: NewState(first, nil), readings: readings}
	f.host = host
	f.usage = func(ns uint32) (*PortUsage, error) {
		r := f.readings[ns]
		if len(r) == 0 {
			return nil, errNoSuchNetns
		}
		u := r[0]
		if len(r) > 1 {
			f.readings[ns] = r[1:]
		}
		return u, nil
	}
	f.namespaces = func() []uint32 {
		var all []uint32
		for ns := range f.readings {
			all = append(all, ns)
		}
		return all
	}
	return f
}

var errNoSuchNetns = errString("network namespace gone")

type errString string

func (e errString) Error() string { return string(e) }

func totals(at time.Time, dests map[tracer.DestKey]tracer.ChurnCounts) *tracer.ChurnTotals {
	ct := &tracer.ChurnTotals{Time: at, Netns: map[uint32]*tracer.NetnsChurn{}, Dests: dests, Procs: map[tracer.ProcKey]tracer.ChurnCounts{}}
	for k, c := range dests {
		n := ct.Netns[k.Netns]
		if n == nil {
			n = &tracer.NetnsChurn{Netns: k.Netns, Allocs: map[string]uint64{}, Fails: map[string]uint64{}}
			ct.Netns[k.Netns] = n
		}
		n.Allocs["connect tcp"] += c.Allocs
		n.Fails["EADDRNOTAVAIL"] += c.Fails
	}
	return ct
}

func netnsOf(t *testing.T, r *Report, ns uint32) *NetnsReport {
	t.Helper()
	for i := range r.Netns {
		if r.Netns[i].Netns == ns {
			return &r.Netns[i]
		}
	}
	t.Fatalf("no report for netns %d in %+v", ns, r.Netns)
	return nil
}

func destOf(t *testing.T, n *NetnsReport, d tracer.Dest) *DestReport {
	t.Helper()
	for i := range n.Dests {
		if n.Dests[i].Dest == d {
			return &n.Dests[i]
		}
	}
	t.Fatalf("no report for %s", d)
	return nil
}

// Rates are of the interval, not of the run: the first reading already
// holds counts, and they are not counted again.
func TestChurnRatesPerInterval(t *testing.T) {
	a := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	t0 := time.Unix(1000, 0)
	first := totals(t0, map[tracer.DestKey]tracer.ChurnCounts{{Netns: 1, Dest: a}: {Allocs: 100, Fails: 4}})
	f := newFakeChurn(first, 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, map[tracer.Dest]int{a: 10})}})
	r := f.Next(totals(t0.Add(2*time.Second), map[tracer.DestKey]tracer.ChurnCounts{{Netns: 1, Dest: a}: {Allocs: 160, Fails: 10}}))
	n := netnsOf(t, r, 1)
	if d := destOf(t, n, a); d.AllocsPerSec != 30 || d.FailsPerSec != 3 {
		t.Errorf("destination: %v allocations/s, %v failures/s; want 30 and 3", d.AllocsPerSec, d.FailsPerSec)
	}
	if n.AllocsPerSec != 30 || n.FailsPerSec != 3 {
		t.Errorf("namespace: %v allocations/s, %v failures/s; want 30 and 3", n.AllocsPerSec, n.FailsPerSec)
	}
}

// Headroom leaves out the ports no connection may share: a TCP listener's
// or bound socket's, and every UDP socket's, whatever its destination.
func TestHeadroom(t *testing.T) {
	tcp := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	udp := tracer.Dest{Proto: event.ProtoUDP, Remote: netip.MustParseAddrPort("10.0.0.1:53")}
	u := usageOf(1000, 1099, 5, 30, map[tracer.Dest]int{tcp: 20, udp: 30})
	for _, tc := range []struct {
		name string
		got  int
		want int
	}{
		{"tcp destination", u.Headroom(tcp), 100 - 5 - 20},
		{"new tcp destination", u.NewHeadroom(event.ProtoTCP), 100 - 5},
		{"udp destination", u.Headroom(udp), 100 - 30},
		{"new udp destination", u.NewHeadroom(event.ProtoUDP), 100 - 30},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: headroom %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// The namespace's estimate is the soonest of its destinations' (and of a
// new destination's), never the latest.
func TestNetnsExhaustionIsTheSoonest(t *testing.T) {
	fast := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.1:443")}
	slow := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.2:443")}
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{1: {
		usageOf(1000, 1999, 0, 0, map[tracer.Dest]int{fast: 100, slow: 100}),
		usageOf(1000, 1999, 0, 0, map[tracer.Dest]int{fast: 200, slow: 110}), // +100/s and +10/s
	}})
	f.Next(totals(t0, nil))
	r := f.Next(totals(t0.Add(time.Second), nil))
	n := netnsOf(t, r, 1)
	fastETA, slowETA := destOf(t, n, fast).Exhaustion, destOf(t, n, slow).Exhaustion
	if fastETA != 8*time.Second || slowETA != 89*time.Second {
		t.Fatalf("destinations run out in %v and %v, want 8s and 1m29s", fastETA, slowETA)
	}
	if n.Exhaustion != fastETA {
		t.Errorf("namespace exhaustion %v, want the soonest, %v", n.Exhaustion, fastETA)
	}
}

// Linux shares a TCP port between destinations, so a namespace may hold
// more sockets than its range has ports: usage counts the ports, never
// over 100%, and no destination with headroom makes it EXHAUSTED.
func TestNetnsUsageCountsPorts(t *testing.T) {
	a := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("127.0.0.1:9000")}
	b := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("127.0.0.1:9001")}
	u := usageOf(40000, 40019, 0, 0, map[tracer.Dest]int{a: 20, b: 2})
	for i := range 20 {
		u.used.add(40000 + uint16(i))
	}
	u.InUse = u.used.count()
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{1: {u}})
	n := netnsOf(t, f.Next(totals(t0.Add(time.Second), nil)), 1)
	if n.InUse != 20 || n.Sockets != 22 || n.UsagePct != 100 {
		t.Errorf("in use %d ports by %d sockets (%.1f%%), want 20 ports by 22 sockets, 100%%", n.InUse, n.Sockets, n.UsagePct)
	}
	if d := destOf(t, n, b); d.Headroom != 18 || d.Exhaustion != -1 {
		t.Errorf("%s: headroom %d, exhaustion %v; want 18 and never", b, d.Headroom, d.Exhaustion)
	}
	if d := destOf(t, n, a); d.Headroom != 0 || n.Exhaustion != 0 {
		t.Errorf("%s: headroom %d, namespace exhaustion %v; want 0 and 0 (it is exhausted)", a, d.Headroom, n.Exhaustion)
	}
}

// A namespace already out of ports, where nothing allocates during the
// run (every connect fails first, or none is made), is reported all the
// same; a quiet one with room is not.
func TestQuietExhaustedNetnsReported(t *testing.T) {
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{
		1: {usageOf(1000, 1999, 0, 0, nil)},
		2: {usageOf(1000, 1099, 0, 100, nil)}, // every UDP port taken
		3: {usageOf(1000, 1099, 10, 10, nil)},
	})
	r := f.Next(totals(t0.Add(time.Second), nil))
	var got []uint32
	for _, n := range r.Netns {
		got = append(got, n.Netns)
	}
	if len(got) != 2 || netnsOf(t, r, 2).Exhaustion != 0 {
		t.Errorf("reported %v, want the host's (1) and the exhausted one (2), at exhaustion 0", got)
	}
}

// With --netns the namespaces named are the rows, idle or not, and the
// host's is not: outside the scope the kernel counts nothing there. The
// look for namespaces at risk keeps to the scope too.
func TestScopedNetnsRows(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		scope []uint32
		want  []uint32
	}{
		{nil, []uint32{1, 2}},            // the host's and the exhausted one
		{[]uint32{3}, []uint32{3}},       // idle, but named
		{[]uint32{2, 3}, []uint32{2, 3}}, // both named
		{[]uint32{1}, []uint32{1}},       // the host's alone: 2 is outside
		{[]uint32{4}, []uint32{4}},       // named, its usage unreadable
	} {
		f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{
			1: {usageOf(1000, 1999, 0, 0, nil)},
			2: {usageOf(1000, 1099, 0, 100, nil)}, // every UDP port taken
			3: {usageOf(1000, 1099, 10, 10, nil)},
		})
		f.scope = nil
		if tc.scope != nil {
			f.scope = map[uint32]bool{}
			for _, ns := range tc.scope {
				f.scope[ns] = true
			}
		}
		r := f.Next(totals(t0.Add(time.Second), nil))
		var got []uint32
		for _, n := range r.Netns {
			got = append(got, n.Netns)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("scope %v: rows %v, want %v", tc.scope, got, tc.want)
		}
	}
}

// Processes add up by container, and containers by pod; a process in
// none is in no row.
func TestByWorkloadAndPod(t *testing.T) {
	pod := "6d0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	api := workload.Identity{Runtime: "containerd", ContainerID: strings.Repeat("a", 64), PodUID: pod}
	sidecar := workload.Identity{Runtime: "containerd", ContainerID: strings.Repeat("b", 64), PodUID: pod}
	redis := workload.Identity{Runtime: "podman", ContainerID: strings.Repeat("c", 64)}
	inPod := workload.Names{Pod: "checkout-7d9f", Namespace: "shop"}
	procs := []ProcReport{
		{PID: 1, AllocsPerSec: 10, Allocs: 100, Workload: api, Names: workload.Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop"}},
		{PID: 2, AllocsPerSec: 5, Allocs: 50, Fails: 1, Workload: api},
		{PID: 3, AllocsPerSec: 1, Allocs: 10, Workload: sidecar, Names: workload.Names{Container: "envoy", Pod: "checkout-7d9f", Namespace: "shop"}},
		{PID: 4, AllocsPerSec: 20, Allocs: 200, Workload: redis},
		{PID: 5, AllocsPerSec: 99, Allocs: 990},
	}
	ws := byWorkload(procs)
	got := make([]string, len(ws))
	for i, w := range ws {
		got[i] = fmt.Sprintf("%s %.0f/s %d %d", workload.Cell(w.Workload, w.Names), w.AllocsPerSec, w.Allocs, w.Fails)
	}
	want := []string{"cccccccccccc 20/s 200 0", "checkout-7d9f/api 15/s 150 1", "checkout-7d9f/envoy 1/s 10 0"}
	if !slices.Equal(got, want) {
		t.Errorf("containers:\n got %q\nwant %q", got, want)
	}
	pods := byPod(ws)
	if len(pods) != 1 || pods[0].Workload != (workload.Identity{PodUID: pod}) || pods[0].Names != inPod || pods[0].Allocs != 160 || pods[0].Fails != 1 {
		t.Errorf("pods: %+v", pods)
	}
}

// A process's rates are of the interval too, and a process the first
// reading already counted is not counted again; the busiest comes first,
// named by its cgroup's workload.
func TestProcRatesPerInterval(t *testing.T) {
	t0 := time.Unix(1000, 0)
	web := tracer.ProcKey{PID: 10, Netns: 1, Comm: "web", CgroupID: 5}
	cron := tracer.ProcKey{PID: 20, Netns: 1, Comm: "cron"}
	other := tracer.ProcKey{PID: 30, Netns: 2, Comm: "elsewhere"}
	first := totals(t0, nil)
	first.Procs = map[tracer.ProcKey]tracer.ChurnCounts{web: {Allocs: 1000, Fails: 10}, cron: {Allocs: 5}}
	f := newFakeChurn(first, 1, map[uint32][]*PortUsage{1: {usageOf(1000, 1999, 0, 0, nil)}})
	api := workload.Identity{Runtime: "podman", ContainerID: strings.Repeat("a", 64)}
	f.Workload = func(id uint64) (workload.Identity, workload.Names) {
		if id == 5 {
			return api, workload.Names{Container: "api"}
		}
		return workload.Identity{}, workload.Names{}
	}
	cur := totals(t0.Add(4*time.Second), nil)
	cur.Procs = map[tracer.ProcKey]tracer.ChurnCounts{web: {Allocs: 1040, Fails: 18}, cron: {Allocs: 105}, other: {Allocs: 9}}
	n := netnsOf(t, f.Next(cur), 1)
	var got []string
	for _, p := range n.Procs {
		got = append(got, fmt.Sprintf("%d %s %s %g/s %g/s %d %d", p.PID, p.Comm, workload.Cell(p.Workload, p.Names),
			p.AllocsPerSec, p.FailsPerSec, p.Allocs, p.Fails))
	}
	want := []string{"20 cron - 25/s 0/s 105 0", "10 web api 10/s 2/s 1040 18"}
	if !slices.Equal(got, want) {
		t.Errorf("processes:\n got %q\nwant %q", got, want)
	}
}

// The summary's totals are the last reading's, added over namespaces and
// read afresh each time, not added to the last.
func TestAddTotals(t *testing.T) {
	s := NewState(totals(time.Unix(1000, 0), nil), nil)
	cur := &tracer.ChurnTotals{Netns: map[uint32]*tracer.NetnsChurn{
		1: {Allocs: map[string]uint64{"connect tcp": 10, "bind udp": 5}, Fails: map[string]uint64{"EADDRNOTAVAIL": 2}},
		2: {Allocs: map[string]uint64{"connect tcp": 1}, Fails: map[string]uint64{"EADDRNOTAVAIL": 1, "EAGAIN": 4}},
	}}
	s.AddTotals(cur)
	s.AddTotals(cur)
	if s.Summary.Allocs != 16 || s.Summary.Fails["EADDRNOTAVAIL"] != 3 || s.Summary.Fails["EAGAIN"] != 4 || len(s.Summary.Fails) != 2 {
		t.Errorf("summary %d allocations, failures %v; want 16 and EADDRNOTAVAIL 3, EAGAIN 4", s.Summary.Allocs, s.Summary.Fails)
	}
}

// Namespaces the kernel counted nothing in are looked at once at the
// start and then every scanEvery, not at every reading.
func TestScanSpacing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	f := newFakeChurn(totals(t0, nil), 1, map[uint32][]*PortUsage{
		1: {usageOf(1000, 1099, 0, 0, nil)},
		2: {usageOf(1000, 1099, 0, 0, nil), usageOf(1000, 1099, 0, 100, nil)}, // exhausted at the second look
	})
	for _, tc := range []struct {
		at    time.Duration
		want2 bool
	}{{time.Second, false}, {scanEvery, false}, {time.Second + scanEvery, true}} {
		r := f.Next(totals(t0.Add(tc.at), nil))
		got2 := false
		for _, n := range r.Netns {
			got2 = got2 || n.Netns == 2
		}
		if got2 != tc.want2 {
			t.Errorf("at %v: namespace 2 reported %t, want %t", tc.at, got2, tc.want2)
		}
	}
}
