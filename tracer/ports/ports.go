package ports

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
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
	return SnapshotFiles(nsFiles, len(o.Netns) == 1 && o.Netns[0] == "all", o.All)
}

// SnapshotFiles lists the sockets of the namespaces nsFiles, each once;
// all means the files came from --netns all and may vanish or be closed
// to porttrace.
func SnapshotFiles(nsFiles []string, all, allSockets bool) (socks []Socket, unopened []Unopened, err error) {
	holders, err := socketHolders()
	if err != nil {
		return nil, nil, err
	}
	seen := map[uint32]bool{}
	for _, path := range nsFiles {
		if all {
			// Cheaper than an open: most processes share a few namespaces.
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err == nil && seen[uint32(st.Ino)] {
				continue
			}
		}
		here, err := snapshotFile(path, seen, allSockets, holders)
		switch {
		case err == nil:
			socks = append(socks, here...)
		case !all:
			return nil, nil, err
		case !netns.Vanished(err):
			unopened = append(unopened, Unopened{path, errors.Unwrap(err)})
		}
	}
	return socks, unopened, nil
}

// snapshotFile lists the sockets of the namespace file path, unless seen
// has its inode already (and then adds it). An error wraps what went
// wrong once: a namespace that vanished, or one porttrace may not open,
// is not, or may not enter.
func snapshotFile(path string, seen map[uint32]bool, allSockets bool, holders *holderIndex) ([]Socket, error) {
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
	var here []Socket
	err = netns.Do(fd, func() (err error) {
		here, err = snapshotHere(inode, allSockets, holders)
		return err
	})
	if errors.Is(err, netns.ErrEntering) && errors.Is(err, unix.EPERM) {
		// setns(2) says only EPERM; say what it takes.
		return nil, fmt.Errorf("netns %s: %w (entering another network namespace needs root or CAP_SYS_ADMIN)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
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

// holderIndex maps socket inodes to the processes holding them, and says
// how much of the process table porttrace could read: a socket nobody
// holds is only an orphan if no holder could have been hidden.
type holderIndex struct {
	bySocket   map[uint32][]Holder
	unreadable int  // processes whose fds porttrace may not read
	pidnsChild bool // porttrace sees only the processes of its own pid namespace
}

// socketHolders reads /proc/PID/fd of every process.
func socketHolders() (*holderIndex, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	hi := &holderIndex{bySocket: map[uint32][]Holder{}, pidnsChild: InChildPidns()}
	en := proc.NewEnricher()
	for _, p := range procs {
		fds, err := p.FileDescriptors()
		if errors.Is(err, fs.ErrPermission) {
			hi.unreadable++
			continue
		}
		if err != nil {
			continue // gone, or a kernel thread
		}
		var h *Holder
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.PID, fd))
			if errors.Is(err, fs.ErrPermission) {
				// The fd list may be readable where its links are not
				// (a process porttrace may not ptrace).
				hi.unreadable++
				break
			}
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(target[len("socket:["):], "]"), 10, 32)
			if err != nil {
				continue
			}
			if h == nil {
				h = describe(p.PID, en)
			}
			hh := *h
			hh.FD = int(fd)
			hi.bySocket[uint32(inode)] = append(hi.bySocket[uint32(inode)], hh)
		}
	}
	return hi, nil
}

// InChildPidns reports whether the /proc porttrace reads is that of a pid
// namespace below the initial one (porttrace in a container): processes
// outside it, which may hold sockets of a network namespace it shares,
// are not in it.
func InChildPidns() bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return false
	}
	self, err := procfs.Self()
	if err != nil {
		return false
	}
	status, err := self.NewStatus()
	if err != nil {
		return false
	}
	return procPidnsChild(st.Ino, len(status.NSpids))
}

// procPidInitIno is the inode of the initial pid namespace
// (PROC_PID_INIT_INO, include/linux/proc_ns.h; fixed since Linux 3.8).
const procPidInitIno = 0xEFFFFFFC

// procPidnsChild decides inChildPidns from the inode of porttrace's pid
// namespace and the number of pids NSpid in /proc/self/status gives it.
// NSpid counts the levels from the namespace of that /proc down to
// porttrace's own, so it is one entry both on the host and in a container
// with its own /proc: only the first is the whole process table. More
// entries mean a /proc from above, as a container given the host's has.
func procPidnsChild(pidnsIno uint64, nspids int) bool {
	return pidnsIno != procPidInitIno && nspids == 1
}

