package textout

import "testing"

// Printable leaves text alone and escapes what could act on a terminal.
func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"kworker/0:1", "kworker/0:1"},
		{"café", "café"},
		{"x\x1b[8m", `x\x1b[8m`},
		{"bell\x07\x7f", `bell\x07\x7f`},
		{"a\x7fb", `a\x7fb`},                       // DEL alone
		{"c1\xc2\x9b31m", `c1\xc2\x9b31m`},         // U+009B, the 8-bit CSI
		{"raw\x9b31m", `raw\x9b31m`},               // the same byte, not UTF-8
		{"evil\u202egpj.exe", `evil\u202egpj.exe`}, // right-to-left override
		{"\u2066x\u2069", `\u2066x\u2069`},
		{"\x7f", `\x7f`},                        // DEL alone: no byte below it to start the escaping
		{"\x9b", `\x9b`},                        // a lone byte that is not UTF-8, alone
		{" ~", " ~"},                            // the printable ASCII ends
		{"\x1f", `\x1f`},                        // the last C0 control
		{"\u009f\u00a0", `\xc2\x9f` + "\u00a0"}, // the last C1 control; then no-break space, kept
		{"\u061c\u200e\u200f\u202a\u202e", `\u061c\u200e\u200f\u202a\u202e`},
		{"\u200d\u2029\u202f\u2065\u206a", "\u200d\u2029\u202f\u2065\u206a"}, // next to the bidi controls: kept
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
