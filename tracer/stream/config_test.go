package stream

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		check   func(*Config) bool
		wantErr string
	}{
		{args: nil, check: func(c *Config) bool {
			return c.Output == "table" && c.UID == -1 && c.Backend == event.BackendAuto && c.Events.String() == "bind,listen,connect,accept"
		}},
		{args: []string{"-o", "json", "-p", "80,443", "--pid", "42", "--uid", "0", "-e", "bind,accept", "--backend", "tracepoint"},
			check: func(c *Config) bool {
				return c.Output == "json" && c.Ports.Has(443) && c.PID == 42 && c.UID == 0 &&
					c.Events.String() == "bind,accept" && c.Backend == event.BackendTracepoint
			}},
		{args: []string{"-d", "1m30s", "-n", "10", "-4", "--tcp", "--failed"}, check: func(c *Config) bool {
			return c.Duration.Seconds() == 90 && c.Count == 10 && c.IPv4 && c.TCP && c.Failed
		}},
		{args: []string{"-o", "yaml"}, wantErr: `invalid --output "yaml"`},
		{args: []string{"--backend", "ebpf"}, wantErr: `unknown backend "ebpf"`},
		{args: []string{"-e", "close"}, wantErr: `unknown event "close"`},
		{args: []string{"-p", "99999"}, wantErr: `invalid port "99999"`},
		{args: []string{"--pid", "-1"}, wantErr: "invalid argument"},
		{args: []string{"--uid", "-2"}, wantErr: "want a user name or an id from 0 to 4294967294"},
		{args: []string{"--uid", "4294967295"}, wantErr: `4294967295 is the kernel's "no user"`},
		{args: []string{"--uid", "root"}, check: func(c *Config) bool { return c.UID == 0 }},
		{args: []string{"--uid", "4294967294"}, check: func(c *Config) bool { return c.UID == 4294967294 }},
		{args: []string{"--uid", "no-such-user-here"}, wantErr: `invalid --uid "no-such-user-here": no such user`},
		{args: []string{"-4", "-6"}, wantErr: "-4 and -6 together: leaving both out already means both families"},
		{args: []string{"--tcp", "--udp"}, wantErr: "--tcp and --udp together: leaving both out already means both protocols"},
		{args: []string{"-p", "0"}, wantErr: `invalid --port "0": want a port from 1 to 65535`},
		{args: []string{"-p", "80,0-10"}, wantErr: `invalid --port "0-10": want a port from 1 to 65535`},
		{args: []string{"-p", "1-65535"}, check: func(c *Config) bool { return c.Ports.Has(1) && c.Ports.Has(65535) && !c.Ports.Has(0) }},
		{args: []string{"-n", "0"}, wantErr: "want 1 or more events"},
		{args: []string{"-n", "99999999999999999999"}, wantErr: `invalid argument "99999999999999999999" for "-n, --count" flag: want 1 or more events, at most 18446744073709551615`},
		{args: []string{"-e", "bind,bind"}, wantErr: `event "bind" named twice`},
		{args: []string{"--cgroup", "/no/such/cgroup-here"}, wantErr: `invalid --cgroup "/no/such/cgroup-here": `},
		{args: []string{"--netns", "/no/such/netns-here"}, wantErr: `invalid --netns "/no/such/netns-here": no such file or directory`},
		{args: []string{"--netns", "all,/proc/1/ns/net"}, wantErr: "all is every namespace already"},
		{args: []string{"--netns", "all"}, check: func(c *Config) bool { return len(c.Netns) == 1 }},
		{args: nil, check: func(c *Config) bool { return c.Cgroups == nil }},
		{args: []string{"--metrics", "256.1.1.1:9000"}, wantErr: `invalid --metrics "256.1.1.1:9000": want HOST:PORT or :PORT`},
		{args: []string{"--metrics", "[::1]:0", "-v"}, check: func(c *Config) bool { return c.Metrics == "[::1]:0" && c.Verbose }},
		{args: []string{"-o", "none", "--metrics", ":9471"}, check: func(c *Config) bool { return c.Output == "none" }},
		{args: []string{"-o", "none"}, wantErr: "-o none prints no events: it needs --metrics to export them"},
		{args: []string{"-o", "wide"}, check: func(c *Config) bool { return c.Output == "wide" && c.Columns == nil }},
		{args: []string{"-o", "columns=time,PID,comm,errno"}, check: func(c *Config) bool {
			return strings.Join(c.Columns, ",") == "time,pid,comm,errno"
		}},
		{args: []string{"-o", "columns=time,bogus"}, wantErr: `invalid --output "columns=time,bogus": no column "bogus": want some of time,event,pid,`},
		{args: []string{"-o", "columns=pid,pid"}, wantErr: `column "pid" named twice`},
		{args: []string{"-o", "columns="}, wantErr: `an empty column name in ""`},
		{args: []string{"-o", "columns=pid,"}, wantErr: `an empty column name in "pid,"`},
		{args: []string{"--web.config.file", "/no/such/web.yml"}, wantErr: "--web.config.file needs --metrics"},
		{args: []string{"--metrics", ":9471", "--web.config.file", "/no/such/web.yml"},
			wantErr: `invalid --web.config.file "/no/such/web.yml": open /no/such/web.yml: no such file or directory`},
		{args: []string{"-d", "soon"}, wantErr: "invalid argument"},
		{args: []string{"-d", "-1s"}, wantErr: "invalid --duration -1s"},
		{args: []string{"--nope"}, wantErr: "unknown flag: --nope"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := DefaultConfig()
			fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			c.AddFlags(fs)
			err := fs.Parse(tc.args)
			if err == nil {
				err = c.Validate()
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(&c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestWants(t *testing.T) {
	base := event.Event{Kind: event.KindConnect, Result: event.ResultOK, Comm: "curl", Family: 2, Proto: event.ProtoTCP}
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		ev   func(*event.Event)
		want bool
	}{
		{"default takes all", func(*Config) {}, func(*event.Event) {}, true},
		{"--failed drops ok", func(c *Config) { c.Failed = true }, func(*event.Event) {}, false},
		{"--failed keeps denied", func(c *Config) { c.Failed = true }, func(e *event.Event) { e.Result = event.ResultDenied }, true},
		{"--failed drops a connect in progress", func(c *Config) { c.Failed = true },
			func(e *event.Event) { e.Result, e.Errno = event.ResultInProgress, unix.EINPROGRESS }, false},
		{"--failed keeps a failed outcome", func(c *Config) { c.Failed = true },
			func(e *event.Event) {
				e.Kind, e.Result, e.Errno = event.KindConnectDone, event.ResultFailed, unix.ETIMEDOUT
			}, true},
		{"--failed drops an outcome that is ok", func(c *Config) { c.Failed = true },
			func(e *event.Event) { e.Kind = event.KindConnectDone }, false},
		{"--events connect takes connect_done", func(c *Config) { c.Events = tracer.KindsOf(event.KindConnect) },
			func(e *event.Event) { e.Kind = event.KindConnectDone }, true},
		{"--events bind drops connect_done", func(c *Config) { c.Events = tracer.KindsOf(event.KindBind) },
			func(e *event.Event) { e.Kind = event.KindConnectDone }, false},
		{"--comm other", func(c *Config) { c.Comm = "nginx" }, func(*event.Event) {}, false},
		{"--comm longer than the kernel keeps", func(c *Config) { c.Comm = "my-long-service-name" },
			func(e *event.Event) { e.Comm = "my-long-service" }, true},
		{"--comm names the process, a worker thread calls", func(c *Config) { c.Comm = "python3" },
			func(e *event.Event) { e.PID, e.TID, e.Comm = 10, 11, "tokio-runtime-w" }, true},
		{"--comm names neither", func(c *Config) { c.Comm = "nginx" },
			func(e *event.Event) { e.PID, e.TID, e.Comm = 10, 11, "tokio-runtime-w" }, false},
		{"-4 keeps an IPv4 peer of a dual-stack socket", func(c *Config) { c.IPv4 = true }, func(e *event.Event) {
			e.Family, e.Local, e.Remote = 10, netip.MustParseAddrPort("[::ffff:127.0.0.1]:25"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000")
		}, true},
		{"-6 drops it", func(c *Config) { c.IPv6 = true }, func(e *event.Event) {
			e.Family, e.Local, e.Remote = 10, netip.MustParseAddrPort("[::ffff:127.0.0.1]:25"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000")
		}, false},
		{"-6 drops ipv4", func(c *Config) { c.IPv6 = true }, func(*event.Event) {}, false},
		{"-4 -6 keeps both", func(c *Config) { c.IPv4, c.IPv6 = true, true }, func(*event.Event) {}, true},
		{"--udp drops tcp", func(c *Config) { c.UDP = true }, func(*event.Event) {}, false},
		{"--tcp keeps mptcp", func(c *Config) { c.TCP = true }, func(e *event.Event) { e.Proto = event.ProtoMPTCP }, true},
		{"-e bind drops connect", func(c *Config) { _ = c.Events.Set("bind") }, func(*event.Event) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.cfg(&c)
			ev := base
			tc.ev(&ev)
			if got := c.Wants(&ev, fakeComms{10: "python3"}); got != tc.want {
				t.Errorf("Wants = %t, want %t", got, tc.want)
			}
		})
	}
}

// fakeComms names the main threads of processes by pid.
type fakeComms map[uint32]string

// porttrace accepting a scrape of its own /metrics is not an event of the
// stream it serves; another process, or another port, is.
func TestMetricsOwnAccept(t *testing.T) {
	m := NewMetrics()
	m.port = 19477
	self := uint32(os.Getpid())
	ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), m.port)
	for _, tc := range []struct {
		ev   event.Event
		want bool
	}{
		{event.Event{Kind: event.KindAccept, PID: self, Local: ap}, true},
		{event.Event{Kind: event.KindAccept, PID: self + 1, Local: ap}, false},
		{event.Event{Kind: event.KindAccept, PID: self, Local: netip.AddrPortFrom(ap.Addr(), m.port+1)}, false},
		{event.Event{Kind: event.KindBind, PID: self, Local: ap}, false},
	} {
		if got := m.ownAccept(&tc.ev); got != tc.want {
			t.Errorf("ownAccept(%s pid %d %s) = %t, want %t", tc.ev.Kind, tc.ev.PID, tc.ev.Local, got, tc.want)
		}
	}
}

// The stream's /metrics: events by kind, result and errno, how TCP connects
// ended (a connect in progress is no outcome; its connect_done is) and how
// long they took, and the events lost.
func TestStreamMetrics(t *testing.T) {
	m := NewMetrics()
	m.Event(&event.Event{Kind: event.KindBind, Result: event.ResultDenied, Errno: unix.EACCES})
	m.Event(&event.Event{Kind: event.KindBind, Result: event.ResultDenied, Errno: unix.EACCES})
	m.Event(&event.Event{Kind: event.KindConnect})
	m.Event(&event.Event{Kind: event.KindConnect, HasLatency: true, Latency: 800 * time.Microsecond})
	m.Event(&event.Event{Kind: event.KindConnect, Result: event.ResultInProgress, Errno: unix.EINPROGRESS})
	m.Event(&event.Event{Kind: event.KindConnectDone, Result: event.ResultFailed, Errno: unix.ETIMEDOUT, HasLatency: true, Latency: 3 * time.Second})
	m.Lost(3)
	m.SampledOut(40)
	m.SampledOut(90) // a total, not an increment
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fams {
		for _, mt := range f.Metric {
			var labels []string
			for _, lp := range mt.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			if h := mt.Histogram; h != nil {
				var le []string
				for _, b := range h.Bucket {
					if b.GetCumulativeCount() > 0 && b.GetCumulativeCount() == h.GetSampleCount() {
						le = append(le, fmt.Sprint(b.GetUpperBound()))
					}
				}
				got = append(got, fmt.Sprintf("%s{%s} count=%d sum=%v first bucket holding all: le=%s", f.GetName(),
					strings.Join(labels, ","), h.GetSampleCount(), h.GetSampleSum(), le[0]))
				continue
			}
			got = append(got, fmt.Sprintf("%s{%s} %v", f.GetName(), strings.Join(labels, ","), mt.Counter.GetValue()))
		}
	}
	want := []string{
		"porttrace_connect_latency_seconds{result=failed} count=1 sum=3 first bucket holding all: le=5",
		"porttrace_connect_latency_seconds{result=ok} count=1 sum=0.0008 first bucket holding all: le=0.001",
		"porttrace_connect_outcomes_total{errno=,result=ok} 1",
		"porttrace_connect_outcomes_total{errno=ETIMEDOUT,result=failed} 1",
		"porttrace_events_total{errno=,event=connect,result=ok} 2",
		"porttrace_events_total{errno=EACCES,event=bind,result=denied} 2",
		"porttrace_events_total{errno=EINPROGRESS,event=connect,result=in_progress} 1",
		"porttrace_events_total{errno=ETIMEDOUT,event=connect_done,result=failed} 1",
		"porttrace_lost_events_total{} 3",
		"porttrace_sampled_out_events_total{} 90",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func (f fakeComms) MainComm(ev *event.Event) string { return f[ev.PID] }
