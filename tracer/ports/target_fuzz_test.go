package ports

import (
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer/event"
)

// FuzzWhoTarget feeds `who`'s PORT[/PROTO] to ParseTarget: what it takes
// is a port from 1 to 65535 and tcp, udp or both, written back the same;
// what it refuses is said on one line, in lowercase.
func FuzzWhoTarget(f *testing.F) {
	for _, s := range []string{"80", "53/udp", "443/tcp", "0", "65535", "65536", "80/sctp", "80/", "/tcp", "-1", "80/tcp/udp", "080", "８０"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		var c WhoConfig
		if err := c.ParseTarget(arg); err != nil {
			msg := err.Error()
			r, _ := utf8.DecodeRuneInString(msg)
			if msg == "" || strings.ContainsAny(msg, "\n\r") || unicode.IsUpper(r) {
				t.Fatalf("error %q: want one line in lowercase", msg)
			}
			return
		}
		if c.Port == 0 {
			t.Fatalf("%q taken as port 0", arg)
		}
		again := strconv.Itoa(int(c.Port))
		if c.Proto != 0 {
			again += "/" + event.ProtoName(c.Proto)
		}
		var d WhoConfig
		if err := d.ParseTarget(again); err != nil || d.Port != c.Port || d.Proto != c.Proto {
			t.Fatalf("%q taken as %q, which reads back as %d/%d (%v)", arg, again, d.Port, d.Proto, err)
		}
	})
}
