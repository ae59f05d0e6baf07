package textout

import (
	"os"
	"strings"
	"testing"
)

// Each cell is padded to its column's width, or followed by one space when
// it fills it; a line has no trailing spaces.
func TestAppendCells(t *testing.T) {
	for _, tc := range []struct {
		cells  []any
		widths []int
		want   string
	}{
		{[]any{"a", "b"}, []int{3, 3}, "a  b\n"},
		{[]any{"abc", "d"}, []int{3, 3}, "abc d\n"},   // as long as the column: one space
		{[]any{"abcd", "e"}, []int{3, 3}, "abcd e\n"}, // longer: one space
		{[]any{"é", 7}, []int{2, 1}, "é 7\n"},         // runes, not bytes
		{[]any{"x", "y", "z"}, []int{4}, "x   y z\n"}, // past the widths: one space
		{[]any{"", ""}, []int{2, 2}, "\n"},
		{nil, nil, "\n"},
	} {
		got := string(AppendCells([]byte("> "), tc.cells, tc.widths))
		if got != "> "+tc.want {
			t.Errorf("AppendCells(%v, %v) = %q, want %q", tc.cells, tc.widths, got, "> "+tc.want)
		}
	}
	// The trailing spaces of a line are its own: what was there before
	// is left as it was.
	if got := string(AppendCells([]byte("x "), []any{""}, []int{3})); got != "x \n" {
		t.Errorf("AppendCells after %q = %q, want %q", "x ", got, "x \n")
	}
}

func TestWrapWords(t *testing.T) {
	for _, tc := range []struct {
		s     string
		width int
		want  []string
	}{
		{"a b c", 0, []string{"a b c"}},
		{"a b c", -1, []string{"a b c"}},
		{"a b c", 5, []string{"a b c"}},
		{"a  b", 4, []string{"a  b"}}, // it fits: left as it is
		{"a  b", 3, []string{"a b"}},  // too long as it is: the words rewrapped
		{"a b c", 4, []string{"a b", "c"}},
		{"a b c", 3, []string{"a b", "c"}},
		{"a b c", 2, []string{"a", "b", "c"}},
		{"lengthy word", 4, []string{"lengthy", "word"}},
		{"one  two   three", 9, []string{"one two", "three"}},
	} {
		got := WrapWords(tc.s, tc.width)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("WrapWords(%q, %d) = %q, want %q", tc.s, tc.width, got, tc.want)
		}
	}
}

func TestPluralList(t *testing.T) {
	for n, want := range map[int]string{0: "events", 1: "event", 2: "events"} {
		if got := Plural(n, "event", "events"); got != want {
			t.Errorf("Plural(%d) = %q, want %q", n, got, want)
		}
	}
	for _, tc := range []struct {
		items []string
		want  string
	}{
		{nil, ""},
		{[]string{"a"}, "a"},
		{[]string{"a", "b"}, "a and b"},
		{[]string{"a", "b", "c"}, "a, b and c"},
	} {
		if got := List(tc.items); got != tc.want {
			t.Errorf("List(%q) = %q, want %q", tc.items, got, tc.want)
		}
	}
}

// Only a terminal has a width: a pipe or a writer that is no file has none.
func TestTerminalWidthNotTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if n, ok := TerminalWidth(w); ok || n != 0 {
		t.Errorf("a pipe: %d %t, want 0 false", n, ok)
	}
	if n, ok := TerminalWidth(new(strings.Builder)); ok || n != 0 {
		t.Errorf("a strings.Builder: %d %t, want 0 false", n, ok)
	}
}
