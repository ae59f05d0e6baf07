// Package sockdiag is porttrace's one reader of the kernel's socket
// tables: an inet_diag dump (NETLINK_SOCK_DIAG) of the calling thread's
// network namespace, with the IPV6_V6ONLY attribute that tells a
// dual-stack listener from an IPv6-only one. ports lists sockets with it,
// churn counts the ephemeral range with it.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// TCP states as sock_diag reports them (include/net/tcp_states.h).
const (
	TCPEstablished = 1
	TCPTimeWait    = 6
	TCPListen      = 10
)

var tcpStates = [...]string{1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
	6: "TIME-WAIT", 7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW-SYN-RECV"}

// StateName names a TCP state as ss does (ESTAB, TIME-WAIT, LISTEN, ...;
// UNCONN for TCP_CLOSE, a socket bound but neither listening nor
// connected).
func StateName(state uint8) string {
	if int(state) < len(tcpStates) {
		return tcpStates[state]
	}
	return ""
}

// Socket is one socket as sock_diag reports it: struct inet_diag_msg
// (include/uapi/linux/inet_diag.h) and the INET_DIAG_SKV6ONLY attribute,
// which netlink.SocketDiagTCP and SocketDiagUDP read past. Without it a
// dual-stack listener and an IPv6-only one look the same.
type Socket struct {
	Family    uint8
	State     uint8
	Local     netip.AddrPort
	Remote    netip.AddrPort // invalid when not connected
	Inode     uint32
	V6Only    bool
	HasV6Only bool
}

// StateName names the socket's state as ss does: a TCP state by its
// name, a UDP socket UNCONN or, connected, ESTAB.
func (s Socket) StateName(proto uint16) string {
	switch {
	case proto == event.ProtoUDP && s.Remote.IsValid():
		return "ESTAB"
	case proto == event.ProtoUDP:
		return "UNCONN"
	}
	return StateName(s.State)
}

const (
	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg
	AllStates           = 0xfff
	ListenStates        = 1<<10 | 1<<7 // TCP_LISTEN, and TCP_CLOSE: an unconnected UDP socket
	// PortStates are the states of every socket that keeps its port from
	// a bind: AllStates and TCP_BOUND_INACTIVE (13), the pseudo-state
	// that asks Linux 6.10+ for TCP sockets bound but neither listening
	// nor connected (reported as TCP_CLOSE). Older kernels ignore the bit
	// and cannot dump those.
	PortStates = AllStates | 1<<13
)

// Dump dumps the sockets of one family and protocol in the calling
// thread's network namespace whose states (bits 1<<TCP_*) are in states.
// No extension is asked for: the kernel sends INET_DIAG_SKV6ONLY unasked
// for every IPv6 socket in LISTEN or CLOSE, which is every IPv6 listener,
// TCP or UDP; a kernel older than the attribute leaves V6Only unknown, and
// ports says so.
func Dump(family uint8, proto uint16, states uint32) ([]Socket, error) {
	return DumpPort(family, proto, states, 0)
}

// DumpPort is Dump of the sockets whose local port is port (0: any). The
// kernel filters by port (struct inet_diag_sockid's sport) for listeners,
// connections, TIME-WAIT and UDP, but not for the bound-only TCP sockets
// of PortStates: the caller checks the port of what it gets.
func DumpPort(family uint8, proto uint16, states uint32, port uint16) ([]Socket, error) {
	req := make([]byte, sizeofInetDiagReqV2)
	req[0], req[1] = family, uint8(proto)
	binary.NativeEndian.PutUint32(req[4:], states)
	binary.BigEndian.PutUint16(req[8:], port) // id.idiag_sport
	for tries := 1; ; tries++ {
		nlReq := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		nlReq.AddRawData(req)
		var socks []Socket
		var parseErr error
		err := nlReq.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			ds, err := parseDiagMsg(msg)
			if err != nil {
				parseErr = err
				return false
			}
			socks = append(socks, ds)
			return true
		})
		switch {
		case errors.Is(err, nl.ErrDumpInterrupted) && tries < 3:
			continue // the tables changed under the dump: take it again
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("sock_diag has no %s handler (%s_diag module not loaded?): %w",
				event.ProtoName(proto), event.ProtoName(proto), err)
		case err != nil:
			return nil, fmt.Errorf("sock_diag %s: %w", event.ProtoName(proto), err)
		case parseErr != nil:
			return nil, parseErr
		}
		return socks, nil
	}
}

// parseDiagMsg decodes one struct inet_diag_msg and its attributes.
func parseDiagMsg(b []byte) (Socket, error) {
	if len(b) < sizeofInetDiagMsg {
		return Socket{}, fmt.Errorf("sock_diag message of %d bytes, want %d", len(b), sizeofInetDiagMsg)
	}
	ds := Socket{Family: b[0], State: b[1], Inode: binary.NativeEndian.Uint32(b[68:72])}
	addr := func(ip []byte, port []byte) netip.AddrPort {
		a := netip.AddrFrom16([16]byte(ip))
		if ds.Family == unix.AF_INET {
			a = netip.AddrFrom4([4]byte(ip[:4]))
		}
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
	}
	ds.Local = addr(b[8:24], b[4:6])
	if binary.BigEndian.Uint16(b[6:8]) != 0 {
		ds.Remote = addr(b[24:40], b[6:8])
	}
	var err error
	if ds.V6Only, ds.HasV6Only, err = v6Only(b[sizeofInetDiagMsg:]); err != nil {
		return Socket{}, fmt.Errorf("sock_diag attributes: %w", err)
	}
	return ds, nil
}

// v6Only reads INET_DIAG_SKV6ONLY from the attributes after struct
// inet_diag_msg: struct nlattr (length, type) and a value, each padded to
// 4 bytes, the last one's padding possibly left off. A length shorter
// than the header or past the message, or bytes too few for a header, is
// an error. (nl.ParseRouteAttr, used before, cut past the message, and
// panicked, when the last attribute had no padding.)
func v6Only(b []byte) (v6only, has bool, err error) {
	const hdr = 4 // sizeof(struct nlattr)
	for len(b) > 0 {
		if len(b) < hdr {
			return false, false, fmt.Errorf("%d bytes after the last attribute, too few for another", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b))
		if n < hdr || n > len(b) {
			return false, false, fmt.Errorf("an attribute of %d bytes with %d left", n, len(b))
		}
		if binary.NativeEndian.Uint16(b[2:]) == netlink.INET_DIAG_SKV6ONLY && n > hdr {
			v6only, has = b[hdr] != 0, true
		}
		b = b[min(len(b), (n+hdr-1)&^(hdr-1)):]
	}
	return v6only, has, nil
}
