package tracer_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/stream"
)

// The golden JSON files are what the writers print for the fixtures of
// every view: each line must follow the published schema of its command.
func TestSchemaGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		pick schematest.Pick
	}{
		{"events.jsonl", schematest.Stream},
		{"ports.jsonl", schematest.Ports},
		{"churn.jsonl", schematest.ChurnLines},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			schematest.CheckLines(t, tc.pick, b)
		})
	}
}

// Every kind of event and every optional field, as event.AppendJSON (the
// stream's JSON writer) prints it, and both lost lines, follow
// event.schema.json and lost.schema.json.
func TestSchemaEvents(t *testing.T) {
	var out []byte
	for _, ev := range append(tracer.DecodedEvents(), extraEvents()...) {
		out = event.AppendJSON(out, &ev)
	}
	out = stream.AppendLostJSON(out, 3, "")
	out = stream.AppendLostJSON(out, 1, event.KindConnectDone.String())
	counts := schematest.CheckLines(t, schematest.Stream, out)
	for _, k := range []string{"bind", "listen", "connect", "accept", "connect_done", "lost"} {
		if counts[k] == 0 {
			t.Errorf("no %s line among the samples", k)
		}
	}
	for _, field := range []string{`"exe_hex"`, `"cgroup_hex"`, `"bound_if"`, `"bound_ifindex"`, `"holders":[]`, `"pod_hex"`, `"image"`, `"lost_event"`} {
		if !strings.Contains(string(out), field) {
			t.Errorf("no sample has %s", field)
		}
	}
}

// extraEvents have what the decoded fixtures lack: text that is not
// UTF-8 in exe, cgroup and the runtime's names, an interface by name and
// by index, a bind whose holders were gone, and a denial by policy.
func extraEvents() []event.Event {
	base := event.Event{
		Time: time.Date(2026, 11, 28, 7, 0, 0, 1, time.UTC), Kind: event.KindBind, Backend: event.BackendFentry,
		PID: 10, TID: 11, PPID: 1, UID: 0, User: "root", Comm: "srv", Exe: "/opt/\xffsrv", Cgroup: "/kubepods/pod6d0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b/\xfe",
		CgroupID: 1 << 40, HasNet: true, Netns: 4026531840, UnprivPortStart: 1024, PortRange: [2]uint16{32768, 60999},
		Workload: workload.Identity{PodUID: "6d0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", ContainerID: strings.Repeat("ab", 32)},
		Names:    workload.Names{Container: "c\xff", Pod: "p\xfe", Namespace: "ns\xfd", Image: "img\xfc"},
		Inode:    77, Proto: event.ProtoTCP, Family: unix.AF_INET6, Local: netip.MustParseAddrPort("[2001:db8::1]:443"),
		HasSockOpts: true, SockOpts: event.OptReuseAddr | event.OptReusePort | event.OptFreebind | event.OptTransparent | event.OptBindNoPort | event.OptV6Only,
		BoundIfName: "eth\xff0",
	}
	byIndex := base
	byIndex.BoundIfName, byIndex.BoundIf = "", 3
	inUse := base
	inUse.Errno, inUse.HasHolders = unix.EADDRINUSE, true
	perm := base
	perm.Kind, perm.Errno, perm.HasSockOpts, perm.BoundIfName = event.KindListen, unix.EPERM, false, ""
	restarted := base
	restarted.Kind, restarted.Errno, restarted.Backend, restarted.HasSockOpts, restarted.BoundIfName = event.KindConnect, 512, event.BackendKprobe, false, ""
	restarted.Remote, restarted.Ephemeral, restarted.Direction = netip.MustParseAddrPort("[2001:db8::2]:80"), true, event.DirOutbound
	evs := []event.Event{base, byIndex, inUse, perm, restarted}
	for i := range evs {
		evs[i].Result = resultOf(&evs[i])
		event.Classify(&evs[i])
	}
	return evs
}

// resultOf is the result decode gives an errno.
func resultOf(ev *event.Event) event.Result {
	switch {
	case ev.Errno == 0:
		return event.ResultOK
	case ev.Errno == unix.EACCES || ev.Errno == unix.EPERM:
		return event.ResultDenied
	case ev.Kind == event.KindConnect && (ev.Errno == unix.EINPROGRESS || ev.Errno >= 512):
		return event.ResultInProgress
	}
	return event.ResultFailed
}

