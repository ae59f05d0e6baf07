package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// testdata/*.jsonl are test2json's output of testdata/p_test.go,
// compiled with go test -c and run as
//
//	env VARS ./probe.test -test.v=test2json -test.run RUN 2>&1 | test2json
//
// first-crash: B_PANIC=1 X_PASS=1 (exit 2); first-flaky: X_PASS=1 (1);
// again-a-passes: A_PASS=1, RUN ^(TestKernelA)$ (0); again-a-fails: RUN
// ^(TestKernelA)$ (1); parent-fails: A_PASS=1 X_PASS=1 PARENT_FAIL=1 (1);
// sub-fails: A_PASS=1 (1); again-sub-fails: RUN ^(TestKernelSub)$ (1);
// all-pass: A_PASS=1 X_PASS=1 (0).
var probeTests = []string{"TestKernelA", "TestKernelParent", "TestKernelSub", "TestKernelB", "TestKernelC"}

func load(t *testing.T, name string, exit int) *run {
	t.Helper()
	f, err := os.Open("testdata/" + name + ".jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := parse(f, io.Discard)
	if exit != 0 {
		r.exit, r.err = exit, fmt.Errorf("exit status %d", exit)
	}
	return r
}

func names(fs []finding) []string {
	var n []string
	for _, f := range fs {
		n = append(n, f.name)
	}
	return n
}

func why(fs []finding, name string) string {
	for _, f := range fs {
		if f.name == name {
			return f.why
		}
	}
	return ""
}

var probeSkips = policy{strict: true, allowed: map[string]string{
	"TestKernelParent/one": "probe", "TestKernelParent/two": "probe",
}}

// A fails, B panics, C never runs; A passes when run again. The run
// fails, naming B, C and the crash; A is flaky.
func TestJudgeCrashAfterFailure(t *testing.T) {
	v := judge("fentry", probeTests, load(t, "first-crash", 2), load(t, "again-a-passes", 0), probeSkips)
	if got, want := names(v.failures), []string{"TestKernelB", "TestKernelC", "test binary"}; !slices.Equal(got, want) {
		t.Errorf("failures %q, want %q", got, want)
	}
	if w := why(v.failures, "TestKernelB"); !strings.HasPrefix(w, "started and never finished") {
		t.Errorf("B: %q", w)
	}
	if f := v.failures[0]; !slices.Contains(f.lines, "panic: boom [recovered, repanicked]") {
		t.Errorf("B's lines do not show its panic: %q", f.lines)
	}
	if got := names(v.flaky); !slices.Equal(got, []string{"TestKernelA"}) {
		t.Errorf("flaky %q", got)
	}
	if v.pass != 3 { // TestKernelSub/x and /y; TestKernelA when run again
		t.Errorf("pass=%d, want 3", v.pass)
	}
}

// A test that fails and then passes is counted as passed and named.
func TestJudgeFlaky(t *testing.T) {
	v := judge("tracepoint", probeTests, load(t, "first-flaky", 1), load(t, "again-a-passes", 0), policy{})
	if len(v.failures) != 0 {
		t.Errorf("failures %+v", v.failures)
	}
	if got := names(v.flaky); !slices.Equal(got, []string{"TestKernelA"}) {
		t.Errorf("flaky %q", got)
	}
	// Leaves only: TestKernelParent, whose subtests all skipped, and
	// TestKernelSub count for nothing.
	if v.pass != 5 || len(v.skips) != 2 {
		t.Errorf("pass=%d skip=%d, want 5 and 2", v.pass, len(v.skips))
	}
}

func TestJudgeFailsAgain(t *testing.T) {
	v := judge("kprobe", probeTests, load(t, "first-flaky", 1), load(t, "again-a-fails", 1), policy{})
	if got := names(v.failures); !slices.Equal(got, []string{"TestKernelA"}) {
		t.Fatalf("failures %q", got)
	}
	if w := v.failures[0].why; w != "failed, and failed again when run again" {
		t.Errorf("why %q", w)
	}
	if !slices.Contains(v.failures[0].lines, "p_test.go:11: A fails") {
		t.Errorf("lines %q", v.failures[0].lines)
	}
	if len(v.flaky) != 0 {
		t.Errorf("flaky %q", names(v.flaky))
	}
}

// A failed subtest is named; its parent, failed because of it, is not.
func TestJudgeSubtestFails(t *testing.T) {
	v := judge("fentry", probeTests, load(t, "sub-fails", 1), load(t, "again-sub-fails", 1), policy{})
	if got := names(v.failures); !slices.Equal(got, []string{"TestKernelSub/x"}) {
		t.Errorf("failures %q", got)
	}
}

// A parent that fails on its own, its subtests passing or skipping, is named.
func TestJudgeParentFails(t *testing.T) {
	v := judge("fentry", probeTests, load(t, "parent-fails", 1), nil, policy{})
	if got := names(v.failures); !slices.Equal(got, []string{"TestKernelParent"}) {
		t.Errorf("failures %q", got)
	}
	if !slices.Contains(v.failures[0].lines, "p_test.go:20: parent fails on its own") {
		t.Errorf("lines %q", v.failures[0].lines)
	}
}

// In a guest every skip fails the run unless vm/kernels allows it; an
// allowed skip that did not happen is noted.
func TestJudgeStrictSkips(t *testing.T) {
	p := policy{strict: true, allowed: map[string]string{"TestKernelParent/one": "one reason", "TestKernelC": "stale"}}
	v := judge("fentry", probeTests, load(t, "all-pass", 0), nil, p)
	if got := names(v.failures); !slices.Equal(got, []string{"TestKernelParent/two"}) {
		t.Errorf("failures %q", got)
	}
	if w := why(v.failures, "TestKernelParent/two"); !strings.HasSuffix(w, ": io_uring unavailable here") {
		t.Errorf("why %q", w)
	}
	if got := names(v.skips); !slices.Equal(got, []string{"TestKernelParent/one"}) {
		t.Errorf("skips %q", got)
	}
	if !slices.Equal(v.notes, []string{"vm/kernels allows TestKernelC to skip, and it did not"}) {
		t.Errorf("notes %q", v.notes)
	}
}

// A non-zero exit with no failed test to explain it fails the run.
func TestJudgeUnexplainedExit(t *testing.T) {
	v := judge("fentry", probeTests, load(t, "all-pass", 2), nil, policy{})
	if got := names(v.failures); !slices.Equal(got, []string{"test binary"}) {
		t.Errorf("failures %q", got)
	}
}

func TestJudgeNothingPassed(t *testing.T) {
	v := judge("fentry", nil, &run{tests: map[string]*test{}}, nil, policy{})
	if len(v.failures) != 1 || v.failures[0].why != "no test passed" {
		t.Errorf("failures %+v", v.failures)
	}
}

func TestJudgeRefused(t *testing.T) {
	r := &run{tests: map[string]*test{}}
	r.get("TestKernelBind").result = "skip"
	r.tests["TestKernelBind"].output.add("harness_test.go:211: backend fentry not supported by this kernel: attaching: not supported")
	r.get("TestKernelAutoBackend").result = "pass"
	v := judge("fentry", []string{"TestKernelBind", "TestKernelAutoBackend"}, r, nil, policy{})
	if !v.refused || len(v.failures) != 0 || v.pass != 1 {
		t.Errorf("%+v", v)
	}
}

func TestVerdictPrint(t *testing.T) {
	v := judge("tracepoint", probeTests, load(t, "first-flaky", 1), load(t, "again-a-passes", 0), policy{})
	var b strings.Builder
	v.print(&b, "m:", "tracepoint", 3)
	want := `m: tracepoint pass=5 fail=0 skip=2 flaky=1 refused=0 seconds=3
m: tracepoint flaky TestKernelA: failed, then passed when run again
m: tracepoint   | p_test.go:9: a says
m: tracepoint   | p_test.go:11: A fails
m: tracepoint skip 2 tests: io_uring unavailable here
m: tracepoint   | TestKernelParent/one, TestKernelParent/two
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLinesKeepsPanic(t *testing.T) {
	var l lines
	l.add("before")
	l.add("panic: test timed out after 2s")
	for i := range 40 {
		l.add(fmt.Sprint("goroutine ", i))
	}
	if got := l.show(); len(got) != keep || got[0] != "panic: test timed out after 2s" {
		t.Errorf("show() = %q", got)
	}
}

func TestKmsgText(t *testing.T) {
	rec := "4,1234,5678,-;WARNING: CPU: 0 PID: 1 at kernel/bpf/core.c:10 f+0x1/0x2\n SUBSYSTEM=cpu\n"
	if got := kmsgText([]byte(rec)); got != "WARNING: CPU: 0 PID: 1 at kernel/bpf/core.c:10 f+0x1/0x2" {
		t.Errorf("%q", got)
	}
}

func TestTaintFlags(t *testing.T) {
	if got := taintFlags(1<<9 | 1<<13); got != "8704 (WE)" {
		t.Errorf("%q", got)
	}
}

func TestAllowList(t *testing.T) {
	path := t.TempDir() + "/skips"
	os.WriteFile(path, []byte("* TestKernelA io_uring off here\nkprobe TestKernelB/x why\n"), 0o644)
	a, err := readAllowed(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.of("kprobe"); len(got) != 2 || got["TestKernelA"] != "io_uring off here" {
		t.Errorf("kprobe: %v", got)
	}
	if got := a.of("fentry"); len(got) != 1 {
		t.Errorf("fentry: %v", got)
	}
	os.WriteFile(path, []byte("kprobe TestKernelB\n"), 0o644)
	if _, err := readAllowed(path); err == nil {
		t.Error("a line with no reason was accepted")
	}
}

// On the host a backend the kernel refuses may skip all its tests and
// pass none; any other skip fails the run, as in a guest.
func TestJudgeHost(t *testing.T) {
	host := policy{strict: true, refusable: true}
	refused := &run{tests: map[string]*test{}}
	refused.get("TestKernelBind").result = "skip"
	refused.tests["TestKernelBind"].output.add("harness_test.go:211: backend kprobe not supported by this kernel: no kprobe_events")
	refused.get("TestKernelLoad").result = "skip"
	refused.tests["TestKernelLoad"].output.add("kernel_test.go:9: this kernel refuses to load kprobe programs (EPERM)")
	v := judge("kprobe", []string{"TestKernelBind", "TestKernelLoad"}, refused, nil, host)
	if !v.refused || len(v.failures) != 0 || len(v.skips) != 2 {
		t.Errorf("refused backend: %+v", v)
	}

	other := &run{tests: map[string]*test{}}
	other.get("TestKernelBind").result = "pass"
	other.get("TestKernelIOUring").result = "skip"
	other.tests["TestKernelIOUring"].output.add("iouring_test.go:40: io_uring unavailable here")
	v = judge("tracepoint", []string{"TestKernelBind", "TestKernelIOUring"}, other, nil, host)
	if got := names(v.failures); !slices.Equal(got, []string{"TestKernelIOUring"}) {
		t.Errorf("a skip that is no refusal: failures %q", got)
	}
}
