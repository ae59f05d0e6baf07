package ports

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// The "event" of a socket object in ports and who JSON, next to the
// tracer's bind and listen: a socket found by looking, and a listener found
// gone.
const (
	EventSnapshot = "snapshot"
	EventClosed   = "closed"
)

// listenerKey names a listener across snapshots and events: by its
// socket's inode, which events carry too. An event that could not read it
// has inode 0 and stands for whichever socket of its namespace listens on
// its address.
type listenerKey struct {
	netns uint32
	proto uint16
	local netip.AddrPort
	inode uint32
}

func keyOf(s *Socket) listenerKey { return listenerKey{s.Netns, s.Proto, s.Local, s.Inode} }

func (k listenerKey) addr() listenerKey { k.inode = 0; return k }

// portsWatch keeps the listeners of the snapshot current: each bind and
// listen as the tracer reports it, each listener gone at the next look.
type portsWatch struct {
	cfg       Config
	held      []*netns.Held // the namespaces --netns named, held open; nil for all or none
	out       *bufio.Writer
	stderr    io.Writer
	notice    *unopenedNotice
	names     *workload.Resolver
	known     map[listenerKey]Socket
	manyNetns bool // a line names its namespace: --netns all, or more than one
	buf       []byte
	seen      int // binds and listens reported
	closed    int // listeners reported closed
}

// netnsNote names the namespace of a line when the watch spans several.
func (w *portsWatch) netnsNote(netns uint32) string {
	if !w.manyNetns {
		return ""
	}
	return " netns " + strconv.FormatUint(uint64(netns), 10)
}

func (w *portsWatch) run(ctx context.Context, t *tracer.Tracer) error {
	inScope, err := netns.Filter(w.cfg.Netns)
	if err != nil {
		return err
	}
	events, done := make(chan event.Event, 256), make(chan struct{})
	defer close(done)
	go func() {
		defer close(events)
		en := proc.NewEnricher()
		en.NameContainers(w.names)
		for {
			var ev event.Event
			if t.Read(&ev) != nil {
				return
			}
			if inScope != nil && !inScope[ev.Netns] {
				continue
			}
			en.Enrich(&ev)
			select {
			case events <- ev:
			case <-done:
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, t.Stop)
	defer stop()
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return w.out.Flush()
			}
			w.event(&ev)
		case <-tick.C:
			if err := w.look(); err != nil {
				return err
			}
			if w.held != nil && w.dropGone() {
				return w.out.Flush()
			}
		}

		if err := w.out.Flush(); errors.Is(err, textout.ErrStalled) {
			return err
		} else if err != nil {
			return textout.OutputError(err)
		}
	}
}

// event prints a bind or listen. One that made a listener gets the scope
// and flags a snapshot row would, and is remembered so that its close is
// reported even if it never lives through a snapshot.
func (w *portsWatch) event(ev *event.Event) {
	w.seen++
	l, isListener := listenerFromEvent(ev)
	if isListener && l.Family == unix.AF_INET6 {
		// The namespace of the thread that made it, else of its process,
		// else whichever watched namespace it is.
		paths := []string{fmt.Sprintf("/proc/%d/task/%d/ns/net", ev.PID, ev.TID), fmt.Sprintf("/proc/%d/ns/net", ev.PID)}
		if files, err := netns.Files(w.cfg.Netns); err == nil {
			paths = append(paths, files...)
		}
		lookUpV6Only(&l, paths)
		l.Scope = l.scope()
	}
	if w.cfg.Output == "json" {
		var more func([]byte) []byte
		if isListener {
			more = func(b []byte) []byte {
				if l.HasV6Only {
					b = textout.AppendBool(b, "v6only", l.V6Only)
				}
				b = textout.AppendStr(b, "scope", l.Scope)
				return textout.AppendStrings(b, "suspicious", l.Suspicious)
			}
		}
		w.buf = event.AppendJSONWith(w.buf[:0], ev, more)
		_, _ = w.out.Write(w.buf)
	} else {
		addr, note := sockAddr(ev.Local), ""
		if isListener {
			addr, note = LocalAddr(&l), "  "+socketNote(&l)
		}
		fmt.Fprintf(w.out, "%s + %s %s %s%s pid %d %s (%s)%s%s\n", ev.Time.In(textout.DisplayZone).Format("15:04:05"), ev.Kind,
			event.ProtoName(ev.Proto), addr, w.netnsNote(ev.Netns), ev.PID, textout.Printable(ev.Comm), textout.Printable(ev.User), resultNote(ev), textout.Printable(note))
	}
	// A UDP socket bound to a port the kernel chose is most often a
	// client about to connect, which would then look closed.
	if !isListener || (l.Proto == event.ProtoUDP && ev.Ephemeral) {
		return
	}
	k := keyOf(&l)
	if k.inode == 0 {
		for known := range w.known {
			if known.addr() == k.addr() {
				return // a listener on this address is known already
			}
		}
	}
	// A listen() again on a known listener has its inode: known already.
	if _, ok := w.known[k]; !ok {
		w.known[k] = l
	}
}

