package event

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// PortClass is the IANA range a port falls in (RFC 6335).
type PortClass uint8

const (
	ClassNone       PortClass = iota // no port known
	ClassWellKnown                   // 0-1023
	ClassRegistered                  // 1024-49151
	ClassDynamic                     // 49152-65535
)

func (c PortClass) String() string {
	switch c {
	case ClassWellKnown:
		return "well-known"
	case ClassRegistered:
		return "registered"
	case ClassDynamic:
		return "dynamic"
	}
	return ""
}

// ClassOf returns the IANA class of port.
func ClassOf(port uint16) PortClass {
	switch {
	case port <= 1023:
		return ClassWellKnown
	case port <= 49151:
		return ClassRegistered
	default:
		return ClassDynamic
	}
}

// Privileged reports whether binding port needs CAP_NET_BIND_SERVICE in a
// network namespace whose net.ipv4.ip_unprivileged_port_start is
// unprivStart. Port 0 asks the kernel to choose and is never privileged.
func Privileged(port uint16, unprivStart uint32) bool {
	return port != 0 && uint32(port) < unprivStart
}

// InRange reports whether port lies in the ephemeral range r (inclusive).
func InRange(port uint16, r [2]uint16) bool {
	return port >= r[0] && port <= r[1]
}

// Classify fills the port class, privileged and the reason for a failure.
func Classify(ev *Event) {
	port, ok := ev.ServicePort()
	if ok {
		ev.PortClass = ClassOf(port)
		ev.Privileged = ev.HasNet && Privileged(port, ev.UnprivPortStart)
	}
	ev.Reason = reason(ev)
}

// reason explains a denied or failed call in the terms an operator acts on.
func reason(ev *Event) string {
	if ev.Errno == 0 {
		return ""
	}
	switch {
	case ev.Kind == KindBind && ev.Errno == unix.EACCES && ev.Privileged && !ev.CapBind:
		return fmt.Sprintf("port %d is below ip_unprivileged_port_start %d and the process lacks CAP_NET_BIND_SERVICE",
			ev.Local.Port(), ev.UnprivPortStart)
	case ev.Errno == unix.EPERM:
		return "refused by policy (cgroup BPF program or LSM)"
	case ev.Kind == KindBind && ev.Errno == unix.EADDRINUSE:
		return "another socket holds this address and port"
	case ev.Kind == KindListen && ev.Errno == unix.EADDRINUSE:
		return "no free port to bind an unbound socket"
	case ev.Kind == KindConnect && ev.Errno == unix.EADDRNOTAVAIL && !ev.Local.IsValid() && ev.HasNet:
		return fmt.Sprintf("no free local port in ip_local_port_range %d-%d for this destination",
			ev.PortRange[0], ev.PortRange[1])
	case ev.Kind == KindConnect && ev.Errno == unix.EAGAIN && ev.Proto == ProtoUDP && ev.HasNet:
		return fmt.Sprintf("no free local port in ip_local_port_range %d-%d", ev.PortRange[0], ev.PortRange[1])
	case ev.Result == ResultInProgress:
		return "the handshake goes on; connect_done tells how it ends"
	case isConnect(ev.Kind):
		if r := connectReason(ev); r != "" {
			return r
		}
	}
	return ev.Errno.Error()
}

func isConnect(k Kind) bool { return k == KindConnect || k == KindConnectDone }

// connectReason says how a TCP connect's handshake failed.
func connectReason(ev *Event) string {
	switch ev.Errno {
	case unix.ECONNREFUSED:
		if ev.Proto == ProtoUDP {
			return ""
		}
		return "the peer answered with a reset: nothing listens on that port"
	case unix.ETIMEDOUT:
		if ev.HasSynRetransmits {
			return fmt.Sprintf("no answer to the SYN, sent %d times", ev.SynRetransmits+1)
		}
		return "no answer to the SYN"
	case unix.EHOSTUNREACH:
		return "the host is unreachable (an ICMP error, or no neighbour answered)"
	case unix.ENETUNREACH:
		return "the network is unreachable (an ICMP error, or no route)"
	case unix.ECONNRESET:
		return "reset during the handshake"
	case unix.ECANCELED:
		return "closed or disconnected by its owner before the handshake ended"
	}
	return ""
}
