package churn

import (
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
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

// ReadUsage reads the ephemeral range and the sockets holding it in the
// network namespace open at nsFd, through sock_diag netlink.
func ReadUsage(nsFd int) (*PortUsage, error) {
	var u *PortUsage
	err := netns.Do(nsFd, func() (err error) {
		u, err = readUsageHere()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, netns.AdminHint(err))
	}
	return u, nil
}

func readUsageHere() (*PortUsage, error) {
	u := newPortUsage()
	rng, err := netns.LocalPortRange()
	if err != nil {
		return nil, err
	}
	u.Range = rng
	lo, hi := rng[0], rng[1]
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); err == nil {
		var reserved tracer.PortSet
		if s := strings.TrimSpace(string(b)); s != "" {
			if err := reserved.Set(s); err != nil {
				return nil, fmt.Errorf("ip_local_reserved_ports: %w", err)
			}
		}
		for p := int(lo); p <= int(hi); p++ {
			if reserved.Has(uint16(p)) {
				u.Reserved++
			}
		}
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
			list, err := sockdiag.Dump(family, proto, sockdiag.AllStates)
			if err != nil {
				return nil, err
			}
			for i := range list {
				u.add(&list[i], proto)
			}
		}
	}
	return u, nil
}

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
