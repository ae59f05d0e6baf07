package tracer

import (
	"net/netip"
	"os"
	"sync"
	"testing"

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
