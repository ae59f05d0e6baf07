package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Holder is a process holding a socket open.
type Holder struct {
	PID, PPID, UID uint32
	User           string
	Comm           string
	Exe            string
	ExeDeleted     bool
	Cgroup         string
	Start          time.Time
	FD             int
}

// Socket is one socket that exists now, with the processes that hold it
// and what an operator wants to know about it.
type Socket struct {
	Netns      uint32
	Proto      uint16
	Family     uint16
	State      string // LISTEN, ESTAB, TIME-WAIT, ... for TCP; UNCONN or ESTAB for UDP
	Local      netip.AddrPort
	Remote     netip.AddrPort // invalid when not connected
	Inode      uint32
	Holders    []Holder
	PortClass  PortClass // of the local port
	Privileged bool      // the local port needs CAP_NET_BIND_SERVICE in its netns
	Ephemeral  bool      // the local port lies in its netns's ip_local_port_range
	Scope      string    // who can reach a listener: all interfaces, loopback only, one address
	Direction  Direction // of a connected TCP socket, as an operator infers it
	Suspicious []string  // why a listener deserves a look
}

// Listening reports whether s waits for peers: a TCP listener or an
// unconnected UDP socket.
func (s *Socket) Listening() bool {
	return s.State == "LISTEN" || (s.Proto == ProtoUDP && !s.Remote.IsValid())
}

// SnapshotOptions choose what Snapshot lists.
type SnapshotOptions struct {
	All   bool     // every socket, not only listeners
	Netns []string // namespace files (/proc/PID/ns/net, /run/netns/NAME), or "all"; none: porttrace's own
}

var tcpStates = [...]string{1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
	6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW-SYN-RECV"}

// Snapshot lists the TCP and UDP sockets of the chosen namespaces, through
// sock_diag, joined to their processes by socket inode.
func Snapshot(o SnapshotOptions) ([]Socket, error) {
	nsFiles, err := namespaceFiles(o.Netns)
	if err != nil {
		return nil, err
	}
	holders, err := socketHolders()
	if err != nil {
		return nil, err
	}
	var all []Socket
	seen := map[uint32]bool{}
	for _, path := range nsFiles {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening netns %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, err
		}
		inode := uint32(st.Ino)
		if seen[inode] {
			unix.Close(fd)
			continue
		}
		seen[inode] = true
		var socks []Socket
		err = inNetns(fd, func() (err error) {
			socks, err = snapshotHere(inode, o.All, holders)
			return err
		})
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("netns %s: %w", path, err)
		}
		all = append(all, socks...)
	}
	return all, nil
}

// namespaceFiles resolves --netns: none means porttrace's own namespace;
// "all" every namespace a process lives in or /run/netns names.
func namespaceFiles(spec []string) ([]string, error) {
	if len(spec) == 0 {
		return []string{"/proc/self/ns/net"}, nil
	}
	if len(spec) == 1 && spec[0] == "all" {
		files := []string{"/proc/self/ns/net"}
		for _, pattern := range []string{"/run/netns/*", "/proc/[0-9]*/ns/net"} {
			m, _ := filepath.Glob(pattern)
			files = append(files, m...)
		}
		return files, nil
	}
	for _, p := range spec {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("--netns %s: %w", p, err)
		}
	}
	return spec, nil
}

// netnsFilter returns the inodes of the namespaces --netns names, or nil
// for "all": the live parts of ports and who report events from these only.
func netnsFilter(spec []string) (map[uint32]bool, error) {
	if len(spec) == 1 && spec[0] == "all" {
		return nil, nil
	}
	files, err := namespaceFiles(spec)
	if err != nil {
		return nil, err
	}
	set := map[uint32]bool{}
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			return nil, fmt.Errorf("--netns %s: %w", f, err)
		}
		set[uint32(st.Ino)] = true
	}
	return set, nil
}

// socketHolders maps socket inodes to the processes holding them, from
// /proc/PID/fd.
func socketHolders() (map[uint32][]Holder, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	en := newEnricher()
	out := map[uint32][]Holder{}
	for _, p := range procs {
		fds, err := p.FileDescriptors()
		if err != nil {
			continue // gone, or a kernel thread
		}
		var h *Holder
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.PID, fd))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(target[len("socket:["):], "]"), 10, 32)
			if err != nil {
				continue
			}
			if h == nil {
				h = describe(p, en)
			}
			hh := *h
			hh.FD = int(fd)
			out[uint32(inode)] = append(out[uint32(inode)], hh)
		}
	}
	return out, nil
}

func describe(p procfs.Proc, en *enricher) *Holder {
	h := &Holder{PID: uint32(p.PID)}
	h.Comm, _ = p.Comm()
	if exe, err := p.Executable(); err == nil {
		h.Exe, h.ExeDeleted = strings.CutSuffix(exe, " (deleted)")
	}
	if st, err := p.Stat(); err == nil {
		h.PPID = uint32(st.PPID)
		if start, err := st.StartTime(); err == nil {
			h.Start = time.Unix(0, int64(start*1e9))
		}
	}
	if status, err := p.NewStatus(); err == nil {
		h.UID = uint32(status.UIDs[1]) // effective
	}
	h.User = en.user(h.UID)
	if cgs, err := p.Cgroups(); err == nil {
		for _, cg := range cgs {
			if cg.HierarchyID == 0 {
				h.Cgroup = cg.Path
			}
		}
	}
	return h
}

