package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEventKey(t *testing.T) {
	for _, tc := range []struct {
		kind string
		err  error
		want string
	}{
		{"bind", nil, "bind/ok"},
		{"bind", unix.EACCES, "bind/denied/EACCES"},
		{"bind", unix.EPERM, "bind/denied/EPERM"},
		{"bind", fmt.Errorf("wrapped: %w", unix.EADDRINUSE), "bind/failed/EADDRINUSE"},
		{"connect", unix.EADDRNOTAVAIL, "connect/failed/EADDRNOTAVAIL"},
	} {
		if got := eventKey(tc.kind, tc.err); got != tc.want {
			t.Errorf("eventKey(%s, %v) = %s, want %s", tc.kind, tc.err, got, tc.want)
		}
	}
}

func TestMetricSum(t *testing.T) {
	text := []byte(`# HELP porttrace_ephemeral_allocations_total x
porttrace_ephemeral_allocations_total{call="bind tcp",netns="7"} 2
porttrace_ephemeral_allocations_total{call="connect tcp",netns="7"} 40
porttrace_ephemeral_allocations_total{call="connect tcp",netns="70"} 5
porttrace_ephemeral_allocations_totals{netns="7"} 1000
go_goroutines 12
`)
	for _, tc := range []struct {
		name  string
		want  map[string]string
		sum   float64
		found bool
	}{
		{"porttrace_ephemeral_allocations_total", map[string]string{"netns": "7"}, 42, true},
		{"porttrace_ephemeral_allocations_total", nil, 47, true},
		{"porttrace_ephemeral_allocations_total", map[string]string{"netns": "8"}, 0, false},
		{"go_goroutines", nil, 12, true},
		{"go_threads", nil, 0, false},
	} {
		sum, found := metricSum(text, tc.name, tc.want)
		if sum != tc.sum || found != tc.found {
			t.Errorf("metricSum(%s, %v) = %v, %v; want %v, %v", tc.name, tc.want, sum, found, tc.sum, tc.found)
		}
	}
}

// samples makes a minute of looks, one a second, with f changing each.
func samples(f func(i int, s *sample)) []sample {
	var ss []sample
	for i := range 60 {
		s := sample{at: time.Duration(i) * time.Second, rssKB: 40 << 10, goroutines: 12, fds: 50, maps: 10, progs: 6, links: 7}
		f(i, &s)
		ss = append(ss, s)
	}
	return ss
}

func TestFlat(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(i int, s *sample)
		want string // a part of the one breach; "" for none
	}{
		{"flat", func(i int, s *sample) {}, ""},
		{"growing before the warm-up", func(i int, s *sample) { s.rssKB += int64(min(i, 10)) << 10; s.goroutines += int64(min(i, 10)) }, ""},
		{"sawtooth", func(i int, s *sample) { s.rssKB += int64(i%5) << 10; s.fds += int64(i % 3) }, ""},
		{"RSS above the bound", func(i int, s *sample) {
			if i == 50 {
				s.rssKB += 11 << 10
			}
		}, "RSS 52224 KiB at 50s"},
		{"RSS creeping", func(i int, s *sample) { s.rssKB += int64(i) * 100 }, "RSS grows"},
		{"goroutines leaking", func(i int, s *sample) { s.goroutines += int64(i) }, "goroutines at"},
		{"fds leaking", func(i int, s *sample) { s.fds += int64(i / 2) }, "open files at"},
		{"a link more", func(i int, s *sample) {
			if i > 40 {
				s.links++
			}
		}, "BPF maps/progs/links went from 10/6/7 to 10/6/8 at 41s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &result{opts: options{warmup: 15 * time.Second}}
			bad := r.flat(&tracerProc{name: "stream", samples: samples(tc.f)})
			switch {
			case tc.want == "" && len(bad) > 0:
				t.Errorf("breaches %q, want none", bad)
			case tc.want != "" && (len(bad) != 1 || !strings.Contains(bad[0], tc.want)):
				t.Errorf("breaches %q, want one with %q", bad, tc.want)
			}
		})
	}
}

func TestSummaryLines(t *testing.T) {
	m := summaryRe.FindStringSubmatch("porttrace: 7 events (bind 4, listen 1, connect 1, accept 1), 1 denied, 1 failed, 3 lost")
	if m == nil || m[1] != "7" || m[2] != "bind 4, listen 1, connect 1, accept 1" || m[3] != "3" {
		t.Errorf("summary parsed as %q", m)
	}
	if m := lossRe.FindStringSubmatch("porttrace: 380 events lost: the ring buffers of CPU 0 (199) and CPU 1 (181) were full"); m == nil || m[1] != "380" {
		t.Errorf("loss line parsed as %q", m)
	}
	if lossRe.MatchString("porttrace: 7 events (bind 7), 0 denied, 0 failed, 0 lost") {
		t.Error("the summary taken for a loss line")
	}
}
