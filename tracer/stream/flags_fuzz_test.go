package stream

import (
	"os"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

// FuzzFlags parses and validates the stream's flags that take a value
// porttrace reads itself: -p, -d, --count, --buffer, --sample, --pid,
// --uid, --metrics and --container. What is taken lies within each
// flag's range; what is refused is said on one line, in lowercase.
func FuzzFlags(f *testing.F) {
	f.Add("80,443,1000-2000", "30s", "10", "64M", "1", "4242", "0", ":9090", "web")
	f.Add("0", "-1s", "0", "3M", "0", "0", "4294967295", "[::1]:9090", "")
	f.Add("65535", "5m", "18446744073709551615", "4K", "4294967295", "4294967295", "nobody", "localhost:0", strings.Repeat("ab", 32))
	f.Add("1-65535", "1h2m3.5s", "1", "1G", "100", "1", "root", "127.0.0.1:65535", "a\x01")
	f.Add("80-", "9223372036854775807ns", "-1", "2G", "-3", "+5", "-1", "host:80", "pod\n1")
	f.Fuzz(func(t *testing.T, ports, duration, count, buffer, sample, pid, uid, metrics, container string) {
		c := DefaultConfig()
		err := flagtest.Parse(t, c.AddFlags, []string{"--port=" + ports, "--duration=" + duration, "--count=" + count,
			"--buffer=" + buffer, "--sample=" + sample, "--pid=" + pid, "--uid=" + uid, "--metrics=" + metrics,
			"--container=" + container})
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			msg := err.Error()
			r, _ := utf8.DecodeRuneInString(msg)
			if msg == "" || strings.ContainsAny(msg, "\n\r") || unicode.IsUpper(r) {
				t.Fatalf("error %q: want one line in lowercase", msg)
			}
			return
		}
		size := uint64(c.RingBufferSize)
		switch {
		case c.Ports.Empty() || c.Ports.Has(0):
			t.Fatalf("--port %q taken as %q", ports, c.Ports.String())
		case c.Duration < 0:
			t.Fatalf("--duration %q taken as %v", duration, c.Duration)
		case c.Count < 1:
			t.Fatalf("--count %q taken as %d", count, c.Count)
		case size < uint64(os.Getpagesize()) || size > tracer.MaxRingBufferSize || size&(size-1) != 0:
			t.Fatalf("--buffer %q taken as %d", buffer, size)
		case c.Sample < 1:
			t.Fatalf("--sample %q taken as %d", sample, c.Sample)
		case c.PID < 1:
			t.Fatalf("--pid %q taken as %d", pid, c.PID)
		case c.UID < 0 || c.UID > maxUID:
			t.Fatalf("--uid %q taken as %d", uid, c.UID)
		}
	})
}
