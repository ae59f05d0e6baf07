package textout

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// AppendCells appends cells as one line, each cell padded to its column's
// width (right padding included) or followed by one space if it is as
// long or longer; trailing spaces are left off.
func AppendCells(b []byte, cells []any, widths []int) []byte {
	start := len(b)
	for i, c := range cells {
		s := fmt.Sprint(c)
		b = append(b, s...)
		n := 1
		if i < len(widths) {
			n = max(1, widths[i]-utf8.RuneCountInString(s))
		}
		for range n {
			b = append(b, ' ')
		}
	}
	for len(b) > start && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return append(b, '\n')
}

// TerminalWidth reports whether w is a terminal, and its width in columns.
func TerminalWidth(w io.Writer) (int, bool) {
	f, ok := w.(*os.File)
	if !ok {
		return 0, false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, false
	}
	return int(ws.Col), true
}

// WrapWords breaks s into lines of at most width bytes at spaces; width <= 0
// means no limit.
func WrapWords(s string, width int) []string {
	if width <= 0 || len(s) <= width {
		return []string{s}
	}
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

func Plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// List joins items as a sentence does: "a", "a and b", "a, b and c".
func List(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// DisplayZone is the time zone of the clock times humans read (table,
// churn, ports, who); JSON is always UTC. Tests set it to UTC before any
// test runs.
var DisplayZone = time.Local
