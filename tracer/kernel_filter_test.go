package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// The port filter runs in the kernel and matches local or remote ports,
// a local port the kernel picked included.
func TestKernelPortFilter(t *testing.T) {
	ns := NewNetns(t)
	var ports PortSet
	if err := ports.Set("9999,20000-20001"); err != nil {
		t.Fatal(err)
	}
	// Ports the kernel picks come from the filtered ones.
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "20000 20001")
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Ports: &ports})
	ns.Run(t, func() {
		for _, p := range []string{"127.0.0.1:9998", "127.0.0.1:9999", "127.0.0.1:20001", "127.0.0.1:20002"} {
			fd := NewSocket(t, UDP4)
			defer unix.Close(fd)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort(p))); err != nil {
				t.Fatal(err)
			}
		}
		// Asked for port 0, matched by the port the kernel chose.
		fd0 := NewSocket(t, TCP4)
		defer unix.Close(fd0)
		if err := unix.Bind(fd0, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
			t.Fatal(err)
		}
		// Matched by its remote port alone: bound first to a port outside
		// the set (that bind is not reported), then connected to 9999.
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:30000"))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:9999"))); err != nil {
			t.Fatal(err)
		}
	})
	var got []string
	for _, ev := range c.stop(t, ns) {
		got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, AddrString(ev.Local), AddrString(ev.Remote)))
	}
	if len(got) != 4 || got[0] != "bind 127.0.0.1:9999 -" || got[1] != "bind 127.0.0.1:20001 -" ||
		!strings.HasPrefix(got[2], "bind 127.0.0.1:2000") || got[3] != "connect 127.0.0.1:30000 127.0.0.1:9999" {
		t.Errorf("got %q", got)
	}
}

// The pid filter runs in the kernel: another process's binds are not seen.
func TestKernelPIDFilter(t *testing.T) {
	ns := NewNetns(t)
	h := StartHelper(t, ns, HelperExe(t), 0, "udp", "127.0.0.1:6001")
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	if _, errno := h.Bind(t); errno != "" {
		t.Fatal(errno)
	}
	ns.Run(t, func() {
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:6002"))); err != nil {
			t.Fatal(err)
		}
	})
	evs := c.stop(t, ns)
	if len(evs) != 1 || evs[0].Local.Port() != 6002 || evs[0].PID != uint32(os.Getpid()) {
		t.Errorf("got %v, want only this process's bind of 6002", evs)
	}
}

// Each backend's programs pass this kernel's verifier, or the kernel refuses
// the program type outright and the test says which: with the helpers the
// kernel has, and without the newer ones (the paths older kernels take).
func TestKernelBackendsLoad(t *testing.T) {
	NeedRoot(t)
	// As New does: kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	kernel, err := btfKernel()
	if err != nil {
		t.Fatal(err)
	}
	have, err := probeHelpers()
	if err != nil {
		t.Fatal(err)
	}
	have.fromKernel(kernel)
	backends := []event.Backend{event.BackendTracepoint, event.BackendFentry, event.BackendKprobe}
	if b := Backend(t); b != event.BackendAuto {
		backends = []event.Backend{b}
	}
	for _, b := range backends {
		for _, c := range []struct {
			name string
			have helpers
		}{{"probed", have}, {"without-new-helpers", helpers{}}} {
			t.Run(b.String()+"/"+c.name, func(t *testing.T) {
				spec, err := loadPorttrace()
				if err != nil {
					t.Fatal(err)
				}
				fn, onSock := listenFunc(kernel)
				// Without the new helpers, the map of connects is preallocated too, as before 6.1.
				if err := configure(spec, b, Options{}, onSock, c.have, c.name == "probed" && anyContextAlloc(kernel)); err != nil {
					t.Fatal(err)
				}
				opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}
				l, err := loadBackend(b, spec, opts, fn, c.have, AllKinds(), false)
				if errors.Is(err, unix.EPERM) && b == event.BackendFentry {
					t.Skipf("this kernel refuses to load fexit programs (EPERM): %v", err)
				}
				if err != nil {
					t.Fatalf("%+v", err)
				}
				l.close()
			})
		}
	}
}

func btfKernel() (*btf.Spec, error) { return btf.LoadKernelSpec() }

