package ports

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// Every row of the sample snapshot, each of its listeners reported
// closed, and a socket whose holder's text is not UTF-8 follow
// socket.schema.json, as ports, who and --watch print them.
func TestSchemaSockets(t *testing.T) {
	socks := sampleSockets()
	odd := socks[2]
	h := odd.Holders[0]
	h.Comm, h.Exe, h.Cgroup, h.Start, h.FD = "k\xff", "/tmp/\xfe", "/docker/"+strings.Repeat("0f", 32)+"/\xfd", time.Time{}, -1
	h.Workload = workload.FromCgroup("/docker/" + strings.Repeat("0f", 32))
	h.Names = workload.Names{Container: "c\xff", Image: "i\xfe"}
	odd.Holders = []Holder{h, socks[1].Holders[0]}
	socks = append(socks, odd)
	var out []byte
	for i := range socks {
		out = AppendSocketJSON(out, EventSnapshot, sampleTime, &socks[i])
		if socks[i].Listening() {
			out = AppendSocketJSON(out, EventClosed, sampleTime, &socks[i])
		}
	}
	counts := schematest.CheckLines(t, schematest.Watch, out)
	if counts[EventSnapshot] != len(socks) || counts[EventClosed] == 0 {
		t.Errorf("lines by event: %v", counts)
	}
	for _, field := range []string{`"comm_hex"`, `"exe_hex"`, `"cgroup_hex"`, `"container_hex"`, `"image_hex"`, `"v6only"`, `"direction_inferred"`} {
		if !bytes.Contains(out, []byte(field)) {
			t.Errorf("no sample has %s", field)
		}
	}
}

// watchEvents are binds and listens as the tracer reports them to ports
// --watch: listeners (TCP and MPTCP listens, UDP binds, one to a port the
// kernel chose) and calls that make none (a TCP bind, a failed listen).
func watchEvents() []event.Event {
	base := event.Event{
		Time: time.Date(2026, 11, 28, 7, 0, 0, 0, time.UTC), Kind: event.KindListen, Backend: event.BackendTracepoint,
		PID: 1 << 30, TID: 1 << 30, PPID: 1, User: "root", Comm: "nc", Exe: "/usr/bin/nc.openbsd", ExeDeleted: true, CgroupID: 7,
		HasNet: true, Netns: 1, UnprivPortStart: 1024, PortRange: [2]uint16{32768, 60999}, Inode: 99,
		Proto: event.ProtoTCP, Family: unix.AF_INET, Local: netip.MustParseAddrPort("0.0.0.0:4444"),
	}
	v6 := base
	v6.Family, v6.Local, v6.Proto = unix.AF_INET6, netip.MustParseAddrPort("[::]:4445"), event.ProtoMPTCP
	udp := base
	udp.Kind, udp.Proto, udp.Local, udp.HasSockOpts = event.KindBind, event.ProtoUDP, netip.MustParseAddrPort("127.0.0.1:5353"), true
	udpClient := udp
	udpClient.Local, udpClient.Ephemeral = netip.MustParseAddrPort("127.0.0.1:40001"), true
	tcpBind := udp
	tcpBind.Proto = event.ProtoTCP
	failed := base
	failed.Errno, failed.Result, failed.Local = unix.EADDRINUSE, event.ResultFailed, netip.AddrPort{}
	evs := []event.Event{base, v6, udp, udpClient, tcpBind, failed}
	for i := range evs {
		event.Classify(&evs[i])
	}
	return evs
}

