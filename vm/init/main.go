// Command init is PID 1 of the kernel-matrix guests: it mounts what the
// kernel tests need, runs the tracer's kernel tests once per backend named
// on the kernel command line, prints one result line per backend for the
// host to collect, and powers the guest off.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/porttrace/porttrace/internal/ifup"
	"golang.org/x/sys/unix"
)

const resultPrefix = "porttrace-matrix:"

func main() {
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
	for _, backend := range strings.Split(args["porttrace.backends"], ",") {
		if backend != "" {
			runTests(backend, args)
		}
	}
	fmt.Printf("%s done\n", resultPrefix)
	poweroff()
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
	return ifup.Up("lo")
}

// loadModules loads /modules/*.ko[.xz] in name order: the modules the tests
// need that Debian builds as modules (sock_diag's inet_diag, tcp_diag,
// udp_diag for porttrace churn), which nothing would autoload here.
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

// runTests runs the kernel tests with one backend, echoing their output,
// and prints "porttrace-matrix: BACKEND pass=N fail=N skip=N flaky=N" plus
// one line per skipped test with its reason and, for each failed test, its
// last lines of output, so a failure can be read from the matrix alone.
// Tests that failed are run once more: under emulation a guest can stall
// for seconds, so a test that fails and then passes is counted as passed
// but named as flaky, with the output of its failure.
func runTests(backend string, args map[string]string) {
	pattern := args["porttrace.run"]
	if pattern == "" {
		pattern = "^TestKernel"
	}
	start := time.Now()
	r := runOnce(backend, pattern, args)
	var flaky []string
	if len(r.failedTop) > 0 && !r.crashed {
		again := runOnce(backend, "^("+strings.Join(r.failedTop, "|")+")$", args)
		if again.fail == 0 && !again.crashed {
			// The second run's results replace the first's for those tests.
			flaky = r.failedTop
			for _, name := range r.passed {
				top, _, _ := strings.Cut(name, "/")
				if slices.Contains(flaky, top) {
					r.pass--
				}
			}
			r.pass += again.pass
			r.fail = 0
		}
	}
	fmt.Printf("%s %s pass=%d fail=%d skip=%d flaky=%d seconds=%.0f\n", resultPrefix, backend, r.pass, r.fail, r.skip, len(flaky), time.Since(start).Seconds())
	for _, s := range r.skips {
		fmt.Printf("%s %s skipped %s\n", resultPrefix, backend, s)
	}
	for _, name := range flaky {
		fmt.Printf("%s %s flaky %s: failed, then passed when run again\n", resultPrefix, backend, name)
	}
	for _, s := range r.failures {
		fmt.Printf("%s %s failed %s\n", resultPrefix, backend, s)
	}
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

// result is what one run of the test binary reported.
type result struct {
	pass, fail, skip int
	failedTop        []string // top-level tests that failed
	passed           []string // tests and subtests that passed
	skips, failures  []string // "Test: reason" and "Test: output line"
	crashed          bool     // the binary failed with no test saying FAIL
}

// runOnce runs the tests matching pattern with backend, echoing their output.
func runOnce(backend, pattern string, args map[string]string) result {
	var r result
	cmd := exec.Command("/tracer.test", "-test.v", "-test.count=1", "-test.run", pattern, "-test.timeout", "10m")
	cmd.Env = append(os.Environ(), "PORTTRACE_BACKEND="+backend, "PORTTRACE_WANT_AUTO="+args["porttrace.auto"], "HOME=/tmp", "PATH=/usr/bin:/bin")
	cmd.Dir = "/tmp"
	out, err := cmd.StdoutPipe()
	if err == nil {
		cmd.Stderr = cmd.Stdout
		err = cmd.Start()
	}
	if err != nil {
		fmt.Printf("%s %s error %v\n", resultPrefix, backend, err)
		r.fail, r.crashed = 1, true
		return r
	}
	var recent []string // the current test's output, last few lines
	const keep = 12
	sc := bufio.NewScanner(out)
	last := ""
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "=== RUN "):
			recent = recent[:0]
		case strings.HasPrefix(trimmed, "--- PASS: "):
			r.pass++
			r.passed = append(r.passed, strings.Fields(trimmed)[2])
		case strings.HasPrefix(trimmed, "--- FAIL: "):
			r.fail++
			name := strings.Fields(trimmed)[2]
			if strings.HasPrefix(line, "--- FAIL: ") {
				r.failedTop = append(r.failedTop, name)
			}
			r.failures = append(r.failures, name)
			for _, l := range recent {
				r.failures = append(r.failures, name+": "+l)
			}
		case strings.HasPrefix(trimmed, "--- SKIP: "):
			r.skip++
			name := strings.Fields(trimmed)[2]
			r.skips = append(r.skips, name+": "+last)
		}
		if !strings.HasPrefix(trimmed, "---") && !strings.HasPrefix(trimmed, "===") {
			last = trimmed
			if len(recent) == keep {
				recent = append(recent[:0], recent[1:]...)
			}
			recent = append(recent, trimmed)
		}
	}
	if err := cmd.Wait(); err != nil && r.fail == 0 {
		r.fail, r.crashed = 1, true // a crash or timeout counts even if no test said FAIL
	}
	return r
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
