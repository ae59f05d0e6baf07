package tracer

import (
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// displayZone is the time zone of the clock times humans read (table,
// churn, ports, who); JSON is always UTC. Tests set it to UTC before any
// test runs.
var displayZone = time.Local

var tableHeader = []any{"TIME", "EVENT", "PID", "USER", "COMM", "PROTO", "LOCAL", "REMOTE", "DIR", "CLASS", "RESULT"}

// Column widths, right padding included. wideWidths fit an IPv4 row with
// room to spare (about 125 columns); narrowWidths fit 80 columns, where an
// address too long for its column puts its port on a second line and any
// other long cell wraps inside its column.
var (
	wideWidths   = []int{9, 8, 8, 9, 10, 6, 24, 24, 4, 6, 14}
	narrowWidths = []int{9, 8, 7, 6, 7, 6, 10, 10, 4, 6, 7}
)

const (
	colLocal  = 6
	colRemote = 7
)

func sum(ns []int) (s int) {
	for _, n := range ns {
		s += n
	}
	return s
}

// TableWriter prints events as aligned rows as they happen (tablewriter's
// streaming mode: the header once, then one row per Append).
type TableWriter struct {
	t     *tablewriter.Table
	color bool
	row   []any
	cols  []int
}

// NewTableWriter starts a table on w sized for a terminal of width columns
// (0: not a terminal). color marks denials and failures with ANSI colour.
func NewTableWriter(w io.Writer, width int, color bool) (*TableWriter, error) {
	cols := wideWidths
	if width > 0 && width < sum(wideWidths) {
		cols = narrowWidths
	}
	widths := tw.NewMapper[int, int]()
	for i, n := range cols {
		widths.Set(i, n)
	}
	cell := tw.CellConfig{
		Formatting: tw.CellFormatting{AutoFormat: tw.Off, AutoWrap: tw.WrapBreak},
		Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
		Padding:    tw.CellPadding{Global: tw.Padding{Right: " "}},
	}
	t := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{
				Separators: tw.Separators{BetweenColumns: tw.Off, BetweenRows: tw.Off},
				Lines:      tw.Lines{ShowHeaderLine: tw.Off},
			},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Stream: tw.StreamConfig{Enable: true},
			Widths: tw.CellWidth{PerColumn: widths},
			Header: cell,
			Row:    cell,
		}),
	)
	if err := t.Start(); err != nil {
		return nil, err
	}
	t.Header(tableHeader...)
	return &TableWriter{t: t, color: color, row: make([]any, len(tableHeader)), cols: cols}, nil
}

// Write prints one event.
func (tw *TableWriter) Write(ev *Event) error {
	r := tw.row
	r[0] = ev.Time.In(displayZone).Format("15:04:05")
	r[1] = ev.Kind.String()
	r[2] = strconv.FormatUint(uint64(ev.PID), 10)
	r[3] = ev.User
	r[4] = ev.Comm
	r[5] = ProtoName(ev.Proto)
	r[6] = hostPort(ev.Local, tw.cols[colLocal]-1)
	r[7] = hostPort(ev.Remote, tw.cols[colRemote]-1)
	r[8] = shortDir(ev.Direction)
	r[9] = shortClass(ev)
	r[10] = tw.result(ev)
	return tw.t.Append(r...)
}

// Close ends the table.
func (tw *TableWriter) Close() error { return tw.t.Close() }

func (tw *TableWriter) result(ev *Event) string {
	if ev.Result == ResultOK {
		return "ok"
	}
	s := ev.ErrnoName()
	if tw.color {
		if ev.Result == ResultDenied {
			return "\x1b[1;31m" + s + "\x1b[0m"
		}
		return "\x1b[1;33m" + s + "\x1b[0m"
	}
	return s
}

// hostPort writes an address as ss does: "*" for the wildcard, brackets
// around IPv6. Longer than max, the port goes on a line of its own.
func hostPort(ap netip.AddrPort, max int) string {
	if !ap.IsValid() {
		return ""
	}
	host := "*"
	if !ap.Addr().IsUnspecified() {
		host = ap.Addr().String()
		if ap.Addr().Is6() {
			host = "[" + host + "]"
		}
	}
	s := host + ":" + strconv.FormatUint(uint64(ap.Port()), 10)
	if len(s) > max {
		return host + "\n:" + s[len(host)+1:]
	}
	return s
}

func shortDir(d Direction) string {
	switch d {
	case DirInbound:
		return "in"
	case DirOutbound:
		return "out"
	}
	return ""
}

// shortClass is "wk", "reg" or "dyn", with "*" when the port is privileged
// in its network namespace.
func shortClass(ev *Event) string {
	var s string
	switch ev.PortClass {
	case ClassWellKnown:
		s = "wk"
	case ClassRegistered:
		s = "reg"
	case ClassDynamic:
		s = "dyn"
	}
	if ev.Privileged {
		s += "*"
	}
	return s
}
