package textout

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// terminalSafe says what in s a terminal could act on: a byte that is not
// UTF-8, a C0 or C1 control, DEL, or a bidirectional control.
func terminalSafe(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not UTF-8: %q", s)
	}
	for _, r := range s {
		if r < 0x20 || r >= 0x7f && r < 0xa0 || IsBidiControl(r) {
			return fmt.Errorf("%U in %q", r, s)
		}
	}
	return nil
}

// FuzzText feeds the escapers any bytes, as a process name or a path may
// hold. Printable's text is safe on a terminal, and left alone when it
// was safe already; the JSON string is valid JSON, as safe, and decodes
// to the text with U+FFFD for each byte that is not UTF-8; AppendText
// adds the exact bytes in hex when there were such bytes.
func FuzzText(f *testing.F) {
	for _, s := range []string{"nginx", "kworker/0:1", "café", "x\x1b[8m", "bell\x07\x7f", "c1\xc2\x9b31m", "raw\x9b31m",
		"evil\u202egpj.exe", "\u2066x\u2069", "kworker\"x\x01", "/opt/\xffsrv", "a\\b\"c", "\xed\xa0\x80", "\u2028\u00a0\ufeff", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := Printable(s)
		if err := terminalSafe(p); err != nil {
			t.Fatalf("Printable(%q): %v", s, err)
		}
		if terminalSafe(s) == nil && p != s {
			t.Fatalf("Printable(%q) = %q, but it was safe", s, p)
		}

		var want strings.Builder
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			want.WriteRune(r) // RuneError for a byte that is not UTF-8
			i += n
		}
		j := AppendJSONString(nil, s)
		if err := terminalSafe(string(j)); err != nil {
			t.Fatalf("AppendJSONString(%q): %v", s, err)
		}
		var got string
		if err := json.Unmarshal(j, &got); err != nil || got != want.String() {
			t.Fatalf("AppendJSONString(%q) = %s, decodes to %q (%v), want %q", s, j, got, err, want.String())
		}

		obj := AppendText([]byte("{"), "k", s)
		obj[1] = ' ' // AppendKey's comma: the first field here
		obj = append(obj, '}')
		var fields map[string]string
		if err := json.Unmarshal(obj, &fields); err != nil || fields["k"] != want.String() {
			t.Fatalf("AppendText(%q) = %s (%v)", s, obj, err)
		}
		if b, err := hex.DecodeString(fields["k_hex"]); utf8.ValidString(s) != (fields["k_hex"] == "") || err != nil || !utf8.ValidString(s) && string(b) != s {
			t.Fatalf("AppendText(%q) = %s: k_hex", s, obj)
		}
	})
}
