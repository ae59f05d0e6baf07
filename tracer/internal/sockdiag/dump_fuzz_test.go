package sockdiag

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FuzzParseDiagMsg feeds parseDiagMsg any sock_diag message: short ones,
// attributes whose lengths run past the message or fall short of their
// header, and any family, state and addresses. It never panics (a read
// past the message would); a message shorter than struct inet_diag_msg,
// or with an attribute whose length does not fit, is an error.
func FuzzParseDiagMsg(f *testing.F) {
	msg := func(family, state uint8, sport, dport uint16, src, dst netip.Addr, inode uint32, attrs ...byte) []byte {
		b := make([]byte, sizeofInetDiagMsg)
		b[0], b[1] = family, state
		binary.BigEndian.PutUint16(b[4:], sport)
		binary.BigEndian.PutUint16(b[6:], dport)
		copy(b[8:24], src.AsSlice())
		copy(b[24:40], dst.AsSlice())
		binary.NativeEndian.PutUint32(b[68:], inode)
		return append(b, attrs...)
	}
	v6only := []byte{5, 0, netlink.INET_DIAG_SKV6ONLY, 0, 1, 0, 0, 0}
	any6, lo4 := netip.IPv6Unspecified(), netip.MustParseAddr("127.0.0.1")
	f.Add(msg(unix.AF_INET6, 10, 22, 0, any6, any6, 7, v6only...))
	f.Add(msg(unix.AF_INET6, 10, 22, 0, any6, any6, 7, v6only[:5]...)) // the last attribute unpadded
	f.Add(msg(unix.AF_INET, 1, 40312, 25, lo4, lo4, 10))
	f.Add(msg(unix.AF_INET, 7, 53, 0, lo4, lo4, 11, 8, 0, 1, 0, 0, 0, 0, 0, 4, 0, 2, 0))
	f.Add(make([]byte, sizeofInetDiagMsg-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := parseDiagMsg(b)
		if len(b) < sizeofInetDiagMsg {
			if err == nil {
				t.Fatalf("a message of %d bytes parsed", len(b))
			}
			return
		}
		if err != nil {
			if !attrsBad(b[sizeofInetDiagMsg:]) {
				t.Fatalf("%v, but the attributes fit", err)
			}
			return
		}
		if attrsBad(b[sizeofInetDiagMsg:]) {
			t.Fatalf("attributes whose lengths do not fit parsed: % x", b[sizeofInetDiagMsg:])
		}
		if ds.Family != b[0] || ds.State != b[1] || ds.Inode != binary.NativeEndian.Uint32(b[68:]) {
			t.Fatalf("family %d, state %d, inode %d from % x", ds.Family, ds.State, ds.Inode, b[:sizeofInetDiagMsg])
		}
		if ds.Local.Port() != binary.BigEndian.Uint16(b[4:]) || ds.Remote.IsValid() != (binary.BigEndian.Uint16(b[6:]) != 0) {
			t.Fatalf("local %s, remote %s from % x", ds.Local, ds.Remote, b[:sizeofInetDiagMsg])
		}
	})
}

// attrsBad reports whether a chain of netlink attributes has one whose
// length is shorter than its header or runs past b; the last one's
// padding may be left off.
func attrsBad(b []byte) bool {
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b))
		if n < 4 || n > len(b) {
			return true
		}
		b = b[min(len(b), (n+3)&^3):]
	}
	return len(b) != 0
}
