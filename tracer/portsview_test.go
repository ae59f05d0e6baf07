package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func sampleSockets() []Socket {
	start := time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)
	nginx := Holder{PID: 812, PPID: 1, UID: 0, User: "root", Comm: "nginx", Exe: "/usr/sbin/nginx", Cgroup: "/system.slice/nginx.service", Start: start, FD: 6}
	worker := nginx
	worker.PID, worker.PPID, worker.User, worker.UID = 813, 812, "www-data", 33
	implant := Holder{PID: 6666, PPID: 1, User: "nobody", UID: 65534, Comm: "kworkerd", Exe: "/tmp/.x/kworkerd", ExeDeleted: true, Start: start.Add(time.Hour), FD: 3}
	ap := netip.MustParseAddrPort
	s := []Socket{
		{Netns: 4026531840, Proto: ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:80"), Inode: 1001, Holders: []Holder{nginx, worker},
			PortClass: ClassWellKnown, Privileged: true, Scope: "all interfaces"},
		{Netns: 4026531840, Proto: ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:31337"), Inode: 1002, Holders: []Holder{implant},
			PortClass: ClassRegistered, Scope: "all interfaces", Suspicious: []string{"executable deleted: /tmp/.x/kworkerd (pid 6666)"}},
		{Netns: 4026531840, Proto: ProtoTCP, Family: 2, State: "ESTAB", Local: ap("127.0.0.1:25"), Remote: ap("127.0.0.1:40312"), Inode: 1003,
			PortClass: ClassWellKnown, Privileged: true, Direction: DirInbound},
		{Netns: 4026531840, Proto: ProtoUDP, Family: 10, State: "UNCONN", Local: ap("[::1]:5353"), Inode: 1004,
			PortClass: ClassRegistered, Scope: "loopback only", Suspicious: []string{"no live process holds it"}},
	}
	return s
}

func TestPortsTableGolden(t *testing.T) {
	var b strings.Builder
	if err := WritePortsTable(&b, sampleSockets(), false); err != nil {
		t.Fatal(err)
	}
	golden(t, "ports.table", []byte(b.String()))
}

func TestPortsJSONGolden(t *testing.T) {
	var buf []byte
	socks := sampleSockets()
	for i := range socks {
		buf = AppendSocketJSON(buf, &socks[i])
	}
	golden(t, "ports.jsonl", buf)
}

func TestWhoGolden(t *testing.T) {
	var b strings.Builder
	now := time.Date(2026, 11, 28, 7, 30, 0, 0, time.UTC)
	if err := WriteWho(&b, 80, "tcp", sampleSockets()[:1], now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 31337, "tcp", sampleSockets()[1:2], now); err != nil {
		t.Fatal(err)
	}
	if err := WriteWho(&b, 8080, "tcp,udp", nil, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "who.txt", []byte(b.String()))
}

func TestWhoTarget(t *testing.T) {
	for _, tc := range []struct {
		in    string
		port  uint16
		proto uint16
		err   string
	}{
		{"80", 80, 0, ""},
		{"10101/tcp", 10101, ProtoTCP, ""},
		{"53/udp", 53, ProtoUDP, ""},
		{"53/sctp", 0, 0, `invalid protocol "sctp"`},
		{"http", 0, 0, `invalid port "http"`},
		{"70000/tcp", 0, 0, `invalid port "70000"`},
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
	for _, tc := range []struct {
		holders []Holder
		want    string
	}{
		{[]Holder{{PID: 1, Comm: "nginx"}}, ""},
		{nil, "no live process holds it"},
		{[]Holder{{PID: 7, Comm: "bash"}}, "bash (pid 7) is a shell or interpreter listening"},
		{[]Holder{{PID: 8, Comm: "python3.11"}}, "python3.11 (pid 8) is a shell or interpreter listening"},
		{[]Holder{{PID: 9, Comm: "sshd", Exe: "/usr/sbin/sshd", ExeDeleted: true}}, "executable deleted: /usr/sbin/sshd (pid 9)"},
	} {
		got := strings.Join(suspicious(&Socket{Holders: tc.holders}), "; ")
		if got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.holders, got, tc.want)
		}
	}
}