// The fexit programs read each function's return value after the
// parameters they were written for: every kernel of the matrix has those
// prototypes, and the check refuses one that does not, naming the function.
func TestKernelFexitPrototypes(t *testing.T) {
	kernel, err := btfKernel()
	if err != nil {
		t.Fatal(err)
	}
	fn, _ := listenFunc(kernel)
	if err := checkFexitParams(kernel, fn); err != nil {
		t.Fatal(err)
	}
	if err := checkFexitParams(kernel, "inet_bind"); err == nil || !strings.Contains(err.Error(), "kernel function inet_bind") {
		t.Errorf("a function with no expected prototype: got %v", err)
	}
	b := &btf.Builder{}
	intType := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	params := make([]btf.FuncParam, 5)
	for i := range params {
		params[i] = btf.FuncParam{Name: fmt.Sprintf("a%d", i), Type: intType}
	}
	if _, err := b.Add(&btf.Func{Name: "__inet_bind", Type: &btf.FuncProto{Return: intType, Params: params}, Linkage: btf.GlobalFunc}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	five, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	err = checkFexitParams(five, fn)
	if !errors.Is(err, ebpf.ErrNotSupported) || !strings.Contains(err.Error(), "__inet_bind takes 5 parameters") {
		t.Errorf("__inet_bind with 5 parameters: got %v", err)
	}
}

// auto takes the first backend, in the order fentry, kprobe, tracepoint,
// that starts on its own; PORTTRACE_WANT_AUTO names the one expected.
func TestKernelAutoBackend(t *testing.T) {
	NeedRoot(t)
	first := event.BackendAuto
	for _, b := range []event.Backend{event.BackendFentry, event.BackendKprobe, event.BackendTracepoint} {
		tr, err := New(Options{Backend: b, Events: AllKinds()})
		if err == nil {
			tr.Close()
			first = b
			break
		}
	}
	tr, err := New(Options{Backend: event.BackendAuto, Events: AllKinds()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Backend() != first {
		t.Errorf("auto chose %s, but %s starts", tr.Backend(), first)
	}
	if want := os.Getenv("PORTTRACE_WANT_AUTO"); want != "" && tr.Backend().String() != want {
		t.Errorf("auto chose %s, want %s on this kernel (notes: %v)", tr.Backend(), want, tr.Notes())
	}
	if first != event.BackendFentry && len(tr.Notes()) == 0 {
		t.Error("no note says why the backends before it were refused")
	}
	if forceHelpers != nil && tr.Backend() == event.BackendTracepoint && !strings.Contains(tr.Describe(true), "paired with its sys_enter") {
		t.Errorf("without bpf_task_pt_regs, the description does not say so: %s", tr.Describe(true))
	}
	if forceHelpers != nil && !strings.Contains(tr.Describe(true), "no bpf_rdonly_cast") {
		t.Errorf("without bpf_rdonly_cast, the description does not say so: %s", tr.Describe(true))
	}
}

// Nothing is lost silently: with a ring buffer too small for a burst and a
// reader that is not reading, every event is either delivered or counted
// as lost, and the two add up.
func TestKernelLostEventsCounted(t *testing.T) {
	const n = 500
	ns := NewNetns(t)
	NeedRoot(t)
	tr := newTracer(t, Options{Backend: Backend(t), Events: KindsOf(event.KindBind), PID: uint32(os.Getpid()), RingBufferSize: 4096})
	defer tr.Close()
	ns.Run(t, func() {
		for i := 0; i < n; i++ {
			fd := NewSocket(t, UDP4)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
	})
	tr.Stop()
	delivered := 0
	var ev event.Event
	for tr.Read(&ev) == nil {
		if ev.Netns == ns.Inode {
			delivered++
		}
	}
	lost, err := tr.Lost()
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 || delivered+int(lost) != n {
		t.Errorf("delivered %d + lost %d, want a loss and a sum of %d", delivered, lost, n)
	}
}

// The uid filter runs in the kernel: only the named user's binds are
// seen, root (0) a user like any other.
func TestKernelUIDFilter(t *testing.T) {
	for _, uid := range []uint32{65534, 0} {
		t.Run(fmt.Sprint(uid), func(t *testing.T) {
			ns := NewNetns(t)
			nobody := StartHelper(t, ns, HelperExe(t), 65534, "udp", "127.0.0.1:6101")
			root := StartHelper(t, ns, HelperExe(t), 0, "udp", "127.0.0.1:6102")
			c := startTracer(t, Options{FilterUID: true, UID: uid})
			for _, h := range []*Helper{nobody, root} {
				if _, errno := h.Bind(t); errno != "" {
					t.Fatal(errno)
				}
			}
			want := map[uint32]*Helper{65534: nobody, 0: root}[uid]
			port := map[uint32]uint16{65534: 6101, 0: 6102}[uid]
			evs := c.stop(t, ns)
			if len(evs) != 1 || evs[0].UID != uid || evs[0].Local.Port() != port || evs[0].PID != uint32(want.Cmd.Process.Pid) {
				t.Errorf("got %v, want only uid %d's bind of %d", evs, uid, port)
			}
		})
	}
}

// Scoped to network namespaces, the kernel keeps the sockets in them and
// drops the others.
func TestKernelNetnsScope(t *testing.T) {
	in, out := NewNetns(t), NewNetns(t)
	c := startTracer(t, Options{Events: KindsOf(event.KindBind), PID: uint32(os.Getpid()), Netns: []uint32{in.Inode}})
	for _, n := range []*NS{in, out} {
		n.Run(t, func() {
			fd := NewSocket(t, UDP4)
			defer unix.Close(fd)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:31360"))); err != nil {
				t.Fatal(err)
			}
		})
	}
	evs := c.stop(t, nil)
	if len(evs) != 1 || evs[0].Netns != in.Inode {
		t.Errorf("got %v, want only the bind in netns %d", evs, in.Inode)
	}
}

// A backend verifies only the programs of the events asked for: a trace
// of binds alone loads no connect or accept program (each costs
// milliseconds of verification at start), and a churn run no program for
// how connects end. What it loads shares one set of maps.
func TestKernelLoadsWhatIsAskedFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events KindSet
		churn  bool
	}{
		{"bind", KindsOf(event.KindBind), false},
		{"connect", KindsOf(event.KindConnect), false},
		{"churn", KindsOf(event.KindBind, event.KindConnect), true},
		{"all", AllKinds(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracer(t, Options{Backend: Backend(t), Events: tc.events, Churn: tc.churn})
			defer tr.Close()
			loaded := 0
			for _, h := range tr.l.hooks {
				if got, want := *h.prog != nil, h.wanted(tc.events, tc.churn); got != want {
					t.Errorf("%s: loaded %t, want %t", h.name, got, want)
				}
				if *h.prog != nil {
					loaded++
				}
			}
			if loaded == 0 {
				t.Error("nothing loaded")
			}
		})
	}
}

// --sample N: on each CPU, one event in N of those the filters pass is
// sent and the others are counted, exactly; a connect left out is not
// followed either, so no connect_done comes without its connect. The
// calls are made on one CPU, so that one in N is exact.
func TestKernelSample(t *testing.T) {
	const binds, connects, every = 1000, 20, 10
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindBind, event.KindConnect), Sample: every})
	ns.Run(t, func() {
		var all, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &all); err != nil {
			t.Fatal(err)
		}
		for cpu := 0; ; cpu++ { // the first CPU this thread may use
			if all.IsSet(cpu) {
				one.Set(cpu)
				break
			}
		}
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		for range binds {
			fd := NewSocket(t, UDP4)
			if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
		for range connects {
			fd := NewSocket(t, TCP4)
			if err := unix.SetNonblock(fd, true); err != nil {
				t.Fatal(err)
			}
			_ = unix.Connect(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:9"))) // refused at once
			unix.Close(fd)
		}
	})
	sampled, err := c.tr.SampledOut()
	if err != nil {
		t.Fatal(err)
	}
	evs := c.stop(t, ns)
	kinds := map[event.Kind]int{}
	for _, ev := range evs {
		kinds[ev.Kind]++
	}
	// Each CPU sends its first call, then one in every: 100 binds of 1,000,
	// then the 1,001st call and one in ten after it: 2 connects of 20.
	want := map[event.Kind]int{event.KindBind: binds / every, event.KindConnect: connects / every, event.KindConnectDone: connects / every}
	if fmt.Sprint(kinds) != fmt.Sprint(want) || sampled != binds+connects-binds/every-connects/every {
		t.Errorf("sent %v and %d sampled out, want %v and %d", kinds, sampled, want, binds+connects-binds/every-connects/every)
	}
}
