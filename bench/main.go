// Command bench measures what porttrace costs the workloads it watches and
// how fast it starts, side by side with no tracer, in one run. Cases run
// interleaved (A B C A B C ...) so drift on the machine hits them alike;
// the medians and their ratio to no tracer are printed.
//
//	sudo go run ./bench [-reps 5] [-tcp 20000] [-udp 50000]
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

type tracerCase struct {
	name     string
	bin      string   // the porttrace binary, when not -porttrace's (-baseline)
	args     []string // porttrace arguments; nil: no tracer
	floor    bool     // an empty BPF program on the same tracepoints instead
	cgroup   bool     // empty programs on the cgroup socket hooks instead
	fexit    bool     // empty fentry/fexit programs on the fentry backend's functions instead
	bpftrace bool     // bpftrace running bpftraceScript instead
}

// bpftraceScript prints what porttrace's cheapest equivalent would: the
// process and the result of each call, from the same syscall tracepoints.
const bpftraceScript = `tracepoint:syscalls:sys_exit_bind,tracepoint:syscalls:sys_exit_listen,tracepoint:syscalls:sys_exit_connect,tracepoint:syscalls:sys_exit_accept,tracepoint:syscalls:sys_exit_accept4 { printf("%s %d %s %d\n", probe, pid, comm, args->ret); }`

func main() {
	bin := flag.String("porttrace", "./porttrace", "porttrace binary to measure")
	baseline := flag.String("baseline", "", "another porttrace binary (an earlier build) to measure beside it, case for case")
	reps := flag.Int("reps", 15, "repetitions of each case")
	tcpN := flag.Int("tcp", 8000, "connect+accept+close iterations per TCP run")
	udpN := flag.Int("udp", 40000, "socket+bind(0)+close iterations per UDP run")
	millions := flag.Float64("events", 1, "millions of events for the memory measurement")
	backends := flag.String("backends", "", "measure porttrace with each of these backends (comma-separated) instead of its automatic choice")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (it runs porttrace)")
		os.Exit(1)
	}
	for _, b := range []string{*bin, *baseline} {
		if _, err := os.Stat(b); b != "" && err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v (run make build first)\n", err)
			os.Exit(1)
		}
	}
	cases := benchCases(*backends, *baseline)
	bpftrace, _ := exec.LookPath("bpftrace")
	if bpftrace != "" {
		cases = append(cases, tracerCase{name: "bpftrace, same tracepoints > /dev/null", bpftrace: true})
	}
	fmt.Printf("porttrace bench: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
	fmt.Printf("interleaved, %d repetitions a case: median time; the median (range) of each repetition's ratio\nto the no-tracer run beside it; the ratio of the best runs, the least disturbed by the machine\n\n", *reps)
	workloads(*bin, cases, *reps, *tcpN, *udpN)
	startups(*bin, *reps, bpftrace != "")
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"kernel time", func() error { return kernelTime(*bin, cases) }},
		{"throughput", func() error { return throughput(*bin) }},
		{"catch rate", func() error { return catchRate(*bin) }},
		{"memory", func() error { return memory(*bin, *millions) }},
	} {
		if err := step.run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", step.name, err)
			os.Exit(1)
		}
	}
}

// benchCases are the tracers each workload runs under: none, the floors,
// porttrace (with each backend of -backends) and, with -baseline, the
// same porttrace cases with the baseline binary beside them.
func benchCases(backends, baseline string) []tracerCase {
	cases := []tracerCase{
		{name: "no tracer"},
		{name: "floor: empty program, same tracepoints", floor: true},
		{name: "floor: empty cgroup socket hooks", cgroup: true},
	}
	if features.HaveProgramType(ebpf.Tracing) == nil {
		cases = append(cases, tracerCase{name: "floor: empty fentry/fexit, same functions", fexit: true})
	}
	bins := []struct{ label, path string }{{"porttrace", ""}}
	if baseline != "" {
		bins = append(bins, struct{ label, path string }{"baseline", baseline})
	}
	for _, b := range strings.Split(backends, ",") {
		for _, bin := range bins {
			name, args := bin.label, []string(nil)
			if b != "" {
				name, args = bin.label+" --backend "+b, []string{"--backend", b}
			}
			cases = append(cases,
				tracerCase{name: name + " -o json > /dev/null", bin: bin.path, args: append([]string{"-o", "json"}, args...)},
				tracerCase{name: name + " -p 1 (matches nothing)", bin: bin.path, args: append([]string{"-o", "json", "-p", "1"}, args...)},
				tracerCase{name: name + " churn", bin: bin.path, args: append([]string{"churn", "-o", "json", "-i", "1s"}, args...)},
			)
		}
	}
	return cases
}

