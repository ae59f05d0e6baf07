// Package clash names what stood in the way of a bind(2) that failed with
// EADDRINUSE: the sockets that hold the address and port it asked for,
// the processes that hold them, and the options that decide whether two
// binds may share a port.
//
// The lookup runs right after the failed bind, against the sockets as
// they are then: it is best effort. A holder that closed meanwhile is
// simply absent, one whose process went away has no PID, and one that
// appeared since is listed though it came too late to be the cause.
package clash

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// Holder is one socket that holds the address and port a bind asked for:
// what an event reports of it (its State as ss names it: LISTEN, ESTAB,
// TIME-WAIT, ...; UNCONN for a UDP socket or a bound-only TCP one; its
// Local as the socket's family has it, [::]:80 for a dual-stack listener;
// PID 0 for TIME-WAIT, or a process gone; SockOpts as the socket has them
// now, where a process holds it and porttrace may look), and what the
// lookup itself needs.
type Holder struct {
	event.Holder
	Inode     uint32 // 0 for a TIME-WAIT socket, which no process holds
	OtherPIDs []int  // further processes holding the same socket (a forking server's workers), ascending
}

// MaxHolders bounds what one lookup returns and reads: a busy server's
// port is held by its listener and by every connection it accepted. Find
// keeps those that say most: listeners and unconnected sockets first,
// then connections, then TIME-WAIT.
const MaxHolders = 64

// Find lists the sockets that clash with a bind of proto (TCP or UDP) to
// local in the network namespace whose inode is ns (0: the caller's own,
// see netns.Self). The family is local's; v6only is the binding socket's
// IPV6_V6ONLY, which matters for a bind to ::. A socket clashes when it
// has the same protocol and local port and its address overlaps local's
// (see overlap); every state that keeps a port counts (LISTEN, ESTAB,
// TIME-WAIT, ...; a TCP socket only bound, from Linux 6.10, which older
// kernels do not dump). Both families are dumped, since a dual-stack IPv6
// socket on :: holds the port on every IPv4 address too. The options need
// Linux 5.6 (pidfd_getfd); without it a holder has HasSockOpts false, not
// an error. A port of 0 (the kernel's choice, which fails only when the
// range is used up) has no holder to name. Entering another namespace
// needs CAP_SYS_ADMIN.
func Find(ns uint32, proto uint16, local netip.AddrPort, v6only bool) ([]Holder, error) {
	if local.Port() == 0 {
		return nil, nil
	}
	nsFD, ns, err := openNetns(ns)
	if err != nil {
		return nil, err
	}
	defer unix.Close(nsFD)
	var socks []sockdiag.Socket
	err = netns.Do(nsFD, func() error {
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			list, err := sockdiag.DumpPort(family, proto, sockdiag.PortStates, local.Port())
			if err != nil {
				return err
			}
			socks = append(socks, list...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns %d: %w", ns, err)
	}
	// sock_diag tells IPV6_V6ONLY of every socket that can be on :: (in
	// LISTEN or CLOSE; a connected one has a source address instead), the
	// only address where it matters.
	socks = slices.DeleteFunc(socks, func(ds sockdiag.Socket) bool {
		return ds.Local.Port() != local.Port() || !overlap(local.Addr(), v6only, ds.Local.Addr(), ds.V6Only)
	})
	slices.SortFunc(socks, func(a, b sockdiag.Socket) int {
		return cmp.Or(cmp.Compare(rank(proto, a), rank(proto, b)), a.Local.Compare(b.Local),
			a.Remote.Compare(b.Remote), cmp.Compare(a.Inode, b.Inode))
	})
	socks = socks[:min(len(socks), MaxHolders)]

	owners, err := socketOwners(ns, socks)
	if err != nil {
		return nil, err
	}
	var holders []Holder
	for _, ds := range socks {
		h := Holder{Holder: event.Holder{Proto: proto, Local: ds.Local, Remote: ds.Remote, State: ds.StateName(proto)}, Inode: ds.Inode}
		describe(&h, ds.Family, owners[ds.Inode])
		holders = append(holders, h)
	}
	return holders, nil
}

// rank orders holders by what a reader wants first: what listens or is
// bound, then connections, then TIME-WAIT, which no process holds.
func rank(proto uint16, ds sockdiag.Socket) int {
	switch ds.StateName(proto) {
	case "LISTEN", "UNCONN":
		return 0
	case "TIME-WAIT":
		return 2
	}
	return 1
}

// openNetns opens the namespace ns, or the caller's own for 0 (see
// netns.Self), and says its inode.
func openNetns(ns uint32) (int, uint32, error) {
	if self := netns.Self(); ns == 0 || ns == self {
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, 0, fmt.Errorf("opening porttrace's own netns: %w", err)
		}
		return fd, self, nil
	}
	_, fd, ok := netns.Search(ns)
	if !ok {
		return -1, 0, fmt.Errorf("network namespace %d: no process or mount holds it", ns)
	}
	return fd, ns, nil
}

// socketOwners finds the processes that hold socks, by inode. It reads
// the fds of the processes living in namespace ns first, one readlink of
// /proc/PID/ns/net each to pass over the others; only when a socket's
// holder is not among them (a socket made by a thread that entered ns
// from elsewhere, as container runtimes do, or one
// passed over a unix socket) are the fds of the other processes read, for
// those sockets alone.
func socketOwners(ns uint32, socks []sockdiag.Socket) (map[uint32][]proc.SocketFD, error) {
	want := map[uint32]bool{}
	for _, ds := range socks {
		if ds.Inode != 0 {
			want[ds.Inode] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	others := map[int]bool{}
	wanted := func(inode uint32) bool { return want[inode] }
	here, err := proc.SocketOwners(func(pid int) bool {
		if inode, err := proc.NetnsOf(pid); err == nil && inode == ns {
			return true
		}
		others[pid] = true
		return false
	}, wanted)
	if err != nil {
		return nil, err
	}
	owners := map[uint32][]proc.SocketFD{}
	for inode := range want {
		if fds, ok := here.ByInode[inode]; ok {
			owners[inode] = fds
			delete(want, inode)
		}
	}
	if len(want) == 0 {
		return owners, nil
	}
	there, err := proc.SocketOwners(func(pid int) bool { return others[pid] }, wanted)
	if err != nil {
		return nil, err
	}
	for inode := range want {
		if fds, ok := there.ByInode[inode]; ok {
			owners[inode] = fds
		}
	}
	return owners, nil
}

// describe fills in who holds h from the fds that refer to it: the first
// process still there, its comm and, read through its fd, the socket's
// options.
func describe(h *Holder, family uint8, fds []proc.SocketFD) {
	for i, f := range fds {
		opts, boundIf, err := sockOpts(f.PID, f.FD, h.Inode, family)
		if errors.Is(err, errGone) {
			continue
		}
		h.PID = f.PID
		h.Comm = proc.ReadFacts("/proc", uint32(f.PID), proc.FactComm).Comm
		h.SockOpts, h.BoundIf, h.HasSockOpts = opts, boundIf, err == nil
		for _, o := range fds[i+1:] {
			if o.PID != h.PID && !slices.Contains(h.OtherPIDs, o.PID) {
				h.OtherPIDs = append(h.OtherPIDs, o.PID)
			}
		}
		slices.Sort(h.OtherPIDs)
		return
	}
}
