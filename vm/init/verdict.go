package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// finding is one line of a verdict: a failure, a skip or a flaky test.
type finding struct {
	name  string // a test, "kernel", "test binary"; empty for the run as a whole
	why   string
	lines []string // output that shows why
}

// verdict is one backend's result on one kernel: what the matrix shows.
// Only leaf tests count: a parent test counts only when it failed (or
// skipped) on its own, with none of its subtests failing.
type verdict struct {
	pass     int
	failures []finding // each one fails the run
	skips    []finding // skips that do not fail it
	flaky    []finding // failed, then passed when run again
	notes    []string
	refused  bool // the tests say the kernel refused this backend
}

// policy says which skips fail a run.
type policy struct {
	// strict: any skip fails the run unless allowed lists it (or, with
	// refusable, it names this kernel's refusal of the backend).
	strict bool
	// allowed holds the tests that may skip, each with the reason given
	// in vm/kernels.
	allowed map[string]string
	// refusable: the kernel may refuse the backend outright (the host,
	// which refuses fentry and kprobes): the tests that skip for that
	// reason are counted as skips, and a refused backend need not pass any.
	refusable bool
	backend   string // set by judge
}

// refusalSkip reports whether a skip's reason is the kernel refusing
// backend: its programs do not load or attach here at all.
func refusalSkip(backend, reason string) bool {
	return strings.Contains(reason, "backend "+backend+" not supported by this kernel") ||
		strings.Contains(reason, "this kernel refuses to load")
}

// judge weighs a first run of the tests that listed names, and a run again
// of the top-level tests that failed in it (nil if none did). A test that
// failed and then passed counts as passed and is named as flaky; the tests
// under it count as they did when run again. Everything else that is not
// a pass or an allowed skip fails the run, by name: a failed test, one
// that never finished or never ran (the binary crashed, or the deadline
// came), an exit status that failed tests do not explain, no test passing.
func judge(backend string, listed []string, first, again *run, p policy) verdict {
	p.backend = backend
	var v verdict
	flaky := map[string]bool{}
	if again != nil && again.explained() {
		for _, name := range first.failedTops() {
			if t := again.tests[name]; t != nil && t.result == "pass" {
				flaky[name] = true
			}
		}
	}
	for _, name := range first.order {
		if !flaky[top(name)] {
			v.count(first, first.tests[name], p, again)
		}
	}
	for _, name := range first.order {
		t := first.tests[name]
		if !flaky[top(name)] || !t.countsAsFailure(first) {
			continue
		}
		v.flaky = append(v.flaky, finding{name: name, why: "failed, then passed when run again", lines: t.output.show()})
	}
	if again != nil {
		for _, name := range again.order {
			if flaky[top(name)] {
				v.count(again, again.tests[name], p, nil)
			}
		}
	}

	var missing []string
	for _, name := range listed {
		if first.tests[name] == nil {
			missing = append(missing, name)
		}
	}
	for _, name := range missing {
		why := "never ran"
		if first.err != nil {
			why += fmt.Sprintf(": the test binary ended first (%v)", first.err)
		}
		v.failures = append(v.failures, finding{name: name, why: why})
	}
	if first.err != nil && !(first.explained() && len(missing) == 0) {
		v.failures = append(v.failures, finding{name: "test binary", why: first.err.Error() + ", which failed tests do not explain", lines: first.tail.show()})
	}
	for _, f := range append(slices.Clip(v.skips), v.failures...) {
		if refusalSkip(backend, f.why) {
			v.refused = true
		}
	}
	if v.pass == 0 && !(v.refused && p.refusable) {
		v.failures = append(v.failures, finding{why: "no test passed"})
	}
	for name := range p.allowed {
		if !slices.ContainsFunc(v.skips, func(f finding) bool { return f.name == name }) {
			v.notes = append(v.notes, "vm/kernels allows "+name+" to skip, and it did not")
		}
	}
	slices.Sort(v.notes)
	return v
}

// explained reports whether the run's exit status is the one failed tests
// give (1) and every test that started also ended.
func (r *run) explained() bool {
	return r.err == nil || (r.exit == 1 && len(r.failedTops()) > 0 && len(r.unfinished()) == 0)
}

