package ports

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// WriteTable prints sockets as a table, one row a socket, its first
// holder named and the others counted (PID+N: N more processes hold it;
// who lists them). Columns are as wide as their widest cell; nothing
// wraps and no line ends in spaces, on a terminal or into a pipe.
func WriteTable(w io.Writer, socks []Socket, showNetns bool) error {
	return WriteColumns(w, socks, tableLayout(socks, showNetns))
}

// WriteColumns writes socks as a table of the named columns (-o wide, -o
// columns=; ParseColumns).
func WriteColumns(w io.Writer, socks []Socket, names []string) error {
	cols := make([]column, len(names))
	header := make([]any, len(names))
	for i, name := range names {
		cols[i] = columns[slices.IndexFunc(columns, func(c column) bool { return c.name == name })]
		header[i] = cols[i].header
	}
	rows := [][]any{header}
	for i := range socks {
		row := make([]any, len(cols))
		for j, c := range cols {
			row[j] = c.cell(&socks[i])
		}
		if j := slices.Index(names, "pid"); j >= 0 {
			if n := distinctPIDs(socks[i].Holders); n > 1 {
				row[j] = row[j].(string) + fmt.Sprintf("+%d", n-1)
			}
		}
		rows = append(rows, row)
	}
	widths := make([]int, len(header))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.(string))+2)
		}
	}
	var b []byte
	for _, r := range rows {
		b = textout.AppendCells(b, r, widths)
	}
	_, err := w.Write(b)
	return err
}

// socketNote is a listener's scope and why a socket deserves a look, as
// the table's NOTE column says it. A listener in the ephemeral range is
// worth a word: its port is one the kernel may also hand to a client,
// and a restart finds it taken.
func socketNote(s *Socket) string {
	var note []string
	if s.Scope != "" {
		note = append(note, s.Scope)
	}
	if s.Listening() && s.Ephemeral {
		note = append(note, "in the ephemeral range")
	}
	for _, why := range s.Suspicious {
		note = append(note, "! "+why)
	}
	return strings.Join(note, "; ")
}

