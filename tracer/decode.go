package tracer

import (
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// Event flags: enum event_flags in bpf/porttrace.h, as bpf2go generates it.
const (
	flagHasLocal   = uint32(porttraceEventFlagsF_HAS_LOCAL)
	flagHasRemote  = uint32(porttraceEventFlagsF_HAS_REMOTE)
	flagHasNet     = uint32(porttraceEventFlagsF_HAS_NET)
	flagEphemeral  = uint32(porttraceEventFlagsF_EPHEMERAL)
	flagExeDeleted = uint32(porttraceEventFlagsF_EXE_DELETED)
	flagCapBind    = uint32(porttraceEventFlagsF_CAP_BIND)
	flagHasProto   = uint32(porttraceEventFlagsF_HAS_PROTO)
	flagSockOpts   = uint32(porttraceEventFlagsF_HAS_SOCK_OPTS)
	flagLatency    = uint32(porttraceEventFlagsF_HAS_LATENCY)
	flagRetrans    = uint32(porttraceEventFlagsF_HAS_RETRANS)
)

// recordSize is the size of struct event, the one record the BPF side
// writes to the ring buffers.
const recordSize = int(unsafe.Sizeof(porttraceEvent{}))

// decodeRecord decodes one ring-buffer record. A record of any other size
// than struct event's is an error, not an event: the BPF object and the
// Go types disagree (built from different bpf/porttrace.h), and every
// field read from it would be garbage.
func decodeRecord(sample []byte, bootOffset time.Duration, ev *event.Event, comms *interner) (tsNs uint64, err error) {
	if len(sample) != recordSize {
		return 0, fmt.Errorf("a record of %d bytes, want %d (struct event): the BPF object does not match this build", len(sample), recordSize)
	}
	raw := (*porttraceEvent)(unsafe.Pointer(&sample[0]))
	decode(raw, bootOffset, ev, comms)
	return raw.TsNs, nil
}

// decode turns a raw kernel event into an Event: addresses, names, result,
// and the classification of its ports. bootOffset converts the kernel's
// CLOCK_BOOTTIME stamp to wall-clock time; comms, if not nil, interns
// command names so a steady stream allocates none.
func decode(raw *porttraceEvent, bootOffset time.Duration, ev *event.Event, comms *interner) {
	*ev = event.Event{
		Time:       time.Unix(0, int64(raw.TsNs)).Add(bootOffset),
		Kind:       event.Kind(raw.Kind),
		Backend:    event.Backend(raw.Backend),
		PID:        raw.Pid,
		TID:        raw.Tid,
		PPID:       raw.Ppid,
		UID:        raw.Uid,
		GID:        raw.Gid,
		Comm:       comms.comm(&raw.Comm),
		CgroupID:   raw.CgroupId,
		ExeDeleted: raw.Flags&flagExeDeleted != 0,
		CapBind:    raw.Flags&flagCapBind != 0,
		Family:     raw.Family,
		Inode:      raw.SockIno,
		Ephemeral:  raw.Flags&flagEphemeral != 0,
	}
	if raw.Flags&flagHasProto != 0 {
		ev.Proto = raw.Proto
	}
	if raw.Err < 0 {
		// In 64 bits: -raw.Err of the least int32 is itself, negative.
		ev.Errno = syscall.Errno(-int64(raw.Err))
		ev.Result = event.ResultFailed
		switch {
		case ev.Errno == unix.EACCES || ev.Errno == unix.EPERM:
			ev.Result = event.ResultDenied
		case ev.Kind == event.KindConnect && raw.Flags&flagHasProto != 0 && ev.Proto != event.ProtoUDP && inProgress(ev.Errno):
			ev.Result = event.ResultInProgress
		}
	}
	if raw.Flags&flagLatency != 0 {
		ev.HasLatency, ev.Latency = true, time.Duration(raw.LatencyNs)
	}
	if raw.Flags&flagRetrans != 0 {
		ev.HasSynRetransmits, ev.SynRetransmits = true, raw.SynRetrans
	}
	if raw.Flags&flagHasLocal != 0 {
		ev.Local = netip.AddrPortFrom(addrFrom(raw.Family, &raw.Laddr), raw.Lport)
	}
	if raw.Flags&flagHasRemote != 0 {
		ev.Remote = netip.AddrPortFrom(addrFrom(raw.Family, &raw.Raddr), raw.Rport)
	}
	if raw.Flags&flagSockOpts != 0 {
		ev.HasSockOpts, ev.BoundIf = true, raw.BoundIf
		for _, b := range sockOptBits {
			if porttraceSockOpt(raw.SockOpts)&b.raw != 0 {
				ev.SockOpts |= b.opt
			}
		}
	}
	if raw.Flags&flagHasNet != 0 {
		ev.HasNet = true
		ev.Netns = raw.Netns
		ev.UnprivPortStart = raw.ProtSock
		ev.PortRange = [2]uint16{raw.PortLo, raw.PortHi}
	}
	switch ev.Kind {
	case event.KindConnect, event.KindConnectDone:
		ev.Direction = event.DirOutbound
	case event.KindAccept:
		ev.Direction = event.DirInbound
	}
	event.Classify(ev)
}

// inProgress reports whether a TCP connect that returned errno goes on in
// the background, as bpf/common.h's in_progress decides: EINPROGRESS, EINTR,
// or a restart (ERESTARTSYS and its kind, 512-516).
func inProgress(errno syscall.Errno) bool {
	return errno == unix.EINPROGRESS || errno == unix.EINTR || (errno >= 512 && errno <= 516)
}

func addrFrom(family uint16, b *[16]uint8) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(*b)
}

func commString(c *[16]int8) string {
	var b [16]byte
	n := 0
	for ; n < len(c) && c[n] != 0; n++ {
		b[n] = byte(c[n])
	}
	return string(b[:n])
}

// interner hands out one string per distinct command name, up to a bound.
type interner struct {
	m map[[16]int8]string
}

func newInterner() *interner { return &interner{m: map[[16]int8]string{}} }

func (in *interner) comm(c *[16]int8) string {
	if in == nil {
		return commString(c)
	}
	if s, ok := in.m[*c]; ok {
		return s
	}
	s := commString(c)
	if len(in.m) >= 4096 {
		clear(in.m)
	}
	in.m[*c] = s
	return s
}

// sockOptBits maps bpf/porttrace.h's enum sock_opt to event.SockOpts.
var sockOptBits = []struct {
	raw porttraceSockOpt
	opt event.SockOpts
}{
	{porttraceSockOptSO_OPT_REUSEADDR, event.OptReuseAddr},
	{porttraceSockOptSO_OPT_REUSEPORT, event.OptReusePort},
	{porttraceSockOptSO_OPT_FREEBIND, event.OptFreebind},
	{porttraceSockOptSO_OPT_TRANSPARENT, event.OptTransparent},
	{porttraceSockOptSO_OPT_BIND_NO_PORT, event.OptBindNoPort},
	{porttraceSockOptSO_OPT_V6ONLY, event.OptV6Only},
}
