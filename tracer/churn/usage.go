package churn

import (
	"math/bits"
	"net/netip"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// PortUsage is what holds the ephemeral range of one network namespace now.
//
// TCP and UDP each have their own ports. A TCP port that connect()
// picked can be picked again towards another destination, so TCP runs
// out per destination: of the ports no connection may share (those of
// listeners and of sockets bound by bind()), and of those already used
// towards that destination. A UDP socket holds its port alone, connected
// or not (autobind picks a port no UDP socket has), so UDP runs out for
// every destination at once.
type PortUsage struct {
	Range    [2]uint16 // net.ipv4.ip_local_port_range
	Reserved int       // ports of the range in net.ipv4.ip_local_reserved_ports
	InUse    int       // ports of the range some socket holds, each counted once however many share it
	Sockets  int       // sockets holding a port of the range, TIME_WAIT included (what ss lists)
	TimeWait int
	ByDest   map[tracer.Dest]int // sockets in the range connected to each destination

	used      portBits
	exclusive map[uint16]*portBits // by protocol: ports no new connection can share
}

// portBits is a set of ports.
type portBits [65536 / 64]uint64

func (b *portBits) add(port uint16) bool {
	w, bit := &b[port/64], uint64(1)<<(port%64)
	had := *w&bit != 0
	*w |= bit
	return !had
}

func (b *portBits) count() (n int) {
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

func newPortUsage() *PortUsage {
	return &PortUsage{ByDest: map[tracer.Dest]int{}, exclusive: map[uint16]*portBits{event.ProtoTCP: {}, event.ProtoUDP: {}}}
}

// Size is the number of ports the kernel may hand out.
func (u *PortUsage) Size() int { return int(u.Range[1]) - int(u.Range[0]) + 1 - u.Reserved }

// Exclusive is the number of ports of proto that no new connection can
// take: TCP listeners and bound sockets, any UDP socket.
func (u *PortUsage) Exclusive(proto uint16) int {
	if b := u.exclusive[proto]; b != nil {
		return b.count()
	}
	return 0
}

// Headroom is how many more connections to d can get a local port.
func (u *PortUsage) Headroom(d tracer.Dest) int {
	used := u.Exclusive(d.Proto)
	if d.Proto == event.ProtoTCP {
		used += u.ByDest[d]
	}
	return max(0, u.Size()-used)
}

// NewHeadroom is how many connections of proto to a destination not yet
// used can get a local port.
func (u *PortUsage) NewHeadroom(proto uint16) int { return max(0, u.Size()-u.Exclusive(proto)) }

func (u *PortUsage) add(s *sockdiag.Socket, proto uint16) {
	port := s.Local.Port()
	if port < u.Range[0] || port > u.Range[1] {
		return
	}
	u.Sockets++
	if u.used.add(port) {
		u.InUse++
	}
	connected := s.Remote.IsValid()
	if proto == event.ProtoTCP && s.State == sockdiag.TCPTimeWait {
		u.TimeWait++
	}
	if proto == event.ProtoUDP || (proto == event.ProtoTCP && s.State == sockdiag.TCPListen) || !connected {
		u.exclusive[proto].add(port)
	}
	if connected {
		u.ByDest[tracer.Dest{Proto: proto, Remote: netip.AddrPortFrom(s.Remote.Addr().Unmap(), s.Remote.Port())}]++
	}
}
