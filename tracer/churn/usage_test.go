package churn

import (
	"net/netip"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// add counts the sockets of the range as ss lists them, each port once,
// and which ports no new connection may share: a TCP listener's or
// unconnected socket's, any UDP socket's.
func TestUsageAdd(t *testing.T) {
	u := newPortUsage()
	u.Range = [2]uint16{40000, 40009}
	peer := netip.MustParseAddrPort("10.0.0.9:443")
	mapped := netip.MustParseAddrPort("[::ffff:10.0.0.9]:443")
	for _, s := range []struct {
		proto uint16
		sock  sockdiag.Socket
	}{
		{event.ProtoTCP, sockdiag.Socket{State: 1, Local: netip.MustParseAddrPort("10.0.0.5:40000"), Remote: peer}},
		{event.ProtoTCP, sockdiag.Socket{State: 1, Local: netip.MustParseAddrPort("[::ffff:10.0.0.5]:40000"), Remote: mapped}}, // the same port, shared
		{event.ProtoTCP, sockdiag.Socket{State: sockdiag.TCPTimeWait, Local: netip.MustParseAddrPort("10.0.0.5:40001"), Remote: peer}},
		{event.ProtoTCP, sockdiag.Socket{State: sockdiag.TCPListen, Local: netip.MustParseAddrPort("0.0.0.0:40002")}},
		{event.ProtoTCP, sockdiag.Socket{State: 7, Local: netip.MustParseAddrPort("10.0.0.5:40009")}}, // bound, not connected: the range's top
		{event.ProtoUDP, sockdiag.Socket{State: 1, Local: netip.MustParseAddrPort("10.0.0.5:40003"), Remote: netip.MustParseAddrPort("10.0.0.9:53")}},
		{event.ProtoUDP, sockdiag.Socket{State: 7, Local: netip.MustParseAddrPort("0.0.0.0:40000")}},                  // UDP's own port space
		{event.ProtoTCP, sockdiag.Socket{State: sockdiag.TCPListen, Local: netip.MustParseAddrPort("0.0.0.0:39999")}}, // below the range
		{event.ProtoTCP, sockdiag.Socket{State: 1, Local: netip.MustParseAddrPort("10.0.0.5:40010"), Remote: peer}},   // above it
	} {
		u.add(&s.sock, s.proto)
	}
	tcpPeer := tracer.Dest{Proto: event.ProtoTCP, Remote: peer}
	udpPeer := tracer.Dest{Proto: event.ProtoUDP, Remote: netip.MustParseAddrPort("10.0.0.9:53")}
	if u.Sockets != 7 || u.InUse != 5 || u.TimeWait != 1 {
		t.Errorf("sockets %d, ports in use %d, TIME_WAIT %d; want 7, 5 and 1", u.Sockets, u.InUse, u.TimeWait)
	}
	if u.ByDest[tcpPeer] != 3 || u.ByDest[udpPeer] != 1 || len(u.ByDest) != 2 {
		t.Errorf("by destination %v, want 3 to %s and 1 to %s", u.ByDest, tcpPeer, udpPeer)
	}
	if tcp, udp := u.Exclusive(event.ProtoTCP), u.Exclusive(event.ProtoUDP); tcp != 2 || udp != 2 {
		t.Errorf("exclusive ports: tcp %d, udp %d; want 2 and 2", tcp, udp)
	}
	if u.Size() != 10 || u.Headroom(tcpPeer) != 10-2-3 || u.NewHeadroom(event.ProtoUDP) != 8 {
		t.Errorf("size %d, headroom to %s %d, new UDP headroom %d; want 10, 5 and 8", u.Size(), tcpPeer, u.Headroom(tcpPeer), u.NewHeadroom(event.ProtoUDP))
	}
}

// The range less its reserved ports is what the kernel may hand out;
// headroom is never negative; a protocol with no sockets has none
// exclusive.
func TestUsageSize(t *testing.T) {
	u := usageOf(1000, 1099, 0, 0, nil)
	u.Reserved = 10
	if u.Size() != 90 {
		t.Errorf("size %d, want 90", u.Size())
	}
	full := usageOf(1000, 1009, 10, 0, map[tracer.Dest]int{{Proto: event.ProtoTCP}: 5})
	if h := full.Headroom(tracer.Dest{Proto: event.ProtoTCP}); h != 0 {
		t.Errorf("headroom %d, want 0", h)
	}
	full.Reserved = 3
	if h := full.NewHeadroom(event.ProtoTCP); h != 0 {
		t.Errorf("new headroom %d, want 0", h)
	}
	if n := (&PortUsage{}).Exclusive(event.ProtoTCP); n != 0 {
		t.Errorf("exclusive of nothing: %d", n)
	}
}

func TestPortBits(t *testing.T) {
	var b portBits
	for _, tc := range []struct {
		port uint16
		new  bool
	}{{0, true}, {63, true}, {64, true}, {65535, true}, {63, false}, {0, false}, {1, true}} {
		if got := b.add(tc.port); got != tc.new {
			t.Errorf("add(%d) = %t, want %t", tc.port, got, tc.new)
		}
	}
	if b.count() != 5 {
		t.Errorf("count %d, want 5", b.count())
	}
}

// A namespace is at risk with a twentieth of its range or less left, for
// some destination or for a new one.
func TestAtRisk(t *testing.T) {
	d := tracer.Dest{Proto: event.ProtoTCP, Remote: netip.MustParseAddrPort("10.0.0.9:443")}
	for _, tc := range []struct {
		name string
		u    *PortUsage
		want bool
	}{
		{"empty", usageOf(1000, 1099, 0, 0, nil), false},
		{"tcp exclusive to 95", usageOf(1000, 1099, 95, 0, nil), true},
		{"tcp exclusive to 94", usageOf(1000, 1099, 94, 0, nil), false},
		{"udp exclusive to 95", usageOf(1000, 1099, 0, 95, nil), true},
		{"one destination to 95", usageOf(1000, 1099, 0, 0, map[tracer.Dest]int{d: 95}), true},
		{"one destination to 94", usageOf(1000, 1099, 0, 0, map[tracer.Dest]int{d: 94}), false},
	} {
		if got := atRiskOf(tc.u); got != tc.want {
			t.Errorf("%s: at risk %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestETA(t *testing.T) {
	for _, tc := range []struct {
		headroom int
		rate     float64
		want     time.Duration
	}{
		{0, 5, 0}, {-1, 5, 0}, {0, 0, 0}, {10, 0, -1}, {10, -2, -1}, {10, 2, 5 * time.Second}, {1, 4, 250 * time.Millisecond},
	} {
		if got := eta(tc.headroom, tc.rate); got != tc.want {
			t.Errorf("eta(%d, %g) = %v, want %v", tc.headroom, tc.rate, got, tc.want)
		}
	}
	for _, tc := range []struct{ a, b, want time.Duration }{
		{-1, -1, -1}, {-1, 3, 3}, {3, -1, 3}, {0, 3, 0}, {3, 0, 0}, {5, 3, 3}, {3, 5, 3},
	} {
		if got := sooner(tc.a, tc.b); got != tc.want {
			t.Errorf("sooner(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// Growth is over the last growthWindow of samples (one that old is kept):
// older ones are dropped, but the newest always stays.
func TestGrow(t *testing.T) {
	m := map[int][]usageSample{}
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		at    time.Duration
		inUse int
		want  float64
	}{
		{0, 100, 0},                 // one sample: no growth yet
		{0, 120, 0},                 // none over no time
		{5 * time.Second, 150, 10},  // from the first: +50 in 5s
		{10 * time.Second, 250, 15}, // the first exactly a window old, still in it: +150 in 10s
		{11 * time.Second, 210, 10}, // the two at 0s dropped: from 150 at 5s, +60 in 6s
		{40 * time.Second, 130, 0},  // all dropped but the newest
	} {
		if got := grow(m, 1, t0.Add(tc.at), tc.inUse); got != tc.want {
			t.Errorf("at %v with %d: growth %g/s, want %g", tc.at, tc.inUse, got, tc.want)
		}
	}
}
