// Command init is PID 1 of the kernel-matrix guests (vm/run.sh): it mounts
// what the kernel tests need, runs the tracer's kernel tests once per
// backend named on the kernel command line, checks the kernel's log and
// taint after each, prints the results for the host to collect, and powers
// the guest off. Run as any other process, it runs the same tests on the
// machine's own kernel and judges them the same way, less the rule that no
// test may skip: vm/run.sh's host row.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resultPrefix starts each line vm/run.sh reads from the output.
const resultPrefix = "porttrace-matrix:"

func main() {
	if os.Getpid() != 1 {
		os.Exit(host(os.Args[1:]))
	}
	if err := setup(); err != nil {
		fmt.Printf("%s setup-error %v\n", resultPrefix, err)
		poweroff()
	}
	args := cmdline()
	if flags, ok := args["porttrace.bench"]; ok {
		runBench(strings.Split(flags, "+"))
		fmt.Printf("%s done\n", resultPrefix)
		poweroff()
	}
	guest(args)
	fmt.Printf("%s done\n", resultPrefix)
	poweroff()
}

// guest runs the kernel tests with each backend of porttrace.backends, the
// tests porttrace.run selects, expecting auto to pick porttrace.auto. Each
// skip fails the run unless /skips (from vm/kernels) allows it. The kernel
// is checked before the first backend, to tell what it reported while it
// booted, and after each.
func guest(args map[string]string) {
	c := &runner{
		testBin:   "/tracer.test",
		test2json: "/test2json",
		dir:       "/tmp",
		// PORTTRACE_GUEST: a test that sizes itself by the machine makes less
		// load on one emulated CPU and 1 GiB.
		env: append(os.Environ(), "PORTTRACE_WANT_AUTO="+args["porttrace.auto"], "PORTTRACE_GUEST=1", "HOME=/tmp",
			"PATH=/usr/bin:/bin"),
		deadline: deadline(args["porttrace.timeout"]),
		echo:     os.Stdout,
	}
	allowed, err := readAllowed("/skips")
	if err != nil {
		fmt.Printf("%s setup-error %v\n", resultPrefix, err)
		return
	}
	kernel, boot := newKernelCheck()
	for _, f := range boot {
		show(os.Stdout, resultPrefix+" boot ", "fail", f)
	}
	for _, backend := range strings.Split(args["porttrace.backends"], ",") {
		if backend == "" {
			continue
		}
		start := time.Now()
		v := c.backend(backend, args["porttrace.run"], policy{strict: true, allowed: allowed.of(backend)})
		if kernel != nil {
			v.failures = append(v.failures, kernel.check()...)
		}
		v.print(os.Stdout, resultPrefix, backend, time.Since(start).Seconds())
	}
}

// host runs the kernel tests on this machine's kernel with each backend
// and prints the results as a guest does; it exits 1 if any failed.
func host(argv []string) int {
	fs := pflag.NewFlagSet("init", pflag.ContinueOnError)
	backends := fs.StringSlice("backends", []string{"fentry", "kprobe", "tracepoint"}, "the backends to test, one after another")
	pattern := fs.String("run", "^TestKernel", "the go test -run pattern of the tests")
	testBin := fs.String("test", "./tracer.test", "the kernel-test binary (go test -c ./tracer)")
	conv := fs.String("test2json", "./test2json", "Go's test2json (go build cmd/test2json)")
	timeout := fs.Duration("timeout", 10*time.Minute, "the time all backends' tests may take")
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	c := &runner{testBin: *testBin, test2json: *conv, env: os.Environ(), deadline: time.Now().Add(*timeout), echo: os.Stdout}
	status := 0
	for _, backend := range *backends {
		start := time.Now()
		// As strict as a guest, except that this kernel may refuse a
		// backend outright (this machine's refuses fentry and kprobes).
		v := c.backend(backend, *pattern, policy{strict: true, refusable: true})
		v.print(os.Stdout, resultPrefix, backend, time.Since(start).Seconds())
		if len(v.failures) > 0 {
			status = 1
		}
	}
	fmt.Printf("%s done\n", resultPrefix)
	return status
}

