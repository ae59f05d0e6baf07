// Package textout is what every view of porttrace writes text with: the
// one escaping of process- and user-supplied text for terminals
// (Printable) and for JSON (AppendJSONString, AppendText), the JSON field
// writers, tables that never wrap into a pipe, and a writer that lets a
// command stop while its output is not being read. cmd/porttrace escapes
// its messages with it too, which is why it is not internal.
package textout

import (
	"fmt"
	"unicode/utf8"
)

// Printable escapes what in a process's name (or path) could act on the
// terminal rather than be shown: C0 and C1 control characters, bytes that
// are not UTF-8 (a lone 0x9b is an escape to some terminals), and the
// bidirectional controls that reorder the text around them.
func Printable(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return escapeControls(s)
		}
	}
	return s
}

func escapeControls(s string) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1, r < 0x20, r >= 0x7f && r < 0xa0:
			for _, c := range []byte(s[i : i+n]) {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			}
		case IsBidiControl(r):
			b = fmt.Appendf(b, "\\u%04x", r)
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return string(b)
}

// IsBidiControl reports the Unicode characters that change the direction
// of the text after them (the "Trojan Source" characters) or mark it.
func IsBidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}
