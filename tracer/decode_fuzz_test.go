package tracer

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unsafe"

	"github.com/porttrace/porttrace/tracer/event"
)

// errnoName is the pattern of docs/schema's errno.
var errnoName = regexp.MustCompile(`^(E[A-Z0-9_]+|errno[0-9]+)$`)

// recordBytes is raw as the ring buffer hands it over.
func recordBytes(raw *porttraceEvent) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(raw)), recordSize))
}

// FuzzDecode feeds decodeRecord ring-buffer records of any size and
// content: every enum value, flag and errno the kernel side could send,
// and records shorter or longer than struct event. A record of the wrong
// size is an error; any other decodes into an event whose JSON is one
// valid line, its errno named as the schema has it.
func FuzzDecode(f *testing.F) {
	for _, raw := range rawEvents() {
		b := recordBytes(&raw)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b, 0))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev event.Event
		_, err := decodeRecord(b, 0, &ev, nil)
		if len(b) != recordSize {
			if err == nil {
				t.Fatalf("a record of %d bytes decoded, want an error: struct event is %d", len(b), recordSize)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || msg == "" || strings.ToLower(msg[:1]) != msg[:1] {
				t.Fatalf("error %q: want one lowercase line", msg)
			}
			return
		}
		if err != nil {
			t.Fatalf("a record of struct event's size: %v", err)
		}
		line := event.AppendJSON(nil, &ev)
		if !json.Valid(line) {
			t.Fatalf("invalid JSON: %q", line)
		}
		if bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("not one line ending in a newline: %q", line)
		}
		if ev.Errno != 0 && !errnoName.MatchString(ev.ErrnoName()) {
			t.Fatalf("errno %q", ev.ErrnoName())
		}
		// The ring readers intern command names: the same event.
		var interned event.Event
		if _, err := decodeRecord(b, 0, &interned, newInterner()); err != nil {
			t.Fatal(err)
		}
		if got := event.AppendJSON(nil, &interned); !bytes.Equal(got, line) {
			t.Fatalf("interned comm:\n%s\nwant\n%s", got, line)
		}
	})
}
