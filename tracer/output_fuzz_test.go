package tracer_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/stream"
	"github.com/porttrace/porttrace/tracer/textout"
)

// fuzzedEvent is fixture i with the text a process or the system chose
// in place of its own: the command name (at most 15 bytes, as the kernel
// keeps), the executable, the cgroup path (and the workload it names),
// the user, the runtime's names, a holder's name and the interface.
func fuzzedEvent(i uint8, comm, exe, cgroup, user, name, holder, ifname string) event.Event {
	evs := tracer.DecodedEvents()
	ev := evs[int(i)%len(evs)]
	ev.Comm, ev.Exe, ev.Cgroup, ev.User = comm[:min(len(comm), 15)], exe, cgroup, user
	ev.Workload = workload.FromCgroup(cgroup)
	if name != "" {
		ev.Names = workload.Names{Container: name, Pod: name, Namespace: name, Image: name}
	}
	if ev.HasHolders {
		ev.Holders = append([]event.Holder{{Proto: event.ProtoTCP, Local: ev.Local, State: "LISTEN", PID: 1, Comm: holder}}, ev.Holders...)
	}
	if ev.HasSockOpts {
		ev.BoundIfName = ifname
	}
	return ev
}

var fuzzText = []string{"nginx", "kworker\"x\x01", "/opt/\xffsrv", "evil\u202egpj", "x\x1b[8m\n\r\t", "c1\xc2\x9b31m", "a\\b", "",
	"/kubepods.slice/kubepods-pod6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope"}

func addFuzzedEvents(f *testing.F) {
	for i := range len(tracer.DecodedEvents()) {
		t := func(k int) string { return fuzzText[(i+k)%len(fuzzText)] }
		f.Add(uint8(i), t(0), t(1), t(8), t(3), t(4), t(5), t(6))
	}
}

// FuzzEventJSON writes events whose text is any bytes: each is one line
// of valid JSON, safe to read on a terminal, that the event schema takes.
func FuzzEventJSON(f *testing.F) {
	addFuzzedEvents(f)
	f.Fuzz(func(t *testing.T, i uint8, comm, exe, cgroup, user, name, holder, ifname string) {
		ev := fuzzedEvent(i, comm, exe, cgroup, user, name, holder, ifname)
		line := event.AppendJSON(nil, &ev)
		if !json.Valid(line) || bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("not one line of JSON: %q", line)
		}
		if textout.Printable(string(line[:len(line)-1])) != string(line[:len(line)-1]) {
			t.Fatalf("not safe on a terminal: %q", line)
		}
		if err := schematest.Validate(schematest.Event, line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	})
}

// FuzzStreamTable writes events whose text is any bytes into the stream's
// table, into a pipe (-o wide, and the default with containers) and on
// an 80-column terminal, without colour. Every line is safe on a
// terminal; into a pipe each event is one whole line, and any line after
// it is a note under it.
func FuzzStreamTable(f *testing.F) {
	addFuzzedEvents(f)
	f.Fuzz(func(t *testing.T, i uint8, comm, exe, cgroup, user, name, holder, ifname string) {
		ev := fuzzedEvent(i, comm, exe, cgroup, user, name, holder, ifname)
		for _, tc := range []struct {
			width   int
			columns []string
		}{{0, stream.WideLayout(true)}, {0, nil}, {80, nil}} {
			var out bytes.Buffer
			w, err := stream.NewTable(&out, tc.width, false, true, tc.columns)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(&ev); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			for _, line := range lines {
				if textout.Printable(line) != line {
					t.Fatalf("width %d: not safe on a terminal: %q", tc.width, line)
				}
			}
			if tc.width > 0 {
				continue
			}
			if len(lines) < 2 || !strings.HasPrefix(lines[0], "TIME ") || !strings.HasPrefix(lines[1], "00:00:01 ") {
				t.Fatalf("not a header and a row: %q", lines)
			}
			for _, line := range lines[2:] {
				if !strings.HasPrefix(line, stream.ReasonIndent) && !strings.HasPrefix(line, strings.Repeat(" ", len(stream.ReasonIndent))) {
					t.Fatalf("a row broken across lines: %q", line)
				}
			}
		}
	})
}
