package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The load: a process of its own, started into the soak's cgroup so that
// porttrace's in-kernel --cgroup filter passes its calls and nobody
// else's. It makes three network namespaces, each held by a thread that
// never leaves it, so that they vanish with the process however it ends:
// load (TCP connect/accept, UDP bind(0), EADDRINUSE), denied
// (ip_unprivileged_port_start raised, binds below it as uid 65534) and
// exhaust (a ten-port ip_local_port_range, filled and emptied in cycles).
// It counts every call it makes by kind and result, and the ephemeral
// ports it was given or refused in each namespace.

// Rates, calls a second, of each loop.
type rates struct {
	TCP, UDP, InUse, Denied, Exhaust float64 // Exhaust: cycles a second
}

const (
	exhaustLow, exhaustHigh = 40000, 40009 // the exhaust namespace's ip_local_port_range
	deniedBelow             = 4000         // its ip_unprivileged_port_start
	deniedPort              = 3000
	nobody                  = 65534
)

// loadReady is the load's first line: where its namespaces are.
type loadReady struct {
	PID    int               `json:"pid"`
	Netns  map[string]string `json:"netns"`  // name: a path porttrace can open
	Inodes map[string]uint64 `json:"inodes"` // name: inode, as events and /metrics name it
}

// tally is what the load made: events by "kind/result[/errno]", and per
// namespace the ephemeral ports allocated and the allocations refused.
type tally struct {
	Events   map[string]uint64 `json:"events"`
	Allocs   map[string]uint64 `json:"allocs"`
	Fails    map[string]uint64 `json:"fails"`
	Cycles   uint64            `json:"cycles"` // exhaust cycles that filled the range exactly
	Children uint64            `json:"children"`
}

func newTally() *tally {
	return &tally{Events: map[string]uint64{}, Allocs: map[string]uint64{}, Fails: map[string]uint64{}}
}

func (t *tally) add(o *tally) {
	for k, v := range o.Events {
		t.Events[k] += v
	}
	for k, v := range o.Allocs {
		t.Allocs[k] += v
	}
	for k, v := range o.Fails {
		t.Fails[k] += v
	}
	t.Cycles += o.Cycles
	t.Children += o.Children
}

// eventKey names a call's outcome as the stream's JSON does: ok, denied
// (EACCES, EPERM) or failed, with the errno.
func eventKey(kind string, err error) string {
	if err == nil {
		return kind + "/ok"
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return kind + "/failed/" + err.Error()
	}
	res := "failed"
	if errno == unix.EACCES || errno == unix.EPERM {
		res = "denied"
	}
	return kind + "/" + res + "/" + unix.ErrnoName(errno)
}

// call records one call and returns its error.
func (t *tally) call(kind string, err error) error {
	t.Events[eventKey(kind, err)]++
	return err
}

// runLoad is the load process: namespaces, then "go" on stdin starts the
// loops, "stop" stops them and the tally is written; EOF ends it.
func runLoad(r rates) error {
	names := []string{"load", "denied", "exhaust"}
	sysctls := map[string]map[string]string{
		"denied":  {"ip_unprivileged_port_start": strconv.Itoa(deniedBelow)},
		"exhaust": {"ip_local_port_range": fmt.Sprintf("%d %d", exhaustLow, exhaustHigh)},
	}
	ready := loadReady{PID: os.Getpid(), Netns: map[string]string{}, Inodes: map[string]uint64{}}
	fds := map[string]int{}
	for _, n := range names {
		h, err := holdNetns(sysctls[n])
		if err != nil {
			return fmt.Errorf("making the %s namespace: %w", n, err)
		}
		fds[n], ready.Netns[n], ready.Inodes[n] = h.fd, h.path, h.inode
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(ready); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "go" {
		return nil // the soak ended before the load began
	}
	ctx, stop := context.WithCancel(context.Background())
	loops := []struct {
		ns   string
		rate float64
		loop func(context.Context, *tally, string, float64) error
	}{
		{"load", r.TCP, tcpLoop}, {"load", r.UDP, udpLoop}, {"load", r.InUse, inUseLoop},
		{"denied", r.Denied, deniedLoop}, {"exhaust", r.Exhaust, exhaustLoop},
	}
	var wg sync.WaitGroup
	tallies := make([]*tally, len(loops))
	errs := make([]error, len(loops))
	for i, l := range loops {
		tallies[i] = newTally()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = inNetns(fds[l.ns], func() error { return l.loop(ctx, tallies[i], l.ns, l.rate) })
			if errs[i] != nil {
				stop() // one loop failing ends the load: the soak says why
			}
		}()
	}
	stopped := make(chan struct{})
	go func() {
		for in.Scan() && in.Text() != "stop" {
		}
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
	}
	stop()
	wg.Wait()
	total := newTally()
	for _, t := range tallies {
		total.add(t)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := out.Encode(total); err != nil {
		return err
	}
	<-stopped
	for in.Scan() { // until EOF: the namespaces live as long as the soak wants them
	}
	return nil
}

type heldNetns struct {
	fd    int
	path  string
	inode uint64
}

// holdNetns makes a network namespace on a locked thread that stays in it
// until the process ends, brings its loopback up and sets its sysctls
// (net sysctls are those of the namespace of the thread that opens them).
func holdNetns(sysctls map[string]string) (heldNetns, error) {
	res := make(chan heldNetns)
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread holds the namespace
		h, err := func() (heldNetns, error) {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return heldNetns{}, fmt.Errorf("unshare: %w", err)
			}
			fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return heldNetns{}, err
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return heldNetns{}, err
			}
			if err := loopbackUp(); err != nil {
				return heldNetns{}, err
			}
			for k, v := range sysctls {
				if err := os.WriteFile("/proc/sys/net/ipv4/"+k, []byte(v), 0); err != nil {
					return heldNetns{}, err
				}
			}
			return heldNetns{fd: fd, path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()), inode: st.Ino}, nil
		}()
		if err != nil {
			errc <- err
			return // the thread, locked, ends with the goroutine
		}
		res <- h
		select {}
	}()
	select {
	case h := <-res:
		return h, nil
	case err := <-errc:
		return heldNetns{}, err
	}
}

func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}

// inNetns runs fn on a thread of its own inside the namespace nsfd. The
// thread is never given back to the runtime: it may also have dropped
// its uid.
func inNetns(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// paced calls step rate times a second, in 10 ms ticks, until ctx ends.
func paced(ctx context.Context, rate float64, step func() error) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	credit := 0.0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for credit += rate / 100; credit >= 1; credit-- {
			if err := step(); err != nil {
				return err
			}
		}
	}
}