// backend runs the tests that pattern selects with backend, then the
// top-level ones that failed once more (under emulation a guest can stall
// for seconds), and judges both runs. Past the deadline it runs nothing,
// and nothing again, and says so.
func (c *runner) backend(backend, pattern string, p policy) verdict {
	if pattern == "" {
		pattern = "^TestKernel"
	}
	if time.Until(c.deadline) < minRun {
		return verdict{failures: []finding{{why: "not run: the time limit was reached"}}}
	}
	listed, listErr := c.list(backend, pattern)
	first := c.run(backend, pattern)
	var again *run
	if tops := first.failedTops(); len(tops) > 0 && time.Until(c.deadline) >= minRun {
		for i, t := range tops {
			tops[i] = regexp.QuoteMeta(t)
		}
		again = c.run(backend, "^("+strings.Join(tops, "|")+")$")
	}
	v := judge(backend, listed, first, again, p)
	if listErr != nil {
		v.failures = append([]finding{{why: listErr.Error()}}, v.failures...)
	}
	return v
}

// deadline is when the guest's last test run must end: the host stops the
// guest timeout seconds after it started it, and the results need a few
// seconds to reach the console before then.
func deadline(timeout string) time.Time {
	const margin = 20 * time.Second
	secs, err := strconv.ParseFloat(timeout, 64)
	if err != nil {
		return time.Now().Add(10 * time.Minute)
	}
	var up float64
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		fmt.Sscanf(string(b), "%f", &up)
	}
	return time.Now().Add(time.Duration((secs-up)*float64(time.Second)) - margin)
}

// allowList holds the skips vm/kernels allows on this kernel, as lines of
// "BACKEND TEST REASON", BACKEND "*" for all.
type allowList map[string]map[string]string

func readAllowed(path string) (allowList, error) {
	a := allowList{}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("%s: %q: want BACKEND TEST REASON", path, line)
		}
		if a[f[0]] == nil {
			a[f[0]] = map[string]string{}
		}
		a[f[0]][f[1]] = strings.Join(f[2:], " ")
	}
	return a, nil
}

// of returns the skips allowed with backend.
func (a allowList) of(backend string) map[string]string {
	m := map[string]string{}
	for _, b := range []string{"*", backend} {
		for test, why := range a[b] {
			m[test] = why
		}
	}
	return m
}

func setup() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"bpffs", "/sys/fs/bpf", "bpf"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"},
		{"debugfs", "/sys/kernel/debug", "debugfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
	}
	if err := loadModules(); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// loadModules loads /modules/*.ko[.xz] in name order: the modules the tests
// need that Debian builds as modules (sock_diag's inet_diag, tcp_diag,
// udp_diag for porttrace churn; veth for a peer in another namespace; tun
// for the tests' fake network), which nothing would autoload here.
func loadModules() error {
	paths, _ := filepath.Glob("/modules/*.ko*")
	sort.Strings(paths)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		flags := 0
		if strings.HasSuffix(p, ".xz") {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		err = unix.FinitModule(int(f.Fd()), "", flags)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("loading %s: %w", p, err)
		}
	}
	return nil
}

// cmdline returns the porttrace.* words of /proc/cmdline.
func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	args := map[string]string{}
	for _, w := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(w, "="); ok && strings.HasPrefix(k, "porttrace.") {
			args[k] = v
		}
	}
	return args
}

// runBench runs the benchmark (vm/run.sh with VM_BENCH), its arguments
// given on the kernel command line separated by "+".
func runBench(args []string) {
	cmd := exec.Command("/bench", append([]string{"-porttrace", "/porttrace"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME=/tmp", "PATH=/usr/bin:/bin")
	cmd.Dir = "/tmp"
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		fmt.Printf("%s bench-error %v\n", resultPrefix, err)
	}
}

// poweroff flushes the serial console, which otherwise loses its last
// lines, and turns the machine off.
func poweroff() {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
		f.Close()
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
