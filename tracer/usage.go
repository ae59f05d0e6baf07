package tracer

import (
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// Dest is a destination of outbound connections: the kernel can reuse a
// local port towards different destinations, so the ephemeral range runs
// out per destination.
type Dest struct {
	Proto  uint16
	Remote netip.AddrPort
}

func (d Dest) String() string { return event.ProtoName(d.Proto) + " " + d.Remote.String() }

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
	ByDest   map[Dest]int // sockets in the range connected to each destination

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
	return &PortUsage{ByDest: map[Dest]int{}, exclusive: map[uint16]*portBits{event.ProtoTCP: {}, event.ProtoUDP: {}}}
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
func (u *PortUsage) Headroom(d Dest) int {
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
	err := inNamespace(nsFd, func() (err error) {
		u, err = readUsageHere()
		return err
	})
	return u, err
}

func readUsageHere() (*PortUsage, error) {
	u := newPortUsage()
	rng, err := localPortRange()
	if err != nil {
		return nil, err
	}
	u.Range = rng
	lo, hi := rng[0], rng[1]
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); err == nil {
		var reserved PortSet
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
		u.ByDest[Dest{proto, netip.AddrPortFrom(s.Remote.Addr().Unmap(), s.Remote.Port())}]++
	}
}

// netnsFinder finds a network namespace known by inode number, where the
// kernel events name only the inode: the host's, a named one (/run/netns),
// or one a process or thread lives in or holds open. It remembers the path
// that led there, not an open fd, so a namespace that is gone can go.
type netnsFinder struct {
	paths  map[uint32]string
	misses map[uint32]time.Time // a namespace not found is looked for again after missRetry
}

// missRetry spaces out the /proc walks for a namespace that is gone.
const missRetry = 10 * time.Second

func newNetnsFinder() *netnsFinder {
	return &netnsFinder{paths: map[uint32]string{}, misses: map[uint32]time.Time{}}
}

// open returns an fd of the namespace; the caller closes it.
func (f *netnsFinder) open(inode uint32) (int, error) {
	if path, ok := f.paths[inode]; ok {
		if fd, ok := openIfInode(path, inode); ok {
			return fd, nil
		}
		delete(f.paths, inode) // the process moved on or exited
	}
	if at, ok := f.misses[inode]; ok && time.Since(at) < missRetry {
		return -1, fmt.Errorf("network namespace %d: no process or mount holds it", inode)
	}
	path, fd, ok := search(inode)
	if !ok {
		f.misses[inode] = time.Now()
		return -1, fmt.Errorf("network namespace %d: no process or mount holds it", inode)
	}
	delete(f.misses, inode)
	f.paths[inode] = path
	return fd, nil
}

// all lists every network namespace a process lives in or /run/netns
// names, and remembers the way to each.
func (f *netnsFinder) all() []uint32 {
	var inodes []uint32
	seen := map[uint32]bool{}
	for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || seen[uint32(st.Ino)] {
				continue
			}
			ino := uint32(st.Ino)
			seen[ino] = true
			inodes = append(inodes, ino)
			if _, ok := f.paths[ino]; !ok {
				f.paths[ino] = p
			}
		}
	}
	return inodes
}

func search(inode uint32) (path string, fd int, ok bool) {
	candidates := []string{"/proc/self/ns/net"}
	for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net", "/proc/[0-9]*/task/[0-9]*/ns/net"} {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	for _, p := range candidates {
		if fd, ok := openIfInode(p, inode); ok {
			return p, fd, true
		}
	}
	// Held open by an fd only (a namespace with no process in it yet).
	links, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	want := fmt.Sprintf("net:[%d]", inode)
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && target == want {
			if fd, ok := openIfInode(l, inode); ok {
				return l, fd, true
			}
		}
	}
	return "", -1, false
}

// openIfInode opens path if it is the namespace inode; fstat after open, so
// the answer is about the fd returned.
func openIfInode(path string, inode uint32) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || uint32(st.Ino) != inode {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}

// hostNetns is the inode of porttrace's own network namespace.
func hostNetns() uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}
