package tracer_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/churn"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/promtest"
	"github.com/porttrace/porttrace/tracer/stream"
)

// The exporter tests need root and a tracer, but are named TestExporter*,
// not TestKernel*: they check /metrics with Debian's promtool and
// Prometheus server, which `make test` has on the host and the kernel
// matrix's guests do not. What they count in the kernel, every kernel's
// stream and churn tests check.

// exporterPort is the port the exporter tests bind in their namespaces.
const exporterPort = 24242

// exporter is a stream or churn run with --metrics.
type exporter struct {
	url            string // as announced on stderr
	stdout, stderr *tracer.SyncBuilder
	stop           func() // stops it and waits; the test's end does too
}

// runExporter runs fn until stop or the test's end, and returns once it
// serves /metrics.
func runExporter(t *testing.T, b event.Backend, fn func(ctx context.Context, stdout, stderr io.Writer) error) *exporter {
	t.Helper()
	stdout, stderr := &tracer.SyncBuilder{}, &tracer.SyncBuilder{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fn(ctx, stdout, stderr) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil && !t.Skipped() {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(stop)
	re := regexp.MustCompile(`(?m)^porttrace( churn)?: serving metrics on (\S+)$`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err // for the cleanup
			tracer.SkipUnsupported(t, b, err)
			t.Fatalf("returned before serving: %v\n%s", err, stderr.String())
		default:
		}
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			return &exporter{url: m[2], stdout: stdout, stderr: stderr, stop: stop}
		}
	}
	t.Fatalf("no line announcing /metrics:\n%s", stderr.String())
	return nil
}

// bindTwice binds UDP 127.0.0.1:exporterPort in ns, then again from a
// second socket, which fails with EADDRINUSE; both are closed.
func bindTwice(t *testing.T, ns *tracer.NS) {
	ns.Run(t, func() {
		ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), exporterPort)
		a, b := tracer.NewSocket(t, tracer.UDP4), tracer.NewSocket(t, tracer.UDP4)
		defer unix.Close(a)
		defer unix.Close(b)
		if err := unix.Bind(a, tracer.Sockaddr(ap)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(b, tracer.Sockaddr(ap)); err != unix.EADDRINUSE {
			t.Fatalf("second bind: %v, want EADDRINUSE", err)
		}
	})
}

