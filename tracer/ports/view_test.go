package ports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/netns"
)

func sampleSockets() []Socket {
	start := time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)
	nginx := Holder{PID: 812, PPID: 1, UID: 0, User: "root", Comm: "nginx", Exe: "/usr/sbin/nginx", Cgroup: "/system.slice/nginx.service", Start: start, FD: 6}
	worker := nginx
	worker.PID, worker.PPID, worker.User, worker.UID = 813, 812, "www-data", 33
	implant := Holder{PID: 6666, PPID: 1, User: "nobody", UID: 65534, Comm: "kworkerd", Exe: "/tmp/.x/kworkerd", ExeDeleted: true, Start: start.Add(time.Hour), FD: 3}
	sshd := Holder{PID: 700, PPID: 1, User: "root", Comm: "sshd", Exe: "/usr/sbin/sshd", Cgroup: "/system.slice/ssh.service", Start: start, FD: 3}
	grafana := Holder{PID: 900, PPID: 1, User: "grafana", UID: 472, Comm: "grafana", Exe: "/usr/share/grafana/bin/grafana", Cgroup: "/system.slice/grafana-server.service", Start: start, FD: 11}
	sendmail := Holder{PID: 1200, PPID: 1100, User: "smmsp", UID: 115, Comm: "sendmail", Exe: "/usr/lib/sm.bin/sendmail", Start: start.Add(90 * time.Minute), FD: 5}
	ap := netip.MustParseAddrPort
	s := []Socket{
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 10, State: "LISTEN", Local: ap("[::]:22"), V6Only: true, HasV6Only: true, Inode: 1005, Holders: []Holder{sshd},
			PortClass: event.ClassWellKnown, Privileged: true, Scope: "all IPv6 interfaces"},
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:80"), Inode: 1001, Holders: []Holder{nginx, worker},
			PortClass: event.ClassWellKnown, Privileged: true, Scope: "all interfaces"},
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:31337"), Inode: 1002, Holders: []Holder{implant},
			PortClass: event.ClassRegistered, Scope: "all interfaces", Suspicious: []string{"executable deleted: /tmp/.x/kworkerd (pid 6666)"}},
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "ESTAB", Local: ap("127.0.0.1:25"), Remote: ap("127.0.0.1:40312"), Inode: 1003,
			PortClass: event.ClassWellKnown, Privileged: true, Direction: event.DirInbound},
		{Netns: 4026531840, Proto: event.ProtoUDP, Family: 10, State: "UNCONN", Local: ap("[::1]:5353"), HasV6Only: true, Inode: 1004,
			PortClass: event.ClassRegistered, Scope: "loopback only", Suspicious: []string{"no live process holds it"}},
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 10, State: "LISTEN", Local: ap("[::]:3000"), HasV6Only: true, Inode: 1006, Holders: []Holder{grafana},
			PortClass: event.ClassRegistered, Scope: "all interfaces, IPv4 and IPv6"},
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "ESTAB", Local: ap("127.0.0.1:40312"), Remote: ap("127.0.0.1:25"), Inode: 1007, Holders: []Holder{sendmail},
			PortClass: event.ClassWellKnown, Privileged: true, Ephemeral: true, Direction: event.DirOutbound},
		// A connect-back from a deleted binary: outbound, inferred (no
		// listener here holds port 443), flagged all the same.
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "ESTAB", Local: ap("10.0.0.5:443"), Remote: ap("198.51.100.7:40001"), Inode: 1008,
			Holders: []Holder{implant}, PortClass: event.ClassRegistered, Direction: event.DirOutbound, DirInferred: true,
			Suspicious: []string{"executable deleted: /tmp/.x/kworkerd (pid 6666)"}},
		// A service in the ephemeral range, where a client may take its port.
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:40000"), Inode: 1009, Holders: []Holder{grafana},
			PortClass: event.ClassRegistered, Ephemeral: true, Scope: "all interfaces"},
	}
	return s
}

// sampleTime is when the sample sockets were seen.
var sampleTime = time.Date(2026, 11, 28, 7, 30, 0, 120000000, time.UTC)

func TestPortsTableGolden(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, sampleSockets(), false); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "ports.table", []byte(b.String()))
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("trailing spaces: %q", line)
		}
	}
}

func TestPortsJSONGolden(t *testing.T) {
	var buf []byte
	socks := sampleSockets()
	for i := range socks {
		buf = AppendSocketJSON(buf, EventSnapshot, sampleTime, &socks[i])
	}
	golden.Check(t, "ports.jsonl", buf)
}

func TestWhoGolden(t *testing.T) {
	var b strings.Builder
	now := time.Date(2026, 11, 28, 7, 30, 0, 0, time.UTC)
	if err := WriteWho(&b, 80, "tcp", sampleSockets()[1:2], now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 31337, "tcp", sampleSockets()[2:3], now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 3000, "tcp", sampleSockets()[5:6], now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 8080, "tcp,udp", nil, now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 443, "tcp", sampleSockets()[7:8], now); err != nil {
		t.Fatal(err)
	}
	timeWait := Socket{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "TIME-WAIT", Local: netip.MustParseAddrPort("127.0.0.1:25"),
		Remote: netip.MustParseAddrPort("127.0.0.1:40312"), PortClass: event.ClassWellKnown, Privileged: true, Direction: event.DirInbound}
	if err := WriteWho(&b, 25, "tcp", []Socket{timeWait}, now); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "who.txt", []byte(b.String()))
}

