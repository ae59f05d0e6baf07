// Command soak is make soak: the real porttrace binary run for a while as
// the stream (-o json, read and parsed here), churn (--metrics, scraped
// each second) and ports --watch, all at once, under a load this program
// makes and counts itself, in network namespaces and a cgroup of its own
// that porttrace is scoped to in the kernel, so that other tracers and
// other traffic on the machine change nothing. Each second it looks at
// each porttrace process (RSS, goroutines, file descriptors, BPF maps,
// programs and links); at the end it checks that they stayed flat after a
// warm-up, that every call the load made was delivered or counted lost,
// and that churn's counters agree with the load's allocations, prints a
// table and exits 1 with a line per breach.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// roleEnv tells a process the soak started what it is: the load or a
// short-lived child.
const roleEnv = "PORTTRACE_SOAK_ROLE"

func main() {
	var err error
	switch os.Getenv(roleEnv) {
	case "load":
		var r rates
		if err = json.Unmarshal([]byte(os.Getenv("PORTTRACE_SOAK_RATES")), &r); err == nil {
			err = runLoad(r)
		}
	case "child":
		err = runChild()
	case "bystander":
		err = runBystander()
	default:
		err = run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
}

// runChild is a short-lived process in a network namespace of its own
// (made by its clone, gone when it exits): one UDP bind to port 0, its
// outcome written on stdout.
func runChild() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	fmt.Println(eventKey("bind", unix.Bind(fd, &unix.SockaddrInet4{})))
	return nil
}

type options struct {
	duration, warmup time.Duration
	bin              string
	rates            rates
	children         float64
	bystander        int
}

func run() error {
	var o options
	flag.DurationVar(&o.duration, "d", 2*time.Minute, "how long the load runs")
	flag.DurationVar(&o.warmup, "warmup", 0, "how long before resources must stay flat (default: a minute, or a quarter of -d if shorter)")
	flag.StringVar(&o.bin, "bin", "./porttrace", "the porttrace binary")
	flag.Float64Var(&o.rates.TCP, "tcp", 150, "TCP connect+accept a second")
	flag.Float64Var(&o.rates.UDP, "udp", 150, "UDP binds to port 0 a second")
	flag.Float64Var(&o.rates.InUse, "inuse", 10, "binds failing with EADDRINUSE a second")
	flag.Float64Var(&o.rates.Denied, "denied", 20, "binds denied (uid 65534, below ip_unprivileged_port_start) a second")
	flag.Float64Var(&o.rates.Exhaust, "exhaust", 2, "cycles a second that fill the exhaust namespace's ten ephemeral ports")
	flag.Float64Var(&o.children, "children", 4, "short-lived processes a second, each in a network namespace of its own")
	flag.IntVar(&o.bystander, "bystander", 200000, "files (sockets, one in ten distinct) held outside every tracer's scope for 5 s at a time, once a minute after the warm-up (0: none)")
	flag.Parse()
	if flag.NArg() > 0 || o.duration <= 0 {
		return errors.New("usage: soak [-d DURATION] [-bin PATH] [rates]")
	}
	if o.warmup == 0 {
		o.warmup = min(time.Minute, o.duration/4)
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: it loads BPF programs and makes namespaces")
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	o.bin = bin
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r, err := soak(ctx, o)
	if r != nil {
		r.print(os.Stdout)
	}
	if err != nil {
		return err
	}
	if breaches := r.check(); len(breaches) > 0 {
		for _, b := range breaches {
			fmt.Fprintln(os.Stderr, "soak: FAIL:", b)
		}
		return fmt.Errorf("%d checks failed", len(breaches))
	}
	fmt.Println("soak: PASS")
	return nil
}

// soak runs everything and returns what it saw. Whatever happens, the
// load, its namespaces, the children and the tracers are gone when it
// returns, and its cgroup removed.
func soak(ctx context.Context, o options) (*result, error) {
	cg, err := newCgroup()
	if err != nil {
		return nil, err
	}
	defer cg.remove()
	ld, err := startLoad(o.rates, cg)
	if err != nil {
		return nil, err
	}
	defer ld.kill()

	res := &result{opts: o, cgroup: cg.rel, inodes: ld.ready.Inodes, stream: streamCount{Events: map[string]uint64{}}}
	streamAddr, churnAddr, err := freeAddr(), freeAddr(), nil
	var procs []*tracerProc
	defer func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
		}
	}()
	for _, t := range []struct {
		name, metrics string
		args          []string
		consume       func(io.Reader)
	}{
		{"stream", streamAddr, []string{"-o", "json", "--cgroup", cg.dir, "--metrics", streamAddr}, readStream(&res.stream)},
		{"churn", churnAddr, []string{"churn", "-o", "json", "--cgroup", cg.dir, "--metrics", churnAddr}, readLines(&res.churnLines, &res.churnBad)},
		{"ports", "", []string{"ports", "--watch", "-o", "json", "--netns", ld.ready.Netns["load"]}, readLines(&res.portsLines, &res.portsBad)},
	} {
		p, err := startTracer(t.name, o.bin, t.metrics, t.args, t.consume)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	res.procs = procs

	if _, err := io.WriteString(ld.stdin, "go\n"); err != nil {
		return nil, err
	}
	start := time.Now()
	childCtx, stopChildren := context.WithCancel(ctx)
	var children sync.WaitGroup
	children.Add(1)
	childTally := newTally()
	var childErr error
	go func() {
		defer children.Done()
		childErr = spawnChildren(childCtx, o.children, cg, childTally)
	}()
	var bystanderErr error
	children.Go(func() {
		period := min(time.Minute, (o.duration-o.warmup)/2)
		bystanderErr = holdBystanders(childCtx, o.bystander, o.warmup, period, &res.bystanders)
	})

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
loop:
	for time.Since(start) < o.duration {
		select {
		case <-ctx.Done():
			runErr = errors.New("interrupted")
			break loop
		case <-ld.exited:
			runErr = errors.New("the load ended early")
			break loop
		case <-tick.C:
		}
		if runErr = res.lookAll(time.Since(start)); runErr != nil {
			break
		}
	}
	stopChildren()
	children.Wait()
	res.elapsed = time.Since(start)
	if runErr == nil {
		runErr = cmp.Or(childErr, bystanderErr)
	}
	gen, loadErr := ld.stop()
	if runErr == nil {
		runErr = loadErr
	}
	if runErr != nil {
		return nil, runErr
	}
	gen.add(childTally)
	res.gen = gen
	// What the kernel has sent is read and churn's next interval has
	// counted before the last look.
	time.Sleep(3 * time.Second)
	if err := res.lookAll(time.Since(start)); err != nil {
		return nil, err
	}
	res.churnFinal, err = procs[1].scrape()
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		if err := p.stop(); err != nil {
			res.exitErrs = append(res.exitErrs, err.Error())
		}
	}
	return res, nil
}