// -o none is an exporter only: nothing on stdout, while /metrics, served
// over TLS with basic auth from --web.config.file, counts each event by
// its errno, names the build, and passes promtool; the summary on stderr
// still counts the events.
func TestExporterStream(t *testing.T) {
	ns := tracer.NewNetns(t)
	web := promtest.NewWeb(t)
	cfg := stream.DefaultConfig()
	cfg.Output, cfg.Metrics, cfg.WebConfig, cfg.BuildVersion = "none", "127.0.0.1:0", web.Path, "9.9.9-test"
	cfg.Events = tracer.KindsOf(event.KindBind)
	cfg.Backend = tracer.Backend(t)
	if err := cfg.Ports.Set(strconv.Itoa(exporterPort)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	x := runExporter(t, cfg.Backend, func(ctx context.Context, stdout, stderr io.Writer) error {
		return stream.Run(ctx, cfg, stdout, stderr)
	})
	u := x.url
	if !strings.HasPrefix(u, "https://127.0.0.1:") {
		t.Fatalf("announced %s, want https on 127.0.0.1", u)
	}
	bindTwice(t, ns)
	want := []string{
		`porttrace_events_total{errno="",event="bind",result="ok"} 1`,
		`porttrace_events_total{errno="EADDRINUSE",event="bind",result="failed"} 1`,
	}
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		status, b := web.Get(t, u, true)
		body = string(b)
		if status == 200 && strings.Contains(body, want[0]) && strings.Contains(body, want[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, /metrics (%d) lacks %q:\n%s", status, want, body)
		}
	}
	info := regexp.MustCompile(`(?m)^porttrace_build_info\{backend="(fentry|kprobe|tracepoint)",goversion="go[^"]+",revision="[0-9a-f]*",version="9\.9\.9-test"\} 1$`)
	for _, re := range []*regexp.Regexp{info, regexp.MustCompile(`(?m)^go_goroutines \d+$`), regexp.MustCompile(`(?m)^process_open_fds \d+$`)} {
		if !re.MatchString(body) {
			t.Errorf("/metrics lacks %s:\n%s", re, body)
		}
	}
	if cfg.Backend != event.BackendAuto && !strings.Contains(body, `backend="`+cfg.Backend.String()+`"`) {
		t.Errorf("porttrace_build_info does not name the backend %s", cfg.Backend)
	}
	promtest.CheckMetrics(t, []byte(body))
	if status, _ := web.Get(t, u, false); status != 401 {
		t.Errorf("/metrics without the password: %d, want 401", status)
	}
	root := strings.TrimSuffix(u, "metrics")
	if status, page := web.Get(t, root, true); status != 200 || !strings.Contains(string(page), "Version 9.9.9-test") || !strings.Contains(string(page), `href="metrics"`) {
		t.Errorf("landing page: %d\n%s", status, page)
	}
	if status, _ := web.Get(t, root+"nothing-here", true); status != 404 {
		t.Errorf("/nothing-here: %d, want 404", status)
	}
	x.stop()
	if x.stdout.String() != "" {
		t.Errorf("-o none printed:\n%s", x.stdout.String())
	}
	if s := "porttrace: 2 events (bind 2, listen 0, connect 0, accept 0), 0 denied, 1 failed, 0 lost"; !strings.Contains(x.stderr.String(), s) {
		t.Errorf("stderr lacks the summary %q:\n%s", s, x.stderr.String())
	}
}

// churn's /metrics counts allocations towards a destination as a
// counter of the kernel's total (ephemeral_destination_allocations_total),
// with no rate among its series, and passes promtool.
func TestExporterChurn(t *testing.T) {
	ns := tracer.NewNetns(t)
	cfg := churn.DefaultConfig()
	cfg.Output, cfg.Interval, cfg.Metrics, cfg.MetricsDests, cfg.BuildVersion = "json", 100*time.Millisecond, "127.0.0.1:0", 3, "9.9.9-test"
	cfg.Backend = tracer.Backend(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	u := runExporter(t, cfg.Backend, func(ctx context.Context, stdout, stderr io.Writer) error {
		return churn.Run(ctx, cfg, stdout, stderr)
	}).url
	svc := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", exporterPort))
	var fds []int
	ns.Run(t, func() {
		fds = append(fds, tracer.ListenTCP(t, svc))
		for range 5 {
			fd := tracer.NewSocket(t, tracer.TCP4)
			fds = append(fds, fd)
			if err := unix.Connect(fd, tracer.Sockaddr(svc)); err != nil {
				t.Fatal(err)
			}
		}
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	want := fmt.Sprintf(`porttrace_ephemeral_destination_allocations_total{destination=%q,netns="%d",proto="tcp"} 5`, svc, ns.Inode)
	var body string
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(body, want); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, /metrics lacks %s:\n%s", want, body)
		}
		body = string(promtest.Get(t, nil, u))
	}
	for _, bad := range []string{"per_second", "allocations_rate"} {
		if strings.Contains(body, bad) {
			t.Errorf("/metrics has a rate (%s):\n%s", bad, body)
		}
	}
	if !strings.Contains(body, `version="9.9.9-test"} 1`) {
		t.Errorf("/metrics lacks porttrace_build_info:\n%s", body)
	}
	promtest.CheckMetrics(t, []byte(body))
}

// A real Prometheus server scrapes the stream's /metrics, and its API
// then answers for porttrace_build_info and porttrace_events_total.
func TestExporterPrometheusScrape(t *testing.T) {
	ns := tracer.NewNetns(t)
	cfg := stream.DefaultConfig()
	cfg.Output, cfg.Metrics, cfg.BuildVersion = "json", "127.0.0.1:0", "9.9.9-test"
	cfg.PID = uint32(os.Getpid())
	cfg.Events = tracer.KindsOf(event.KindBind)
	cfg.Backend = tracer.Backend(t)
	if err := cfg.Ports.Set(strconv.Itoa(exporterPort)); err != nil {
		t.Fatal(err)
	}
	u := runExporter(t, cfg.Backend, func(ctx context.Context, stdout, stderr io.Writer) error {
		return stream.Run(ctx, cfg, stdout, stderr)
	}).url
	bindTwice(t, ns)
	target, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	prom := promtest.StartPrometheus(t, target.Host)
	for _, tc := range []struct {
		expr   string
		labels map[string]string
	}{
		{`up{job="porttrace"} == 1`, nil},
		{`porttrace_build_info{version="9.9.9-test"}`, map[string]string{"goversion": "", "backend": ""}},
		{`porttrace_events_total{event="bind",result="failed",errno="EADDRINUSE"} == 1`, nil},
		{`porttrace_events_total{event="bind",result="ok"} == 1`, nil},
	} {
		got, err := prom.WaitFor(tc.expr, 30*time.Second)
		if err != nil {
			t.Fatalf("Prometheus scraping %s: %v", u, err)
		}
		for name := range tc.labels {
			if got[0].Labels[name] == "" {
				t.Errorf("%s: no %s label in %v", tc.expr, name, got[0].Labels)
			}
		}
	}
}