// What ports --watch -o json prints as the tracer reports binds and
// listens (watch-event.schema.json), and the listeners it then finds gone
// (socket.schema.json), through portsWatch itself.
func TestSchemaWatchLines(t *testing.T) {
	var buf bytes.Buffer
	cfg := DefaultConfig()
	cfg.Output = "json"
	w := &portsWatch{cfg: cfg, out: bufio.NewWriter(&buf), stderr: &bytes.Buffer{}, notice: &unopenedNotice{cmd: "ports"},
		known: map[listenerKey]Socket{}}
	for _, ev := range watchEvents() {
		w.event(&ev)
	}
	// None of these listeners is in this namespace: the next look finds
	// them all gone.
	if err := w.look(); err != nil {
		t.Logf("no look (%v): the closed lines go untested here", err)
	}
	if err := w.out.Flush(); err != nil {
		t.Fatal(err)
	}
	counts := schematest.CheckLines(t, schematest.Watch, buf.Bytes())
	if counts["bind"] != 3 || counts["listen"] != 3 {
		t.Errorf("lines by event: %v\n%s", counts, buf.Bytes())
	}
	if n := strings.Count(buf.String(), `"scope"`); n != 4+counts[EventClosed] {
		t.Errorf("%d lines with a scope, want the 4 listeners' and the closed lines':\n%s", n, buf.Bytes())
	}
}

// who --wait -o json prints the bind it waited for, and each that failed
// on the way, with the process's start where /proc tells it: this
// process's, and none for a pid that does not exist.
func TestSchemaWhoBind(t *testing.T) {
	evs := watchEvents()
	self := evs[4]
	self.PID, self.TID = uint32(os.Getpid()), uint32(os.Getpid())
	inUse := evs[4]
	inUse.Errno, inUse.Result, inUse.HasHolders = unix.EADDRINUSE, event.ResultFailed, true
	inUse.Holders = []event.Holder{{Proto: event.ProtoTCP, Local: inUse.Local, State: "LISTEN", PID: 3, Comm: "x\xff",
		HasSockOpts: true, SockOpts: event.OptReusePort, BoundIf: "lo"}}
	denied := evs[4]
	denied.Errno, denied.Result, denied.Local = unix.EACCES, event.ResultDenied, netip.MustParseAddrPort("0.0.0.0:80")
	var out bytes.Buffer
	for _, ev := range []event.Event{self, inUse, denied} {
		event.Classify(&ev)
		if err := writeWhoEvent(&out, "json", &ev, true); err != nil {
			t.Fatal(err)
		}
	}
	if counts := schematest.CheckLines(t, schematest.Who, out.Bytes()); counts["bind"] != 3 {
		t.Errorf("lines by event: %v", counts)
	}
	if n := strings.Count(out.String(), `"start"`); n != 1 {
		t.Errorf("%d lines with a start, want this process's alone:\n%s", n, out.Bytes())
	}
}

// who -o json writes one object, held or not: the free port's has empty
// holders and sockets; a held one lists each process once, without an fd.
func TestSchemaWho(t *testing.T) {
	socks := sampleSockets()
	twice := socks[0]
	twice.Holders = append([]Holder{}, socks[0].Holders...)
	for _, tc := range []struct {
		name        string
		held        bool
		sockets     []Socket
		wantHolders int
	}{
		{"free", false, nil, 0},
		{"held", true, socks, 0},
		{"one process, two sockets", true, []Socket{socks[0], twice}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendWhoJSON(nil, sampleTime, 8080, "tcp,udp", tc.held, tc.sockets)
			if counts := schematest.CheckLines(t, schematest.Who, out); counts["who"] != 1 {
				t.Errorf("lines by event: %v", counts)
			}
			var got struct {
				Held    bool             `json:"held"`
				Holders []map[string]any `json:"holders"`
				Sockets []map[string]any `json:"sockets"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			pids := map[any]bool{}
			for _, h := range got.Holders {
				if pids[h["pid"]] {
					t.Errorf("pid %v listed twice", h["pid"])
				}
				pids[h["pid"]] = true
				if _, ok := h["fd"]; ok {
					t.Errorf("a holder with an fd: %v", h)
				}
			}
			if got.Held != tc.held || got.Holders == nil || got.Sockets == nil || len(got.Sockets) != len(tc.sockets) {
				t.Errorf("%s", out)
			}
			if tc.wantHolders != 0 && len(got.Holders) != tc.wantHolders {
				t.Errorf("%d holders, want %d: %s", len(got.Holders), tc.wantHolders, out)
			}
		})
	}
}
