package tracer_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/churn"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// /metrics parses as Prometheus text and carries the names, labels and
// values of the report.
func TestKernelChurnMetrics(t *testing.T) {
	ns, c, state := churnIn200Ports(t)
	svc := netip.MustParseAddrPort("127.0.0.1:9000")
	var fds []int
	ns.Run(t, func() {
		fds = append(fds, tracer.ListenTCP(t, svc))
		for i := 0; i < 7; i++ {
			fd := tracer.NewSocket(t, tracer.TCP4)
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	cur, err := c.ReadChurn()
	if err != nil {
		t.Fatal(err)
	}
	m := churn.NewCollector(2, 0)
	m.Set(state.Next(cur))
	srv, err := promserve.Serve(promserve.Config{Addr: "127.0.0.1:0"}, m, t.Output())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	nsLabel := strconv.FormatUint(uint64(ns.Inode), 10)
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, mt := range f.Metric {
			for _, lp := range mt.Label {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if mt.Counter != nil {
				return mt.Counter.GetValue(), true
			}
			return mt.Gauge.GetValue(), true
		}
		return 0, false
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"porttrace_ephemeral_allocations_total", map[string]string{"netns": nsLabel, "call": "connect tcp"}, 7},
		{"porttrace_ephemeral_ports_in_use", map[string]string{"netns": nsLabel}, 7},
		{"porttrace_ephemeral_range_size", map[string]string{"netns": nsLabel}, 200},
		{"porttrace_ephemeral_destination_ports_in_use", map[string]string{"netns": nsLabel, "proto": "tcp", "destination": svc.String()}, 7},
	} {
		if got, ok := value(tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%v = %v (found %t), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
}

// Told to stop while nobody reads its output, churn stops at once, says
// so, and its summary still counts what the kernel counted meanwhile.
func TestKernelChurnStopWhileOutputStalled(t *testing.T) {
	ns := tracer.NewNetns(t)
	stderr := stopStalled(t, ns, func(ctx context.Context, out, stderr io.Writer) error {
		cfg := churn.DefaultConfig()
		cfg.Interval = 50 * time.Millisecond
		cfg.Backend = tracer.Backend(t)
		return churn.Run(ctx, cfg, out, stderr)
	})
	if !strings.Contains(stderr, "porttrace churn: stopped while the output was not being read") {
		t.Errorf("stderr does not say the output stalled:\n%s", stderr)
	}
	// Every process's allocations count, the 50 binds made here among them.
	m := regexp.MustCompile(`porttrace churn: (\d+) allocations?`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no churn summary on stderr:\n%s", stderr)
	}
	if n, _ := strconv.Atoi(m[1]); n < 50 {
		t.Errorf("the summary misses the allocations made while the output stalled:\n%s", stderr)
	}
}
