package event

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestClassOf(t *testing.T) {
	for _, tc := range []struct {
		port uint16
		want PortClass
	}{
		{0, ClassWellKnown}, {22, ClassWellKnown}, {1023, ClassWellKnown},
		{1024, ClassRegistered}, {3306, ClassRegistered}, {49151, ClassRegistered},
		{49152, ClassDynamic}, {65535, ClassDynamic},
	} {
		if got := ClassOf(tc.port); got != tc.want {
			t.Errorf("ClassOf(%d) = %s, want %s", tc.port, got, tc.want)
		}
	}
}

func TestPrivileged(t *testing.T) {
	for _, tc := range []struct {
		port        uint16
		unprivStart uint32
		want        bool
	}{
		{80, 1024, true},
		{1023, 1024, true},
		{1024, 1024, false},
		{0, 1024, false}, // port 0: the kernel chooses
		{80, 80, false},  // threshold lowered in this netns
		{1500, 2000, true},
		{22, 0, false}, // 0: nothing is privileged
	} {
		if got := Privileged(tc.port, tc.unprivStart); got != tc.want {
			t.Errorf("Privileged(%d, %d) = %t, want %t", tc.port, tc.unprivStart, got, tc.want)
		}
	}
}

func TestClassifyServicePort(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name      string
		ev        Event
		wantClass PortClass
		wantPriv  bool
	}{
		{"bind classifies the local port",
			Event{Kind: KindBind, Local: netip.AddrPortFrom(lo, 443), HasNet: true, UnprivPortStart: 1024}, ClassWellKnown, true},
		{"connect classifies the remote port",
			Event{Kind: KindConnect, Local: netip.AddrPortFrom(lo, 50000), Remote: netip.AddrPortFrom(lo, 25), HasNet: true, UnprivPortStart: 1024}, ClassWellKnown, true},
		{"accept classifies the local port",
			Event{Kind: KindAccept, Local: netip.AddrPortFrom(lo, 8080), Remote: netip.AddrPortFrom(lo, 50000), HasNet: true, UnprivPortStart: 1024}, ClassRegistered, false},
		{"unknown netns: privileged not claimed",
			Event{Kind: KindBind, Local: netip.AddrPortFrom(lo, 80)}, ClassWellKnown, false},
		{"no port known",
			Event{Kind: KindConnect, HasNet: true, UnprivPortStart: 1024}, ClassNone, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			Classify(&ev)
			if ev.PortClass != tc.wantClass || ev.Privileged != tc.wantPriv {
				t.Errorf("class %s privileged %t, want %s %t", ev.PortClass, ev.Privileged, tc.wantClass, tc.wantPriv)
			}
		})
	}
}

