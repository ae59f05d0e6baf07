// Package ports is `porttrace ports` and `porttrace who`: what holds
// every port now (sock_diag joined to the processes holding each socket
// by inode), what each socket means (its reach, direction, class, and why
// it deserves a look), and with --watch or --wait what changes, from the
// tracer's binds and listens.
package ports

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// Holder is a process holding a socket open.
type Holder struct {
	PID, PPID, UID uint32
	User           string
	Comm           string
	Exe            string
	ExeDeleted     bool
	Cgroup         string
	Workload       workload.Identity // what Cgroup names: container, pod
	Names          workload.Names    // the container's names, where its runtime told them
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
	V6Only     bool           // an IPv6 socket that takes no IPv4 (IPV6_V6ONLY): on :: it reaches IPv6 only
	HasV6Only  bool           // the kernel told V6Only: it does for IPv6 listeners, not for connections
	Inode      uint32
	Holders    []Holder
	PortClass  event.PortClass // of the service port (ServicePort)
	Privileged bool            // the service port needs CAP_NET_BIND_SERVICE in its netns
	Ephemeral  bool            // the local port lies in its netns's ip_local_port_range
	Scope      string          // who can reach a listener: all interfaces, loopback only, one address
	Direction  event.Direction // of a connected socket
	// DirInferred says Direction is a judgement from the ports, not
	// something the kernel or this host's listeners establish.
	DirInferred bool
	Suspicious  []string // why the socket deserves a look

	orphan string // why no holder is listed, for an owned socket with none
}

// Listening reports whether s waits for peers: a TCP listener or an
// unconnected UDP socket.
func (s *Socket) Listening() bool {
	return s.State == "LISTEN" || (s.Proto == event.ProtoUDP && !s.Remote.IsValid())
}

// ServicePort is the port that names the service, as in the event
// stream: the remote port of an outbound connection (a client of port 25
// is about mail, not about its ephemeral port), the local port otherwise.
func (s *Socket) ServicePort() uint16 {
	if s.Direction == event.DirOutbound {
		return s.Remote.Port()
	}
	return s.Local.Port()
}

// bothFamilies reports whether s is an IPv6 wildcard socket that takes
// IPv4 too (IPV6_V6ONLY off): one socket on every IPv4 and IPv6 address.
func (s *Socket) bothFamilies() bool {
	a := s.Local.Addr()
	return a.Is6() && a.IsUnspecified() && s.HasV6Only && !s.V6Only
}

// Owned reports whether a process still has s open (or has it in flight
// over a unix socket): false for what the kernel keeps of a connection
// after close, TIME-WAIT and orphaned FIN-WAIT sockets, which sock_diag
// reports with inode 0.
func (s *Socket) Owned() bool { return s.Inode != 0 }

// SnapshotOptions choose what Snapshot lists.
type SnapshotOptions struct {
	All   bool     // every socket, not only listeners
	Netns []string // namespace files (/proc/PID/ns/net, /run/netns/NAME), or "all"; none: porttrace's own
	Port  uint16   // only the sockets on this local port (0: any): who's question
}

// Unopened is a namespace --netns all found but could not look into.
type Unopened struct {
	Path string
	Err  error
}

// Snapshot lists the TCP and UDP sockets of the chosen namespaces, through
// sock_diag, joined to their processes by socket inode.
//
// With --netns all the namespaces come from a glob of /proc that is stale
// the moment it is taken, and some processes may not be inspected even by
// root (a locked-down init, another user's process without
// CAP_SYS_PTRACE): a namespace whose process has exited is skipped, one
// porttrace may not open or enter is skipped and returned in unopened, so
// one of them does not hide all the others. A namespace named on the
// command line must open, or Snapshot fails.
func Snapshot(o SnapshotOptions) (socks []Socket, unopened []Unopened, err error) {
	nsFiles, err := netns.Files(o.Netns)
	if err != nil {
		return nil, nil, err
	}
	return snapshotFiles(nsFiles, len(o.Netns) == 1 && o.Netns[0] == "all", o.All, o.Port)
}

// SnapshotFiles lists the sockets of the namespaces nsFiles, each once;
// all means the files came from --netns all and may vanish or be closed
// to porttrace. The namespaces are dumped first and the fd tables walked
// after, for the sockets kept alone: what a snapshot holds in memory
// follows the sockets it shows, not every socket some process on the
// machine has open.
func SnapshotFiles(nsFiles []string, all, allSockets bool) (socks []Socket, unopened []Unopened, err error) {
	return snapshotFiles(nsFiles, all, allSockets, 0)
}

