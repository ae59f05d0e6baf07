package stream

import (
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	twlib "github.com/olekukonko/tablewriter/tw"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/textout"
)

func sum(ns []int) (s int) {
	for _, n := range ns {
		s += n
	}
	return s
}

// TableWriter prints events as aligned rows as they happen. On a
// terminal it is tablewriter's streaming mode (the header once, then one
// row per Append), whose columns wrap a cell too long for them. Into a
// pipe or a file nothing wraps: each event stays one whole line for grep
// and friends, a cell longer than its column pushes the rest of the row
// along, and no line ends in spaces.
type TableWriter struct {
	t       *tablewriter.Table // nil into a pipe
	w       io.Writer
	buf     []byte
	color   bool
	tty     bool // on a terminal: a long address puts its port on a line of its own
	row     []any
	columns []column
	cols    []int // their widths
	// Whether USER and RESULT are columns; where not, the line under a
	// denied or failed call says them.
	hasUser, hasResult bool
}

// NewTableWriter starts a table on w sized for a terminal of width columns
// (0: not a terminal). color marks denials and failures with ANSI colour.
// containers adds a CONTAINER column after COMM, where the table is wide
// enough for it (a host that runs containers, a stream scoped to them).
// A terminal narrower than the table gets the layout that fits 80.
func NewTableWriter(w io.Writer, width int, color, containers bool) (*TableWriter, error) {
	layout := defaultLayout
	if containers {
		layout = withContainer(layout)
	}
	if width > 0 && width < sum(widthsOf(layoutColumns(layout))) {
		return newColumnsWriter(w, width, color, narrowLayout, narrowWidths)
	}
	return NewColumnsWriter(w, width, color, layout)
}

// narrowWidths fit 79 columns, where an address too long for its column
// puts its port on a second line and any other long cell wraps inside its
// column.
var narrowWidths = []int{9, 8, 8, 9, 6, 17, 16, 6}

// NewColumnsWriter starts a table of the named columns (-o wide, -o
// columns=; ParseColumns), the same on any terminal.
func NewColumnsWriter(w io.Writer, width int, color bool, names []string) (*TableWriter, error) {
	return newColumnsWriter(w, width, color, names, widthsOf(layoutColumns(names)))
}

func newColumnsWriter(w io.Writer, width int, color bool, names []string, widths []int) (*TableWriter, error) {
	cols := layoutColumns(names)
	header := make([]any, len(cols))
	for i, c := range cols {
		header[i] = c.header
	}
	tw := &TableWriter{w: w, color: color, tty: width > 0, row: make([]any, 0, len(cols)), columns: cols, cols: widths,
		hasUser: slices.Contains(names, "user"), hasResult: slices.Contains(names, "result")}
	if width == 0 {
		return tw, tw.line(header)
	}
	tw.t = newStreamTable(w, tw.cols)
	if err := tw.t.Start(); err != nil {
		return nil, err
	}
	tw.t.Header(header...)
	return tw, nil
}

func widthsOf(cols []column) []int {
	ws := make([]int, len(cols))
	for i, c := range cols {
		ws[i] = c.width
	}
	return ws
}

func newStreamTable(w io.Writer, cols []int) *tablewriter.Table {
	widths := twlib.NewMapper[int, int]()
	for i, n := range cols {
		widths.Set(i, n)
	}
	cell := twlib.CellConfig{
		Formatting: twlib.CellFormatting{AutoFormat: twlib.Off, AutoWrap: twlib.WrapBreak},
		Alignment:  twlib.CellAlignment{Global: twlib.AlignLeft},
		Padding:    twlib.CellPadding{Global: twlib.Padding{Right: " "}},
	}
	return tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(twlib.Rendition{
			Borders: twlib.BorderNone,
			Symbols: twlib.NewSymbols(twlib.StyleNone),
			Settings: twlib.Settings{
				Separators: twlib.Separators{BetweenColumns: twlib.Off, BetweenRows: twlib.Off},
				Lines:      twlib.Lines{ShowHeaderLine: twlib.Off},
			},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Stream: twlib.StreamConfig{Enable: true},
			Widths: twlib.CellWidth{PerColumn: widths},
			Header: cell,
			Row:    cell,
		}),
	)
}

