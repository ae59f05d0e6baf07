package tracer

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// rawEvents are kernel records as the BPF side writes them, one per case the
// output must get right.
func rawEvents() []porttraceEvent {
	comm := func(s string) (c [16]int8) {
		for i := 0; i < len(s) && i < 15; i++ {
			c[i] = int8(s[i])
		}
		return c
	}
	v4 := func(a, b, c, d byte) (x [16]uint8) { x[0], x[1], x[2], x[3] = a, b, c, d; return }
	v6 := func(s string) [16]uint8 { return netip.MustParseAddr(s).As16() }
	net := uint32(flagHasNet | flagHasProto)
	base := porttraceEvent{TsNs: 1_000_000_000, Pid: 4242, Tid: 4243, Ppid: 1, Uid: 0, Netns: 4026531840,
		ProtSock: 1024, PortLo: 32768, PortHi: 60999, Proto: unix.IPPROTO_TCP, Family: unix.AF_INET,
		Backend: uint8(event.BackendTracepoint), CgroupId: 77, Comm: comm("nginx")}
	with := func(f func(*porttraceEvent)) porttraceEvent { e := base; f(&e); return e }
	return []porttraceEvent{
		with(func(e *porttraceEvent) { // nginx binds its port with SO_REUSEADDR, as servers do
			e.Kind, e.Flags, e.Lport, e.Laddr = uint8(event.KindBind), net|flagHasLocal|flagCapBind|flagSockOpts, 80, v4(0, 0, 0, 0)
			e.SockOpts = uint8(porttraceSockOptSO_OPT_REUSEADDR)
		}),
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags, e.Lport, e.Laddr = uint8(event.KindListen), net|flagHasLocal, 80, v4(0, 0, 0, 0)
		}),
		with(func(e *porttraceEvent) { // denied: uid 65534 asking for port 80
			e.Kind, e.Flags, e.Lport, e.Laddr, e.Err = uint8(event.KindBind), net|flagHasLocal, 80, v4(0, 0, 0, 0), -int32(unix.EACCES)
			e.Uid, e.Pid, e.Tid, e.Comm = 65534, 5000, 5000, comm("python3")
		}),
		with(func(e *porttraceEvent) { // a backdoor on an odd port, binary deleted
			e.Kind, e.Flags, e.Lport, e.Laddr = uint8(event.KindBind), net|flagHasLocal|flagExeDeleted, 31337, v4(0, 0, 0, 0)
			e.Pid, e.Tid, e.Comm = 6666, 6666, comm("kworker\"x\x01")
		}),
		with(func(e *porttraceEvent) { // outbound to smtp
			e.Kind, e.Flags = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral
			e.Lport, e.Laddr, e.Rport, e.Raddr = 40312, v4(127, 0, 0, 1), 25, v4(127, 0, 0, 1)
			e.Comm = comm("sendmail")
		}),
		with(func(e *porttraceEvent) { // inbound smtp
			e.Kind, e.Flags = uint8(event.KindAccept), net|flagHasLocal|flagHasRemote
			e.Lport, e.Laddr, e.Rport, e.Raddr = 25, v4(127, 0, 0, 1), 40312, v4(127, 0, 0, 1)
			e.Comm = comm("sendmail")
		}),
		with(func(e *porttraceEvent) { // out of ephemeral ports
			e.Kind, e.Flags, e.Err = uint8(event.KindConnect), net|flagHasRemote, -int32(unix.EADDRNOTAVAIL)
			e.Rport, e.Raddr, e.PortLo, e.PortHi = 9000, v4(127, 0, 0, 1), 40000, 40001
			e.Comm = comm("loadgen")
		}),
		with(func(e *porttraceEvent) { // UDP over IPv6, MPTCP-free
			e.Kind, e.Flags, e.Proto, e.Family = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral, unix.IPPROTO_UDP, unix.AF_INET6
			e.Lport, e.Laddr, e.Rport, e.Raddr = 51000, v6("::1"), 53, v6("::1")
			e.Comm = comm("dig")
		}),
		with(func(e *porttraceEvent) { // a Go listener: MPTCP, kernel-chosen port
			e.Kind, e.Flags, e.Proto = uint8(event.KindListen), net|flagHasLocal|flagEphemeral, event.ProtoMPTCP
			e.Lport, e.Laddr = 49200, v4(127, 0, 0, 1)
			e.Comm = comm("server")
		}),
		with(func(e *porttraceEvent) { // a backend that could not read the netns
			e.Kind, e.Flags, e.Lport, e.Laddr = uint8(event.KindBind), flagHasLocal|flagHasProto, 443, v4(10, 0, 0, 1)
		}),
		with(func(e *porttraceEvent) { // the IPv6 wildcard
			e.Kind, e.Flags, e.Family, e.Lport, e.Laddr = uint8(event.KindBind), net|flagHasLocal, unix.AF_INET6, 8080, v6("::")
		}),
		with(func(e *porttraceEvent) { // a long IPv6 address
			e.Kind, e.Flags, e.Family = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral, unix.AF_INET6
			e.Lport, e.Laddr, e.Rport, e.Raddr = 51001, v6("2001:db8:1:2::7"), 443, v6("2001:db8:ffff:1234::abcd")
		}),
		with(func(e *porttraceEvent) { // an IPv4 client of a dual-stack listener
			e.Kind, e.Flags, e.Family = uint8(event.KindAccept), net|flagHasLocal|flagHasRemote, unix.AF_INET6
			e.Lport, e.Laddr, e.Rport, e.Raddr = 10202, v6("::ffff:127.0.0.1"), 40000, v6("::ffff:127.0.0.1")
			e.SockIno = 123456
		}),
		with(func(e *porttraceEvent) { // an IPv4 sockaddr connected on an IPv6 UDP socket
			e.Kind, e.Flags, e.Proto, e.Family = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral, unix.IPPROTO_UDP, unix.AF_INET6
			e.Lport, e.Laddr, e.Rport, e.Raddr = 32140, v6("::ffff:127.0.0.1"), 53, v6("::ffff:127.0.0.1")
			e.Comm = comm("resolver")
		}),
		with(func(e *porttraceEvent) { // a name meant to retitle the terminal, from a system user
			e.Kind, e.Flags, e.Proto = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral, unix.IPPROTO_UDP
			e.Lport, e.Laddr, e.Rport, e.Raddr = 41000, v4(127, 0, 0, 1), 123, v4(127, 0, 0, 1)
			e.Uid, e.Pid, e.Tid, e.Comm = 997, 7000, 7000, comm("\x1b]0;PWN\x07zz")
		}),
		with(func(e *porttraceEvent) { // a backslash, a DEL and a byte that is not UTF-8
			e.Kind, e.Flags, e.Lport, e.Laddr = uint8(event.KindBind), net|flagHasLocal, 5353, v4(0, 0, 0, 0)
			e.Pid, e.Tid, e.Comm = 7001, 7001, comm("C:\\x\x7f\xff")
		}),
		// A Go client's connect to a database: in progress, then refused
		// 52 ms later (connect_done keeps the connect's task and ports).
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags, e.Err = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral, -int32(unix.EINPROGRESS)
			e.Lport, e.Laddr, e.Rport, e.Raddr = 41822, v4(10, 0, 0, 7), 5432, v4(10, 0, 0, 5)
			e.Pid, e.Tid, e.Comm = 8100, 8107, comm("api")
		}),
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags, e.Err = uint8(event.KindConnectDone), net|flagHasLocal|flagHasRemote|flagEphemeral|flagLatency|flagRetrans, -int32(unix.ECONNREFUSED)
			e.Lport, e.Laddr, e.Rport, e.Raddr = 41822, v4(10, 0, 0, 7), 5432, v4(10, 0, 0, 5)
			e.Pid, e.Tid, e.Comm, e.TsNs, e.LatencyNs = 8100, 8107, comm("api"), 1_052_000_000, 52_000_000
		}),
		// A connect to a black hole: the SYN sent 7 times, then ETIMEDOUT.
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags, e.Err = uint8(event.KindConnectDone), net|flagHasLocal|flagHasRemote|flagEphemeral|flagLatency|flagRetrans, -int32(unix.ETIMEDOUT)
			e.Lport, e.Laddr, e.Rport, e.Raddr = 41900, v4(10, 0, 0, 7), 443, v4(192, 0, 2, 1)
			e.Pid, e.Tid, e.Comm, e.LatencyNs, e.SynRetrans = 8100, 8108, comm("api"), 127_000_000_000, 6
		}),
		// A second nginx finds 8080 taken: by the first, which did not set
		// SO_REUSEPORT, and by a connection in TIME-WAIT (decodedEvents).
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags, e.Err = uint8(event.KindBind), net|flagHasLocal|flagSockOpts, -int32(unix.EADDRINUSE)
			e.Lport, e.Laddr, e.SockOpts = 8080, v4(0, 0, 0, 0), uint8(porttraceSockOptSO_OPT_REUSEPORT|porttraceSockOptSO_OPT_REUSEADDR)
			e.Pid, e.Tid = 9100, 9100
		}),
		// A blocking connect that worked, with its latency.
		with(func(e *porttraceEvent) {
			e.Kind, e.Flags = uint8(event.KindConnect), net|flagHasLocal|flagHasRemote|flagEphemeral|flagLatency
			e.Lport, e.Laddr, e.Rport, e.Raddr = 41901, v4(127, 0, 0, 1), 6379, v4(127, 0, 0, 1)
			e.Pid, e.Tid, e.Comm, e.LatencyNs = 8200, 8200, comm("redis-cli"), 85_000
		}),
	}
}

