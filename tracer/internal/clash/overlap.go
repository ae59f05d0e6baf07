package clash

import "net/netip"

// overlap reports whether binds of one protocol and port to a and to b
// want the same address, as the kernel's inet_rcv_saddr_equal decides
// (net/ipv4/inet_connection_sock.c): equal addresses, or a wildcard of
// the other's family. An IPv4-mapped address (::ffff:a.b.c.d, and
// ::ffff:0.0.0.0 for the IPv4 wildcard) counts as the IPv4 address it
// maps. IPv6 meets IPv4 only through an IPv6 wildcard that is not
// V6ONLY: :: takes every IPv4 address, and 0.0.0.0 takes ::, but not ::1
// or any other IPv6 address. The v6only flags matter only for ::.
func overlap(a netip.Addr, aV6Only bool, b netip.Addr, bV6Only bool) bool {
	a, b = a.WithZone("").Unmap(), b.WithZone("").Unmap()
	switch {
	case a.Is4() == b.Is4():
		return a == b || a.IsUnspecified() || b.IsUnspecified()
	case a.Is6():
		return a.IsUnspecified() && !aV6Only
	default:
		return b.IsUnspecified() && !bV6Only
	}
}