// line writes cells as one line into a pipe: see TableWriter.
func (tw *TableWriter) line(cells []any) error {
	tw.buf = textout.AppendCells(tw.buf[:0], cells, tw.cols)
	_, err := tw.w.Write(tw.buf)
	return err
}

// Write prints one event.
func (tw *TableWriter) Write(ev *event.Event) error {
	r := tw.row[:0]
	for i, c := range tw.columns {
		r = append(r, c.cell(tw, ev, i))
	}
	tw.row = r
	if tw.t == nil {
		return tw.line(r)
	}
	return tw.t.Append(r...)
}

// addrMax is how long an address may be in column i before its port goes
// on a line of its own: no limit into a pipe, where columns fit any.
func (tw *TableWriter) addrMax(i int) int {
	if !tw.tty {
		return 0
	}
	return tw.cols[i] - 1
}

// Close ends the table.
func (tw *TableWriter) Close() error {
	if tw.t == nil {
		return nil
	}
	return tw.t.Close()
}

// kindWord is the EVENT cell. A connect_done is "done": it reads with the
// connect in progress above it, whose PID, COMM, LOCAL and REMOTE it shares.
func kindWord(k event.Kind) string {
	if k == event.KindConnectDone {
		return "done"
	}
	return k.String()
}

// resultWord is the RESULT cell: "ok", "pending" for a connect in progress,
// or the errno's name; then how long a TCP handshake took.
func resultWord(ev *event.Event) string {
	var s string
	switch ev.Result {
	case event.ResultOK:
		s = "ok"
	case event.ResultInProgress:
		s = "pending"
	default:
		s = ev.ErrnoName()
	}
	if ev.HasLatency {
		s += " " + ShortDuration(ev.Latency)
	}
	return s
}

// ShortDuration writes a latency in at most 6 characters: 85us, 1.2ms,
// 52ms, 3.0s, 127s.
func ShortDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "us"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return strconv.FormatInt(int64(d.Seconds()), 10) + "s"
}

// paint colours s as ev's result: red for a denial, yellow for a failure.
func (tw *TableWriter) paint(ev *event.Event, s string) string {
	if !tw.color || !ev.Result.Failed() {
		return s
	}
	if ev.Result == event.ResultDenied {
		return "\x1b[1;31m" + s + "\x1b[0m"
	}
	return "\x1b[1;33m" + s + "\x1b[0m"
}

// notes are the lines under an event: why a call was denied or failed
// (led by the errno, and the user, when no RESULT or USER column shows
// them), and that the process's executable was deleted, as
// an implant that removed itself leaves it.
func (tw *TableWriter) notes(ev *event.Event) []string {
	var notes []string
	switch {
	case !ev.Result.Failed():
	case tw.hasResult:
		notes = append(notes, ev.Reason)
	default:
		s := ev.ErrnoName()
		if ev.User != "" && !tw.hasUser {
			s += " (user " + textout.Printable(ev.User) + ")"
		}
		if ev.Reason != "" {
			s += ": " + ev.Reason
		}
		notes = append(notes, s)
	}
	notes = append(notes, holderNotes(ev)...)
	if ev.ExeDeleted {
		s := "! executable deleted"
		if ev.Exe != "" {
			s += ": " + textout.Printable(ev.Exe)
		}
		notes = append(notes, s)
	}
	return notes
}

// hostPort writes an address as ss -n does (0.0.0.0 and [::] are the
// wildcards; an event does not say whether an IPv6 socket is dual-stack,
// so never "*"). Longer than max (0: no limit), the port goes on a line
// of its own.
func hostPort(ap netip.AddrPort, max int) string {
	if !ap.IsValid() {
		return ""
	}
	// An IPv4 peer of a dual-stack socket is shown as the IPv4 address it is.
	addr := ap.Addr().Unmap()
	host := addr.String()
	if addr.Is6() {
		host = "[" + host + "]"
	}
	s := host + ":" + strconv.FormatUint(uint64(ap.Port()), 10)
	if max > 0 && len(s) > max {
		return host + "\n:" + s[len(host)+1:]
	}
	return s
}