// workloads times the TCP and UDP loops under each case, interleaved, and
// prints each case's median and ratios to the no-tracer run beside it.
func workloads(bin string, cases []tracerCase, reps, tcpN, udpN int) {
	began := time.Now()
	for _, wl := range []struct {
		name string
		n    int
		run  func(n int) error
	}{
		{fmt.Sprintf("TCP loopback connect+accept+close x%d", tcpN), tcpN, tcpLoop},
		{fmt.Sprintf("UDP socket+bind(0)+close x%d", udpN), udpN, udpLoop},
	} {
		times := make([][]time.Duration, len(cases))
		for r := 0; r < reps; r++ {
			for i, c := range cases {
				d, err := measure(bin, c, func() error { return wl.run(wl.n) })
				if err != nil {
					fmt.Fprintf(os.Stderr, "bench: %s, %s: %v\n", wl.name, c.name, err)
					os.Exit(1)
				}
				times[i] = append(times[i], d)
			}
		}
		fmt.Printf("%s (measured in %s)\n", wl.name, time.Since(began).Round(time.Second))
		width := 0
		for _, c := range cases {
			width = max(width, len(c.name))
		}
		began = time.Now()
		for i, c := range cases {
			m := median(times[i])
			ratio, lo, hi := pairedRatio(times[i], times[0])
			best := float64(slices.Min(times[i])) / float64(slices.Min(times[0]))
			fmt.Printf("  %-*s %10s  %7.0f ns/op  %.3fx  (%.3f-%.3f)  best %.3fx\n", width, c.name, m.Round(time.Millisecond), float64(m.Nanoseconds())/float64(wl.n), ratio, lo, hi, best)
		}
		fmt.Println()
	}
}

// startups times porttrace (and bpftrace, if there) from launch to the
// first event it captures.
func startups(bin string, reps int, bpftrace bool) {
	startupCases := []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"porttrace", func() *exec.Cmd {
			return exec.Command(bin, "-o", "json", "-n", "1", "-e", "bind", "--pid", fmt.Sprint(os.Getpid()))
		}},
	}
	if bpftrace {
		startupCases = append(startupCases, struct {
			name string
			cmd  func() *exec.Cmd
		}{"bpftrace", func() *exec.Cmd {
			return exec.Command("bpftrace", "-e", fmt.Sprintf(`tracepoint:syscalls:sys_exit_bind /pid == %d/ { printf("bind %%d\n", pid); exit(); }`, os.Getpid()))
		}})
	} else {
		fmt.Println("(bpftrace not installed: its cases are skipped; apt-get install bpftrace to compare)")
	}
	for _, sc := range startupCases {
		var starts []time.Duration
		for r := 0; r < reps; r++ {
			d, err := startup(sc.cmd())
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: startup of %s: %v\n", sc.name, err)
				os.Exit(1)
			}
			starts = append(starts, d)
		}
		fmt.Printf("startup of %s, launch to first captured event: median %s (of %d: %v)\n", sc.name, median(starts).Round(time.Millisecond), len(starts), roundAll(starts))
	}
	fmt.Println()
}

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
		stop, err := startCmd(exec.Command(cmp.Or(c.bin, bin), c.args...), " with the ", false)
		if err != nil {
			return err
		}
		if _, err = pinned(func() error { return tcpLoop(5000) }); err == nil {
			_, err = pinned(func() error { return udpLoop(20000) })
		}
		var line []string
		if err == nil {
			line, err = programCosts()
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

// programCosts lists the programs porttrace attached that ran, with their
// mean run time.
func programCosts() ([]string, error) {
	var out []string
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, ierr := prog.Info()
		st, serr := prog.Stats()
		prog.Close()
		if ierr != nil || serr != nil || st.RunCount == 0 {
			continue
		}
		if !strings.HasPrefix(info.Name, "tp_") && !strings.HasPrefix(info.Name, "fexit_") &&
			!strings.HasPrefix(info.Name, "fentry_") && !strings.HasPrefix(info.Name, "kp_") && !strings.HasPrefix(info.Name, "krp_") {
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

// floor holds programs that do nothing, attached where a tracer would hook:
// what it pays before its programs do any work.
type floor struct {
	links []link.Link
	progs []*ebpf.Program
}

// add loads a program that returns ret at once and attaches it with attach.
func (f *floor) add(typ ebpf.ProgramType, at ebpf.AttachType, to string, ret int32, attach func(*ebpf.Program) (link.Link, error)) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: typ, AttachType: at, AttachTo: to, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		return err
	}
	f.progs = append(f.progs, prog)
	l, err := attach(prog)
	if err != nil {
		return err
	}
	f.links = append(f.links, l)
	return nil
}

func (f *floor) close() error {
	for _, l := range f.links {
		l.Close()
	}
	for _, p := range f.progs {
		p.Close()
	}
	return nil
}

// attachEmpty attaches programs that do nothing to the tracepoints the
// tracepoint backend uses: what any syscall-tracepoint tool pays on this
// kernel before its program does any work.
func attachEmpty() (func() error, error) {
	f := &floor{}
	for _, tp := range []string{"sys_exit_bind", "sys_exit_listen", "sys_enter_connect", "sys_exit_connect", "sys_exit_accept", "sys_exit_accept4"} {
		err := f.add(ebpf.TracePoint, ebpf.AttachNone, "", 0, func(p *ebpf.Program) (link.Link, error) {
			return link.Tracepoint("syscalls", tp, p, nil)
		})
		if err != nil {
			f.close()
			return nil, fmt.Errorf("%s: %w", tp, err)
		}
	}
	return f.close, nil
}

// attachEmptyCgroup attaches programs that do nothing to the cgroup v2
// root's connect, bind and post-bind hooks, the hooks that see socket calls
// without the syscall slow path: what a tracer built on them would pay
// before doing any work.
func attachEmptyCgroup() (func() error, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	f := &floor{}
	for _, h := range []struct {
		typ    ebpf.ProgramType
		attach ebpf.AttachType
	}{
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind},
		{ebpf.CGroupSock, ebpf.AttachCGroupInet4PostBind},
	} {
		err := f.add(h.typ, h.attach, "", 1, func(p *ebpf.Program) (link.Link, error) {
			return link.AttachCgroup(link.CgroupOptions{Path: root, Attach: h.attach, Program: p})
		})
		if err != nil {
			f.close()
			return nil, err
		}
	}
	return f.close, nil
}

