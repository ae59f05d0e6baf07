package ports

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// FuzzPortsViews gives sample socket i a first holder whose text is any
// bytes (command name, executable, cgroup, user, the runtime's names),
// deleted or not, and writes every view of it. Each table line is safe on
// a terminal, one a socket; who's lines are as safe; its JSON is one
// valid line, as safe, that the socket schema takes.
func FuzzPortsViews(f *testing.F) {
	texts := []string{"sh", "/tmp/\x1b[2J\x07", "x\x1b[8m", "/usr/bin/python3", "evil\u202egpj", "c1\xc2\x9b31m", "/opt/\xffsrv\n", ""}
	for i := range sampleSockets() {
		t := func(k int) string { return texts[(i+k)%len(texts)] }
		f.Add(uint8(i), t(0), t(1), "/system.slice/x.service", t(2), t(3), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, i uint8, comm, exe, cgroup, user, name string, deleted bool) {
		socks := sampleSockets()
		s := &socks[int(i)%len(socks)]
		h := Holder{PID: 4242, PPID: 1, User: user, Comm: comm, Exe: exe, ExeDeleted: deleted, Cgroup: cgroup,
			Workload: workload.FromCgroup(cgroup), Start: sampleTime, FD: 3}
		if name != "" {
			h.Names = workload.Names{Container: name, Pod: name, Namespace: name, Image: name}
		}
		s.Holders = append([]Holder{h}, s.Holders...)
		s.Suspicious = suspicious(s)

		safe := func(view string, out []byte) {
			for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
				if textout.Printable(line) != line {
					t.Fatalf("%s: not safe on a terminal: %q", view, line)
				}
			}
		}
		for view, names := range map[string][]string{"table": tableLayout(socks, true), "wide": wideLayout, "columns=all": ColumnNames()} {
			var out bytes.Buffer
			if err := WriteColumns(&out, socks, names); err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(out.Bytes(), []byte("\n")); n != 1+len(socks) {
				t.Fatalf("%s: %d lines for %d sockets:\n%s", view, n, len(socks), out.Bytes())
			}
			safe(view, out.Bytes())
		}
		var who bytes.Buffer
		if err := WriteWho(&who, s.Local.Port(), "tcp", []Socket{*s}, sampleTime); err != nil {
			t.Fatal(err)
		}
		safe("who", who.Bytes())

		line := AppendSocketJSON(nil, EventSnapshot, sampleTime, s)
		if !json.Valid(line) || bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("not one line of JSON: %q", line)
		}
		safe("json", line)
		if err := schematest.Validate(schematest.Socket, line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	})
}
