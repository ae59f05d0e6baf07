package tracer_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/churn"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// startChurn attaches a churn-mode tracer for this process.
func startChurn(t *testing.T) *tracer.Tracer {
	return startChurnWith(t, tracer.Options{PID: uint32(os.Getpid())})
}

// startChurnWith attaches a churn-mode tracer scoped as o says, on the
// backend under test.
func startChurnWith(t *testing.T, o tracer.Options) *tracer.Tracer {
	t.Helper()
	tracer.NeedRoot(t)
	b := tracer.Backend(t)
	o.Backend, o.Churn, o.Events = b, true, tracer.KindsOf(event.KindBind, event.KindConnect)
	tr, err := tracer.New(o)
	tracer.SkipUnsupported(t, b, err)
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// netnsReport is r's report on namespace inode.
func netnsReport(t *testing.T, r *churn.Report, inode uint32) *churn.NetnsReport {
	t.Helper()
	for i := range r.Netns {
		if r.Netns[i].Netns == inode {
			return &r.Netns[i]
		}
	}
	t.Fatalf("no report for netns %d", inode)
	return nil
}

// churnIn200Ports makes a namespace whose range is 200 ports, attaches a
// churn tracer and starts a churn.State from its first reading.
func churnIn200Ports(t *testing.T) (*tracer.NS, *tracer.Tracer, *churn.State) {
	t.Helper()
	ns := tracer.NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40199")
	c := startChurn(t)
	first, err := c.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	state := churn.NewState(first, nil)
	return ns, c, state
}

// Known numbers of TCP connects, UDP connects and binds to port 0 give
// exactly those allocation counts, non-blocking connects included; a
// bind(0) followed by connect is one allocation, not two, and so is a
// bind(0) with IP_BIND_ADDRESS_NO_PORT (the connect's). Nothing is sent
// through the ring buffer.
func TestKernelChurnCounts(t *testing.T) {
	ns := tracer.NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40199")
	c := startChurn(t)
	svc := netip.MustParseAddrPort("127.0.0.1:9000")
	var fds []int
	ns.Run(t, func() {
		fds = append(fds, tracer.ListenTCP(t, svc))
		for i := 0; i < 30; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			fds = append(fds, fd)
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
		}
		// Non-blocking, as most clients connect: in progress, the port
		// already taken. (A signal mid-handshake returns the same way.)
		for i := 0; i < 4; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			fds = append(fds, fd)
			if err := unix.SetNonblock(fd, true); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil && err != unix.EINPROGRESS {
				t.Fatal(err)
			}
		}
		for i := 0; i < 20; i++ {
			fd := tracer.NewSocket(t, tracer.UDP4)
			fds = append(fds, fd)
			if err := unix.Connect(fd, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:53"))); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 10; i++ {
			fd := tracer.NewSocket(t, tracer.UDP4)
			fds = append(fds, fd)
			if err := unix.Bind(fd, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 5; i++ { // bind(0) first: the connect allocates nothing
			fd := tracer.NewSocket(t, tracer.TCP4)
			fds = append(fds, fd)
			if err := unix.Bind(fd, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
		}
		// IP_BIND_ADDRESS_NO_PORT: bind(0) takes the address only, the
		// connect takes the port.
		for i := 0; i < 3; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			fds = append(fds, fd)
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
				t.Fatal(err)
			}
			if err := unix.Bind(fd, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
		}
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	tot, err := c.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	n := tot.Netns[ns.Inode]
	if n == nil {
		t.Fatal("no churn counted in the test's netns")
	}
	want := map[string]uint64{"connect tcp": 37, "connect udp": 20, "bind udp": 10, "bind tcp": 5}
	if fmt.Sprint(n.Allocs) != fmt.Sprint(want) || n.TotalFails() != 0 {
		t.Errorf("allocations %v, failures %v; want %v and none", n.Allocs, n.Fails, want)
	}
	if got := tot.Dests[tracer.DestKey{Netns: ns.Inode, Dest: tracer.Dest{Proto: event.ProtoTCP, Remote: svc}}]; got.Allocs != 37 {
		t.Errorf("destination %s: %+v, want 37 allocations", svc, got)
	}
	c.Stop()
	sent := 0
	for ev := (event.Event{}); c.Read(&ev) == nil; {
		sent++
	}
	if sent != 0 {
		t.Errorf("churn mode sent %d events", sent)
	}
}

// Usage and TIME_WAIT read through sock_diag agree with ss(8) run in the
// same namespace.
func TestKernelChurnUsageMatchesSS(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss(8) is not installed here: nothing to cross-check against")
	}
	ns := tracer.NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40199")
	// Loopback connects may take over a TIME_WAIT port to the same peer once
	// a second has passed (tcp_tw_reuse=2, the default); a slow machine gets
	// there mid-test and the count is one short.
	ns.Sysctl(t, "net.ipv4.tcp_tw_reuse", "0")
	svc := netip.MustParseAddrPort("127.0.0.1:9000")
	var ssOut []byte
	ns.Run(t, func() {
		ln := tracer.ListenTCP(t, svc)
		defer unix.Close(ln)
		var open []int
		for i := 0; i < 40; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
			a, _, err := unix.Accept(ln)
			if err != nil {
				t.Fatal(err)
			}
			if i < 15 { // the client closes first: its port goes to TIME_WAIT
				unix.Close(fd)
				unix.Close(a)
			} else {
				open = append(open, fd, a)
			}
		}
		u := tracer.NewSocket(t, tracer.UDP4)
		open = append(open, u)
		if err := unix.Connect(u, tracer.Sockaddr(netip.MustParseAddrPort("127.0.0.1:53"))); err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, fd := range open {
				unix.Close(fd)
			}
		}()
		time.Sleep(50 * time.Millisecond) // let the FIN exchanges settle
		var err error
		// Forked from this thread, ss runs in the test's namespace.
		ssOut, err = exec.Command("ss", "-Htuan").Output()
		if err != nil {
			t.Fatal(err)
		}
		u2, err := churn.ReadUsage(ns.FD)
		if err != nil {
			t.Fatal(err)
		}
		sockets, ports, timeWait := countSS(t, ssOut, 40000, 40199)
		if u2.Sockets != sockets || u2.InUse != ports || u2.TimeWait != timeWait {
			t.Errorf("sock_diag: %d sockets on %d ports, TIME_WAIT %d; ss: %d, %d, %d\n%s",
				u2.Sockets, u2.InUse, u2.TimeWait, sockets, ports, timeWait, ssOut)
		}
		if u2.TimeWait != 15 || u2.Sockets != 41 {
			t.Errorf("%d sockets (want 25 open + 15 TIME_WAIT + 1 udp), TIME_WAIT %d (want 15)", u2.Sockets, u2.TimeWait)
		}
	})
}

// countSS counts the sockets ss lists with a local port in [lo, hi], and
// the ports they hold.
func countSS(t *testing.T, out []byte, lo, hi int) (sockets, ports, timeWait int) {
	held := map[int]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text()) // netid state recv-q send-q local peer
		if len(f) < 6 {
			continue
		}
		i := strings.LastIndex(f[4], ":")
		port, err := strconv.Atoi(f[4][i+1:])
		if err != nil {
			t.Fatalf("ss line %q", sc.Text())
		}
		if port < lo || port > hi {
			continue
		}
		sockets++
		held[port] = true
		if f[1] == "TIME-WAIT" {
			timeWait++
		}
	}
	return sockets, len(held), timeWait
}