// maxMissedRun is how many looks in a row a tracer's /metrics may miss
// before the soak gives up on it.
const maxMissedRun = 10

// lookAll samples each tracer once. A scrape that times out skips that
// tracer's look; maxMissedRun in a row end the soak.
func (r *result) lookAll(at time.Duration) error {
	for _, p := range r.procs {
		text, err := p.scrape()
		if err != nil {
			p.missed, p.missedRun, p.lastMiss = p.missed+1, p.missedRun+1, err
			if p.missedRun >= maxMissedRun {
				return fmt.Errorf("%s: /metrics did not answer %d times in a row: %w", p.name, maxMissedRun, err)
			}
			continue
		}
		p.missedRun = 0
		s, err := p.look(at, text)
		if err != nil {
			return err
		}
		p.samples = append(p.samples, s)
	}
	return nil
}

// spawnChildren starts rate short-lived children a second into the
// cgroup, each in a new network namespace, and counts their binds.
func spawnChildren(ctx context.Context, rate float64, cg *cgroup, t *tally) error {
	if rate <= 0 {
		return nil
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), roleEnv+"=child")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET, UseCgroupFD: true, CgroupFD: cg.fd,
			Setpgid: true, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("short-lived child: %w", err)
		}
		t.Events[strings.TrimSpace(string(out))]++
		t.Children++
	}
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// load is the running load process.
type load struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	ready  loadReady
	exited chan struct{}
}

func startLoad(r rates, cg *cgroup) (*load, error) {
	enc, _ := json.Marshal(r)
	ld := &load{cmd: exec.Command("/proc/self/exe"), exited: make(chan struct{})}
	// No asynchronous preemption: its signal would interrupt a blocking
	// connect or accept, which the load counts as returning once.
	ld.cmd.Env = append(os.Environ(), roleEnv+"=load", "PORTTRACE_SOAK_RATES="+string(enc), "GODEBUG=asyncpreemptoff=1")
	ld.cmd.Stderr = os.Stderr
	ld.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	if ld.stdin, err = ld.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := ld.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := ld.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the load: %w", err)
	}
	go func() { ld.cmd.Wait(); close(ld.exited) }()
	ld.out = bufio.NewScanner(out)
	if !ld.out.Scan() {
		ld.kill()
		return nil, errors.New("the load did not start")
	}
	if err := json.Unmarshal(ld.out.Bytes(), &ld.ready); err != nil {
		ld.kill()
		return nil, fmt.Errorf("the load's first line: %w", err)
	}
	return ld, nil
}

// stop stops the loops and reads their tally; the namespaces live on
// until kill.
func (ld *load) stop() (*tally, error) {
	if _, err := io.WriteString(ld.stdin, "stop\n"); err != nil {
		return nil, fmt.Errorf("stopping the load: %w", err)
	}
	if !ld.out.Scan() {
		return nil, errors.New("the load ended with no tally")
	}
	t := newTally()
	if err := json.Unmarshal(ld.out.Bytes(), t); err != nil {
		return nil, fmt.Errorf("the load's tally: %w", err)
	}
	return t, nil
}

// kill ends the load, and with it its namespaces.
func (ld *load) kill() {
	ld.stdin.Close()
	select {
	case <-ld.exited:
	case <-time.After(5 * time.Second):
		ld.cmd.Process.Kill()
		<-ld.exited
	}
}