// snapshotFiles is SnapshotFiles of the sockets on local port port (0:
// any).
func snapshotFiles(nsFiles []string, all, allSockets bool, port uint16) (socks []Socket, unopened []Unopened, err error) {
	var dumped []nsDump
	seen := map[uint32]bool{}
	for _, path := range nsFiles {
		if all {
			// Cheaper than an open: most processes share a few namespaces.
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err == nil && seen[uint32(st.Ino)] {
				continue
			}
		}
		here, err := snapshotFile(path, seen, allSockets)
		switch {
		case err == nil:
			if here != nil {
				here.onPort(port)
				dumped = append(dumped, *here)
			}
		case !all:
			return nil, nil, err
		case !netns.Vanished(err):
			unopened = append(unopened, Unopened{path, errors.Unwrap(err)})
		}
	}
	want := map[uint32]bool{}
	for _, d := range dumped {
		for i := range d.socks {
			if d.socks[i].Owned() {
				want[d.socks[i].Inode] = true
			}
		}
	}
	holders, err := socketHolders(want)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range dumped {
		socks = append(socks, d.judged(holders)...)
	}
	return socks, unopened, nil
}

// snapshotFile dumps the sockets of the namespace file path, unless seen
// has its inode already (nil, and then adds it). An error wraps what went
// wrong once: a namespace that vanished, or one porttrace may not open,
// is not, or may not enter.
func snapshotFile(path string, seen map[uint32]bool, allSockets bool) (*nsDump, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := netns.Check(fd); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	inode := uint32(st.Ino)
	if seen[inode] {
		return nil, nil
	}
	seen[inode] = true
	var here *nsDump
	err = netns.Do(fd, func() (err error) {
		here, err = dumpHere(inode, allSockets)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w%s", path, err, netns.AdminHint(err))
	}
	return here, nil
}

// unopenedNotice says on stderr, once per namespace, which ones --netns
// all had to skip: one line a snapshot at most, none when nothing new.
type unopenedNotice struct {
	cmd  string
	said map[string]bool
}

func (n *unopenedNotice) say(w io.Writer, unopened []Unopened) {
	if n.said == nil {
		n.said = map[string]bool{}
	}
	var fresh []string
	for _, u := range unopened {
		if n.said[u.Path] {
			continue
		}
		n.said[u.Path] = true
		fresh = append(fresh, fmt.Sprintf("%s (%v)", u.Path, u.Err))
	}
	if len(fresh) == 0 {
		return
	}
	const shown = 3
	list := strings.Join(fresh[:min(len(fresh), shown)], ", ")
	if len(fresh) > shown {
		list += fmt.Sprintf(" and %d more", len(fresh)-shown)
	}
	fmt.Fprintf(w, "porttrace %s: --netns all: skipped %d %s it may not look into: %s\n",
		n.cmd, len(fresh), textout.Plural(len(fresh), "namespace", "namespaces"), textout.Printable(list))
}

// nsDump is one namespace's sockets as sock_diag gave them, before their
// holders are known, and what judging them needs of the namespace.
type nsDump struct {
	socks  []Socket
	view   *netView
	unpriv uint32
}

// dumpHere dumps the sockets of the calling thread's namespace: every
// socket for all, else only the listeners (TCP LISTEN, unconnected UDP),
// so that a namespace's connections and TIME-WAIT sockets, which no
// listener's judgement needs, are never read for a listing of listeners.
func dumpHere(inode uint32, all bool) (*nsDump, error) {
	rng, err := netns.LocalPortRange()
	if err != nil {
		return nil, err
	}
	unpriv, err := netns.UnprivilegedPortStart()
	if err != nil {
		return nil, err
	}
	states := uint32(sockdiag.AllStates)
	if !all {
		states = sockdiag.ListenStates
	}
	var socks []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
			list, err := sockdiag.Dump(family, proto, states)
			if err != nil {
				return nil, err
			}
			for _, ds := range list {
				s := socketFrom(inode, proto, ds)
				if all || s.Listening() {
					socks = append(socks, s)
				}
			}
		}
	}
	return &nsDump{socks: socks, view: newNetView(socks, rng), unpriv: unpriv}, nil
}

// onPort keeps the sockets on local port port (0: all). The view, made
// of every socket dumped, still judges them.
func (d *nsDump) onPort(port uint16) {
	if port != 0 {
		d.socks = slices.DeleteFunc(d.socks, func(s Socket) bool { return s.Local.Port() != port })
	}
}

// judged joins the dumped sockets to their holders and says what each
// means, sorted by protocol, port and addresses.
func (d *nsDump) judged(holders *holderIndex) []Socket {
	for i := range d.socks {
		s := &d.socks[i]
		s.Holders = holders.bySocket[s.Inode]
		if len(s.Holders) == 0 && s.Owned() {
			s.orphan = holders.orphanNote()
		}
		d.view.judge(s, d.unpriv)
	}
	slices.SortFunc(d.socks, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Local.Port(), b.Local.Port()),
			a.Local.Addr().Compare(b.Local.Addr()), a.Remote.Compare(b.Remote))
	})
	return d.socks
}

func socketFrom(netns uint32, proto uint16, ds sockdiag.Socket) Socket {
	s := Socket{
		Netns: netns, Proto: proto, Family: uint16(ds.Family), Inode: ds.Inode,
		Local: ds.Local, Remote: ds.Remote, V6Only: ds.V6Only, HasV6Only: ds.HasV6Only,
	}
	s.State = ds.StateName(proto)
	return s
}
