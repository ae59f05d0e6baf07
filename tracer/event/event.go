// Package event is porttrace's model of one socket call: what was done
// (Kind), how it ended (Result, errno and the reason in words), by whom,
// on which addresses, and what the ports mean (direction, IANA class,
// privileged in the namespace). It is pure: no kernel, no /proc, no I/O;
// the tracer fills an Event from the kernel's record and every view
// prints one.
package event

import (
	"cmp"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// Kind is what the process did to the socket.
type Kind uint8

// Event kinds, numbered as enum event_kind in bpf/porttrace.h.
const (
	KindBind    Kind = 1
	KindListen  Kind = 2
	KindConnect Kind = 3
	KindAccept  Kind = 4
	// KindConnectDone is how a connect that returned in progress ended
	// (Result OK or failed), sent when its handshake ends. It comes with
	// the connects: --events and the kernel's KindSet name only connect.
	KindConnectDone Kind = 5
)

var kindNames = [...]string{KindBind: "bind", KindListen: "listen", KindConnect: "connect", KindAccept: "accept",
	KindConnectDone: "connect_done"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if name != "" && name == s && Kind(k) != KindConnectDone {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown event %q (want bind, listen, connect or accept)", s)
}

// Result says whether the call worked.
type Result uint8

const (
	ResultOK     Result = iota
	ResultDenied        // EACCES or EPERM: a permission check refused it
	ResultFailed        // any other errno
	// ResultInProgress is a TCP connect that returned before its handshake
	// ended (EINPROGRESS, or EINTR: a signal): its connect_done follows.
	ResultInProgress
)

func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultDenied:
		return "denied"
	case ResultInProgress:
		return "in_progress"
	default:
		return "failed"
	}
}

// Failed reports whether the call or the connect failed: denied or failed,
// not still in progress.
func (r Result) Failed() bool { return r == ResultDenied || r == ResultFailed }

// Direction is who opened the connection, from this host's point of view.
type Direction uint8

const (
	DirNone     Direction = iota // bind and listen have none
	DirInbound                   // accepted: the peer connected to us
	DirOutbound                  // connected: we connected to the peer
)

func (d Direction) String() string {
	switch d {
	case DirInbound:
		return "inbound"
	case DirOutbound:
		return "outbound"
	}
	return ""
}

// Backend names the kernel hooks an event came from.
type Backend uint8

// Backends, numbered as enum backend_id in bpf/porttrace.h.
const (
	BackendAuto       Backend = 0
	BackendTracepoint Backend = 1
	BackendFentry     Backend = 2
	BackendKprobe     Backend = 3
)

var backendNames = [...]string{BackendAuto: "auto", BackendTracepoint: "tracepoint", BackendFentry: "fentry", BackendKprobe: "kprobe"}

func (b Backend) String() string {
	if int(b) < len(backendNames) {
		return backendNames[b]
	}
	return fmt.Sprintf("backend(%d)", uint8(b))
}

// ParseBackend is the inverse of Backend.String.
func ParseBackend(s string) (Backend, error) {
	for b, name := range backendNames {
		if name == s {
			return Backend(b), nil
		}
	}
	return 0, fmt.Errorf("unknown backend %q (want auto, fentry, kprobe or tracepoint)", s)
}

// Protocol numbers as the kernel has them in sk_protocol.
const (
	ProtoTCP   uint16 = unix.IPPROTO_TCP
	ProtoUDP   uint16 = unix.IPPROTO_UDP
	ProtoMPTCP uint16 = 262
)

// ProtoName names an IP protocol number as the event stream does.
func ProtoName(p uint16) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoMPTCP:
		return "mptcp"
	case 0:
		return ""
	}
	return fmt.Sprintf("proto(%d)", p)
}

// FamilyName names an address family as the event stream does.
func FamilyName(f uint16) string {
	switch f {
	case unix.AF_INET:
		return "ipv4"
	case unix.AF_INET6:
		return "ipv6"
	}
	return ""
}

// AddrFamily names the family of the traffic on a socket of family with
// these addresses: an IPv6 socket whose peer (or, unconnected, its own
// address) is IPv4-mapped talks IPv4, as a dual-stack listener's IPv4
// client or a UDP socket connected to an IPv4 sockaddr does.
func AddrFamily(family uint16, local, remote netip.AddrPort) string {
	if ap := cmp.Or(remote, local); ap.IsValid() && ap.Addr().Is4In6() {
		return "ipv4"
	}
	return FamilyName(family)
}

