package churn

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

func sampleChurnReport() *Report {
	svc := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("127.0.0.1:8080")}
	dns := tracer.Dest{Proto: event.ProtoUDP, Remote: netip.MustParseAddrPort("[::1]:53")}
	loadgen := workload.FromCgroup("/kubepods.slice/kubepods-pod6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope")
	return &Report{
		Time:     time.Date(2026, 11, 28, 7, 15, 26, 0, time.UTC),
		Interval: time.Second,
		Netns: []NetnsReport{
			{
				Netns: 4026531833, Range: [2]uint16{32768, 60999}, RangeSize: 28200, Reserved: 32,
				AllocsPerSec: 14115, FailsPerSec: 2, InUse: 28190, Sockets: 28194, TimeWait: 28000, UsagePct: 99.96,
				AllocsTotal: map[string]uint64{"connect tcp": 28313, "connect udp": 4},
				FailsTotal:  map[string]uint64{"EADDRNOTAVAIL": 2},
				Exhaustion:  0, History: []float64{0, 7000, 14115},
				Dests: []DestReport{
					{Dest: svc, AllocsPerSec: 14115, FailsPerSec: 2, Allocs: 28313, Fails: 2, InUse: 28186, Headroom: 0, Exhaustion: 0},
					{Dest: dns, AllocsPerSec: 4, Allocs: 4, InUse: 4, Headroom: 28182, Exhaustion: 117*time.Minute + 25*time.Second},
				},
				Procs: []ProcReport{
					{PID: 4242, Comm: "loadgen", AllocsPerSec: 14119, FailsPerSec: 2, Allocs: 28317, Fails: 2, Workload: loadgen,
						Names: workload.Names{Container: "loadgen", Pod: "loadtest-5c8b", Namespace: "perf"}},
					// A name any local user can give a process (prctl PR_SET_NAME).
					{PID: 6666, Comm: "\x1b]0;PWN\x07zz", AllocsPerSec: 1, Allocs: 7},
					{PID: 6667, Comm: "a\nb\tc\xff", AllocsPerSec: 1, Allocs: 3},
				},
				Workloads: []WorkloadReport{
					{Workload: loadgen,
						Names: workload.Names{Container: "loadgen", Pod: "loadtest-5c8b", Namespace: "perf"}, AllocsPerSec: 14119, FailsPerSec: 2, Allocs: 28317, Fails: 2},
					{Workload: workload.FromCgroup("/libpod_parent/libpod-4c2e0d1f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d"), AllocsPerSec: 1, Allocs: 7},
				},
				Pods: []WorkloadReport{
					{Workload: workload.Identity{PodUID: loadgen.PodUID}, Names: workload.Names{Pod: "loadtest-5c8b", Namespace: "perf"},
						AllocsPerSec: 14119, FailsPerSec: 2, Allocs: 28317, Fails: 2},
				},
			},
			{
				Netns: 4026532315, UsageErr: "network namespace 4026532315: no process or mount holds it",
				AllocsPerSec: 3, AllocsTotal: map[string]uint64{"bind udp": 3}, FailsTotal: map[string]uint64{},
				Exhaustion: -1, History: []float64{3},
				Dests: []DestReport{{Dest: svc, AllocsPerSec: 3, Allocs: 3, Exhaustion: -1}},
			},
		},
	}
}

func TestChurnTableGolden(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, sampleChurnReport()); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "churn.table", []byte(b.String()))
	if i := strings.IndexFunc(b.String(), func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f }); i >= 0 {
		t.Errorf("control byte %q in the churn table at offset %d", b.String()[i], i)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 22 {
		t.Errorf("%d lines, want 22: a process name broke a line", lines)
	}
}

func TestChurnJSONGolden(t *testing.T) {
	buf := AppendJSON(nil, sampleChurnReport())
	golden.Check(t, "churn.jsonl", buf)
	var v struct {
		Netns []struct {
			Netns        uint32            `json:"netns"`
			InUse        *int              `json:"in_use"`
			ExhaustionS  *float64          `json:"exhaustion_s"`
			FailsTotal   map[string]uint64 `json:"fails_total"`
			Destinations []map[string]any  `json:"destinations"`
			Processes    []map[string]any  `json:"processes"`
			AllocsTotal  map[string]uint64 `json:"allocs_total"`
		} `json:"netns"`
	}
	if err := json.Unmarshal(buf, &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, buf)
	}
	n0, n1 := v.Netns[0], v.Netns[1]
	if n0.InUse == nil || *n0.InUse != 28190 || n0.ExhaustionS == nil || *n0.ExhaustionS != 0 || n0.FailsTotal["EADDRNOTAVAIL"] != 2 {
		t.Errorf("first netns decoded as %+v", n0)
	}
	if n1.InUse != nil || n1.ExhaustionS != nil || n1.Destinations[0]["in_use"] != nil {
		t.Errorf("unknown usage must be absent, not zero: %+v", n1)
	}
	// A name that is not UTF-8 keeps its bytes, in hex.
	if p := n0.Processes[2]; p["comm"] != "a\nb\tc\ufffd" || p["comm_hex"] != "610a620963ff" {
		t.Errorf("comm %q, comm_hex %q", p["comm"], p["comm_hex"])
	}
}

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want string
	}{
		{nil, ""},
		{[]float64{0, 0}, "▁▁"},
		{[]float64{0, 7, 14}, "▁▅█"},
		{[]float64{5}, "█"},
	} {
		if got := Sparkline(tc.in); got != tc.want {
			t.Errorf("Sparkline(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestETAAndGrowth(t *testing.T) {
	if eta(0, 5) != 0 || eta(100, 0) != -1 || eta(100, -3) != -1 || eta(100, 10) != 10*time.Second {
		t.Error("eta: want 0 when exhausted, -1 when not growing, headroom/rate otherwise")
	}
	m := map[string][]usageSample{}
	t0 := time.Unix(1000, 0)
	if g := grow(m, "d", t0, 100); g != 0 {
		t.Errorf("one sample: growth %v, want 0", g)
	}
	grow(m, "d", t0.Add(5*time.Second), 150)
	if g := grow(m, "d", t0.Add(10*time.Second), 200); g != 10 {
		t.Errorf("growth %v/s, want 10", g)
	}
	// Samples older than the window drop out: 200 -> 260 over the last 10s.
	if g := grow(m, "d", t0.Add(20*time.Second), 300); g != 10 {
		t.Errorf("windowed growth %v/s, want 10", g)
	}
}
