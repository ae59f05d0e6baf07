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
	if want, _ := ringLayout(ncpu); c.tr.Rings() != want {
		t.Errorf("%d rings for %d CPUs, want %d", c.tr.Rings(), ncpu, want)
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for cpu := 0; cpu < 1024 && len(cpus) < 16; cpu++ {
		if allowed.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
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
	evs := c.stop(t, ns)
	if len(evs) != binds*len(cpus) {
		t.Errorf("%d binds from %d CPUs, want %d", len(evs), len(cpus), binds*len(cpus))
	}
	tids := map[uint32]int{}
	for i, ev := range evs {
		tids[ev.TID]++
		if i > 0 && ev.Time.Before(evs[i-1].Time) {
			t.Errorf("event %d at %s came after one at %s", i, ev.Time.Format("15:04:05.000000000"), evs[i-1].Time.Format("15:04:05.000000000"))
			break
		}
	}
	if len(tids) != len(cpus) {
		t.Errorf("binds from %d threads, want %d", len(tids), len(cpus))
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