// outcome says how top-level test name fared in r, a run again.
func (r *run) outcome(name string) string {
	t := r.tests[name]
	switch {
	case t == nil:
		return "did not run again"
	case t.result == "fail":
		return "failed again when run again"
	case t.result == "":
		return "did not finish when run again"
	}
	did := map[string]string{"pass": "passed", "skip": "skipped"}[t.result] + " when run again"
	if r.err != nil {
		did += fmt.Sprintf(", in a run that ended with %v", r.err)
	}
	return did
}

// countsAsFailure reports whether t is a failure the verdict names: a leaf
// that failed or never ended, or a parent that did with no subtest doing so.
func (t *test) countsAsFailure(r *run) bool {
	if t.result == "pass" || t.result == "skip" {
		return false
	}
	return !t.hasSub || !r.failedBelow(t.name)
}

// count adds t's own result in r to the verdict; again is the run again
// of the failed top-level tests, if there was one.
func (v *verdict) count(r *run, t *test, p policy, again *run) {
	switch {
	case t.countsAsFailure(r):
		why := "failed"
		switch {
		case t.result == "":
			why = "started and never finished"
			if r.err != nil {
				why += fmt.Sprintf(" (the test binary: %v)", r.err)
			}
		case again != nil:
			why += ", and " + again.outcome(top(t.name))
		}
		v.failures = append(v.failures, finding{name: t.name, why: why, lines: t.output.show()})
	case t.result == "pass" && !t.hasSub:
		v.pass++
	case t.result == "skip":
		reason := skipReason(t)
		switch allowed, ok := p.allowed[t.name]; {
		case !p.strict, p.refusable && refusalSkip(p.backend, reason):
			v.skips = append(v.skips, finding{name: t.name, why: reason})
		case ok:
			v.skips = append(v.skips, finding{name: t.name, why: reason + " (allowed by vm/kernels: " + allowed + ")"})
		default:
			v.failures = append(v.failures, finding{name: t.name, why: "skipped, which no test may do here unless vm/kernels allows it: " + reason})
		}
	}
}

// location is the "file_test.go:123: " the testing package puts before a
// test's message.
var location = regexp.MustCompile(`^[\w.-]+\.go:\d+: `)

// skipReason is the last line t printed, its location left out so that
// tests skipped for the same reason group together.
func skipReason(t *test) string {
	if len(t.output.last) == 0 {
		return "no reason given"
	}
	return location.ReplaceAllString(t.output.last[len(t.output.last)-1], "")
}

// print writes the verdict as the lines vm/run.sh reads, each starting with
// prefix and the backend: one summary line, then each failure, flaky test,
// skip reason (with the tests skipped for it) and note.
func (v verdict) print(w io.Writer, prefix, backend string, seconds float64) {
	p := prefix + " " + backend + " "
	fmt.Fprintf(w, "%spass=%d fail=%d skip=%d flaky=%d refused=%d seconds=%.0f\n",
		p, v.pass, len(v.failures), len(v.skips), len(v.flaky), b2i(v.refused), seconds)
	for _, f := range v.failures {
		show(w, p, "fail", f)
	}
	for _, f := range v.flaky {
		show(w, p, "flaky", f)
	}
	var reasons []string
	byReason := map[string][]string{}
	for _, f := range v.skips {
		if byReason[f.why] == nil {
			reasons = append(reasons, f.why)
		}
		byReason[f.why] = append(byReason[f.why], f.name)
	}
	for _, r := range reasons {
		names := byReason[r]
		fmt.Fprintf(w, "%sskip %d %s: %s\n", p, len(names), plural(len(names), "test"), r)
		for len(names) > 0 {
			n := min(len(names), 4)
			fmt.Fprintf(w, "%s  | %s\n", p, strings.Join(names[:n], ", "))
			names = names[n:]
		}
	}
	for _, n := range v.notes {
		fmt.Fprintf(w, "%snote %s\n", p, n)
	}
}

// show writes one finding: "PREFIX KIND NAME: WHY", then its lines.
func show(w io.Writer, prefix, kind string, f finding) {
	if f.name == "" {
		fmt.Fprintf(w, "%s%s %s\n", prefix, kind, f.why)
	} else {
		fmt.Fprintf(w, "%s%s %s: %s\n", prefix, kind, f.name, f.why)
	}
	for _, l := range f.lines {
		fmt.Fprintf(w, "%s  | %s\n", prefix, l)
	}
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