// snapshotHere lists the sockets of the calling thread's namespace.
func snapshotHere(netns uint32, all bool, holders map[uint32][]Holder) ([]Socket, error) {
	rng, unpriv, err := portSysctls()
	if err != nil {
		return nil, err
	}
	var socks []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint16{ProtoTCP, ProtoUDP} {
			var list []*netlink.Socket
			if proto == ProtoTCP {
				list, err = netlink.SocketDiagTCP(family)
			} else {
				list, err = netlink.SocketDiagUDP(family)
			}
			if errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("sock_diag has no %s handler (module not loaded?): %w", ProtoName(proto), err)
			}
			if err != nil {
				return nil, fmt.Errorf("sock_diag %s: %w", ProtoName(proto), err)
			}
			for _, ns := range list {
				socks = append(socks, socketFrom(netns, uint16(family), proto, ns, holders))
			}
		}
	}
	// A connected socket on a port this host listens on is the server side.
	listening := map[[2]uint16]bool{}
	for _, s := range socks {
		if s.State == "LISTEN" {
			listening[[2]uint16{s.Proto, s.Local.Port()}] = true
		}
	}
	out := socks[:0]
	for _, s := range socks {
		s.Ephemeral = InRange(s.Local.Port(), rng)
		s.Privileged = Privileged(s.Local.Port(), unpriv)
		if s.Listening() {
			s.Scope = scope(s.Local.Addr())
			s.Suspicious = suspicious(&s)
		} else if s.Proto == ProtoTCP && s.Remote.IsValid() {
			switch {
			case listening[[2]uint16{s.Proto, s.Local.Port()}]:
				s.Direction = DirInbound
			case s.Ephemeral && !InRange(s.Remote.Port(), rng):
				s.Direction = DirOutbound
			case !s.Ephemeral && InRange(s.Remote.Port(), rng):
				s.Direction = DirInbound
			}
		}
		if all || s.Listening() {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Local.Port(), b.Local.Port()),
			a.Local.Addr().Compare(b.Local.Addr()), a.Remote.Compare(b.Remote))
	})
	return out, nil
}

func socketFrom(netns uint32, family, proto uint16, ns *netlink.Socket, holders map[uint32][]Holder) Socket {
	addr := func(ip []byte, port uint16) netip.AddrPort {
		a, _ := netip.AddrFromSlice(ip)
		if family == unix.AF_INET {
			a = a.Unmap()
		}
		return netip.AddrPortFrom(a, port)
	}
	s := Socket{
		Netns: netns, Proto: proto, Family: family, Inode: ns.INode,
		Local:   addr(ns.ID.Source, ns.ID.SourcePort),
		Holders: holders[ns.INode],
	}
	if ns.ID.DestinationPort != 0 {
		s.Remote = addr(ns.ID.Destination, ns.ID.DestinationPort)
	}
	s.PortClass = ClassOf(s.Local.Port())
	switch {
	case proto == ProtoUDP && s.Remote.IsValid():
		s.State = "ESTAB"
	case proto == ProtoUDP:
		s.State = "UNCONN"
	case int(ns.State) < len(tcpStates):
		s.State = tcpStates[ns.State]
	}
	return s
}

// portSysctls reads the calling thread's namespace's ephemeral range and
// unprivileged port threshold.
func portSysctls() (rng [2]uint16, unpriv uint32, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return rng, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return rng, 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	lo, _ := strconv.ParseUint(f[0], 10, 16)
	hi, _ := strconv.ParseUint(f[1], 10, 16)
	b, err = os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return rng, 0, err
	}
	u, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return rng, 0, fmt.Errorf("ip_unprivileged_port_start: %q", b)
	}
	return [2]uint16{uint16(lo), uint16(hi)}, uint32(u), nil
}

// scope says who can reach a socket bound to a.
func scope(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "all interfaces"
	case a.IsLoopback():
		return "loopback only"
	}
	return "only " + a.String()
}

// Programs that have no business listening in their usual role: a shell,
// an interpreter, a relay. A listener held by one is how a backdoor looks.
var unusualListeners = map[string]bool{
	"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "ash": true, "busybox": true,
	"nc": true, "ncat": true, "netcat": true, "nc.openbsd": true, "nc.traditional": true, "socat": true,
	"python": true, "python2": true, "python3": true, "perl": true, "ruby": true, "php": true, "lua": true,
}

func suspicious(s *Socket) []string {
	var why []string
	if len(s.Holders) == 0 {
		why = append(why, "no live process holds it")
	}
	for _, h := range s.Holders {
		if h.ExeDeleted {
			why = append(why, fmt.Sprintf("executable deleted: %s (pid %d)", h.Exe, h.PID))
		}
		base := strings.TrimRightFunc(h.Comm, func(r rune) bool { return r == '.' || (r >= '0' && r <= '9') })
		if unusualListeners[h.Comm] || unusualListeners[base] {
			why = append(why, fmt.Sprintf("%s (pid %d) is a shell or interpreter listening", h.Comm, h.PID))
		}
	}
	return slices.Compact(why)
}
