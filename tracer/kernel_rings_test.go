package tracer

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// Each CPU writes into a ring of its own, read on a goroutine of its own;
// Read merges them. Threads pinned one to each CPU bind at once, and every
// bind comes out, once, in the order of the kernel's timestamps.
func TestKernelRingsMergeInTimeOrder(t *testing.T) {
	const binds = 3000
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindBind)})
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	want, perRing := ringLayout(ncpu)
	if c.tr.Rings() != want {
		t.Errorf("%d rings for %d CPUs, want %d", c.tr.Rings(), ncpu, want)
	}
	cpus := allowedCPUs(t, 16)
	t.Logf("%d possible CPUs, %d rings of %d CPUs each; binding on %d CPUs", ncpu, want, perRing, len(cpus))
	bindOnCPUs(t, ns, cpus, binds)
	checkBindsInOrder(t, c, c.stop(t, ns), len(cpus), binds)
}

// Past MaxRings CPUs, neighbouring CPUs share a ring (bpf/common.h:
// this_ring): its events are in the order the CPUs committed them, which
// is not quite their timestamps' (each CPU takes its timestamp before it
// reserves), and the merge puts them back in order. Here the layout is
// that of a machine with one CPU more than MaxRings, so that CPUs 0 and 1
// write into ring 0, 2 and 3 into ring 1, and so on, all at once. Each
// ring holds every bind (4 MiB): this test is of the order, not of readers
// kept off every CPU by the binds.
func TestKernelRingSharedByCPUs(t *testing.T) {
	defer func(f func() (int, error)) { possibleCPUs = f }(possibleCPUs)
	possibleCPUs = func() (int, error) { return MaxRings + 1, nil }
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindBind), RingBufferSize: 4 << 20})
	if rings, perRing := ringLayout(MaxRings + 1); c.tr.Rings() != rings || perRing != 2 {
		t.Fatalf("%d rings, want %d of %d CPUs each", c.tr.Rings(), rings, perRing)
	}
	cpus := allowedCPUs(t, 16)
	binds := 10000
	if len(cpus) == 1 {
		binds = 1000 // one writer (a one-CPU guest): the layout, not the order of two
	}
	bindOnCPUs(t, ns, cpus, binds)
	checkBindsInOrder(t, c, c.stop(t, ns), len(cpus), binds)
}

// allowedCPUs is the first n CPUs this test may run on.
func allowedCPUs(t *testing.T, n int) []int {
	t.Helper()
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for cpu := 0; cpu < 1024 && len(cpus) < n; cpu++ {
		if allowed.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// bindOnCPUs binds binds UDP sockets to port 0 in ns from a thread pinned
// to each of cpus, all at once.
func bindOnCPUs(t *testing.T, ns *NS, cpus []int, binds int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, cpu := range cpus {
		wg.Go(func() {
			ns.Run(t, func() {
				var one unix.CPUSet
				one.Set(cpu)
				if err := unix.SchedSetaffinity(0, &one); err != nil {
					t.Error(err)
					return
				}
				for range binds {
					fd := NewSocket(t, UDP4)
					if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
						t.Error(err)
						return
					}
					unix.Close(fd)
				}
			})
		})
	}
	wg.Wait()
}

// checkBindsInOrder checks that evs are the binds of bindOnCPUs, each
// once, from one thread a CPU, in time order.
func checkBindsInOrder(t *testing.T, c *collector, evs []event.Event, cpus, binds int) {
	t.Helper()
	if len(evs) != binds*cpus {
		t.Errorf("%d binds from %d CPUs, want %d", len(evs), cpus, binds*cpus)
	}
	tids := map[uint32]int{}
	for i, ev := range evs {
		tids[ev.TID]++
		if i > 0 && ev.Time.Before(evs[i-1].Time) {
			t.Errorf("event %d at %s came after one at %s", i, ev.Time.Format("15:04:05.000000000"), evs[i-1].Time.Format("15:04:05.000000000"))
			break
		}
	}
	if len(tids) != cpus {
		t.Errorf("binds from %d threads, want %d", len(tids), cpus)
	}
	if n := c.tr.Reordered(); n != 0 {
		t.Errorf("%d events out of order", n)
	}
}

// An event that finds its ring woken less than WakeupAfter ago wakes
// nobody (bpf/common.h: wakeup_flags); the reader, which sleeps for good
// once its ring has been quiet that long, looks again WakeupAfter after it
// last found the ring busy. Two binds on one CPU, the second right after
// the first, and then quiet: both come out while the tracer runs, not
// only once Stop drains the rings.
func TestKernelEventAfterWakeupRead(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindBind)})
	var ports [2]uint16
	for round := range 3 {
		ns.Run(t, func() {
			var one unix.CPUSet
			one.Set(0)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				t.Error(err)
				return
			}
			for i := range ports {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer unix.Close(fd)
				if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
					t.Error(err)
					return
				}
				sa, err := unix.Getsockname(fd)
				if err != nil {
					t.Error(err)
					return
				}
				ports[i] = uint16(sa.(*unix.SockaddrInet4).Port)
			}
		})
		for _, port := range ports {
			ev := c.waitFor(t, func(ev *event.Event) bool {
				return ev.Netns == ns.Inode && ev.Kind == event.KindBind && ev.Local.Port() == port
			})
			if !ev.Local.Addr().Is4() || ev.Local.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("round %d: %s", round, Brief(&ev))
			}
		}
		time.Sleep(2 * WakeupAfter) // the reader goes back to sleep for good
	}
	c.stop(t, ns)
}