// orphanNote is why a socket no process holds deserves a look, worded by
// what porttrace could see: only with the whole process table in view is
// it sure no live process holds it.
func (hi *holderIndex) orphanNote() string {
	switch {
	case hi.pidnsChild:
		return "no process visible in this pid namespace holds it"
	case hi.unreadable > 0:
		return fmt.Sprintf("no process porttrace may read holds it (%d %s unreadable)",
			hi.unreadable, textout.Plural(hi.unreadable, "process", "processes"))
	}
	return "no live process holds it"
}

// describe is a holder as /proc tells of it; a user id porttrace could not
// read leaves the user unnamed rather than root.
func describe(pid int, en *proc.Enricher) *Holder {
	f := proc.ReadFacts("/proc", uint32(pid), proc.FactsAll)
	h := &Holder{PID: uint32(pid), PPID: f.PPID, UID: f.UID, Comm: f.Comm, Exe: f.Exe, ExeDeleted: f.ExeDeleted,
		Cgroup: f.Cgroup, Start: f.Start}
	if f.HasUID {
		h.User = en.User(h.UID)
	}
	return h
}

// snapshotHere lists the sockets of the calling thread's namespace.
func snapshotHere(inode uint32, all bool, holders *holderIndex) ([]Socket, error) {
	rng, err := netns.LocalPortRange()
	if err != nil {
		return nil, err
	}
	unpriv, err := netns.UnprivilegedPortStart()
	if err != nil {
		return nil, err
	}
	var socks []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
			list, err := sockdiag.Dump(family, proto, sockdiag.AllStates)
			if err != nil {
				return nil, err
			}
			for _, ds := range list {
				socks = append(socks, socketFrom(inode, proto, ds, holders))
			}
		}
	}
	view := newNetView(socks, rng)
	out := socks[:0]
	for _, s := range socks {
		view.judge(&s, unpriv)
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

type protoPort struct {
	proto, port uint16
}

// netView is what one namespace's connections are judged by: the ports it
// serves, the addresses that are its own, its ephemeral range.
type netView struct {
	listening map[protoPort][]netip.Addr // the addresses bound, unmapped
	own       map[netip.Addr]bool
	rng       [2]uint16
}

// newNetView gathers the listeners (for UDP, unconnected bound sockets)
// among socks and the namespace's addresses: those of its interfaces and
// those its sockets are bound to, which stand in when the interface list
// cannot be read.
func newNetView(socks []Socket, rng [2]uint16) *netView {
	v := &netView{listening: map[protoPort][]netip.Addr{}, own: map[netip.Addr]bool{}, rng: rng}
	for i := range socks {
		s := &socks[i]
		if s.Listening() && s.Local.Port() != 0 {
			k := protoPort{s.Proto, s.Local.Port()}
			v.listening[k] = append(v.listening[k], s.Local.Addr().Unmap())
		}
		if a := s.Local.Addr().Unmap(); !a.IsUnspecified() {
			v.own[a] = true
		}
	}
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				v.own[ip.Unmap()] = true
			}
		}
	}
	return v
}

// judge fills in what s means in its namespace, whose
// ip_unprivileged_port_start is unpriv: a listener's reach, a
// connection's direction and the class of its service port, which the
// direction decides, and for any socket why it deserves a look.
func (v *netView) judge(s *Socket, unpriv uint32) {
	s.Ephemeral = event.InRange(s.Local.Port(), v.rng)
	if s.Listening() {
		s.Scope = s.scope()
	} else if s.Remote.IsValid() {
		s.Direction, s.DirInferred = v.direction(s)
	}
	s.Suspicious = suspicious(s)
	port := s.ServicePort()
	s.PortClass = event.ClassOf(port)
	s.Privileged = event.Privileged(port, unpriv)
}

// direction tells who opened a connection, and whether that is inferred
// rather than known. Known: the TCP handshake state (SYN-SENT is ours,
// SYN-RECV theirs); a TCP socket on the address and port of a listener
// of its namespace was accepted from it (no other TCP socket may bind
// there); one whose peer is this host on a TCP listener's port connected
// to it. Everything else is inferred, and said to be: a socket whose
// local port no socket serves on (for UDP: no unconnected socket holds)
// is most likely a client, so outbound, whatever its ports' numbers (a
// client bound to a fixed port, active FTP's data connection from port
// 20, a connect-back from port 443). Its listener may have closed since
// it accepted, as sshd's sessions outlive a stopped sshd; hence only
// inferred. A UDP socket beside one that serves its port is inbound,
// inferred too: UDP has no accept.
func (v *netView) direction(s *Socket) (d event.Direction, inferred bool) {
	tcp := s.Proto == event.ProtoTCP
	switch s.State {
	case "SYN-SENT":
		return event.DirOutbound, false
	case "SYN-RECV", "NEW-SYN-RECV":
		return event.DirInbound, false
	}
	if v.serves(s.Proto, s.Local) {
		return event.DirInbound, !tcp
	}
	if v.isOwn(s.Remote.Addr()) && v.serves(s.Proto, s.Remote) {
		return event.DirOutbound, !tcp
	}
	return event.DirOutbound, true
}

