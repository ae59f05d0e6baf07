package flagcheck

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// checkErr fails unless err is nil when want is "", else its text is want.
func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if want == "" && err != nil || want != "" && (err == nil || err.Error() != want) {
		t.Errorf("%s: error %v, want %q", what, err, want)
	}
}

func TestFirst(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	for _, tc := range []struct {
		errs []error
		want error
	}{
		{nil, nil}, {[]error{nil, nil}, nil}, {[]error{nil, a, b}, a}, {[]error{b, a}, b},
	} {
		if got := First(tc.errs...); got != tc.want {
			t.Errorf("First(%v) = %v, want %v", tc.errs, got, tc.want)
		}
	}
}

func TestOutput(t *testing.T) {
	checkErr(t, "json", Output("json", "table", "json"), "")
	checkErr(t, "table", Output("table", "table", "json"), "")
	checkErr(t, "yaml of two", Output("yaml", "table", "json"), `invalid --output "yaml": want table or json`)
	checkErr(t, "yaml of three", Output("yaml", "table", "wide", "json"), `invalid --output "yaml": want table, wide or json`)
	checkErr(t, "yaml of one", Output("yaml", "table"), `invalid --output "yaml": want table`)
}

func TestIntervalDuration(t *testing.T) {
	checkErr(t, "interval 10ms", Interval(10*time.Millisecond), "")
	checkErr(t, "interval 1s", Interval(time.Second), "")
	checkErr(t, "interval 9ms", Interval(9*time.Millisecond), "invalid --interval 9ms: want 10ms or more")
	checkErr(t, "duration 0", Duration(0), "")
	checkErr(t, "duration 1ns", Duration(1), "")
	checkErr(t, "duration -1ns", Duration(-1), "invalid --duration -1ns: want 0 (until stopped) or more")
}

func TestMetricsAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"": true, ":9471": true, ":0": true, ":65535": true, "localhost:9471": true, "127.0.0.1:9471": true,
		"[::1]:9471": true, "[::]:80": true,
		":65536": false, ":-1": false, ":http": false, "9471": false, "[localhost]:9471": false, "[]:9471": false,
		"::1:9471": false, "[127.0.0.1]:9471": false, "example.com:9471": false, "256.1.1.1:9000": false,
	} {
		err := MetricsAddr(addr)
		if ok != (err == nil) {
			t.Errorf("MetricsAddr(%q) = %v, want ok %t", addr, err, ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), `invalid --metrics "`+addr+`": want HOST:PORT or :PORT`) {
			t.Errorf("MetricsAddr(%q): %v", addr, err)
		}
	}
}

func TestChangedBackend(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("a", "", "")
	fs.String("b", "", "")
	if err := fs.Parse([]string{"--a", "1"}); err != nil {
		t.Fatal(err)
	}
	if !Changed(fs, "a") || Changed(fs, "b") || Changed(nil, "a") {
		t.Errorf("Changed: a %t, b %t, nil %t; want true, false, false", Changed(fs, "a"), Changed(fs, "b"), Changed(nil, "a"))
	}
	if b, err := Backend("fentry"); err != nil || b != event.BackendFentry {
		t.Errorf("Backend(fentry) = %v, %v", b, err)
	}
	_, err := Backend("ebpf")
	checkErr(t, "backend ebpf", err, `invalid --backend: unknown backend "ebpf" (want auto, fentry, kprobe or tracepoint)`)
}

func TestWorkloads(t *testing.T) {
	checkErr(t, "none", Workloads(), "")
	checkErr(t, "names", Workloads([]string{"web", "6d0c"}, []string{"checkout-7d9f"}, nil), "")
	checkErr(t, "empty", Workloads(nil, []string{"a", ""}), `invalid workload "": want a name or an id`)
	checkErr(t, "escape", Workloads([]string{"a\x1b[2J"}), `invalid workload "a\x1b[2J": want a name or an id`)
	checkErr(t, "unit separator", Workloads([]string{"a\x1f"}), `invalid workload "a\x1f": want a name or an id`)
	checkErr(t, "DEL", Workloads([]string{"a\x7f"}), `invalid workload "a\x7f": want a name or an id`)
	checkErr(t, "space and tilde", Workloads([]string{"a b~"}), "")
}

func TestColumns(t *testing.T) {
	known := []string{"time", "pid", "comm"}
	for _, tc := range []struct {
		list, want, wantErr string
	}{
		{list: "time", want: "time"},
		{list: " PID , comm,time", want: "pid,comm,time"},
		{list: "", wantErr: `an empty column name in ""`},
		{list: "pid,,comm", wantErr: `an empty column name in "pid,,comm"`},
		{list: "pid,user", wantErr: `no column "user": want some of time,pid,comm`},
		{list: "pid,comm,PID", wantErr: `column "pid" named twice`},
	} {
		got, err := Columns(tc.list, known)
		checkErr(t, tc.list, err, tc.wantErr)
		if tc.wantErr == "" && strings.Join(got, ",") != tc.want {
			t.Errorf("Columns(%q) = %q, want %s", tc.list, got, tc.want)
		}
	}
}

func TestCgroups(t *testing.T) {
	if ids, err := Cgroups(nil); ids != nil || err != nil {
		t.Errorf("Cgroups(nil) = %v, %v; want nil, nil", ids, err)
	}
	if _, err := Cgroups([]string{"/no/such/cgroup-here"}); err == nil || !strings.HasPrefix(err.Error(), `invalid --cgroup "/no/such/cgroup-here": `) {
		t.Errorf("a missing cgroup: %v", err)
	}
	ids, err := Cgroups([]string{"/", "/"})
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	if len(ids) != 2 || ids[0] == 0 || ids[0] != ids[1] {
		t.Errorf("Cgroups(/, /) = %v, want one id twice", ids)
	}
}

// The kernel's cgroup list is the scope's own unless workloads may add
// to it: then it is a copy, which the workload watcher may grow.
func TestKernelCgroups(t *testing.T) {
	s := Scope{Cgroups: []uint64{1, 2}}
	if got := s.KernelCgroups(); len(got) != 2 || &got[0] != &s.Cgroups[0] {
		t.Errorf("without workloads: %v, want the scope's own slice", got)
	}
	s.Workloads = workload.Selector{Pods: []string{"web"}}
	got := s.KernelCgroups()
	if len(got) != 2 || got[0] != 1 || got[1] != 2 || &got[0] == &s.Cgroups[0] {
		t.Errorf("with workloads: %v, want a copy of [1 2]", got)
	}
}

func TestScopeValidate(t *testing.T) {
	checkErr(t, "nothing", (&Scope{}).Validate(), "")
	checkErr(t, "bad pod", (&Scope{Workloads: workload.Selector{Pods: []string{""}}}).Validate(), `invalid workload "": want a name or an id`)
	checkErr(t, "bad netns", (&Scope{Netns: []string{"all", "x"}}).Validate(), "invalid --netns: all is every namespace already: name no other with it")
	err := (&Scope{CgroupPaths: []string{"/no/such/cgroup-here"}}).Validate()
	if err == nil || !strings.HasPrefix(err.Error(), `invalid --cgroup "/no/such/cgroup-here"`) {
		t.Errorf("bad cgroup: %v", err)
	}
}