// Event is one socket operation, decoded and classified.
//
// Fields the backend could not know stay at their zero value and are
// omitted from output: an invalid Local or Remote, Netns 0, an empty Exe.
type Event struct {
	Time    time.Time
	Kind    Kind
	Result  Result
	Errno   syscall.Errno // 0 when Result is ResultOK
	Backend Backend

	PID, TID, PPID uint32
	UID, GID       uint32
	Comm           string
	CgroupID       uint64
	ExeDeleted     bool // the running executable has been unlinked
	CapBind        bool // the task held CAP_NET_BIND_SERVICE

	// Filled from /proc and the user database, best-effort.
	User   string
	Exe    string
	Cgroup string

	// The workload the cgroup path names; empty when it names none, never
	// guessed.
	Workload workload.Identity
	// Its names from the runtime's API, where it answered (an event never
	// waits for them: the first of a new container may lack them).
	Names workload.Names

	Inode  uint32 // of the socket, as sock_diag and /proc/PID/fd name it; 0 if unknown
	Proto  uint16 // ProtoTCP, ProtoUDP, ProtoMPTCP; 0 if unknown
	Family uint16 // unix.AF_INET or unix.AF_INET6
	Local  netip.AddrPort
	Remote netip.AddrPort

	// The socket's network namespace and its port sysctls; HasNet is false
	// when the backend could not read them.
	HasNet          bool
	Netns           uint32
	UnprivPortStart uint32    // net.ipv4.ip_unprivileged_port_start
	PortRange       [2]uint16 // net.ipv4.ip_local_port_range

	// A bind's socket options and SO_BINDTODEVICE (HasSockOpts): what
	// decides whether it clashes with another socket's.
	HasSockOpts bool
	SockOpts    SockOpts
	BoundIf     int32  // ifindex in the socket's netns; 0: none
	BoundIfName string // its name, where porttrace could look it up

	// A TCP connect's latency (HasLatency): from the call to the end of the
	// handshake, for a blocking connect and for connect_done. A connect_done
	// also says how many times the kernel sent the SYN again.
	HasLatency        bool
	Latency           time.Duration
	HasSynRetransmits bool
	SynRetransmits    uint32

	// Holders are the sockets that held the address and port a bind failed
	// with EADDRINUSE for, as porttrace found them right after the failure
	// (HasHolders: it looked).
	HasHolders bool
	Holders    []Holder

	Ephemeral  bool // the kernel chose the local port
	Direction  Direction
	PortClass  PortClass // of the service port
	Privileged bool      // the service port needs CAP_NET_BIND_SERVICE in this netns
	Reason     string    // why a call was denied or failed, in words
}

// AddrFamily is the family of the event's traffic (see addrFamily):
// what -4 and -6 select and JSON's family says.
func (e *Event) AddrFamily() string { return AddrFamily(e.Family, e.Local, e.Remote) }

// ServicePort is the port that names the service: the local port of a bind,
// listen or accept, the remote port of a connect.
func (e *Event) ServicePort() (uint16, bool) {
	ap := e.Local
	if e.Kind == KindConnect || e.Kind == KindConnectDone {
		ap = e.Remote
	}
	if !ap.IsValid() {
		return 0, false
	}
	return ap.Port(), true
}

// Errno name, e.g. "EACCES"; empty when the call succeeded.
func (e *Event) ErrnoName() string {
	switch e.Errno {
	case 0:
		return ""
	case unix.EOPNOTSUPP:
		// ENOTSUP is the same number; the socket code says EOPNOTSUPP.
		return "EOPNOTSUPP"
	}
	if n := unix.ErrnoName(e.Errno); n != "" {
		return n
	}
	if n, ok := restartNames[e.Errno]; ok {
		return n
	}
	return fmt.Sprintf("errno%d", int(e.Errno))
}

// restartNames are the kernel's own errnos for a call that a signal
// interrupted and the kernel restarts (include/linux/errno.h): a caller
// never sees them, but a connect's exit does, and its handshake goes on.
var restartNames = map[syscall.Errno]string{
	512: "ERESTARTSYS",
	513: "ERESTARTNOINTR",
	514: "ERESTARTNOHAND",
	516: "ERESTART_RESTARTBLOCK",
}

// Holder is a socket that held the address and port a bind asked for.
type Holder struct {
	Proto  uint16
	Local  netip.AddrPort
	Remote netip.AddrPort // invalid when unconnected
	State  string         // ss's names: LISTEN, ESTAB, TIME-WAIT, UNCONN
	PID    int            // 0 when no process holds it (TIME-WAIT, or gone)
	Comm   string
	// SockOpts are the holder's options, where porttrace could read them.
	HasSockOpts bool
	SockOpts    SockOpts
	BoundIf     string // SO_BINDTODEVICE's interface, "" when none
}
