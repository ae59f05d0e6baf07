package stream

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

func TestShortDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{85 * time.Microsecond, "85us"},
		{999 * time.Microsecond, "999us"},
		{time.Millisecond, "1.0ms"},
		{1240 * time.Microsecond, "1.2ms"},
		{9900 * time.Microsecond, "9.9ms"},
		{10 * time.Millisecond, "10ms"},
		{52 * time.Millisecond, "52ms"},
		{999 * time.Millisecond, "999ms"},
		{time.Second, "1.0s"},
		{3 * time.Second, "3.0s"},
		{9900 * time.Millisecond, "9.9s"},
		{10 * time.Second, "10s"},
		{127 * time.Second, "127s"},
	} {
		if got := ShortDuration(tc.d); got != tc.want {
			t.Errorf("ShortDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// An address is written as ss -n writes it; longer than max, its port
// goes on a line of its own.
func TestHostPort(t *testing.T) {
	v6 := netip.MustParseAddrPort("[2001:db8::1]:443") // "[2001:db8::1]:443", 17 bytes
	for _, tc := range []struct {
		ap   netip.AddrPort
		max  int
		want string
	}{
		{netip.AddrPort{}, 0, ""},
		{netip.MustParseAddrPort("10.0.0.1:80"), 0, "10.0.0.1:80"},
		{netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), 0, "10.0.0.1:80"},
		{netip.MustParseAddrPort("[::]:22"), 0, "[::]:22"},
		{v6, 0, "[2001:db8::1]:443"},
		{v6, 17, "[2001:db8::1]:443"},
		{v6, 16, "[2001:db8::1]\n:443"},
		{netip.MustParseAddrPort("10.0.0.1:80"), 5, "10.0.0.1\n:80"},
	} {
		if got := hostPort(tc.ap, tc.max); got != tc.want {
			t.Errorf("hostPort(%s, %d) = %q, want %q", tc.ap, tc.max, got, tc.want)
		}
	}
}

func TestResultAndKindWords(t *testing.T) {
	for _, tc := range []struct {
		ev   event.Event
		want string
	}{
		{event.Event{Result: event.ResultOK}, "ok"},
		{event.Event{Result: event.ResultInProgress, Errno: unix.EINPROGRESS}, "pending"},
		{event.Event{Result: event.ResultDenied, Errno: unix.EACCES}, "EACCES"},
		{event.Event{Result: event.ResultFailed, Errno: unix.ECONNREFUSED, HasLatency: true, Latency: 85 * time.Microsecond}, "ECONNREFUSED 85us"},
		{event.Event{Result: event.ResultOK, HasLatency: true, Latency: 3 * time.Second}, "ok 3.0s"},
	} {
		if got := resultWord(&tc.ev); got != tc.want {
			t.Errorf("resultWord(%+v) = %q, want %q", tc.ev, got, tc.want)
		}
	}
	for k, want := range map[event.Kind]string{event.KindConnectDone: "done", event.KindConnect: "connect", event.KindBind: "bind"} {
		if got := kindWord(k); got != want {
			t.Errorf("kindWord(%s) = %q, want %q", k, got, want)
		}
	}
}

// Colour marks denials red and failures yellow, and only with colour on.
func TestPaint(t *testing.T) {
	on, off := &TableWriter{color: true}, &TableWriter{}
	for _, tc := range []struct {
		tw   *TableWriter
		r    event.Result
		want string
	}{
		{on, event.ResultDenied, "\x1b[1;31mx\x1b[0m"},
		{on, event.ResultFailed, "\x1b[1;33mx\x1b[0m"},
		{on, event.ResultOK, "x"},
		{on, event.ResultInProgress, "x"},
		{off, event.ResultDenied, "x"},
		{off, event.ResultFailed, "x"},
	} {
		if got := tc.tw.paint(&event.Event{Result: tc.r}, "x"); got != tc.want {
			t.Errorf("color %t, %s: %q, want %q", tc.tw.color, tc.r, got, tc.want)
		}
	}
}

// The lines under an event say what the row's columns do not.
func TestNotes(t *testing.T) {
	denied := event.Event{Result: event.ResultDenied, Errno: unix.EACCES, User: "nobody", Reason: "port 80 is below 1024"}
	for _, tc := range []struct {
		name              string
		hasResult, hasUse bool
		ev                event.Event
		want              []string
	}{
		{"ok: none", false, false, event.Event{Result: event.ResultOK, User: "root"}, nil},
		{"in progress: none", false, false, event.Event{Result: event.ResultInProgress, Errno: unix.EINPROGRESS, Reason: "the handshake goes on"}, nil},
		{"no RESULT, no USER", false, false, denied, []string{"EACCES (user nobody): port 80 is below 1024"}},
		{"no RESULT, USER", false, true, denied, []string{"EACCES: port 80 is below 1024"}},
		{"RESULT", true, false, denied, []string{"port 80 is below 1024"}},
		{"no user, no reason", false, false, event.Event{Result: event.ResultFailed, Errno: unix.EADDRNOTAVAIL}, []string{"EADDRNOTAVAIL"}},
		{"user escaped", false, false, event.Event{Result: event.ResultFailed, Errno: unix.EINVAL, User: "a\x1bb"}, []string{`EINVAL (user a\x1bb)`}},
		{"deleted", false, false, event.Event{ExeDeleted: true, Exe: "/tmp/x\x07"}, []string{`! executable deleted: /tmp/x\x07`}},
		{"deleted, no exe", false, false, event.Event{ExeDeleted: true}, []string{"! executable deleted"}},
		{"holders", true, true, event.Event{Result: event.ResultFailed, Errno: unix.EADDRINUSE, Reason: "r", HasHolders: true,
			Holders: []event.Holder{{PID: 7, Comm: "nginx", State: "LISTEN"}}}, []string{"r", "held by nginx (pid 7), LISTEN"}},
	} {
		tw := &TableWriter{hasResult: tc.hasResult, hasUser: tc.hasUse}
		if got := tw.notes(&tc.ev); strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Into a pipe each event is one whole line: cells padded to their
// columns, a longer one pushing the rest along, no trailing spaces.
func TestTableIntoPipe(t *testing.T) {
	zone := textout.DisplayZone
	textout.DisplayZone = time.UTC
	t.Cleanup(func() { textout.DisplayZone = zone })
	var out strings.Builder
	tw, err := NewColumnsWriter(&out, 0, false, []string{"time", "event", "pid", "comm", "local", "remote", "netns", "errno", "latency"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 30, 5, 0, time.UTC)
	for _, ev := range []event.Event{
		{Time: at, Kind: event.KindBind, PID: 42, Comm: "nginx", Local: netip.MustParseAddrPort("[::]:80"), HasNet: true, Netns: 4026531840},
		{Time: at, Kind: event.KindConnectDone, PID: 7, Comm: "a-very-long-command", Result: event.ResultFailed, Errno: unix.ETIMEDOUT,
			Local: netip.MustParseAddrPort("[2001:db8::1234:5678]:40000"), Remote: netip.MustParseAddrPort("[2001:db8::9]:443"),
			HasLatency: true, Latency: 3 * time.Second},
	} {
		if err := tw.Write(&ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	want := "TIME     EVENT   PID     COMM            LOCAL                 REMOTE                NETNS      ERRNO         LATENCY\n" +
		"12:30:05 bind    42      nginx           [::]:80                                     4026531840\n" +
		"12:30:05 done    7       a-very-long-command [2001:db8::1234:5678]:40000 [2001:db8::9]:443                ETIMEDOUT     3.0s\n"
	if out.String() != want {
		t.Errorf("table\n%s\nwant\n%s", out.String(), want)
	}
}

// A terminal narrower than the default table gets the layout that fits
// 80 columns: no USER, DIR or RESULT.
func TestTableNarrowTerminal(t *testing.T) {
	full := sum(widthsOf(layoutColumns(defaultLayout)))
	for _, tc := range []struct {
		width  int
		narrow bool
	}{{0, false}, {full - 1, true}, {full, false}, {200, false}, {80, true}} {
		var out strings.Builder
		tw, err := NewTableWriter(&out, tc.width, false, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		header := strings.Fields(out.String())
		if narrow := !strings.Contains(out.String(), "USER"); narrow != tc.narrow || len(header) < 8 {
			t.Errorf("width %d: header %q, want narrow %t", tc.width, header, tc.narrow)
		}
	}
}

// CONTAINER goes after COMM, in a copy: the layouts stay as they are.
func TestLayouts(t *testing.T) {
	if got := strings.Join(WideLayout(true), ","); got != "time,event,pid,ppid,uid,user,comm,container,exe,cgroup,netns,proto,local,remote,dir,class,result" {
		t.Errorf("wide with containers: %s", got)
	}
	w := WideLayout(false)
	w[0] = "changed"
	if got := strings.Join(WideLayout(false), ","); got != "time,event,pid,ppid,uid,user,comm,exe,cgroup,netns,proto,local,remote,dir,class,result" {
		t.Errorf("wide: %s", got)
	}
	var out strings.Builder
	if _, err := NewTableWriter(&out, 0, false, true); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(out.String()), " "); got != "TIME EVENT PID USER COMM CONTAINER PROTO LOCAL REMOTE DIR CLASS RESULT" {
		t.Errorf("default with containers: %s", got)
	}
	if strings.Join(defaultLayout, ",") != "time,event,pid,user,comm,proto,local,remote,dir,class,result" {
		t.Errorf("the default layout changed: %v", defaultLayout)
	}
}

// On a terminal an address longer than its column (22, less the space
// after it) puts its port on a line of its own; into a pipe it never does.
func TestTableLongAddress(t *testing.T) {
	for _, tc := range []struct {
		width int
		local string
		split bool
	}{
		{0, "[2001:db8::1234:5678]:40000", false},
		{200, "[2001:db8::1234:5678]:40000", true},
		{200, "[2001:db8::1:2]:40000", false}, // 21: fits
		{200, "[2001:db8::1:23]:40000", true}, // 22: no room for the space
	} {
		ev := event.Event{Kind: event.KindConnect, Local: netip.MustParseAddrPort(tc.local)}
		var out strings.Builder
		tw, err := NewColumnsWriter(&out, tc.width, false, []string{"event", "local"})
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.Write(&ev); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(strings.TrimPrefix(tc.local, "["), "]:")
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		split := len(lines) == 3 && strings.HasSuffix(strings.TrimSpace(lines[1]), "["+host+"]") && strings.TrimSpace(lines[2]) == ":"+port
		whole := len(lines) == 2 && strings.HasSuffix(strings.TrimSpace(lines[1]), tc.local)
		if tc.split && !split || !tc.split && !whole {
			t.Errorf("width %d, %s: split %t, want %t:\n%s", tc.width, tc.local, split, tc.split, out.String())
		}
	}
}