// serves reports whether a listener of proto (for UDP an unconnected
// socket) is bound to ap's port on ap's address or a wildcard.
func (v *netView) serves(proto uint16, ap netip.AddrPort) bool {
	for _, a := range v.listening[protoPort{proto, ap.Port()}] {
		if a.IsUnspecified() || a == ap.Addr().Unmap() {
			return true
		}
	}
	return false
}

func (v *netView) isOwn(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || v.own[a]
}

func socketFrom(netns uint32, proto uint16, ds sockdiag.Socket, holders *holderIndex) Socket {
	s := Socket{
		Netns: netns, Proto: proto, Family: uint16(ds.Family), Inode: ds.Inode,
		Local: ds.Local, Remote: ds.Remote, V6Only: ds.V6Only, HasV6Only: ds.HasV6Only,
		Holders: holders.bySocket[ds.Inode],
	}
	if len(s.Holders) == 0 && s.Owned() {
		s.orphan = holders.orphanNote()
	}
	switch {
	case proto == event.ProtoUDP && s.Remote.IsValid():
		s.State = "ESTAB"
	case proto == event.ProtoUDP:
		s.State = "UNCONN"
	default:
		s.State = sockdiag.StateName(ds.State)
	}
	return s
}

// scope says who can reach listener s. On :: that depends on
// IPV6_V6ONLY, which the kernel reports for a socket that exists but no
// event carries: a listener known from its event alone says both.
func (s *Socket) scope() string {
	a := s.Local.Addr()
	switch {
	case s.bothFamilies():
		return "all interfaces, IPv4 and IPv6"
	case a.Is6() && a.IsUnspecified() && s.V6Only:
		return "all IPv6 interfaces"
	case a.Is6() && a.IsUnspecified():
		return "all IPv6 interfaces, IPv4 too unless v6only"
	case a.IsUnspecified():
		return "all interfaces"
	case a.IsLoopback():
		return "loopback only"
	}
	return "only " + a.String()
}

// Programs that have no business listening in their usual role: a shell,
// an interpreter, a relay (nc, socat). A listener held by one is how a
// backdoor looks.
var unusualListeners = map[string]bool{
	"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "ash": true, "busybox": true,
	"nc": true, "ncat": true, "netcat": true, "nc.openbsd": true, "nc.traditional": true, "socat": true,
	"python": true, "python2": true, "python3": true, "perl": true, "ruby": true, "php": true, "lua": true,
}

// unusualListener reports whether a program named name (a comm, or the
// base name of an executable) is one of unusualListeners, with or without
// a version: python3.11, perl5.36.
func unusualListener(name string) bool {
	base := strings.TrimRightFunc(name, func(r rune) bool { return r == '.' || (r >= '0' && r <= '9') })
	return unusualListeners[name] || unusualListeners[base]
}

// suspicious says why socket s deserves a look. An executable deleted
// after it started is how an implant that cleaned up after itself looks,
// whatever its sockets do: a connect-back has no listener at all. The
// rest is for listeners. A program is taken for a shell, interpreter or
// relay by name: its command name, or the file name of its executable (a
// "#!/usr/bin/python3" script called sshd is comm sshd, exe python3); a
// renamed copy of one (cp /usr/bin/socat /tmp/x) is not recognised.
// busybox is left to comm, which names the applet: as an executable it
// is every applet, httpd and ntpd as much as nc.
func suspicious(s *Socket) []string {
	var why []string
	listening := s.Listening()
	if listening && len(s.Holders) == 0 && s.orphan != "" {
		why = append(why, s.orphan)
	}
	for _, h := range s.Holders {
		if h.ExeDeleted {
			why = append(why, fmt.Sprintf("executable deleted: %s (pid %d)", h.Exe, h.PID))
		}
		if !listening {
			continue
		}
		exe := filepath.Base(h.Exe)
		switch {
		case unusualListener(h.Comm):
			why = append(why, fmt.Sprintf("%s (pid %d) is a shell, interpreter or relay listening", h.Comm, h.PID))
		case h.Exe != "" && exe != "busybox" && unusualListener(exe):
			why = append(why, fmt.Sprintf("%s (pid %d) runs %s, a shell, interpreter or relay, listening", h.Comm, h.PID, h.Exe))
		}
	}
	return slices.Compact(why)
}
