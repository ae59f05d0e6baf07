package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sock_diag's struct inet_diag_msg decodes into addresses, state, inode
// and the IPV6_V6ONLY attribute, which only IPv6 listeners carry.
func TestParseDiagMsg(t *testing.T) {
	msg := func(family, state uint8, sport, dport uint16, src, dst netip.Addr, inode uint32, attrs ...[]byte) []byte {
		b := make([]byte, sizeofInetDiagMsg)
		b[0], b[1] = family, state
		binary.BigEndian.PutUint16(b[4:], sport)
		binary.BigEndian.PutUint16(b[6:], dport)
		copy(b[8:24], src.AsSlice())
		copy(b[24:40], dst.AsSlice())
		binary.NativeEndian.PutUint32(b[68:], inode)
		for _, a := range attrs {
			b = append(b, a...)
		}
		return b
	}
	v6only := func(v byte) []byte { // struct nlattr, one byte, padded to 4
		a := []byte{5, 0, 0, 0, v, 0, 0, 0}
		binary.NativeEndian.PutUint16(a[2:], netlink.INET_DIAG_SKV6ONLY)
		return a
	}
	any6, lo4 := netip.IPv6Unspecified(), netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		b    []byte
		want string
	}{
		{msg(unix.AF_INET6, 10, 22, 0, any6, any6, 7, v6only(1)), "10 [::]:22 - ino=7 v6only=true/true"},
		{msg(unix.AF_INET6, 10, 3000, 0, any6, any6, 8, v6only(0)), "10 [::]:3000 - ino=8 v6only=false/true"},
		{msg(unix.AF_INET6, 1, 443, 50000, netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), 9), "1 [::1]:443 [::1]:50000 ino=9 v6only=false/false"},
		{msg(unix.AF_INET, 1, 40312, 25, lo4, lo4, 10), "1 127.0.0.1:40312 127.0.0.1:25 ino=10 v6only=false/false"},
	} {
		ds, err := parseDiagMsg(tc.b)
		got := fmt.Sprintf("%d %s %s ino=%d v6only=%t/%t", ds.State, ds.Local, remote(ds.Remote), ds.Inode, ds.V6Only, ds.HasV6Only)
		if err != nil || got != tc.want {
			t.Errorf("%s (%v), want %s", got, err, tc.want)
		}
	}
	if _, err := parseDiagMsg(make([]byte, 40)); err == nil {
		t.Error("a short message decoded")
	}
}

func remote(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "-"
	}
	return ap.String()
}