// look takes a snapshot of the listeners and reports those known before
// and gone now.
func (w *portsWatch) look() error {
	snap, unopened, err := Snapshot(SnapshotOptions{Netns: w.cfg.Netns})
	if err != nil {
		return err
	}
	at := time.Now()
	w.notice.say(w.stderr, unopened)
	now := map[listenerKey]Socket{}
	for _, s := range snap {
		if s.Listening() {
			now[keyOf(&s)] = s
		}
	}
	// Listeners on an address with an inode no event named: the tracer
	// missed their listen (io_uring under the tracepoint backend), or the
	// kernel shows another socket's inode for them (an MPTCP listener's
	// subflow on older kernels). A listener known from its event on such
	// an address is taken to be one of them, not closed.
	unnamed := map[listenerKey]bool{}
	for k := range now {
		if _, ok := w.known[k]; !ok {
			unnamed[k.addr()] = true
		}
	}
	var gone []Socket
	for k, s := range w.known {
		if _, ok := now[k]; !ok && !unnamed[k.addr()] {
			gone = append(gone, s)
		}
	}
	slices.SortFunc(gone, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Local.Port(), b.Local.Port()),
			a.Local.Addr().Compare(b.Local.Addr()), cmp.Compare(a.Inode, b.Inode))
	})
	for _, s := range gone {
		w.closed++
		if w.cfg.Output == "json" {
			w.buf = AppendSocketJSON(w.buf[:0], EventClosed, at, &s)
			_, _ = w.out.Write(w.buf)
		} else {
			fmt.Fprintf(w.out, "%s - closed %s %s%s %s\n", at.In(textout.DisplayZone).Format("15:04:05"), event.ProtoName(s.Proto),
				LocalAddr(&s), w.netnsNote(s.Netns), holderNote(&s))
		}
	}
	w.known = now
	return nil
}

// listenerFromEvent is the listener a successful listen, or bind of a UDP
// socket, made: as a snapshot would show it, with its scope and flags.
func listenerFromEvent(ev *event.Event) (Socket, bool) {
	if ev.Result != event.ResultOK || !ev.Local.IsValid() || !ev.HasNet {
		return Socket{}, false
	}
	var state string
	switch {
	case ev.Kind == event.KindListen:
		state = "LISTEN"
	case ev.Kind == event.KindBind && ev.Proto == event.ProtoUDP:
		state = "UNCONN"
	default:
		return Socket{}, false
	}
	proto := ev.Proto
	if proto == event.ProtoMPTCP {
		proto = event.ProtoTCP // sock_diag shows an MPTCP listener by its TCP subflow
	}
	port := ev.Local.Port()
	s := Socket{
		Netns: ev.Netns, Proto: proto, Family: ev.Family, State: state, Local: ev.Local, Inode: ev.Inode,
		Holders:    []Holder{holderFromEvent(ev)},
		PortClass:  event.ClassOf(port),
		Privileged: event.Privileged(port, ev.UnprivPortStart),
		Ephemeral:  event.InRange(port, ev.PortRange),
	}
	s.Scope = s.scope()
	s.Suspicious = suspicious(&s)
	return s, true
}

// lookUpV6Only asks sock_diag whether IPv6 listener l, known from its
// event, takes IPv4 too: no event carries IPV6_V6ONLY. It looks in the
// first of paths that is l's namespace; the thread or process that made l
// may have moved on or exited since, which the inode tells. A listener
// closed again, or a namespace no path leads to, leaves V6Only unknown.
func lookUpV6Only(l *Socket, paths []string) {
	for _, path := range paths {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || uint32(st.Ino) != l.Netns {
			continue
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Fstat(fd, &st) != nil || uint32(st.Ino) != l.Netns {
			unix.Close(fd)
			continue
		}
		_ = netns.Do(fd, func() error {
			list, err := sockdiag.Dump(unix.AF_INET6, l.Proto, sockdiag.ListenStates)
			for _, ds := range list {
				if ds.Local == l.Local && ds.HasV6Only {
					l.V6Only, l.HasV6Only = ds.V6Only, true
					break
				}
			}
			return err
		})
		unix.Close(fd)
		return
	}
}

// holderFromEvent is the process behind an event as ports and who describe
// a holder; the start time is read now, while the process likely lives.
func holderFromEvent(ev *event.Event) Holder {
	h := Holder{PID: ev.PID, PPID: ev.PPID, UID: ev.UID, User: ev.User, Comm: ev.Comm,
		Exe: ev.Exe, ExeDeleted: ev.ExeDeleted, Cgroup: ev.Cgroup, FD: -1,
		Workload: ev.Workload, Names: ev.Names}
	h.Start = proc.ReadFacts("/proc", ev.PID, proc.FactStat).Start
	return h
}

func resultNote(ev *event.Event) string {
	if ev.Result == event.ResultOK {
		return ""
	}
	return "  " + ev.ErrnoName() + ": " + ev.Reason
}

func holderNote(s *Socket) string {
	if len(s.Holders) == 0 {
		return ""
	}
	return fmt.Sprintf("(was pid %d %s)", s.Holders[0].PID, textout.Printable(s.Holders[0].Comm))
}

// dropGone lets go of each watched namespace that only porttrace still
// keeps (netns.Held.Orphaned: deleted, its last process gone), once the
// look that saw its listeners close is made, saying so; true when none is
// left to watch. Held open, a namespace is never destroyed, so gone here
// is nothing else keeping it.
func (w *portsWatch) dropGone() bool {
	var left, gone []*netns.Held
	for _, h := range w.held {
		if h.Orphaned() {
			gone = append(gone, h)
		} else {
			left = append(left, h)
		}
	}
	for i, h := range gone {
		end := ""
		if len(left) == 0 && i == len(gone)-1 {
			end = ": stopping"
		}
		fmt.Fprintf(w.stderr, "porttrace ports: network namespace %s is gone%s\n", textout.Printable(h.Named), end)
		h.Close()
	}
	w.held = left
	w.cfg.Netns = heldPaths(left)
	return len(left) == 0
}

func heldPaths(held []*netns.Held) []string {
	paths := make([]string, len(held))
	for i, h := range held {
		paths[i] = h.Path
	}
	return paths
}
