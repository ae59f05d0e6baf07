package stream

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/clash"
)

// Only a bind that found its address in use is looked up; a crash loop's
// repeated failures reuse the answer; a lookup that fails is said once
// and the event goes without holders.
func TestHolderLookup(t *testing.T) {
	inUse := event.Event{Kind: event.KindBind, Errno: unix.EADDRINUSE, Proto: event.ProtoMPTCP, HasNet: true, Netns: 7,
		Local: netip.MustParseAddrPort("0.0.0.0:8080")}
	var calls []string
	var fail error
	var stderr strings.Builder
	h := newHolderLookup(&stderr)
	h.find = func(ns uint32, proto uint16, local netip.AddrPort, v6only bool) ([]clash.Holder, error) {
		calls = append(calls, event.ProtoName(proto)+" "+local.String())
		return []clash.Holder{{Holder: event.Holder{Proto: proto, Local: local, State: "LISTEN", PID: 812, Comm: "nginx"}}}, fail
	}
	for _, tc := range []struct {
		name      string
		ev        event.Event
		wantCalls int
		holders   bool
	}{
		{"a bind in use, MPTCP looked up as TCP", inUse, 1, true},
		{"the same again: the answer reused", inUse, 1, true},
		{"another errno", event.Event{Kind: event.KindBind, Errno: unix.EACCES, HasNet: true, Local: inUse.Local}, 1, false},
		{"a listen in use (no port to bind)", event.Event{Kind: event.KindListen, Errno: unix.EADDRINUSE, HasNet: true, Local: inUse.Local}, 1, false},
		{"port 0", event.Event{Kind: event.KindBind, Errno: unix.EADDRINUSE, HasNet: true, Local: netip.MustParseAddrPort("0.0.0.0:0")}, 1, false},
		{"no namespace known", event.Event{Kind: event.KindBind, Errno: unix.EADDRINUSE, Local: inUse.Local}, 1, false},
	} {
		ev := tc.ev
		h.fill(&ev)
		if len(calls) != tc.wantCalls || ev.HasHolders != tc.holders {
			t.Errorf("%s: %d lookups (%v), holders %t", tc.name, len(calls), calls, ev.HasHolders)
		}
	}
	if calls[0] != "tcp 0.0.0.0:8080" {
		t.Errorf("looked up %q", calls[0])
	}
	fail = errors.New("entering namespace 7: gone")
	for _, port := range []uint16{1, 2} {
		ev := inUse
		ev.Local = netip.AddrPortFrom(ev.Local.Addr(), port)
		h.fill(&ev)
		if ev.HasHolders {
			t.Error("holders from a lookup that failed")
		}
	}
	if n := strings.Count(stderr.String(), "\n"); n != 1 || !strings.Contains(stderr.String(), "gone") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}
