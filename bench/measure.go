package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/internal/bpfheld"
)

// Timing a workload under a tracer, and the workloads themselves.

// measure runs the workload once under the tracer case and returns its time.
func measure(bin string, c tracerCase, work func() error) (time.Duration, error) {
	var stop func() error
	var err error
	switch {
	case c.floor:
		stop, err = attachEmpty()
	case c.cgroup:
		stop, err = attachEmptyCgroup()
	case c.fexit:
		stop, err = attachEmptyFexit()
	case c.bpftrace:
		stop, err = startCmd(exec.Command("bpftrace", "-e", bpftraceScript), "Attaching", true)
	case c.args != nil:
		stop, err = startCmd(exec.Command(cmp.Or(c.bin, bin), c.args...), " with the ", false)
	}
	if err != nil {
		return 0, err
	}
	d, err := pinned(work)
	if stop != nil {
		if serr := stop(); err == nil {
			err = serr
		}
	}
	return d, err
}

// kernelTime runs each porttrace case once over both workloads with the
// kernel's BPF run-time statistics on and prints what each program cost a
// call. Unlike the ratios above it does not move with the machine's noise,
// but it leaves out what the hook itself costs (the floor) and adds the
// statistics' own few tens of nanoseconds a call.
func kernelTime(bin string, cases []tracerCase) error {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enabling BPF statistics: %w", err)
	}
	defer stats.Close()
	fmt.Println("kernel time a call, from the kernel's BPF statistics (TCP x5000, then UDP x20000):")
	for _, c := range cases {
		if c.args == nil {
			continue
		}
		cmd := exec.Command(cmp.Or(c.bin, bin), c.args...)
		stop, err := startCmd(cmd, " with the ", false)
		if err != nil {
			return err
		}
		if _, err = pinned(func() error { return tcpLoop(5000) }); err == nil {
			_, err = pinned(func() error { return udpLoop(20000) })
		}
		var line []string
		if err == nil {
			line, err = programCosts(cmd.Process.Pid)
		}
		stop()
		if err != nil {
			return err
		}
		fmt.Printf("  %s: %s\n", c.name, strings.Join(line, ", "))
	}
	fmt.Println()
	return nil
}

// programCosts lists the programs process pid holds that ran, with
// their mean run time: its own, whatever other tracers run on the machine.
func programCosts(pid int) ([]string, error) {
	held, err := bpfheld.Of(pid)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range held.Progs {
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			continue // gone meanwhile
		}
		info, ierr := prog.Info()
		st, serr := prog.Stats()
		prog.Close()
		if ierr != nil || serr != nil || st.RunCount == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s %d ns (%d)", info.Name, st.Runtime.Nanoseconds()/int64(st.RunCount), st.RunCount))
	}
	return out, nil
}

// pinned runs work on one thread bound to the first CPU, so repetitions
// differ by what the tracer costs and not by where the scheduler put the
// loop; the tracer's reader runs wherever it likes, as it would in use.
func pinned(work func() error) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return 0, err
	}
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return 0, err
	}
	defer unix.SchedSetaffinity(0, &old)
	start := time.Now()
	err := work()
	return time.Since(start), err
}

// startCmd starts a tracer with its output to /dev/null and returns once
// it has printed ready (on stdout if readyOnStdout, else on stderr).
func startCmd(cmd *exec.Cmd, ready string, readyOnStdout bool) (func() error, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	var pipe io.ReadCloser
	if readyOnStdout {
		cmd.Stderr = devnull
		pipe, err = cmd.StdoutPipe()
	} else {
		cmd.Stdout = devnull
		pipe, err = cmd.StderrPipe()
	}
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(pipe)
	if !sc.Scan() || !strings.Contains(sc.Text(), ready) {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s did not start: %s", cmd.Path, sc.Text())
	}
	// Keep draining: a tracer blocked on a full pipe would stall the workload.
	go io.Copy(io.Discard, pipe)
	return func() error {
		// SIGINT, as at a terminal; a tracer that ignores it (bpftrace 0.17
		// was seen to, under load) is killed after a while.
		cmd.Process.Signal(syscall.SIGINT)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		devnull.Close()
		return nil
	}, nil
}

// startup is the time from launching cmd to its first line on stdout that
// reports an event, while this process binds a UDP socket every millisecond.
func startup(cmd *exec.Cmd) (time.Duration, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				udpLoop(1)
			}
		}
	}()
	defer close(done)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer cmd.Wait()
	rd := bufio.NewReader(out)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("no event: %v", err)
		}
		if strings.Contains(line, "bind") && !strings.HasPrefix(line, "Attaching") {
			return time.Since(start), nil
		}
	}
}

func tcpLoop(n int) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := unix.Listen(ln, 128); err != nil {
		return err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		// RST on close: no TIME_WAIT, so the loop never runs out of ports.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return err
		}
		nfd, _, err := unix.Accept(ln)
		if err != nil {
			unix.Close(fd)
			return err
		}
		unix.Close(fd)
		unix.Close(nfd)
	}
	return nil
}

func udpLoop(n int) error {
	sa := &unix.SockaddrInet4{Addr: netip.MustParseAddr("127.0.0.1").As4()}
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Bind(fd, sa)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// pairedRatio compares a case with the baseline repetition by repetition
// (each pair ran back to back, so a machine that slows down for a while
// slows both): the median of the per-repetition ratios, and their range.
func pairedRatio(c, base []time.Duration) (med, lo, hi float64) {
	rs := make([]float64, len(c))
	for i := range c {
		rs[i] = float64(c[i]) / float64(base[i])
	}
	slices.Sort(rs)
	return rs[len(rs)/2], rs[0], rs[len(rs)-1]
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func nprocs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// idleCPU is the CPU time a porttrace that has nothing to report (--pid
// 1: init binds nothing) takes over span, from the kernel's run time of
// each of its threads (/proc/PID/task/*/schedstat, in nanoseconds).
func idleCPU(bin string, span time.Duration) (time.Duration, error) {
	cmd := exec.Command(bin, "-o", "json", "--pid", "1")
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	time.Sleep(time.Second) // started, and past its first reads
	before, err := runTime(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(span)
	after, err := runTime(cmd.Process.Pid)
	return after - before, err
}

// runTime sums the run time of a process's threads.
func runTime(pid int) (time.Duration, error) {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(stats) == 0 {
		return 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	var sum time.Duration
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err != nil {
			return 0, fmt.Errorf("%s: %v", f, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}
