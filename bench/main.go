// Command bench measures what porttrace costs the workloads it watches and
// how fast it starts, side by side with no tracer, in one run. Cases run
// interleaved (A B C A B C ...) so drift on the machine hits them alike;
// the medians and their ratio to no tracer are printed.
//
//	sudo go run ./bench [-reps 5] [-tcp 20000] [-udp 50000]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

type tracerCase struct {
	name  string
	args  []string // porttrace arguments; nil: no tracer
	floor bool     // an empty BPF program on the same tracepoints instead
}

func main() {
	bin := flag.String("porttrace", "./porttrace", "porttrace binary to measure")
	reps := flag.Int("reps", 5, "repetitions of each case")
	tcpN := flag.Int("tcp", 20000, "connect+accept+close iterations per TCP run")
	udpN := flag.Int("udp", 50000, "socket+bind(0)+close iterations per UDP run")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (it runs porttrace)")
		os.Exit(1)
	}
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v (run make build first)\n", err)
		os.Exit(1)
	}
	cases := []tracerCase{
		{name: "no tracer"},
		{name: "floor: empty program, same tracepoints", floor: true},
		{"porttrace -o json > /dev/null", []string{"-o", "json"}, false},
		{"porttrace -p 1 (matches nothing)", []string{"-o", "json", "-p", "1"}, false},
		{"porttrace churn", []string{"churn", "-o", "json", "-i", "1s"}, false},
	}
	fmt.Printf("porttrace bench: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
	fmt.Printf("interleaved, %d repetitions a case, medians\n\n", *reps)
	for _, wl := range []struct {
		name string
		n    int
		run  func(n int) error
	}{
		{fmt.Sprintf("TCP loopback connect+accept+close x%d", *tcpN), *tcpN, tcpLoop},
		{fmt.Sprintf("UDP socket+bind(0)+close x%d", *udpN), *udpN, udpLoop},
	} {
		times := make([][]time.Duration, len(cases))
		for r := 0; r < *reps; r++ {
			for i, c := range cases {
				d, err := measure(*bin, c, func() error { return wl.run(wl.n) })
				if err != nil {
					fmt.Fprintf(os.Stderr, "bench: %s, %s: %v\n", wl.name, c.name, err)
					os.Exit(1)
				}
				times[i] = append(times[i], d)
			}
		}
		fmt.Printf("%s\n", wl.name)
		base := median(times[0])
		for i, c := range cases {
			m := median(times[i])
			fmt.Printf("  %-40s %10s  %7.0f ns/op  %.3fx\n", c.name, m.Round(time.Millisecond), float64(m.Nanoseconds())/float64(wl.n), float64(m)/float64(base))
		}
		fmt.Println()
	}
	var starts []time.Duration
	for r := 0; r < *reps; r++ {
		d, err := startup(*bin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: startup: %v\n", err)
			os.Exit(1)
		}
		starts = append(starts, d)
	}
	fmt.Printf("startup, launch to first captured event: median %s (of %d: %v)\n", median(starts).Round(time.Millisecond), len(starts), roundAll(starts))
}

// measure runs the workload once under the tracer case and returns its time.
func measure(bin string, c tracerCase, work func() error) (time.Duration, error) {
	var stop func() error
	var err error
	switch {
	case c.floor:
		stop, err = attachEmpty()
	case c.args != nil:
		stop, err = startTracer(bin, c.args)
	}
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = work()
	d := time.Since(start)
	if stop != nil {
		if serr := stop(); err == nil {
			err = serr
		}
	}
	return d, err
}

// startTracer starts porttrace with its output to /dev/null and returns once
// it says it is attached.
func startTracer(bin string, args []string) (func() error, error) {
	cmd := exec.Command(bin, args...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = devnull
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), " with the ") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("porttrace did not start: %s", sc.Text())
	}
	go io.Copy(io.Discard, stderr)
	return func() error {
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		devnull.Close()
		return err
	}, nil
}

// attachEmpty attaches a program that does nothing to the tracepoints the
// tracepoint backend uses: what any syscall-tracepoint tool pays on this
// kernel before its program does any work.
func attachEmpty() (func() error, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.TracePoint, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return nil, err
	}
	var links []link.Link
	stop := func() error {
		for _, l := range links {
			l.Close()
		}
		return prog.Close()
	}
	for _, tp := range []string{"sys_exit_bind", "sys_exit_listen", "sys_enter_connect", "sys_exit_connect", "sys_exit_accept", "sys_exit_accept4"} {
		l, err := link.Tracepoint("syscalls", tp, prog, nil)
		if err != nil {
			stop()
			return nil, err
		}
		links = append(links, l)
	}
	return stop, nil
}

// startup is the time from launching porttrace to its first event on stdout,
// while this process binds a UDP socket every millisecond.
func startup(bin string) (time.Duration, error) {
	cmd := exec.Command(bin, "-o", "json", "-n", "1", "-e", "bind", "--pid", fmt.Sprint(os.Getpid()))
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
	line, err := bufio.NewReader(out).ReadString('\n')
	d := time.Since(start)
	cmd.Wait()
	if err != nil || !strings.Contains(line, `"event":"bind"`) {
		return 0, fmt.Errorf("no event: %q %v", line, err)
	}
	return d, nil
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
