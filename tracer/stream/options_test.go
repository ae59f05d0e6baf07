package stream

import (
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

// The kernel is asked to filter by user exactly when --uid is given, root
// (0) included: 0 is a user like any other, not "no filter".
func TestOptionsUID(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		filter bool
		uid    uint32
	}{
		{nil, false, 0},
		{[]string{"--uid", "0"}, true, 0},
		{[]string{"--uid", "root"}, true, 0},
		{[]string{"--uid", "65534"}, true, 65534},
		{[]string{"--uid", "4294967294"}, true, 4294967294},
	} {
		c := DefaultConfig()
		if err := flagtest.Parse(t, c.AddFlags, tc.args); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		o := c.options([]uint32{7})
		if o.FilterUID != tc.filter || (o.FilterUID && o.UID != tc.uid) {
			t.Errorf("%q: FilterUID %t UID %d, want %t %d", tc.args, o.FilterUID, o.UID, tc.filter, tc.uid)
		}
		if len(o.Netns) != 1 || o.Netns[0] != 7 || o.Ports != &c.Ports || o.Events != c.Events {
			t.Errorf("%q: options %+v do not carry the config's events, ports and namespaces", tc.args, o)
		}
	}
}
