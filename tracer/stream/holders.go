package stream

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/clash"
	"github.com/porttrace/porttrace/tracer/textout"
)

// holderLookup names what held the address and port of a bind that failed
// with EADDRINUSE: clash.Find in the socket's namespace, right after the
// event, before it is written. A crash-looping service fails the same bind
// again and again, so an answer is reused for a second, and the lookups
// cost one sock_diag dump and a read of /proc a second at most per port.
// Safe for concurrent use: one lookup at a time, the rest wait for it (and
// most then find its answer).
type holderLookup struct {
	mu     sync.Mutex
	cache  map[holderKey]holderAnswer
	stderr io.Writer
	warned bool
	find   func(ns uint32, proto uint16, local netip.AddrPort, v6only bool) ([]clash.Holder, error)
}

type holderKey struct {
	netns  uint32
	proto  uint16
	local  netip.AddrPort
	v6only bool
}

type holderAnswer struct {
	at      time.Time
	holders []event.Holder
}

// holderCacheFor is how long an answer is reused.
const holderCacheFor = time.Second

func newHolderLookup(stderr io.Writer) *holderLookup {
	return &holderLookup{cache: map[holderKey]holderAnswer{}, stderr: stderr, find: clash.Find}
}

// fill sets ev's holders if it is a bind that failed with EADDRINUSE. A
// lookup that fails is said once on stderr, and the event goes without.
func (h *holderLookup) fill(ev *event.Event) {
	if ev.Kind != event.KindBind || ev.Errno != unix.EADDRINUSE || !ev.Local.IsValid() || ev.Local.Port() == 0 || !ev.HasNet {
		return
	}
	proto := ev.Proto
	if proto == event.ProtoMPTCP {
		proto = event.ProtoTCP // an MPTCP socket binds through a TCP subflow
	}
	key := holderKey{ev.Netns, proto, ev.Local, ev.HasSockOpts && ev.SockOpts&event.OptV6Only != 0}
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := h.cache[key]; ok && time.Since(a.at) < holderCacheFor {
		ev.HasHolders, ev.Holders = true, a.holders
		return
	}
	found, err := h.find(key.netns, key.proto, key.local, key.v6only)
	if err != nil {
		if !h.warned {
			h.warned = true
			fmt.Fprintf(h.stderr, "porttrace: cannot name what holds a port a bind found in use: %s\n", textout.Printable(err.Error()))
		}
		return
	}
	holders := make([]event.Holder, len(found))
	for i, f := range found {
		holders[i] = f.Holder
	}
	if len(h.cache) >= 1024 {
		clear(h.cache)
	}
	h.cache[key] = holderAnswer{time.Now(), holders}
	ev.HasHolders, ev.Holders = true, holders
}

// holderNotes are the lines under a bind that found its address in use:
// "held by nginx (pid 812), LISTEN, no SO_REUSEPORT", a few holders at
// most, the listeners first.
func holderNotes(ev *event.Event) []string {
	if !ev.HasHolders {
		return nil
	}
	if len(ev.Holders) == 0 {
		return []string{"no holder left when porttrace looked: it closed since"}
	}
	const most = 3
	var notes []string
	for i := range ev.Holders[:min(len(ev.Holders), most)] {
		notes = append(notes, holderNote(&ev.Holders[i]))
	}
	if n := len(ev.Holders) - most; n > 0 {
		notes = append(notes, fmt.Sprintf("and %d more %s", n, textout.Plural(n, "socket", "sockets")))
	}
	return notes
}

func holderNote(h *event.Holder) string {
	var b strings.Builder
	switch {
	case h.PID != 0:
		fmt.Fprintf(&b, "held by %s (pid %s), %s", textout.Printable(h.Comm), strconv.Itoa(h.PID), h.State)
	case h.State == "TIME-WAIT":
		b.WriteString("held by a connection in TIME-WAIT")
	default:
		fmt.Fprintf(&b, "held by a socket no process holds, %s", h.State)
	}
	if h.Remote.IsValid() {
		b.WriteString(" with " + hostPort(h.Remote, 0))
	}
	if h.HasSockOpts {
		if h.SockOpts&event.OptReusePort != 0 {
			b.WriteString(", SO_REUSEPORT")
		} else {
			b.WriteString(", no SO_REUSEPORT")
		}
		if h.SockOpts&event.OptReuseAddr != 0 {
			b.WriteString(", SO_REUSEADDR")
		}
	}
	if h.BoundIf != "" {
		b.WriteString(", on " + textout.Printable(h.BoundIf))
	}
	return b.String()
}
