// Package schematest checks JSON lines porttrace wrote against the
// schemas of docs/schema, so that the published contract and the writers
// cannot drift apart (tests only).
package schematest

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/porttrace/porttrace/docs/schema"
)

// Schema names: the files of docs/schema without .schema.json.
const (
	Event      = "event"
	Lost       = "lost"
	Socket     = "socket"
	WatchEvent = "watch-event"
	WhoBind    = "who-bind"
	WhoNow     = "who"
	Churn      = "churn"
)

// base is where the schemas are said to live, so that their relative
// $refs (common.schema.json#/...) resolve among them and nowhere else.
const base = "file:///porttrace/docs/schema/"

var (
	once     sync.Once
	compiled map[string]*jsonschema.Schema
	loadErr  error
)

// load compiles every schema once, asserting formats (date-time, ipv4,
// ipv6), which a validator otherwise only notes.
func load() (map[string]*jsonschema.Schema, error) {
	once.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		names, err := fs.Glob(schema.FS, "*.schema.json")
		if err != nil {
			loadErr = err
			return
		}
		for _, name := range names {
			b, err := schema.FS.ReadFile(name)
			if err != nil {
				loadErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				loadErr = fmt.Errorf("parsing %s: %w", name, err)
				return
			}
			if err := c.AddResource(base+name, doc); err != nil {
				loadErr = fmt.Errorf("adding %s: %w", name, err)
				return
			}
		}
		compiled = map[string]*jsonschema.Schema{}
		for _, name := range names {
			sch, err := c.Compile(base + name)
			if err != nil {
				loadErr = fmt.Errorf("compiling %s: %w", name, err)
				return
			}
			compiled[strings.TrimSuffix(name, ".schema.json")] = sch
		}
	})
	return compiled, loadErr
}

// Validate checks one JSON object against the named schema.
func Validate(name string, line []byte) error {
	schemas, err := load()
	if err != nil {
		return err
	}
	sch, ok := schemas[name]
	if !ok {
		return fmt.Errorf("no schema %q in docs/schema", name)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return sch.Validate(v)
}

// Pick says which schema a line of a command's output follows, from its
// "event" key, or "" when that command writes no such line.
type Pick func(event string) string

// The commands' outputs, each told apart by its lines' "event".
var (
	Stream Pick = func(ev string) string {
		if ev == "lost" {
			return Lost
		}
		return Event
	}
	Ports Pick = func(ev string) string {
		if ev == "snapshot" {
			return Socket
		}
		return ""
	}
	Watch Pick = func(ev string) string {
		switch ev {
		case "snapshot", "closed":
			return Socket
		case "bind", "listen":
			return WatchEvent
		}
		return ""
	}
	Who Pick = func(ev string) string {
		switch ev {
		case "who":
			return WhoNow
		case "bind":
			return WhoBind
		}
		return ""
	}
	ChurnLines Pick = func(string) string { return Churn }
)

// CheckLines validates every line of out against the schema p picks for
// it, and returns how many lines there were of each "event" (churn's,
// which have none, count under "").
func CheckLines(t testing.TB, p Pick, out []byte) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			t.Errorf("an empty line in:\n%s", out)
			continue
		}
		ev := eventOf(line)
		counts[ev]++
		name := p(ev)
		if name == "" {
			t.Errorf("a line of event %q, which this command does not write: %s", ev, line)
			continue
		}
		if err := Validate(name, line); err != nil {
			t.Errorf("%s does not follow %s.schema.json: %v", line, name, err)
		}
	}
	return counts
}

// eventOf is the "event" of a JSON object, "" when it has none.
func eventOf(line []byte) string {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return ""
	}
	m, _ := v.(map[string]any)
	s, _ := m["event"].(string)
	return s
}
