package tracer

import (
	"io"
	"net/netip"
	"strconv"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

var tableHeader = []any{"TIME", "EVENT", "PID", "USER", "COMM", "PROTO", "LOCAL", "REMOTE", "DIR", "CLASS", "RESULT"}

// Column widths, right padding included. The address columns share what is
// left of the terminal; a cell too long for its column wraps inside it.
var tableWidths = []int{9, 8, 8, 9, 10, 6, 0, 0, 4, 6, 14}

const (
	addrColMin = 8
	addrColMax = 24
)

// TableWriter prints events as aligned rows as they happen (tablewriter's
// streaming mode: the header once, then one row per Append).
type TableWriter struct {
	t     *tablewriter.Table
	color bool
	row   []any
}

// NewTableWriter starts a table on w sized for a terminal of width columns
// (0: not a terminal). color marks denials and failures with ANSI colour.
func NewTableWriter(w io.Writer, width int, color bool) (*TableWriter, error) {
	widths := tw.NewMapper[int, int]()
	addr := addrColMax
	if width > 0 {
		fixed := 0
		for _, n := range tableWidths {
			fixed += n
		}
		addr = min(addrColMax, max(addrColMin, (width-fixed)/2))
	}
	for i, n := range tableWidths {
		if n == 0 {
			n = addr
		}
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
	return &TableWriter{t: t, color: color, row: make([]any, len(tableHeader))}, nil
}

// Write prints one event.
func (tw *TableWriter) Write(ev *Event) error {
	r := tw.row
	r[0] = ev.Time.Local().Format("15:04:05")
	r[1] = ev.Kind.String()
	r[2] = strconv.FormatUint(uint64(ev.PID), 10)
	r[3] = ev.User
	r[4] = ev.Comm
	r[5] = ProtoName(ev.Proto)
	r[6] = hostPort(ev.Local)
	r[7] = hostPort(ev.Remote)
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
// around IPv6.
func hostPort(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	port := strconv.FormatUint(uint64(ap.Port()), 10)
	if ap.Addr().IsUnspecified() {
		return "*:" + port
	}
	return ap.String()
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