// attachEmptyFexit attaches programs that do nothing where the fentry
// backend hooks the binds, connects and accepts: the floor of that backend.
func attachEmptyFexit() (func() error, error) {
	f := &floor{}
	for _, h := range []struct {
		fn     string
		attach ebpf.AttachType
	}{
		{"__inet_bind", ebpf.AttachTraceFExit},
		{"tcp_v4_connect", ebpf.AttachTraceFEntry},
		{"tcp_v4_connect", ebpf.AttachTraceFExit},
		{"inet_csk_accept", ebpf.AttachTraceFExit},
	} {
		err := f.add(ebpf.Tracing, h.attach, h.fn, 0, func(p *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p})
		})
		if err != nil {
			f.close()
			return nil, fmt.Errorf("%s: %w", h.fn, err)
		}
	}
	return f.close, nil
}

// cgroup2Root finds where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy mounted")
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

// summary runs porttrace with args while load runs, stops it and returns
// what its exit summary says: events written and events lost.
func summary(bin string, args []string, load func() error) (events, lost uint64, elapsed time.Duration, err error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), " with the ") {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, 0, 0, fmt.Errorf("porttrace did not start: %s", sc.Text())
	}
	start := time.Now()
	lerr := load()
	elapsed = time.Since(start)
	cmd.Process.Signal(syscall.SIGINT)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	cmd.Wait()
	if lerr != nil {
		return 0, 0, 0, lerr
	}
	// "porttrace: N events (...), D denied, F failed, L lost"
	if _, err := fmt.Sscanf(last, "porttrace: %d events", &events); err != nil {
		return 0, 0, 0, fmt.Errorf("summary %q: %v", last, err)
	}
	f := strings.Fields(last)
	if _, err := fmt.Sscanf(f[len(f)-2], "%d", &lost); err != nil {
		return 0, 0, 0, fmt.Errorf("summary %q: %v", last, err)
	}
	return events, lost, elapsed, nil
}