func TestWhoTarget(t *testing.T) {
	for _, tc := range []struct {
		in    string
		port  uint16
		proto uint16
		err   string
	}{
		{"80", 80, 0, ""},
		{"10101/tcp", 10101, event.ProtoTCP, ""},
		{"53/udp", 53, event.ProtoUDP, ""},
		{"53/sctp", 0, 0, `invalid protocol "sctp"`},
		{"http", 0, 0, `invalid port "http"`},
		{"70000/tcp", 0, 0, `invalid port "70000"`},
		{"0", 0, 0, `invalid port 0 in "0"`},
		{"0/udp", 0, 0, `invalid port 0 in "0/udp"`},
	} {
		var c WhoConfig
		err := c.ParseTarget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || c.Port != tc.port || c.Proto != tc.proto {
			t.Errorf("%s: %d/%d %v", tc.in, c.Port, c.Proto, err)
		}
	}
}

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

// --netns all says in one line which namespaces it skipped, and under
// --watch only those it has not named before.
func TestUnopenedNotice(t *testing.T) {
	n := &unopenedNotice{cmd: "ports"}
	var b strings.Builder
	denied := func(pids ...int) (u []Unopened) {
		for _, pid := range pids {
			u = append(u, Unopened{fmt.Sprintf("/proc/%d/ns/net", pid), unix.EACCES})
		}
		return u
	}
	n.say(&b, nil)
	n.say(&b, denied(1))
	n.say(&b, denied(1))
	n.say(&b, denied(1, 2, 3, 4, 5))
	want := "porttrace ports: --netns all: skipped 1 namespace it may not look into: /proc/1/ns/net (permission denied)\n" +
		"porttrace ports: --netns all: skipped 4 namespaces it may not look into: /proc/2/ns/net (permission denied), " +
		"/proc/3/ns/net (permission denied), /proc/4/ns/net (permission denied) and 1 more\n"
	if b.String() != want {
		t.Errorf("said\n%s\nwant\n%s", b.String(), want)
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

// A process names itself and its file as it likes; neither view lets a
// name carry escapes or control bytes to the terminal.
func TestPortsViewsEscapeNames(t *testing.T) {
	evil := Holder{PID: 6666, PPID: 1, User: "nobody", Comm: "x\x1b[8m", Exe: "/tmp/\x1b[2J\x07", ExeDeleted: true, FD: 3}
	s := []Socket{{Netns: 1, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: netip.MustParseAddrPort("0.0.0.0:31337"),
		Holders: []Holder{evil}, PortClass: event.ClassRegistered, Scope: "all interfaces"}}
	s[0].Suspicious = suspicious(&s[0])
	var table, who bytes.Buffer
	if err := WriteTable(&table, s, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&who, 31337, "tcp", s, time.Now()); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string][]byte{"ports": table.Bytes(), "who": who.Bytes()} {
		if i := bytes.IndexFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' }); i >= 0 {
			t.Errorf("%s: control byte %q at %d:\n%s", name, out[i], i, out)
		}
		if !bytes.Contains(out, []byte(`\x1b[2J\x07`)) {
			t.Errorf("%s: the escaped exe is missing:\n%s", name, out)
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

// A file that is no network namespace is named as such, not left to
// setns(2)'s "invalid argument"; so is another kind of namespace.
func TestPortsNetnsNotANamespace(t *testing.T) {
	for path, want := range map[string]string{
		"/etc/passwd":       "netns /etc/passwd: not a network namespace file (want /run/netns/NAME or /proc/PID/ns/net)",
		"/proc/self/ns/uts": "netns /proc/self/ns/uts: not a network namespace file (a uts namespace)",
	} {
		_, _, err := Snapshot(SnapshotOptions{Netns: []string{path}})
		if !errors.Is(err, netns.ErrNotNamespace) || err.Error() != want {
			t.Errorf("--netns %s: %v, want %q", path, err, want)
		}
	}
	// Under --netns all such a file (in /run/netns, say) is skipped, not fatal.
	_, unopened, err := SnapshotFiles([]string{"/proc/self/ns/net", "/etc/passwd"}, true, false)
	if err != nil || len(unopened) != 1 || !errors.Is(unopened[0].Err, netns.ErrNotNamespace) {
		t.Errorf("--netns all with /etc/passwd: unopened %v, error %v", unopened, err)
	}
}

// What the kernel keeps of a closed connection has no inode: JSON leaves
// the field out rather than write 0, as for any field not known.
func TestSocketJSONNoInode(t *testing.T) {
	tw := Socket{Netns: 1, Proto: event.ProtoTCP, Family: 2, State: "TIME-WAIT",
		Local: netip.MustParseAddrPort("127.0.0.1:25"), Remote: netip.MustParseAddrPort("127.0.0.1:40312")}
	var m map[string]any
	if err := json.Unmarshal(AppendSocketJSON(nil, EventSnapshot, sampleTime, &tw), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["inode"]; ok {
		t.Errorf("inode %v for a socket without one", m["inode"])
	}
}
