package tracer

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// oneLowercaseLine fails t unless err's message is one line that starts
// in lowercase, as every message porttrace prints for bad input is.
func oneLowercaseLine(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	r, _ := utf8.DecodeRuneInString(msg)
	if msg == "" || strings.ContainsAny(msg, "\n\r") || unicode.IsUpper(r) {
		t.Fatalf("error %q: want one line in lowercase", msg)
	}
}

// FuzzPortSet feeds -p's lists to PortSet.Set. A list it takes sets
// exactly the ports its items name, every one of them said by Item, and
// its String sets the same ports again; one it refuses says why on one
// line.
func FuzzPortSet(f *testing.F) {
	for _, s := range []string{"80", "80,443,1000-2000", "25, 80 ,8000-8100", "0", "65535", "1-65535", "0-65535",
		"65536", "2000-1000", "80,,443", "-", "80-", "-80", "1-2-3", " ", "+80", "0x50", "８０", "80\n443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var p PortSet
		if err := p.Set(s); err != nil {
			oneLowercaseLine(t, err)
			return
		}
		type span struct{ first, last uint16 }
		var spans []span
		for _, item := range p.spec {
			lo, hi, isRange := strings.Cut(item, "-")
			first, err := ParsePort(lo)
			if err != nil {
				t.Fatalf("item %q of %q: %v", item, s, err)
			}
			last := first
			if isRange {
				if last, err = ParsePort(hi); err != nil {
					t.Fatalf("item %q of %q: %v", item, s, err)
				}
			}
			spans = append(spans, span{first, last})
		}
		var again PortSet
		if err := again.Set(p.String()); err != nil {
			t.Fatalf("%q set from %q: %v", p.String(), s, err)
		}
		if again.bits != p.bits || again.String() != p.String() {
			t.Fatalf("%q set again from its String %q differs", s, p.String())
		}
		for port := 0; port <= 65535; port++ {
			in := false
			for _, sp := range spans {
				in = in || int(sp.first) <= port && port <= int(sp.last)
			}
			if p.Has(uint16(port)) != in {
				t.Fatalf("%q: Has(%d) = %t, want %t", s, port, !in, in)
			}
			if in && !strings.Contains(","+p.String()+",", ","+p.Item(uint16(port))+",") {
				t.Fatalf("%q: Item(%d) = %q, not an item of the list", s, port, p.Item(uint16(port)))
			}
		}
	})
}
