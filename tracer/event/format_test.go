package event

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// jsonEvents are events that between them set and leave out every field
// AppendJSON may write.
func jsonEvents() []Event {
	at := time.Date(2026, 3, 1, 12, 30, 5, 7, time.FixedZone("CET", 3600))
	return []Event{
		// Only what every event has.
		{Time: at, Kind: KindListen, Backend: BackendTracepoint, PID: 1, TID: 1, UID: 0, Comm: "init"},
		// A bind that lost its port to two sockets, with all there is to know.
		{Time: at, Kind: KindBind, Result: ResultFailed, Errno: unix.EADDRINUSE, Reason: "another socket holds this address and port",
			Backend: BackendFentry, PID: 10, TID: 11, PPID: 1, UID: 33, User: "www-data", Comm: "nginx", Exe: "/usr/sbin/nginx",
			Cgroup: "/system.slice/nginx.service", CgroupID: 4242, Inode: 9001, Proto: ProtoTCP, Family: unix.AF_INET6,
			Local: netip.MustParseAddrPort("[::]:8080"), HasNet: true, Netns: 4026531840, UnprivPortStart: 1024,
			HasSockOpts: true, SockOpts: OptReuseAddr | OptV6Only, BoundIf: 2, BoundIfName: "eth0",
			HasHolders: true, Holders: []Holder{
				{Proto: ProtoTCP, Local: netip.MustParseAddrPort("[::]:8080"), State: "LISTEN", PID: 20, Comm: "old\xffnginx",
					HasSockOpts: true, SockOpts: OptReusePort, BoundIf: "eth0"},
				{Proto: ProtoTCP, Local: netip.MustParseAddrPort("10.0.0.5:8080"), Remote: netip.MustParseAddrPort("10.0.0.9:50000"),
					State: "TIME-WAIT"},
			},
			PortClass: ClassRegistered},
		// A connect's end to an IPv4 peer of a dual-stack socket, in a
		// container, from an executable deleted since, whose name is not UTF-8.
		{Time: at, Kind: KindConnectDone, Result: ResultFailed, Errno: unix.ETIMEDOUT, Reason: "no answer to the SYN, sent 3 times",
			Backend: BackendKprobe, PID: 30, TID: 31, PPID: 29, UID: 1000, Comm: "curl", Exe: "/tmp/\xfecurl", ExeDeleted: true,
			Workload: workload.Identity{Runtime: "podman", ContainerID: strings.Repeat("ab", 32)}, Names: workload.Names{Container: "web"},
			Proto: ProtoMPTCP, Family: unix.AF_INET6, Local: netip.MustParseAddrPort("[::ffff:10.0.0.5]:40000"),
			Remote: netip.MustParseAddrPort("[::ffff:10.0.0.9]:443"), HasNet: true, Netns: 7, HasSockOpts: true, BoundIf: 3,
			HasLatency: true, Latency: 3 * time.Second, HasSynRetransmits: true, SynRetransmits: 2,
			Ephemeral: true, Direction: DirOutbound, PortClass: ClassWellKnown, Privileged: true},
		// An accept whose namespace porttrace could not read: no privileged.
		{Time: at, Kind: KindAccept, Backend: BackendTracepoint, PID: 40, TID: 40, Comm: "sshd", Proto: ProtoUDP, Family: unix.AF_INET,
			Local: netip.MustParseAddrPort("10.0.0.5:22"), Remote: netip.MustParseAddrPort("10.0.0.9:50001"),
			HasSockOpts: true, SockOpts: OptFreebind | OptTransparent | OptBindNoPort,
			Direction: DirInbound, PortClass: ClassWellKnown, Privileged: true},
	}
}

// AppendJSON writes each field it knows and leaves out what the backend
// could not know; AppendJSONWith adds its fields last.
func TestAppendJSONGolden(t *testing.T) {
	var buf []byte
	for _, ev := range jsonEvents() {
		buf = AppendJSON(buf, &ev)
	}
	ev := jsonEvents()[0]
	buf = AppendJSONWith(buf, &ev, func(b []byte) []byte { return append(b, `,"scope":"all interfaces"`...) })
	golden.Check(t, "event-format.jsonl", buf)
}

func TestShortForms(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ShortDir(DirInbound), "in"}, {ShortDir(DirOutbound), "out"}, {ShortDir(DirNone), ""},
		{ShortClass(ClassWellKnown, false), "wk"}, {ShortClass(ClassWellKnown, true), "wk*"},
		{ShortClass(ClassRegistered, false), "reg"}, {ShortClass(ClassDynamic, false), "dyn"},
		{ShortClass(ClassNone, false), ""}, {ShortClass(ClassRegistered, true), "reg*"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

func TestSockOptsNames(t *testing.T) {
	for _, tc := range []struct {
		o    SockOpts
		want string
	}{
		{0, ""},
		{OptReuseAddr, "reuseaddr"},
		{OptReusePort | OptV6Only, "reuseport,v6only"},
		{OptReuseAddr | OptReusePort | OptFreebind | OptTransparent | OptBindNoPort | OptV6Only,
			"reuseaddr,reuseport,freebind,transparent,bind_address_no_port,v6only"},
	} {
		if got := tc.o.String(); got != tc.want {
			t.Errorf("%d: %q, want %q", tc.o, got, tc.want)
		}
		if got := string(tc.o.appendJSON(nil)); got != `[`+quoteEach(tc.want)+`]` {
			t.Errorf("%d: JSON %s, want [%s]", tc.o, got, quoteEach(tc.want))
		}
	}
}

// quoteEach turns "a,b" into `"a","b"`.
func quoteEach(list string) string {
	if list == "" {
		return ""
	}
	return `"` + strings.ReplaceAll(list, ",", `","`) + `"`
}
