package ports

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/porttrace/porttrace/tracer/event"
)

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