func TestReason(t *testing.T) {
	lo := netip.MustParseAddr("0.0.0.0")
	for _, tc := range []struct {
		name string
		ev   Event
		want string // substring
	}{
		{"ok has none", Event{Kind: KindBind}, ""},
		{"EACCES below the threshold",
			Event{Kind: KindBind, Errno: unix.EACCES, Local: netip.AddrPortFrom(lo, 80), HasNet: true, UnprivPortStart: 1024},
			"port 80 is below ip_unprivileged_port_start 1024 and the process lacks CAP_NET_BIND_SERVICE"},
		{"EACCES with the capability is something else",
			Event{Kind: KindBind, Errno: unix.EACCES, CapBind: true, Local: netip.AddrPortFrom(lo, 80), HasNet: true, UnprivPortStart: 1024},
			"permission denied"},
		{"EPERM is policy", Event{Kind: KindBind, Errno: unix.EPERM}, "policy"},
		{"EADDRINUSE", Event{Kind: KindBind, Errno: unix.EADDRINUSE}, "another socket holds"},
		{"listen's EADDRINUSE: autobind found no port", Event{Kind: KindListen, Errno: unix.EADDRINUSE}, "no free port to bind an unbound socket"},
		{"UDP connect out of ports",
			Event{Kind: KindConnect, Proto: ProtoUDP, Errno: unix.EAGAIN, HasNet: true, PortRange: [2]uint16{40000, 40001}},
			"no free local port in ip_local_port_range 40000-40001"},
		{"connect out of ports",
			Event{Kind: KindConnect, Errno: unix.EADDRNOTAVAIL, HasNet: true, PortRange: [2]uint16{40000, 40001}},
			"ip_local_port_range 40000-40001"},
		{"other errno in words", Event{Kind: KindBind, Errno: syscall.ENOTSOCK}, "socket operation on non-socket"},
		{"UDP's refusal in words", Event{Kind: KindConnect, Proto: ProtoUDP, Errno: syscall.ECONNREFUSED}, "connection refused"},
		{"TCP refused", Event{Kind: KindConnectDone, Proto: ProtoTCP, Errno: unix.ECONNREFUSED}, "the peer answered with a reset"},
		{"SYN timeout counts the SYNs",
			Event{Kind: KindConnectDone, Proto: ProtoTCP, Errno: unix.ETIMEDOUT, HasSynRetransmits: true, SynRetransmits: 1},
			"no answer to the SYN, sent 2 times"},
		{"host unreachable", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.EHOSTUNREACH}, "host is unreachable"},
		{"network unreachable", Event{Kind: KindConnectDone, Proto: ProtoTCP, Errno: unix.ENETUNREACH}, "network is unreachable"},
		{"closed first", Event{Kind: KindConnectDone, Proto: ProtoTCP, Errno: unix.ECANCELED}, "closed or disconnected by its owner"},
		{"in progress", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.EINPROGRESS, Result: ResultInProgress}, "connect_done tells"},
		{"EACCES above the threshold is something else",
			Event{Kind: KindBind, Errno: unix.EACCES, Local: netip.AddrPortFrom(lo, 8080), HasNet: true, UnprivPortStart: 1024},
			"permission denied"},
		{"a connect's EADDRINUSE is no bind's", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.EADDRINUSE}, "address already in use"},
		{"a bound connect's EADDRNOTAVAIL is its address",
			Event{Kind: KindConnect, Errno: unix.EADDRNOTAVAIL, Local: netip.AddrPortFrom(lo, 5000), HasNet: true}, "cannot assign requested address"},
		{"EADDRNOTAVAIL, namespace unknown", Event{Kind: KindConnect, Errno: unix.EADDRNOTAVAIL}, "cannot assign requested address"},
		{"a bind's EADDRNOTAVAIL", Event{Kind: KindBind, Errno: unix.EADDRNOTAVAIL, HasNet: true}, "cannot assign requested address"},
		{"UDP EAGAIN, namespace unknown", Event{Kind: KindConnect, Proto: ProtoUDP, Errno: unix.EAGAIN}, "resource temporarily unavailable"},
		{"TCP EAGAIN", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.EAGAIN, HasNet: true}, "resource temporarily unavailable"},
		{"UDP EAGAIN on a bind", Event{Kind: KindBind, Proto: ProtoUDP, Errno: unix.EAGAIN, HasNet: true}, "resource temporarily unavailable"},
		{"SYN timeout, retransmits unknown", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.ETIMEDOUT}, "no answer to the SYN"},
		{"reset", Event{Kind: KindConnectDone, Proto: ProtoTCP, Errno: unix.ECONNRESET}, "reset during the handshake"},
		{"a connect's other errno in words", Event{Kind: KindConnect, Proto: ProtoTCP, Errno: unix.ENOBUFS}, "no buffer space available"},
		{"a bind's ECONNREFUSED is no handshake's", Event{Kind: KindBind, Proto: ProtoTCP, Errno: unix.ECONNREFUSED}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			Classify(&ev)
			// A SYN count is said only when it is known.
			if tc.want == "" && ev.Reason != "" || !strings.Contains(ev.Reason, tc.want) ||
				strings.HasPrefix(tc.want, "no answer to the SYN") && strings.Contains(ev.Reason, "sent") != strings.Contains(tc.want, "sent") {
				t.Errorf("reason %q, want it to contain %q", ev.Reason, tc.want)
			}
		})
	}
}

// The ephemeral range is inclusive at both ends, as the sysctl is.
func TestInRange(t *testing.T) {
	r := [2]uint16{32768, 60999}
	for _, tc := range []struct {
		port uint16
		want bool
	}{{32767, false}, {32768, true}, {40000, true}, {60999, true}, {61000, false}} {
		if got := InRange(tc.port, r); got != tc.want {
			t.Errorf("InRange(%d, %v) = %t, want %t", tc.port, r, got, tc.want)
		}
	}
}