// sockAddr writes an address as ss -n does: 0.0.0.0:PORT, [::]:PORT,
// [::1]:PORT; nothing for none. IPv4 traffic on an IPv6 socket is written
// as the IPv4 address it is, as in the stream and in JSON.
func sockAddr(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// LocalAddr writes a socket's local address as ss -n does, so that the
// three wildcards, three different reaches, read differently: 0.0.0.0:PORT
// is IPv4 only, [::]:PORT IPv6 only (or not known to take IPv4), and
// *:PORT a dual-stack socket on both.
func LocalAddr(s *Socket) string {
	if s.bothFamilies() {
		return "*:" + strconv.FormatUint(uint64(s.Local.Port()), 10)
	}
	return sockAddr(s.Local)
}

func distinctPIDs(hs []Holder) int {
	seen := map[uint32]bool{}
	for _, h := range hs {
		seen[h.PID] = true
	}
	return len(seen)
}

// AppendSocketJSON appends s as one JSON object and a newline, with the
// event stream's field names where they mean the same. kind says what the
// object reports (EventSnapshot, EventClosed), so a --watch stream can be
// told apart by one key, as the tracer's bind and listen are; at is when it
// was seen, so that it sorts among them.
func AppendSocketJSON(buf []byte, kind string, at time.Time, s *Socket) []byte {
	buf = append(buf, `{"time":"`...)
	buf = at.UTC().AppendFormat(buf, textout.TimeLayout)
	buf = append(buf, `","event":`...)
	buf = textout.AppendJSONString(buf, kind)
	buf = textout.AppendUint(buf, "netns", uint64(s.Netns))
	buf = textout.AppendStr(buf, "proto", event.ProtoName(s.Proto))
	buf = textout.AppendStr(buf, "family", event.AddrFamily(s.Family, s.Local, s.Remote))
	buf = textout.AppendStr(buf, "state", s.State)
	buf = textout.AppendAddrPort(buf, "local_addr", "local_port", s.Local)
	buf = textout.AppendAddrPort(buf, "remote_addr", "remote_port", s.Remote)
	if s.HasV6Only {
		buf = textout.AppendBool(buf, "v6only", s.V6Only)
	}
	buf = textout.AppendStr(buf, "port_class", s.PortClass.String())
	buf = textout.AppendBool(buf, "privileged", s.Privileged)
	buf = textout.AppendBool(buf, "ephemeral", s.Ephemeral)
	if s.Scope != "" {
		buf = textout.AppendStr(buf, "scope", s.Scope)
	}
	if s.Direction != event.DirNone {
		buf = textout.AppendStr(buf, "direction", s.Direction.String())
		buf = textout.AppendBool(buf, "direction_inferred", s.DirInferred)
	}
	if s.Inode != 0 {
		buf = textout.AppendUint(buf, "inode", uint64(s.Inode))
	}
	if len(s.Holders) > 0 {
		h := &s.Holders[0]
		buf = textout.AppendUint(buf, "pid", uint64(h.PID))
		buf = textout.AppendStr(buf, "user", h.User)
		buf = textout.AppendText(buf, "comm", h.Comm)
		buf = textout.AppendText(buf, "exe", h.Exe)
		buf = textout.AppendBool(buf, "exe_deleted", h.ExeDeleted)
		if h.Cgroup != "" {
			buf = textout.AppendText(buf, "cgroup", h.Cgroup)
		}
		buf = workload.AppendJSON(buf, h.Workload, h.Names)
	}
	buf = append(buf, `,"holders":[`...)
	for i := range s.Holders {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendHolderJSON(buf, &s.Holders[i])
	}
	buf = append(buf, ']')
	buf = textout.AppendStrings(buf, "suspicious", s.Suspicious)
	return append(buf, "}\n"...)
}

// appendHolderJSON appends one process holding a socket as a JSON object.
func appendHolderJSON(buf []byte, h *Holder) []byte {
	buf = append(buf, `{"pid":`...)
	buf = strconv.AppendUint(buf, uint64(h.PID), 10)
	buf = textout.AppendUint(buf, "ppid", uint64(h.PPID))
	buf = textout.AppendUint(buf, "uid", uint64(h.UID))
	buf = textout.AppendStr(buf, "user", h.User)
	buf = textout.AppendText(buf, "comm", h.Comm)
	buf = textout.AppendText(buf, "exe", h.Exe)
	buf = textout.AppendBool(buf, "exe_deleted", h.ExeDeleted)
	buf = textout.AppendText(buf, "cgroup", h.Cgroup)
	buf = workload.AppendJSON(buf, h.Workload, h.Names)
	if !h.Start.IsZero() {
		buf = textout.AppendStr(buf, "start", h.Start.UTC().Format(time.RFC3339))
	}
	if h.FD >= 0 {
		buf = textout.AppendUint(buf, "fd", uint64(h.FD))
	}
	return append(buf, '}')
}

// WriteWho tells who holds the sockets of one port, a paragraph a socket.
// What the kernel keeps of closed connections (TIME-WAIT) is listed too,
// but alone it does not hold the port, and the last line says so.
func WriteWho(w io.Writer, port uint16, proto string, socks []Socket, now time.Time) error {
	var b strings.Builder
	held := false
	for i := range socks {
		s := &socks[i]
		held = held || s.Owned()
		fmt.Fprintf(&b, "%s %s", event.ProtoName(s.Proto), LocalAddr(s))
		if s.Remote.IsValid() {
			fmt.Fprintf(&b, " <-> %s", sockAddr(s.Remote))
		}
		fmt.Fprintf(&b, "  %s", s.State)
		if s.Scope != "" {
			fmt.Fprintf(&b, " (%s)", s.Scope)
		}
		if s.Direction != event.DirNone {
			fmt.Fprintf(&b, " %s", s.Direction)
			if s.DirInferred {
				b.WriteString(" (inferred)")
			}
		}
		fmt.Fprintf(&b, "  %s\n", portFacts(s))
		switch {
		case len(s.Holders) > 0:
		case !s.Owned():
			fmt.Fprintf(&b, "  no process: the kernel keeps this closed connection in %s\n", s.State)
		case !slices.Contains(s.Suspicious, s.orphan):
			fmt.Fprintf(&b, "  %s\n", cmp.Or(s.orphan, "no process porttrace can see holds it"))
		}
		for _, h := range s.Holders {
			fmt.Fprintf(&b, "  %s\n", holderLine(&h, now))
		}
		for _, why := range s.Suspicious {
			fmt.Fprintf(&b, "  ! %s\n", textout.Printable(why))
		}
	}
	switch {
	case len(socks) == 0:
		fmt.Fprintf(&b, "port %d/%s: nobody holds it\n", port, proto)
	case !held:
		fmt.Fprintf(&b, "port %d/%s: nobody holds it, only closed connections linger\n", port, proto)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// portFacts is what who says of a socket's port: its class (of the
// service port, as CLASS in ports), privileged, in the ephemeral range,
// and its namespace.
func portFacts(s *Socket) string {
	facts := s.PortClass.String() + " port"
	if s.Direction == event.DirOutbound {
		facts = s.PortClass.String() + " service port " + strconv.Itoa(int(s.ServicePort()))
	}
	if s.Privileged {
		facts += ", privileged"
	}
	if s.Ephemeral {
		facts += ", local port in the ephemeral range"
	}
	return facts + ", netns " + strconv.FormatUint(uint64(s.Netns), 10)
}

// workloadWords says which workload a holder belongs to, by name where
// the runtime named it ("pod checkout-7d9f (namespace shop), container
// api"), else by id ("pod UID, container RUNTIME SHORTID").
func workloadWords(w workload.Identity, n workload.Names) string {
	var parts []string
	switch {
	case n.Pod != "":
		parts = append(parts, fmt.Sprintf("pod %s (namespace %s)", n.Pod, n.Namespace))
	case w.PodUID != "":
		parts = append(parts, "pod "+w.PodUID)
	}
	switch {
	case n.Container != "":
		parts = append(parts, "container "+n.Container)
	case w.ContainerID != "" && w.Runtime != "":
		parts = append(parts, "container "+w.Runtime+" "+w.ShortID())
	case w.ContainerID != "":
		parts = append(parts, "container "+w.ShortID())
	}
	return strings.Join(parts, ", ")
}

// holderLine is one process holding a socket, with what tells it apart
// from a namesake: exe (deleted?), parent, start time, cgroup. Names and
// paths come with their control bytes escaped.
func holderLine(h *Holder, now time.Time) string {
	var b strings.Builder
	exe := h.Exe
	if h.ExeDeleted {
		exe += " (DELETED)"
	}
	fmt.Fprintf(&b, "pid %d (%s), user %s, exe %s, parent %d", h.PID, h.Comm, h.User, exe, h.PPID)
	if !h.Start.IsZero() {
		fmt.Fprintf(&b, ", started %s (%s ago)", h.Start.In(textout.DisplayZone).Format("2006-01-02 15:04:05"), now.Sub(h.Start).Round(time.Second))
	}
	if w := workloadWords(h.Workload, h.Names); w != "" {
		fmt.Fprintf(&b, ", %s", w)
	}
	if h.Cgroup != "" {
		fmt.Fprintf(&b, ", cgroup %s", h.Cgroup)
	}
	if h.FD >= 0 {
		fmt.Fprintf(&b, ", fd %d", h.FD)
	}
	return textout.Printable(b.String())
}