// Driven to exhaustion, failures are counted and the estimate reaches zero;
// a second destination keeps its own headroom.
func TestKernelChurnExhaustion(t *testing.T) {
	ns, c, state := churnIn200Ports(t)
	full := netip.MustParseAddrPort("127.0.0.1:9000")
	other := netip.MustParseAddrPort("127.0.0.1:9001")
	var fds []int
	var fails int
	ns.Run(t, func() {
		fds = append(fds, tracer.ListenTCP(t, full), tracer.ListenTCP(t, other))
		for i := 0; i < 210; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			err := unix.Connect(fd, tracer.Sockaddr(full))
			if err == unix.EADDRNOTAVAIL {
				fails++
				unix.Close(fd)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
		for i := 0; i < 3; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			if err := unix.Connect(fd, tracer.Sockaddr(other)); err != nil {
				t.Fatalf("other destination: %v", err)
			}
			fds = append(fds, fd)
		}
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if fails != 10 {
		t.Fatalf("%d connects failed, want 10 (200 ports, 210 tries)", fails)
	}
	cur, err := c.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	r := state.Next(cur)
	n := netnsReport(t, r, ns.Inode)
	if n.UsageErr != "" {
		t.Fatal(n.UsageErr)
	}
	if n.FailsTotal["EADDRNOTAVAIL"] != 10 || n.AllocsTotal["connect tcp"] != 203 {
		t.Errorf("allocations %v, failures %v; want 203 and 10 EADDRNOTAVAIL", n.AllocsTotal, n.FailsTotal)
	}
	if n.RangeSize != 200 || n.Exhaustion != 0 {
		t.Errorf("range size %d, exhaustion %v; want 200 and 0", n.RangeSize, n.Exhaustion)
	}
	// The three connections to the other destination share ports with
	// the first 200: the range is full, not over full.
	if n.InUse != 200 || n.Sockets != 203 || n.UsagePct != 100 {
		t.Errorf("%d ports in use by %d sockets, %.1f%%; want 200 by 203, 100%%", n.InUse, n.Sockets, n.UsagePct)
	}
	dests := map[netip.AddrPort]churn.DestReport{}
	for _, d := range n.Dests {
		dests[d.Dest.Remote] = d
	}
	if d := dests[full]; d.InUse != 200 || d.Headroom != 0 || d.Exhaustion != 0 {
		t.Errorf("%s: in use %d, headroom %d, exhaustion %v; want 200, 0, 0", full, d.InUse, d.Headroom, d.Exhaustion)
	}
	if d := dests[other]; d.InUse != 3 || d.Headroom != 197 {
		t.Errorf("%s: in use %d, headroom %d; want 3 and 197", other, d.InUse, d.Headroom)
	}
	var buf strings.Builder
	if err := churn.WriteTable(&buf, r); err != nil || !strings.Contains(buf.String(), "EXHAUSTED") {
		t.Errorf("table does not say EXHAUSTED:\n%s", buf.String())
	}
}

// Churn adds up the allocations of a container's processes into a row of
// its own, and /metrics exports it when --metrics-workloads asks.
func TestKernelChurnByWorkload(t *testing.T) {
	tracer.NeedRoot(t)
	ns := tracer.NewNetns(t)
	tr := startChurnWith(t, tracer.Options{Netns: []uint32{ns.Inode}})
	first, err := tr.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	state := churn.NewState(first, nil)
	l := tracer.WorkloadLayouts(t)[6] // podman, systemd
	cg, root := tracer.MakeCgroup(t, l.Path)
	en := proc.NewEnricherAt(t.TempDir(), root)
	state.Workload = func(id uint64) (workload.Identity, workload.Names) { return en.CgroupWorkload(id, time.Now()) }
	outside, _ := tracer.MakeCgroup(t, fmt.Sprintf("/porttrace-outside-%d", time.Now().UnixNano()))
	for _, cg := range []*os.File{cg, cg, cg, outside} { // three binds to port 0 in the container, one outside it
		tracer.BindIn(t, ns, cg, "udp", "127.0.0.1:0")
	}
	cur, err := tr.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	r := state.Next(cur)
	n := netnsReport(t, r, ns.Inode)
	if len(n.Workloads) != 1 || n.Workloads[0].Workload.ContainerID != l.ContainerID || n.Workloads[0].Allocs != 3 {
		t.Fatalf("workload rows %+v, want one: container %s, 3 allocations", n.Workloads, l.ContainerID)
	}
	m := churn.NewCollector(0, 5)
	m.Set(r)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fams {
		if f.GetName() != "porttrace_ephemeral_workload_allocations_total" {
			continue
		}
		for _, mt := range f.Metric {
			for _, lp := range mt.Label {
				if lp.GetName() == "container_id" && lp.GetValue() == l.ContainerID && mt.Counter.GetValue() == 3 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no porttrace_ephemeral_workload_allocations_total 3 for container %s in %v", l.ContainerID, fams)
	}
}
