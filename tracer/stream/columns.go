package stream

import (
	"slices"
	"strconv"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// column is one column of the stream's table: its name for -o columns=,
// its header, its width (right padding included: wide enough for most
// cells; into a pipe a longer one pushes the rest along, on a terminal it
// wraps) and its cell.
type column struct {
	name   string
	header string
	width  int
	cell   func(tw *TableWriter, ev *event.Event, i int) string
}

// columns are every column the table can show, in the order -o wide
// shows them.
var columns = []column{
	{"time", "TIME", 9, func(_ *TableWriter, ev *event.Event, _ int) string {
		return ev.Time.In(textout.DisplayZone).Format("15:04:05")
	}},
	{"event", "EVENT", 8, func(_ *TableWriter, ev *event.Event, _ int) string { return kindWord(ev.Kind) }},
	{"pid", "PID", 8, func(_ *TableWriter, ev *event.Event, _ int) string { return uitoa(ev.PID) }},
	{"tid", "TID", 8, func(_ *TableWriter, ev *event.Event, _ int) string { return uitoa(ev.TID) }},
	{"ppid", "PPID", 8, func(_ *TableWriter, ev *event.Event, _ int) string { return uitoa(ev.PPID) }},
	{"uid", "UID", 7, func(_ *TableWriter, ev *event.Event, _ int) string { return uitoa(ev.UID) }},
	{"user", "USER", 9, func(_ *TableWriter, ev *event.Event, _ int) string { return textout.Printable(ev.User) }},
	{"comm", "COMM", 16, func(_ *TableWriter, ev *event.Event, _ int) string { return textout.Printable(ev.Comm) }},
	// Wide enough for "pod/" and a pod UID's first 8 digits and a short id.
	{"container", "CONTAINER", 27, func(_ *TableWriter, ev *event.Event, _ int) string {
		return textout.Printable(workload.Cell(ev.Workload, ev.Names))
	}},
	{"exe", "EXE", 24, func(_ *TableWriter, ev *event.Event, _ int) string { return textout.Printable(ev.Exe) }},
	{"cgroup", "CGROUP", 24, func(_ *TableWriter, ev *event.Event, _ int) string { return textout.Printable(ev.Cgroup) }},
	{"netns", "NETNS", 11, func(_ *TableWriter, ev *event.Event, _ int) string {
		if !ev.HasNet {
			return ""
		}
		return uitoa(ev.Netns)
	}},
	{"proto", "PROTO", 6, func(_ *TableWriter, ev *event.Event, _ int) string { return event.ProtoName(ev.Proto) }},
	{"family", "FAMILY", 7, func(_ *TableWriter, ev *event.Event, _ int) string { return ev.AddrFamily() }},
	{"local", "LOCAL", 22, func(tw *TableWriter, ev *event.Event, i int) string { return hostPort(ev.Local, tw.addrMax(i)) }},
	{"remote", "REMOTE", 22, func(tw *TableWriter, ev *event.Event, i int) string { return hostPort(ev.Remote, tw.addrMax(i)) }},
	{"dir", "DIR", 4, func(_ *TableWriter, ev *event.Event, _ int) string { return event.ShortDir(ev.Direction) }},
	{"class", "CLASS", 6, func(_ *TableWriter, ev *event.Event, _ int) string {
		return event.ShortClass(ev.PortClass, ev.Privileged)
	}},
	{"result", "RESULT", 16, func(tw *TableWriter, ev *event.Event, _ int) string { return tw.paint(ev, resultWord(ev)) }},
	{"errno", "ERRNO", 14, func(tw *TableWriter, ev *event.Event, _ int) string {
		if ev.Errno == 0 {
			return ""
		}
		return tw.paint(ev, ev.ErrnoName())
	}},
	{"latency", "LATENCY", 8, func(_ *TableWriter, ev *event.Event, _ int) string {
		if !ev.HasLatency {
			return ""
		}
		return ShortDuration(ev.Latency)
	}},
	{"backend", "BACKEND", 11, func(_ *TableWriter, ev *event.Event, _ int) string { return ev.Backend.String() }},
}

func uitoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// The layouts: the default table, the one that fits 80 columns (DIR
// follows from EVENT; USER and RESULT move to the line under a denied or
// failed call) and -o wide, every column but those that repeat another
// (tid, family, errno, latency: in RESULT) and the backend, the same on
// every row.
var (
	defaultLayout = []string{"time", "event", "pid", "user", "comm", "proto", "local", "remote", "dir", "class", "result"}
	narrowLayout  = []string{"time", "event", "pid", "comm", "proto", "local", "remote", "class"}
	wideLayout    = []string{"time", "event", "pid", "ppid", "uid", "user", "comm", "exe", "cgroup", "netns", "proto", "local", "remote", "dir", "class", "result"}
)

// withContainer adds the CONTAINER column after COMM.
func withContainer(layout []string) []string {
	i := slices.Index(layout, "comm")
	return slices.Insert(slices.Clone(layout), i+1, "container")
}

// WideLayout is -o wide's columns, with CONTAINER where there is one.
func WideLayout(containers bool) []string {
	if containers {
		return withContainer(wideLayout)
	}
	return slices.Clone(wideLayout)
}

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

// layoutColumns are the columns of names, which ParseColumns or a layout
// gave.
func layoutColumns(names []string) []column {
	cols := make([]column, len(names))
	for i, name := range names {
		cols[i] = columns[slices.IndexFunc(columns, func(c column) bool { return c.name == name })]
	}
	return cols
}
