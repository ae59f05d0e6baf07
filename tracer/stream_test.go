package tracer_test

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/stream"
)

func TestJSONGolden(t *testing.T) {
	var buf []byte
	for _, ev := range tracer.DecodedEvents() {
		buf = event.AppendJSON(buf, &ev)
	}
	buf = stream.AppendLostJSON(buf, 3, "")
	golden.Check(t, "events.jsonl", buf)

	// Each line is valid JSON and carries the contract's field names.
	for _, line := range bytes.Split(bytes.TrimSpace(buf), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("invalid JSON %s: %v", line, err)
		}
		if m["event"] == "lost" {
			continue
		}
		for _, key := range []string{"time", "event", "result", "pid", "tid", "ppid", "uid", "comm", "exe_deleted", "backend"} {
			if _, ok := m[key]; !ok {
				t.Errorf("line %s lacks %q", line, key)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("time: %v", err)
		}
	}
}

func TestTableGolden(t *testing.T) {
	for _, tc := range []struct {
		file       string
		width      int
		color      bool
		containers bool
		columns    []string
	}{
		{"events.table", 0, false, false, nil},
		{"events-80col.table", 80, false, false, nil},
		{"events-80col-color.table", 80, true, false, nil},
		{"events-color.table", 200, true, false, nil},
		{"events-containers.table", 0, false, true, nil},
		{"events-containers-80col.table", 80, false, true, nil}, // no room: left out
		// -o wide: every column, on a terminal as into a pipe.
		{"events-wide.table", 0, false, true, stream.WideLayout(true)},
		{"events-wide-120col.table", 120, false, false, stream.WideLayout(false)},
		// -o columns=: those named, in their order; without RESULT or
		// USER, the line under a failure says them.
		{"events-columns.table", 0, false, false, []string{"time", "pid", "comm", "local", "remote", "errno", "latency"}},
		{"events-columns-all.table", 0, false, false, stream.ColumnNames()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var out bytes.Buffer
			w, err := stream.NewTable(&out, tc.width, tc.color, tc.containers, tc.columns)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range tracer.DecodedEvents() {
				if err := w.Write(&ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// Nothing but our own colour codes reaches the terminal: a
			// process name cannot carry escapes or control bytes into it.
			plain := regexp.MustCompile("\x1b\\[1;3[13]m|\x1b\\[0m").ReplaceAll(out.Bytes(), nil)
			if i := bytes.IndexFunc(plain, func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f }); i >= 0 {
				t.Errorf("control byte %q in the table at offset %d", plain[i], i)
			}
			if tc.width == 0 {
				// Into a pipe every event is one whole line, with no
				// trailing spaces; only the reason of a failure and a
				// deleted executable get lines of their own.
				lines := strings.Split(strings.TrimSuffix(string(plain), "\n"), "\n")
				rows := 0
				for _, line := range lines {
					if strings.HasPrefix(line, "00:00:01 ") {
						rows++
					} else if !strings.HasPrefix(line, "TIME ") && !strings.HasPrefix(line, stream.ReasonIndent) {
						t.Errorf("a continued line: %q", line)
					}
					if strings.HasSuffix(line, " ") {
						t.Errorf("trailing spaces: %q", line)
					}
				}
				if rows != len(tracer.DecodedEvents()) {
					t.Errorf("%d rows for %d events", rows, len(tracer.DecodedEvents()))
				}
			}
			// The layouts porttrace picks fit the terminal; those asked
			// for (-o wide, columns=) are as wide as their columns.
			if tc.width > 0 && tc.columns == nil {
				for _, line := range strings.Split(string(plain), "\n") {
					if n := utf8.RuneCountInString(line); n > tc.width {
						t.Errorf("%d columns, wider than %d: %q", n, tc.width, line)
					}
				}
			}
			golden.Check(t, tc.file, out.Bytes())
		})
	}
}

// BenchmarkDecodeTable is BenchmarkDecodeJSON with the table writer.
func BenchmarkDecodeTable(b *testing.B) {
	en := proc.NewEnricherAt(b.TempDir())
	tw, err := stream.NewTableWriter(io.Discard, 0, false, false)
	if err != nil {
		b.Fatal(err)
	}
	var ev event.Event
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tracer.DecodeFixture(i, &ev)
		en.Enrich(&ev)
		if err := tw.Write(&ev); err != nil {
			b.Fatal(err)
		}
	}
}
