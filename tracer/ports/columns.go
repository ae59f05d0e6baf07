package ports

import (
	"slices"
	"strconv"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// column is one column of the ports table: its name for -o columns=, its
// header and its cell. Columns are as wide as their widest cell.
type column struct {
	name   string
	header string
	cell   func(s *Socket) string
}

// holderCell is a cell of the socket's first holder, "-" without one.
func holderCell(f func(h *Holder) string) func(s *Socket) string {
	return func(s *Socket) string {
		if len(s.Holders) == 0 {
			return "-"
		}
		return f(&s.Holders[0])
	}
}

// columns are every column the table can show, in -o wide's order.
var columns = []column{
	{"netns", "NETNS", func(s *Socket) string { return strconv.FormatUint(uint64(s.Netns), 10) }},
	{"proto", "PROTO", func(s *Socket) string { return event.ProtoName(s.Proto) }},
	{"family", "FAMILY", func(s *Socket) string { return event.AddrFamily(s.Family, s.Local, s.Remote) }},
	{"local", "LOCAL", LocalAddr},
	{"remote", "REMOTE", func(s *Socket) string { return sockAddr(s.Remote) }},
	{"state", "STATE", func(s *Socket) string { return s.State }},
	// The first holder, and how many more processes hold it (who lists them).
	{"pid", "PID", holderCell(func(h *Holder) string { return strconv.Itoa(int(h.PID)) })},
	{"ppid", "PPID", holderCell(func(h *Holder) string { return strconv.Itoa(int(h.PPID)) })},
	{"uid", "UID", holderCell(func(h *Holder) string { return strconv.Itoa(int(h.UID)) })},
	{"user", "USER", holderCell(func(h *Holder) string { return textout.Printable(h.User) })},
	{"comm", "COMM", holderCell(func(h *Holder) string { return textout.Printable(h.Comm) })},
	{"exe", "EXE", holderCell(func(h *Holder) string {
		if h.ExeDeleted {
			return textout.Printable(h.Exe) + " (deleted)"
		}
		return textout.Printable(h.Exe)
	})},
	{"cgroup", "CGROUP", holderCell(func(h *Holder) string { return textout.Printable(h.Cgroup) })},
	{"container", "CONTAINER", holderCell(func(h *Holder) string { return textout.Printable(workload.Cell(h.Workload, h.Names)) })},
	{"fd", "FD", holderCell(func(h *Holder) string {
		if h.FD < 0 {
			return "-"
		}
		return strconv.Itoa(h.FD)
	})},
	{"inode", "INODE", func(s *Socket) string { return strconv.FormatUint(uint64(s.Inode), 10) }},
	{"class", "CLASS", func(s *Socket) string { return event.ShortClass(s.PortClass, s.Privileged) }},
	{"dir", "DIR", func(s *Socket) string {
		if s.DirInferred {
			return event.ShortDir(s.Direction) + "?"
		}
		return event.ShortDir(s.Direction)
	}},
	{"note", "NOTE", func(s *Socket) string { return textout.Printable(socketNote(s)) }},
}

// The layouts: the default table (NETNS with several namespaces,
// CONTAINER when a holder is in one), and -o wide, every column but the
// family (in LOCAL already), the fd and the inode.
var (
	defaultLayout = []string{"proto", "local", "remote", "state", "pid", "user", "comm", "class", "dir", "note"}
	wideLayout    = []string{"netns", "proto", "local", "remote", "state", "pid", "ppid", "uid", "user", "comm", "exe", "cgroup", "container", "class", "dir", "note"}
)

// ColumnNames are the names -o columns= takes, in -o wide's order.
func ColumnNames() []string {
	names := make([]string, len(columns))
	for i, c := range columns {
		names[i] = c.name
	}
	return names
}

// ParseColumns reads -o's columns=NAME,...: known names, each once.
func ParseColumns(list string) ([]string, error) { return flagcheck.Columns(list, ColumnNames()) }

// tableLayout is the default table's columns for socks.
func tableLayout(socks []Socket, showNetns bool) []string {
	layout := slices.Clone(defaultLayout)
	if slices.ContainsFunc(socks, func(s Socket) bool { return len(s.Holders) > 0 && s.Holders[0].Workload.Known() }) {
		layout = slices.Insert(layout, len(layout)-1, "container")
	}
	if showNetns {
		layout = append([]string{"netns"}, layout...)
	}
	return layout
}
