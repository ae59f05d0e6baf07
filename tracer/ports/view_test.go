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
	"github.com/porttrace/porttrace/tracer/internal/workload"
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
	apiCgroup := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope"
	api := Holder{PID: 48121, PPID: 48100, User: "10001", UID: 10001, Comm: "python3", Exe: "/usr/local/bin/python3.12", Cgroup: apiCgroup,
		Workload: workload.FromCgroup(apiCgroup), Start: start.Add(30 * time.Minute), FD: 7,
		Names: workload.Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop", Image: "registry.example/shop/checkout:1.4"}}
	redisCgroup := "/libpod_parent/libpod-4c2e0d1f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d"
	redis := Holder{PID: 5100, PPID: 5090, User: "999", UID: 999, Comm: "redis-server", Exe: "/usr/local/bin/redis-server", Cgroup: redisCgroup,
		Workload: workload.FromCgroup(redisCgroup), Start: start, FD: 6}
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
		// A pod's container, and a podman container.
		{Netns: 4026532301, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:8080"), Inode: 1010, Holders: []Holder{api},
			PortClass: event.ClassRegistered, Scope: "all interfaces"},
		{Netns: 4026532402, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:6379"), Inode: 1011, Holders: []Holder{redis},
			PortClass: event.ClassRegistered, Scope: "all interfaces"},
		// A service in the ephemeral range, where a client may take its port.
		{Netns: 4026531840, Proto: event.ProtoTCP, Family: 2, State: "LISTEN", Local: ap("0.0.0.0:40000"), Inode: 1009, Holders: []Holder{grafana},
			PortClass: event.ClassRegistered, Ephemeral: true, Scope: "all interfaces"},
	}
	return s
}

// sampleTime is when the sample sockets were seen.
var sampleTime = time.Date(2026, 11, 28, 7, 30, 0, 120000000, time.UTC)

func TestPortsTableGolden(t *testing.T) {
	for _, tc := range []struct {
		file    string
		columns []string // nil: the default table
	}{
		{"ports.table", nil},
		{"ports-wide.table", wideLayout},
		{"ports-columns.table", []string{"local", "state", "pid", "exe", "fd", "inode"}},
		{"ports-columns-all.table", ColumnNames()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var b strings.Builder
			var err error
			if tc.columns == nil {
				err = WriteTable(&b, sampleSockets(), false)
			} else {
				err = WriteColumns(&b, sampleSockets(), tc.columns)
			}
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.file, []byte(b.String()))
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			if len(lines) != len(sampleSockets())+1 {
				t.Errorf("%d lines for %d sockets and a header", len(lines), len(sampleSockets()))
			}
			for _, line := range lines {
				if strings.HasSuffix(line, " ") {
					t.Errorf("trailing spaces: %q", line)
				}
			}
		})
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
	if err := WriteWho(&b, 8080, "tcp", sampleSockets()[8:10], now); err != nil {
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