// throughput drives binds from two threads as fast as they go and reports
// the rate porttrace delivered and what it lost, with the default 8 MiB
// ring buffer.
func throughput(bin string) error {
	const perThread = 150000
	events, lost, elapsed, err := summary(bin, []string{"-o", "json", "-e", "bind"}, func() error {
		errc := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func() { errc <- udpLoop(perThread) }()
		}
		return errors.Join(<-errc, <-errc)
	})
	if err != nil {
		return err
	}
	generated := uint64(2 * perThread)
	fmt.Printf("throughput: %d binds from 2 threads in %s (%.0f/s); porttrace -o json wrote %d (%.0f/s), lost %d (counted and reported)\n",
		generated, elapsed.Round(time.Millisecond), float64(generated)/elapsed.Seconds(), events, float64(events)/elapsed.Seconds(), lost)
	return nil
}

// catchRate makes 1,000 connections that live about 10 ms each, while ss
// -tanp is polled every second and porttrace runs, and counts how many each
// saw.
func catchRate(bin string) error {
	if _, err := exec.LookPath("ss"); err != nil {
		fmt.Println("catch rate: ss not installed, skipped")
		return nil
	}
	const n = 1000
	ln, sa, err := shortLivedServer()
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	port := sa.(*unix.SockaddrInet4).Port
	cmd := exec.Command(bin, "-o", "json", "-e", "connect", "-p", fmt.Sprint(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	if sc := bufio.NewScanner(stderr); !sc.Scan() {
		return errors.New("porttrace did not start")
	}
	// Client ports are reused from one short connection to the next, so
	// porttrace's connects are counted as events, not as distinct ports.
	traced := 0
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"event":"connect","result":"ok"`) {
				traced++
			}
		}
	}()
	stopPoll := make(chan struct{})
	polledc := pollSS(port, stopPoll)
	for i := 0; i < n; i++ {
		if err := shortConnection(sa); err != nil {
			return err
		}
	}
	close(stopPoll)
	polled := <-polledc
	cmd.Process.Signal(syscall.SIGINT)
	<-readDone
	cmd.Wait()
	fmt.Printf("catch rate, %d connections of ~10 ms: porttrace %d (%.1f%%), ss -tanp polled every second %d (%.1f%%)\n",
		n, traced, 100*float64(traced)/n, polled, 100*float64(polled)/n)
	return nil
}

// shortLivedServer listens on a loopback port the kernel picks and closes
// each connection it accepts 15 ms later.
func shortLivedServer() (int, unix.Sockaddr, error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = unix.Listen(ln, 1024)
	}
	if err != nil {
		unix.Close(ln)
		return -1, nil, err
	}
	sa, _ := unix.Getsockname(ln)
	go func() {
		for {
			fd, _, err := unix.Accept(ln)
			if err != nil {
				return
			}
			go func() { time.Sleep(15 * time.Millisecond); unix.Close(fd) }()
		}
	}()
	return ln, sa, nil
}

// shortConnection connects to sa, lives 10 ms and resets.
func shortConnection(sa unix.Sockaddr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return err
	}
	time.Sleep(10 * time.Millisecond)
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	return unix.Close(fd)
}

// pollSS runs ss -tanp every second, as an operator polling would, until
// stop is closed, then sends how many client ports it saw to port.
func pollSS(port int, stop chan struct{}) <-chan int {
	res := make(chan int, 1)
	go func() {
		polled := map[string]bool{}
		for {
			o, _ := exec.Command("ss", "-Htanp", fmt.Sprintf("dport = :%d", port)).Output()
			for _, line := range strings.Split(string(o), "\n") {
				if f := strings.Fields(line); len(f) >= 4 {
					polled[f[3][strings.LastIndex(f[3], ":")+1:]] = true
				}
			}
			select {
			case <-stop:
				res <- len(polled)
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return res
}

// memory streams a million events through porttrace -o json and reads its
// peak and final resident memory.
func memory(bin string, millions float64) error {
	n := int(millions * 1e6)
	cmd := exec.Command(bin, "-o", "json", "-e", "bind", "--pid", fmt.Sprint(os.Getpid()))
	cmd.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() {
		return errors.New("porttrace did not start")
	}
	if err := udpLoop(n); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	cmd.Process.Signal(syscall.SIGINT)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	cmd.Wait()
	if err != nil {
		return err
	}
	var hwm, rss string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwm = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	fmt.Printf("memory after %d events (%s): peak RSS %s, RSS %s\n", n, strings.TrimPrefix(last, "porttrace: "), hwm, rss)
	return nil
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