func decodedEvents() []event.Event {
	var evs []event.Event
	for _, raw := range rawEvents() {
		var ev event.Event
		decode(&raw, 0, &ev, nil)
		ev.Time = ev.Time.UTC()
		ev.User = map[uint32]string{0: "root", 65534: "nobody", 997: "systemd-timesync"}[ev.UID]
		if ev.PID == 4242 {
			ev.Exe, ev.Cgroup = "/usr/sbin/nginx", "/system.slice/nginx.service"
		}
		if ev.Errno == unix.EADDRINUSE {
			ev.HasHolders, ev.Holders = true, []event.Holder{
				{Proto: event.ProtoTCP, Local: netip.MustParseAddrPort("0.0.0.0:8080"), State: "LISTEN", PID: 812, Comm: "nginx",
					HasSockOpts: true, SockOpts: event.OptReuseAddr},
				{Proto: event.ProtoTCP, Local: netip.MustParseAddrPort("10.0.0.7:8080"), Remote: netip.MustParseAddrPort("10.0.0.9:51000"),
					State: "TIME-WAIT"},
			}
		}
		if ev.Local.Port() == 49200 { // the Go listener runs in a pod
			ev.Cgroup = "/kubepods.slice/kubepods-pod6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope"
			ev.Workload = workload.FromCgroup(ev.Cgroup)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestDecode(t *testing.T) {
	evs := decodedEvents()
	for _, tc := range []struct {
		i    int
		want string
	}{
		{0, "bind ok tcp ipv4 local=0.0.0.0:80 remote=- eph=false class=well-known priv=true"},
		{2, "bind denied EACCES tcp ipv4 local=0.0.0.0:80 remote=- eph=false class=well-known priv=true"},
		{4, "connect ok tcp ipv4 local=127.0.0.1:40312 remote=127.0.0.1:25 eph=true class=well-known priv=true dir=outbound"},
		{5, "accept ok tcp ipv4 local=127.0.0.1:25 remote=127.0.0.1:40312 eph=false class=well-known priv=true dir=inbound"},
		{6, "connect failed EADDRNOTAVAIL tcp ipv4 local=- remote=127.0.0.1:9000 eph=false class=registered priv=false dir=outbound"},
		{7, "connect ok udp ipv6 local=[::1]:51000 remote=[::1]:53 eph=true class=well-known priv=true dir=outbound"},
		{8, "listen ok mptcp ipv4 local=127.0.0.1:49200 remote=- eph=true class=dynamic priv=false"},
		{9, "bind ok tcp ipv4 local=10.0.0.1:443 remote=- eph=false class=well-known priv=false"},
		{16, "connect in_progress EINPROGRESS tcp ipv4 local=10.0.0.7:41822 remote=10.0.0.5:5432 eph=true class=registered priv=false dir=outbound"},
		{17, "connect_done failed ECONNREFUSED tcp ipv4 local=10.0.0.7:41822 remote=10.0.0.5:5432 eph=true class=registered priv=false dir=outbound"},
	} {
		if got := Brief(&evs[tc.i]); got != tc.want {
			t.Errorf("event %d:\ngot  %s\nwant %s", tc.i, got, tc.want)
		}
	}
	if ev := evs[3]; !ev.ExeDeleted || ev.Comm != "kworker\"x\x01" {
		t.Errorf("deleted exe / comm: %t %q", ev.ExeDeleted, ev.Comm)
	}
	if ev := evs[9]; ev.HasNet || ev.Netns != 0 {
		t.Error("netns reported though the backend did not know it")
	}
	if got := evs[0].Time; !got.Equal(time.Unix(1, 0)) {
		t.Errorf("time %v", got)
	}
	if ev := evs[17]; !ev.HasLatency || ev.Latency != 52*time.Millisecond || !ev.HasSynRetransmits || ev.SynRetransmits != 0 {
		t.Errorf("connect_done: latency %v (%t), syn_retransmits %d (%t)", ev.Latency, ev.HasLatency, ev.SynRetransmits, ev.HasSynRetransmits)
	}
	if ev := evs[16]; ev.HasLatency || ev.HasSynRetransmits {
		t.Error("a connect in progress has a latency or retransmits")
	}
}

// The JSON path must not allocate per event (it runs for every event at
// full rate). Counted, not timed.
func TestAppendJSONAllocs(t *testing.T) {
	evs := decodedEvents()
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range evs {
			buf = event.AppendJSON(buf[:0], &evs[i])
		}
	})
	if allocs != 0 {
		t.Errorf("AppendJSON allocates %.1f times per run", allocs)
	}
}

// JSON strings decode to the process's text, yet carry no byte a terminal
// acts on: C0, DEL, C1 and bidirectional controls are \u escapes, and
// bytes that are not UTF-8 keep their value in KEY_hex.
func TestJSONStringEscapes(t *testing.T) {
	for _, in := range []string{"plain", `back\slash "q"`, "x\x1b[2J\x07", "del\x7f", "c1\u009b31m", "rlo\u202e", "raw\xff\x9b"} {
		ev := event.Event{Kind: event.KindBind, Comm: in}
		line := event.AppendJSON(nil, &ev)
		if i := bytes.IndexFunc(line[:len(line)-1], func(r rune) bool {
			return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || textout.IsBidiControl(r)
		}); i >= 0 {
			t.Errorf("%q: control at %d in %s", in, i, line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if utf8.ValidString(in) {
			if m["comm"] != in || m["comm_hex"] != nil {
				t.Errorf("%q decoded as %q (hex %v)", in, m["comm"], m["comm_hex"])
			}
			continue
		}
		if raw, err := hex.DecodeString(m["comm_hex"].(string)); err != nil || string(raw) != in {
			t.Errorf("%q: comm_hex %v decodes to %q (%v)", in, m["comm_hex"], raw, err)
		}
	}
}

// The event package numbers kinds and backends as the kernel side does
// (enum event_kind, enum backend_id in bpf/porttrace.h, generated here).
func TestEnumsMatchTheKernelSide(t *testing.T) {
	for _, tc := range []struct {
		name      string
		kernel, g uint32
	}{
		{"EV_BIND", uint32(porttraceEventKindEV_BIND), uint32(event.KindBind)},
		{"EV_LISTEN", uint32(porttraceEventKindEV_LISTEN), uint32(event.KindListen)},
		{"EV_CONNECT", uint32(porttraceEventKindEV_CONNECT), uint32(event.KindConnect)},
		{"EV_ACCEPT", uint32(porttraceEventKindEV_ACCEPT), uint32(event.KindAccept)},
		{"EV_CONNECT_DONE", uint32(porttraceEventKindEV_CONNECT_DONE), uint32(event.KindConnectDone)},
		{"BACKEND_TRACEPOINT", uint32(porttraceBackendIdBACKEND_TRACEPOINT), uint32(event.BackendTracepoint)},
		{"BACKEND_FENTRY", uint32(porttraceBackendIdBACKEND_FENTRY), uint32(event.BackendFentry)},
		{"BACKEND_KPROBE", uint32(porttraceBackendIdBACKEND_KPROBE), uint32(event.BackendKprobe)},
	} {
		if tc.kernel != tc.g {
			t.Errorf("%s is %d in bpf/porttrace.h, %d in Go", tc.name, tc.kernel, tc.g)
		}
	}
}
