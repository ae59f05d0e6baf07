// Command bench measures what porttrace costs the workloads it watches and
// how fast it starts, side by side with no tracer, in one run. Cases run
// interleaved (A B C A B C ...) so drift on the machine hits them alike;
// the medians and their ratio to no tracer are printed.
//
//	sudo go run ./bench [-reps 5] [-tcp 20000] [-udp 50000]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
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
	scaleOnly := flag.Bool("scale", false, "only K parallel loops, K = 1, 2, 4, ... CPUs: offered, delivered, lost, wall ratio (make bench-scale)")
	kernelOnly := flag.Bool("kernel", false, "only what each program costs a call, from the kernel's BPF statistics (with -baseline, both builds)")
	startupOnly := flag.Bool("startup", false, "only the startups, launch to first captured event (with -baseline, both builds; bpftrace if installed)")
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
	if *scaleOnly {
		fmt.Printf("porttrace bench-scale: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
		if err := scale(*bin, *baseline, *udpN*5, *tcpN*2); err != nil {
			fmt.Fprintf(os.Stderr, "bench: scale: %v\n", err)
			os.Exit(1)
		}
		return
	}
	cases := benchCases(*backends, *baseline)
	if *kernelOnly {
		fmt.Printf("porttrace bench -kernel: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
		for range *reps {
			if err := kernelTime(*bin, cases); err != nil {
				fmt.Fprintf(os.Stderr, "bench: kernel time: %v\n", err)
				os.Exit(1)
			}
		}
		return
	}
	bpftrace, _ := exec.LookPath("bpftrace")
	if *startupOnly {
		fmt.Printf("porttrace bench -startup: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
		startups(*bin, *baseline, *reps, bpftrace != "")
		return
	}
	if bpftrace != "" {
		cases = append(cases, tracerCase{name: "bpftrace, same tracepoints > /dev/null", bpftrace: true})
	}
	fmt.Printf("porttrace bench: %s, %d CPUs, kernel %s\n", time.Now().Format(time.RFC3339), nprocs(), kernel())
	fmt.Printf("interleaved, %d repetitions a case: median time; the median (range) of each repetition's ratio\nto the no-tracer run beside it; the ratio of the best runs, the least disturbed by the machine\n\n", *reps)
	workloads(*bin, cases, *reps, *tcpN, *udpN)
	startups(*bin, *baseline, *reps, bpftrace != "")
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

// startups times porttrace (the baseline build too, if given, and
// bpftrace, if there) from launch to the first event it captures, the
// cases taking turns so that each sees the same machine.
func startups(bin, baseline string, reps int, bpftrace bool) {
	porttrace := func(bin string) func() *exec.Cmd {
		return func() *exec.Cmd {
			return exec.Command(bin, "-o", "json", "-n", "1", "-e", "bind", "--pid", fmt.Sprint(os.Getpid()))
		}
	}
	type startupCase struct {
		name   string
		cmd    func() *exec.Cmd
		starts []time.Duration
	}
	cases := []*startupCase{{name: "porttrace", cmd: porttrace(bin)}}
	if baseline != "" {
		cases = append(cases, &startupCase{name: "porttrace (baseline)", cmd: porttrace(baseline)})
	}
	if bpftrace {
		cases = append(cases, &startupCase{name: "bpftrace", cmd: func() *exec.Cmd {
			return exec.Command("bpftrace", "-e", fmt.Sprintf(`tracepoint:syscalls:sys_exit_bind /pid == %d/ { printf("bind %%d\n", pid); exit(); }`, os.Getpid()))
		}})
	} else {
		fmt.Println("(bpftrace not installed: its cases are skipped; apt-get install bpftrace to compare)")
	}
	for range reps {
		for _, sc := range cases {
			d, err := startup(sc.cmd())
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: startup of %s: %v\n", sc.name, err)
				os.Exit(1)
			}
			sc.starts = append(sc.starts, d)
		}
	}
	for _, sc := range cases {
		fmt.Printf("startup of %s, launch to first captured event: median %s (of %d: %v)\n", sc.name, median(sc.starts).Round(time.Millisecond), len(sc.starts), roundAll(sc.starts))
	}
	builds := []string{bin}
	if baseline != "" {
		builds = append(builds, baseline)
	}
	for _, b := range builds {
		d, err := idleCPU(b, 5*time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: idle %s: %v\n", b, err)
			os.Exit(1)
		}
		fmt.Printf("idle, nothing to report (--pid 1): %s took %s of CPU in 5s\n", b, d.Round(time.Millisecond))
	}
	fmt.Println()
}
