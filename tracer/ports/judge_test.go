package ports

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

func TestSuspicious(t *testing.T) {
	const orphan = "no live process holds it"
	conn := func(hs ...Holder) Socket {
		return Socket{Proto: event.ProtoTCP, State: "ESTAB", Remote: netip.MustParseAddrPort("192.0.2.1:443"), Holders: hs}
	}
	for _, tc := range []struct {
		sock Socket
		want string
	}{
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 1, Comm: "nginx"}}}, ""},
		{Socket{State: "LISTEN", orphan: orphan}, orphan},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 7, Comm: "bash"}}}, "bash (pid 7) is a shell, interpreter or relay listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 8, Comm: "python3.11"}}}, "python3.11 (pid 8) is a shell, interpreter or relay listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 8, Comm: "perl5.0.9"}}}, "perl5.0.9 (pid 8) is a shell, interpreter or relay listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 9, Comm: "sshd", Exe: "/usr/sbin/sshd", ExeDeleted: true}}}, "executable deleted: /usr/sbin/sshd (pid 9)"},
		// A "#!/usr/bin/python3" script named sshd: comm from the script, exe the interpreter.
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 10, Comm: "sshd", Exe: "/usr/bin/python3.11"}}}, "sshd (pid 10) runs /usr/bin/python3.11, a shell, interpreter or relay, listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 11, Comm: "cupsd", Exe: "/usr/bin/perl5.36.0"}}}, "cupsd (pid 11) runs /usr/bin/perl5.36.0, a shell, interpreter or relay, listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 12, Comm: "bash", Exe: "/usr/bin/bash"}}}, "bash (pid 12) is a shell, interpreter or relay listening"},
		// busybox is every applet: its httpd is no shell.
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 13, Comm: "httpd", Exe: "/bin/busybox"}}}, ""},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 14, Comm: "nc", Exe: "/bin/busybox"}}}, "nc (pid 14) is a shell, interpreter or relay listening"},
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 15, Comm: "pythonista", Exe: "/opt/pythonista"}}}, ""},
		// Renamed, a relay is not recognised: the rule is the name.
		{Socket{State: "LISTEN", Holders: []Holder{{PID: 16, Comm: "x", Exe: "/tmp/x"}}}, ""},
		// A connection: a deleted executable is flagged (a connect-back
		// implant has no listener), what runs it is not.
		{conn(Holder{PID: 17, Comm: "beacon", Exe: "/tmp/beacon", ExeDeleted: true}), "executable deleted: /tmp/beacon (pid 17)"},
		{conn(Holder{PID: 18, Comm: "bash", Exe: "/usr/bin/bash"}), ""},
		{Socket{Proto: event.ProtoUDP, State: "ESTAB", Remote: netip.MustParseAddrPort("192.0.2.1:53"), orphan: orphan}, ""},
	} {
		got := strings.Join(suspicious(&tc.sock), "; ")
		if got != tc.want {
			t.Errorf("%s %+v: %q, want %q", tc.sock.State, tc.sock.Holders, got, tc.want)
		}
	}
}

// A socket no process is seen holding is only surely an orphan when
// porttrace sees every process; in a container's pid namespace, or
// without leave to read some processes, the flag says what was seen.
func TestOrphanNote(t *testing.T) {
	for _, tc := range []struct {
		hi   holderIndex
		want string
	}{
		{holderIndex{}, "no live process holds it"},
		{holderIndex{pidnsChild: true}, "no process visible in this pid namespace holds it"},
		{holderIndex{pidnsChild: true, unreadable: 3}, "no process visible in this pid namespace holds it"},
		{holderIndex{unreadable: 1}, "no process porttrace may read holds it (1 process unreadable)"},
		{holderIndex{unreadable: 2}, "no process porttrace may read holds it (2 processes unreadable)"},
	} {
		if got := tc.hi.orphanNote(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.hi, got, tc.want)
		}
	}
}