// The schemas are closed and typed: a field they do not name, a value of
// the wrong type, null in place of a field left out, or a field missing
// that is always there each make a line fail, so a new or changed field
// in a writer fails these tests until its schema says so.
func TestSchemaRejects(t *testing.T) {
	golden := func(file, has string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, has) {
				return line
			}
		}
		t.Fatalf("no line of %s has %s", file, has)
		return ""
	}
	bind := golden("events.jsonl", `"holders"`)
	plainListen := golden("events.jsonl", `"event":"listen"`)
	listen := strings.Replace(plainListen, `,"backend":"tracepoint"}`,
		`,"backend":"tracepoint","scope":"all interfaces","suspicious":[]}`, 1)
	okBind := golden("events.jsonl", `"sock_opts":["reuseaddr"]`)
	snapshot := golden("ports.jsonl", `"container":"api"`)
	churn := golden("churn.jsonl", `"usage_error"`)
	lost := `{"event":"lost","count":3,"lost_event":"connect_done"}`
	for _, tc := range []struct {
		name, schema, line, old, new string
	}{
		{"unknown field", schematest.Event, bind, `"pid":`, `"pidfd":3,"pid":`},
		{"unknown field of a holder", schematest.Event, bind, `{"state":"LISTEN"`, `{"state":"LISTEN","inode":5`},
		{"pid as a string", schematest.Event, bind, `"pid":9100`, `"pid":"9100"`},
		{"null for a field left out", schematest.Event, bind, `"comm":"nginx",`, `"comm":"nginx","exe":null,`},
		{"no backend", schematest.Event, bind, `,"backend":"tracepoint"`, ``},
		{"an unknown kind", schematest.Event, bind, `"event":"bind"`, `"event":"close"`},
		{"errno on a call that worked", schematest.Event, okBind, `"result":"ok"`, `"result":"ok","errno":"EAGAIN","reason":"x"`},
		{"a direction on a bind", schematest.Event, okBind, `"backend"`, `"direction":"inbound","backend"`},
		{"scope in the stream", schematest.Event, plainListen, `"backend":"tracepoint"`, `"backend":"tracepoint","scope":"all interfaces","suspicious":[]`},
		{"unknown field in a watch line", schematest.WatchEvent, listen, `"suspicious":[]`, `"suspicious":[],"state":"LISTEN"`},
		{"scope on a TCP bind", schematest.WatchEvent, okBind, `"backend":"tracepoint"`, `"backend":"tracepoint","scope":"all interfaces","suspicious":[]`},
		{"a listen in who --wait", schematest.WhoBind, okBind, `"event":"bind"`, `"event":"listen"`},
		{"start with nanoseconds", schematest.WhoBind, bind, `"backend":"tracepoint"`, `"backend":"tracepoint","start":"2026-11-28T06:00:00.000000000Z"`},
		{"unknown field of a lost line", schematest.Lost, lost, `"count":3`, `"count":3,"kind":"bind"`},
		{"count as a string", schematest.Lost, lost, `"count":3`, `"count":"3"`},
		{"unknown field of a socket", schematest.Socket, snapshot, `"state":"LISTEN"`, `"state":"LISTEN","uid":10001`},
		{"unknown field of a socket's holder", schematest.Socket, snapshot, `"fd":7`, `"fd":7,"tid":1`},
		{"a port as a string", schematest.Socket, snapshot, `"local_port":8080`, `"local_port":"8080"`},
		{"a time without nanoseconds", schematest.Socket, snapshot, `07:30:00.120000000Z`, `07:30:00Z`},
		{"no suspicious", schematest.Socket, snapshot, `,"suspicious":[]`, ``},
		{"unknown field of churn", schematest.Churn, churn, `"overflow":0`, `"overflow":0,"lost":0`},
		{"unknown field of a destination", schematest.Churn, churn, `"remote_port":8080,`, `"remote_port":8080,"netns":1,`},
		{"exhaustion as a string", schematest.Churn, churn, `"exhaustion_s":0.0`, `"exhaustion_s":"0"`},
		{"usage beside usage_error", schematest.Churn, churn, `"usage_error"`, `"in_use":3,"usage_error"`},
		{"a process without comm", schematest.Churn, churn, `"pid":4242,"comm":"loadgen",`, `"pid":4242,`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := schematest.Validate(tc.schema, []byte(tc.line)); err != nil {
				t.Fatalf("the line before the change fails already: %v\n%s", err, tc.line)
			}
			bad := strings.Replace(tc.line, tc.old, tc.new, 1)
			if bad == tc.line {
				t.Fatalf("%q is not in %s", tc.old, tc.line)
			}
			if err := schematest.Validate(tc.schema, []byte(bad)); err == nil {
				t.Errorf("%s.schema.json takes %s", tc.schema, bad)
			}
		})
	}
}
