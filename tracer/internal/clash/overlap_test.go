package clash

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		a       string
		aV6Only bool
		b       string
		bV6Only bool
		want    bool
	}{
		{"127.0.0.1", false, "127.0.0.1", false, true},
		{"127.0.0.1", false, "127.0.0.2", false, false},
		{"127.0.0.1", false, "0.0.0.0", false, true},
		{"0.0.0.0", false, "10.1.2.3", false, true},
		{"::1", false, "::1", true, true},
		{"::1", false, "::2", false, false},
		{"::", true, "::1", true, true}, // V6ONLY keeps IPv4 out, not IPv6
		{"fe80::1%eth0", false, "fe80::1", false, true},
		// IPv6 meets IPv4 through a dual-stack :: only.
		{"::", false, "127.0.0.1", false, true},
		{"127.0.0.1", false, "::", false, true},
		{"::", true, "127.0.0.1", false, false},
		{"0.0.0.0", false, "::", false, true},
		{"0.0.0.0", false, "::", true, false},
		{"0.0.0.0", false, "::1", false, false},
		{"127.0.0.1", false, "::1", false, false},
		// An IPv4-mapped address is the IPv4 address.
		{"::ffff:127.0.0.1", false, "127.0.0.1", false, true},
		{"::ffff:127.0.0.1", false, "0.0.0.0", false, true},
		{"::ffff:127.0.0.1", false, "127.0.0.2", false, false},
		{"::ffff:0.0.0.0", false, "127.0.0.1", false, true},
		{"::ffff:0.0.0.0", false, "::ffff:127.0.0.2", false, true},
		{"::ffff:0.0.0.0", false, "::", false, true},
		{"::ffff:0.0.0.0", false, "::", true, false},
		{"::ffff:0.0.0.0", false, "::1", false, false},
	} {
		a, b := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
		if got := overlap(a, tc.aV6Only, b, tc.bV6Only); got != tc.want {
			t.Errorf("overlap(%s v6only=%t, %s v6only=%t) = %t, want %t", a, tc.aV6Only, b, tc.bV6Only, got, tc.want)
		}
		if got := overlap(b, tc.bV6Only, a, tc.aV6Only); got != tc.want {
			t.Errorf("overlap(%s v6only=%t, %s v6only=%t) = %t, want %t", b, tc.bV6Only, a, tc.aV6Only, got, tc.want)
		}
	}
}

// overlap says what the kernel does: for every pair of addresses (and
// v6only where it applies) the second of two binds without options to one
// port fails with EADDRINUSE exactly when overlap says they overlap.
func TestOverlapAgreesWithKernel(t *testing.T) {
	ns := newNetns(t)
	type end struct {
		addr   string
		v6only bool
	}
	ends := []end{{"0.0.0.0", false}, {"127.0.0.1", false}, {"127.0.0.2", false},
		{"::ffff:0.0.0.0", false}, {"::ffff:127.0.0.1", false}, {"::ffff:127.0.0.2", false}}
	for _, a := range []string{"::", "::1"} {
		ends = append(ends, end{a, false}, end{a, true})
	}
	port := 6000
	for _, typ := range []int{tcp, udp} {
		for _, held := range ends {
			for _, bind := range ends {
				port++
				s := func(e end) sock {
					s := sock{typ: typ, addr: netip.AddrPortFrom(netip.MustParseAddr(e.addr), uint16(port)).String(), listen: typ == tcp}
					if e.v6only {
						s.opts = event.OptV6Only
					}
					return s
				}
				fd := ns.open(t, s(held))
				err := ns.bind(s(bind))
				unix.Close(fd)
				if err != nil && !errors.Is(err, unix.EADDRINUSE) {
					t.Fatalf("bind %+v: %v", s(bind), err)
				}
				kernel := err != nil
				got := overlap(netip.MustParseAddr(bind.addr), bind.v6only, netip.MustParseAddr(held.addr), held.v6only)
				if got != kernel {
					t.Errorf("%s: %s after %s: overlap says %t, the kernel %v", protoOf(typ), fmt.Sprint(bind), fmt.Sprint(held), got, err)
				}
			}
		}
	}
}

func protoOf(typ int) string { return event.ProtoName(sock{typ: typ}.proto()) }