// Only a /proc of a pid namespace below the initial one hides processes:
// on the host NSpid has one entry too, and a container given the host's
// /proc sees its pid at two levels.
func TestProcPidnsChild(t *testing.T) {
	for _, tc := range []struct {
		ino    uint64
		nspids int
		want   bool
	}{
		{procPidInitIno, 1, false}, // the host
		{4026532247, 1, true},      // a container with its own /proc
		{4026532246, 2, false},     // a container with the host's /proc
		{procPidInitIno, 0, false}, // no NSpid (before Linux 4.1)
	} {
		if got := procPidnsChild(tc.ino, tc.nspids); got != tc.want {
			t.Errorf("pid namespace %d, %d pids in NSpid: %t, want %t", tc.ino, tc.nspids, got, tc.want)
		}
	}
}

// Direction: known from the handshake state and this host's TCP
// listeners, inferred (and said to be) from listeners otherwise. A
// socket no listener serves is a client, whatever its ports' numbers.
func TestDirection(t *testing.T) {
	ap := netip.MustParseAddrPort
	any4, lo := netip.IPv4Unspecified(), netip.MustParseAddr("127.0.0.1")
	v := &netView{
		listening: map[protoPort][]netip.Addr{
			{event.ProtoTCP, 25}: {any4}, {event.ProtoTCP, 40000}: {any4}, {event.ProtoUDP, 53}: {lo}, {event.ProtoTCP, 8080}: {netip.MustParseAddr("10.0.0.5")},
		},
		own: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.5"): true},
		rng: [2]uint16{32768, 60999},
	}
	for _, tc := range []struct {
		proto         uint16
		state         string
		local, remote string
		want          string
	}{
		{event.ProtoTCP, "ESTAB", "127.0.0.1:25", "127.0.0.1:40312", "in"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:40312", "127.0.0.1:25", "out"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:40000", "127.0.0.1:41000", "in"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:41000", "127.0.0.1:40000", "out"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:5000", "127.0.0.1:40000", "out"},
		{event.ProtoTCP, "ESTAB", "[::ffff:10.0.0.5]:5000", "[::ffff:10.0.0.5]:40000", "out"},
		{event.ProtoTCP, "TIME-WAIT", "10.0.0.5:25", "192.0.2.1:33000", "in"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:8080", "192.0.2.1:50000", "in"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:8080", "192.0.2.1:50000", "out?"}, // 8080 listens on 10.0.0.5 only
		// A peer elsewhere, no listener here: a client, inferred.
		{event.ProtoTCP, "ESTAB", "10.0.0.5:41000", "192.0.2.1:443", "out?"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:32250", "192.0.2.1:25", "out?"},    // bound to a fixed port below the range
		{event.ProtoTCP, "ESTAB", "10.0.0.5:20", "192.0.2.1:40000", "out?"},    // active FTP data
		{event.ProtoTCP, "ESTAB", "10.0.0.5:37382", "192.0.2.1:50001", "out?"}, // both in the range
		{event.ProtoTCP, "ESTAB", "10.0.0.5:41000", "192.0.2.1:40000", "out?"}, // 40000 listens here, not there
		{event.ProtoTCP, "SYN-SENT", "10.0.0.5:8080", "192.0.2.1:50000", "out"},
		{event.ProtoTCP, "SYN-RECV", "10.0.0.5:41000", "192.0.2.1:443", "in"},
		{event.ProtoUDP, "ESTAB", "127.0.0.1:53", "127.0.0.1:41000", "in?"},
		{event.ProtoUDP, "ESTAB", "127.0.0.1:41000", "127.0.0.1:53", "out?"},
		{event.ProtoUDP, "ESTAB", "127.0.0.1:41000", "127.0.0.1:40000", "out?"}, // 40000 listens for TCP only
	} {
		s := Socket{Proto: tc.proto, State: tc.state, Local: ap(tc.local), Remote: ap(tc.remote)}
		d, inferred := v.direction(&s)
		got := event.ShortDir(d)
		if inferred {
			got += "?"
		}
		if got != tc.want {
			t.Errorf("%s %s %s -> %s: %q, want %q", event.ProtoName(tc.proto), tc.state, tc.local, tc.remote, got, tc.want)
		}
	}
}

// A listen seen by --watch becomes the row a snapshot would show, with the
// same scope and flags; a failed call or a TCP bind makes no listener.
func TestListenerFromEvent(t *testing.T) {
	ev := event.Event{Kind: event.KindListen, PID: 66, Comm: "bash", User: "root", Exe: "/tmp/x", ExeDeleted: true,
		Proto: event.ProtoTCP, Family: 2, Local: netip.MustParseAddrPort("10.0.0.5:4444"),
		HasNet: true, Netns: 7, UnprivPortStart: 1024, PortRange: [2]uint16{32768, 60999}}
	s, ok := listenerFromEvent(&ev)
	want := `7 tcp 10.0.0.5:4444 LISTEN "only 10.0.0.5" registered priv=false pid=66 ` +
		`["executable deleted: /tmp/x (pid 66)" "bash (pid 66) is a shell, interpreter or relay listening"]`
	got := fmt.Sprintf("%d %s %s %s %q %s priv=%t pid=%d %q", s.Netns, event.ProtoName(s.Proto), s.Local, s.State, s.Scope,
		s.PortClass, s.Privileged, s.Holders[0].PID, s.Suspicious)
	if !ok || got != want {
		t.Errorf("listen: %t %s\nwant %s", ok, got, want)
	}
	udp := ev
	udp.Kind, udp.Proto, udp.Local = event.KindBind, event.ProtoUDP, netip.MustParseAddrPort("[::1]:53")
	if s, ok := listenerFromEvent(&udp); !ok || s.State != "UNCONN" || s.Scope != "loopback only" || !s.Privileged {
		t.Errorf("UDP bind: %t %+v", ok, s)
	}
	tcpBind := ev
	tcpBind.Kind = event.KindBind
	failed := ev
	failed.Result, failed.Errno = event.ResultFailed, unix.EADDRINUSE
	for _, e := range []event.Event{tcpBind, failed} {
		if _, ok := listenerFromEvent(&e); ok {
			t.Errorf("%s %s made a listener", e.Kind, e.Result)
		}
	}
}

// The service port decides the class: a socket's local port, but the
// remote one of an outbound connection (a client of port 25 or 53 is
// about mail or DNS, whatever its own port), privileged by its own
// namespace's ip_unprivileged_port_start.
func TestSocketServicePort(t *testing.T) {
	ap := netip.MustParseAddrPort
	v := &netView{
		listening: map[protoPort][]netip.Addr{
			{event.ProtoTCP, 25}: {netip.IPv4Unspecified()}, {event.ProtoUDP, 53}: {netip.IPv4Unspecified()}, {event.ProtoTCP, 8080}: {netip.IPv4Unspecified()},
		},
		own: map[netip.Addr]bool{},
		rng: [2]uint16{32768, 60999},
	}
	for _, tc := range []struct {
		proto         uint16
		state         string
		local, remote string
		unpriv        uint32
		want          string
	}{
		{event.ProtoUDP, "ESTAB", "127.0.0.1:53814", "127.0.0.1:53", 1024, "out? wk*"},
		{event.ProtoUDP, "ESTAB", "127.0.0.1:53814", "127.0.0.1:53", 0, "out? wk"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:40312", "127.0.0.1:25", 1024, "out wk*"},
		{event.ProtoTCP, "ESTAB", "127.0.0.1:25", "127.0.0.1:40312", 1024, "in wk*"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:50000", "192.0.2.1:443", 1024, "out? wk*"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:50000", "192.0.2.1:8443", 9000, "out? reg*"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:8080", "192.0.2.1:50000", 1024, "in reg"},
		{event.ProtoTCP, "ESTAB", "10.0.0.5:32250", "192.0.2.1:25", 1024, "out? wk*"}, // the remote service port, not the local 32250
		{event.ProtoTCP, "LISTEN", "0.0.0.0:25", "", 1024, " wk*"},
		{event.ProtoUDP, "UNCONN", "0.0.0.0:53", "", 1024, " wk*"},
	} {
		s := Socket{Proto: tc.proto, State: tc.state, Local: ap(tc.local)}
		if tc.remote != "" {
			s.Remote = ap(tc.remote)
		}
		v.judge(&s, tc.unpriv)
		dir := event.ShortDir(s.Direction)
		if s.DirInferred {
			dir += "?"
		}
		if got := dir + " " + event.ShortClass(s.PortClass, s.Privileged); got != tc.want {
			t.Errorf("%s %s -> %s (unprivileged from %d): %q, want %q", event.ProtoName(tc.proto), tc.local, tc.remote, tc.unpriv, got, tc.want)
		}
	}
}

// The three wildcards reach three different sets of addresses, and read as
// ss -n writes them; a listener known only from its event, whose
// IPV6_V6ONLY nobody told, says so.
func TestWildcardScope(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		local          string
		has, v6only    bool
		addr, wantNote string
	}{
		{"0.0.0.0:80", false, false, "0.0.0.0:80", "all interfaces"},
		{"[::]:80", true, false, "*:80", "all interfaces, IPv4 and IPv6"},
		{"[::]:80", true, true, "[::]:80", "all IPv6 interfaces"},
		{"[::]:80", false, false, "[::]:80", "all IPv6 interfaces, IPv4 too unless v6only"},
		{"[::1]:53", true, false, "[::1]:53", "loopback only"},
		{"127.0.0.1:53", false, false, "127.0.0.1:53", "loopback only"},
		{"[fe80::1%eth0]:547", true, true, "[fe80::1%eth0]:547", "only fe80::1%eth0"},
	} {
		s := Socket{Proto: event.ProtoTCP, State: "LISTEN", Local: ap(tc.local), HasV6Only: tc.has, V6Only: tc.v6only}
		if addr, note := LocalAddr(&s), s.scope(); addr != tc.addr || note != tc.wantNote {
			t.Errorf("%s v6only=%t (known %t): %s %q, want %s %q", tc.local, tc.v6only, tc.has, addr, note, tc.addr, tc.wantNote)
		}
	}
}

// The view of a namespace: its listeners (for UDP, unconnected bound
// sockets) by protocol and port, none on port 0, and its own addresses,
// from its sockets and its interfaces (loopback's, with no socket on it).
func TestNewNetView(t *testing.T) {
	ap := netip.MustParseAddrPort
	socks := []Socket{
		{Proto: event.ProtoTCP, State: "LISTEN", Local: ap("0.0.0.0:25")},
		{Proto: event.ProtoTCP, State: "LISTEN", Local: ap("[::ffff:10.0.0.7]:25")},
		{Proto: event.ProtoTCP, State: "LISTEN", Local: ap("0.0.0.0:0")},
		{Proto: event.ProtoUDP, State: "UNCONN", Local: ap("192.0.2.53:53")},
		{Proto: event.ProtoTCP, State: "ESTAB", Local: ap("10.0.0.5:40000"), Remote: ap("192.0.2.1:443")},
	}
	v := newNetView(socks, [2]uint16{32768, 60999})
	got := fmt.Sprint(v.listening)
	if want := "map[{6 25}:[0.0.0.0 10.0.0.7] {17 53}:[192.0.2.53]]"; got != want {
		t.Errorf("listening %s, want %s", got, want)
	}
	for a, want := range map[string]bool{"10.0.0.5": true, "10.0.0.7": true, "192.0.2.53": true, "127.0.0.1": true, "0.0.0.0": false, "192.0.2.1": false} {
		if v.own[netip.MustParseAddr(a)] != want {
			t.Errorf("own %s: %t, want %t", a, !want, want)
		}
	}
}
