package event

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{KindBind.String(), "bind"}, {KindConnectDone.String(), "connect_done"}, {Kind(0).String(), "kind(0)"},
		{Kind(6).String(), "kind(6)"}, {Kind(200).String(), "kind(200)"},
		{ResultOK.String(), "ok"}, {ResultDenied.String(), "denied"}, {ResultFailed.String(), "failed"},
		{ResultInProgress.String(), "in_progress"},
		{DirInbound.String(), "inbound"}, {DirOutbound.String(), "outbound"}, {DirNone.String(), ""},
		{BackendAuto.String(), "auto"}, {BackendKprobe.String(), "kprobe"}, {Backend(4).String(), "backend(4)"},
		{ProtoName(ProtoTCP), "tcp"}, {ProtoName(ProtoUDP), "udp"}, {ProtoName(ProtoMPTCP), "mptcp"},
		{ProtoName(0), ""}, {ProtoName(132), "proto(132)"},
		{FamilyName(unix.AF_INET), "ipv4"}, {FamilyName(unix.AF_INET6), "ipv6"}, {FamilyName(0), ""},
		{ClassWellKnown.String(), "well-known"}, {ClassRegistered.String(), "registered"},
		{ClassDynamic.String(), "dynamic"}, {ClassNone.String(), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

// Only the four events a user may ask for parse; connect_done comes with
// connect.
func TestParseKindBackend(t *testing.T) {
	for _, s := range []string{"bind", "listen", "connect", "accept"} {
		if k, err := ParseKind(s); err != nil || k.String() != s {
			t.Errorf("ParseKind(%q) = %v, %v", s, k, err)
		}
	}
	for _, s := range []string{"connect_done", "", "kind(0)", "Bind"} {
		if _, err := ParseKind(s); err == nil || !strings.Contains(err.Error(), "want bind, listen, connect or accept") {
			t.Errorf("ParseKind(%q): error %v", s, err)
		}
	}
	for _, s := range []string{"auto", "tracepoint", "fentry", "kprobe"} {
		if b, err := ParseBackend(s); err != nil || b.String() != s {
			t.Errorf("ParseBackend(%q) = %v, %v", s, b, err)
		}
	}
	if _, err := ParseBackend("ebpf"); err == nil {
		t.Error("ParseBackend(ebpf): no error")
	}
}

func TestResultFailed(t *testing.T) {
	for r, want := range map[Result]bool{ResultOK: false, ResultDenied: true, ResultFailed: true, ResultInProgress: false} {
		if r.Failed() != want {
			t.Errorf("%s.Failed() = %t", r, !want)
		}
	}
}

func TestErrnoName(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  string
	}{
		{0, ""}, {unix.EACCES, "EACCES"}, {unix.EOPNOTSUPP, "EOPNOTSUPP"}, {512, "ERESTARTSYS"},
		{516, "ERESTART_RESTARTBLOCK"}, {515, "errno515"}, {4000, "errno4000"},
	} {
		if got := (&Event{Errno: tc.errno}).ErrnoName(); got != tc.want {
			t.Errorf("errno %d: %q, want %q", int(tc.errno), got, tc.want)
		}
	}
}

// The family is the traffic's: an IPv4-mapped peer, or address when
// unconnected, is IPv4 on an IPv6 socket.
func TestAddrFamily(t *testing.T) {
	v4m, v6 := netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), netip.MustParseAddrPort("[::1]:80")
	for _, tc := range []struct {
		family        uint16
		local, remote netip.AddrPort
		want          string
	}{
		{unix.AF_INET6, v6, v4m, "ipv4"},
		{unix.AF_INET6, v4m, netip.AddrPort{}, "ipv4"},
		{unix.AF_INET6, v4m, v6, "ipv6"}, // the peer decides
		{unix.AF_INET6, v6, v6, "ipv6"},
		{unix.AF_INET, netip.AddrPort{}, netip.AddrPort{}, "ipv4"},
		{0, netip.AddrPort{}, netip.AddrPort{}, ""},
	} {
		if got := AddrFamily(tc.family, tc.local, tc.remote); got != tc.want {
			t.Errorf("AddrFamily(%d, %s, %s) = %q, want %q", tc.family, tc.local, tc.remote, got, tc.want)
		}
	}
}
