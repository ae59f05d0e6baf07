package tracer_test

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/churn"
)

// bindInNewNetns binds a UDP socket to port 0 from a thread that enters a
// network namespace of its own and then ends, and the namespace with it.
func bindInNewNetns(t *testing.T) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{})
			unix.Close(fd)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("binding in a new namespace: %v", err)
	}
}

// bindFromProcess binds a UDP socket to port 0 from a helper process in
// cgroup cg, in a network namespace of its own when cloneflags says so,
// in n otherwise, and waits for it to exit.
func bindFromProcess(t *testing.T, cg *os.File, n *tracer.NS, cloneflags uintptr) {
	t.Helper()
	cmd := tracer.HelperCmd(tracer.HelperExe(t), 0, "udp", "0.0.0.0:0")
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	cmd.SysProcAttr.Cloneflags = cloneflags
	h := tracer.RunHelper(t, n, cmd)
	if _, errno := h.Bind(t); errno != "" {
		t.Fatalf("helper's bind: %s", errno)
	}
	h.Stdin.Close()
	_ = h.Cmd.Wait()
}

// Short-lived processes and namespaces allocate ports; once they are
// gone, churn's retire step deletes their keys from the kernel's maps, so
// more namespaces than a churn map has entries come and go without one
// going uncounted, and the run's totals are exactly what was made. A
// namespace still held (by an fd alone) keeps its key. The maps are made
// small (24 entries, not churn_ns's 1,024), and each case makes half as
// many again: a namespace takes about 20 ms to come and go on a 2-CPU
// machine, and about a second in the kernel matrix's emulated guests.
func TestKernelChurnRetire(t *testing.T) {
	tracer.NeedRoot(t)
	const churnEntries = 24
	for _, tc := range []struct {
		name       string
		n, batch   int
		wantNsKeys int // keys of namespaces that stay
		start      func(t *testing.T) (tracer.Options, func(t *testing.T))
	}{
		{name: "threads, each in a namespace of its own", n: 36, batch: 12,
			start: func(t *testing.T) (tracer.Options, func(t *testing.T)) {
				return tracer.Options{PID: uint32(os.Getpid())}, bindInNewNetns
			}},
		{name: "processes, each in a namespace of its own", n: 36, batch: 12,
			start: func(t *testing.T) (tracer.Options, func(t *testing.T)) {
				cg, _ := tracer.MakeCgroup(t, "/porttrace-retire-"+strings.ReplaceAll(t.Name(), "/", "-"))
				return tracer.Options{Cgroups: []uint64{tracer.CgroupID(t, cg)}},
					func(t *testing.T) { bindFromProcess(t, cg, nil, syscall.CLONE_NEWNET) }
			}},
		{name: "processes in a namespace that stays", n: 36, batch: 12, wantNsKeys: 1,
			start: func(t *testing.T) (tracer.Options, func(t *testing.T)) {
				ns := tracer.NewNetns(t)
				cg, _ := tracer.MakeCgroup(t, "/porttrace-retire-"+strings.ReplaceAll(t.Name(), "/", "-"))
				return tracer.Options{Cgroups: []uint64{tracer.CgroupID(t, cg)}},
					func(t *testing.T) { bindFromProcess(t, cg, ns, 0) }
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, alloc := tc.start(t)
			tr := startChurnWith(t, tracer.WithChurnEntries(o, churnEntries))
			first, err := tr.ReadChurn()
			if err != nil {
				t.Fatal(err)
			}
			state := churn.NewState(first, nil)
			// Readings 11 s apart, as State sees them: each may retire.
			at := first.Time
			step := func() *tracer.ChurnTotals {
				cur, err := tr.ReadChurn()
				if err != nil {
					t.Fatal(err)
				}
				at = at.Add(11 * time.Second)
				cur.Time = at
				state.Next(cur)
				if err := state.Retire(tr.ForgetChurn); err != nil {
					t.Fatal(err)
				}
				if cur.Overflow != 0 {
					t.Fatalf("%d keys uncounted: a churn map was full", cur.Overflow)
				}
				return cur
			}
			start := time.Now()
			for made := 0; made < tc.n; made += tc.batch {
				for range tc.batch {
					alloc(t)
				}
				step() // counted: not quiet yet
				step() // quiet: retired where gone
			}
			var ns, dst, proc int
			for range 50 { // a thread or process just ended may still be listed a moment
				if ns, dst, proc, err = tr.ChurnKeys(); err != nil {
					t.Fatal(err)
				}
				if ns == tc.wantNsKeys && dst == 0 && proc == 0 {
					break
				}
				time.Sleep(20 * time.Millisecond)
				step()
			}
			t.Logf("%d allocations in %v", tc.n, time.Since(start))
			if ns != tc.wantNsKeys || dst != 0 || proc != 0 {
				t.Errorf("keys left: churn_ns %d (want %d), churn_dst %d, churn_proc %d (want 0)", ns, tc.wantNsKeys, dst, proc)
			}
			state.AddTotals(step())
			if state.Summary.Allocs != uint64(tc.n) || len(state.Summary.Fails) != 0 {
				t.Errorf("summary: %d allocations, failures %v; want %d, none", state.Summary.Allocs, state.Summary.Fails, tc.n)
			}
		})
	}
}
