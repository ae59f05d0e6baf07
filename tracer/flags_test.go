package tracer

import (
	"strconv"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

// checkErr fails t unless err contains want, or is nil when want is "".

func TestKindSetFlag(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    string
		wantErr string
	}{
		{in: []string{"bind,connect"}, want: "bind,connect"},
		{in: []string{"accept", "bind"}, want: "bind,accept"},
		{in: []string{"bind,bind"}, wantErr: `event "bind" named twice`},
		{in: []string{"listen", "listen"}, wantErr: `event "listen" named twice`},
		{in: []string{"close"}, wantErr: `unknown event "close"`},
	} {
		t.Run(strings.Join(tc.in, " "), func(t *testing.T) {
			k := AllKinds()
			var err error
			for _, s := range tc.in {
				if err = k.Set(s); err != nil {
					break
				}
			}
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && k.String() != tc.want {
				t.Errorf("events %q, want %q", k.String(), tc.want)
			}
		})
	}
}

func TestMetricsFlag(t *testing.T) {
	const want = "want HOST:PORT or :PORT, HOST an IP address ([ADDR] for IPv6) or localhost, PORT a number from 0 to 65535"
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"", true},
		{":9477", true},
		{":0", true},
		{"127.0.0.1:9477", true},
		{"0.0.0.0:65535", true},
		{"[::1]:9477", true},
		{"[::]:9477", true},
		{"[::ffff:127.0.0.1]:9477", true},
		{"[fe80::1%lo]:9477", true},
		{"localhost:9477", true},
		{"256.1.1.1:9000", false},
		{"example.com:9000", false},
		{"localhost:http", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:", false},
		{"127.0.0.1", false},
		{"9477", false},
		{"::1:9477", false},
		{"[127.0.0.1]:9477", false},
		{"[localhost]:9477", false},
		{"[]:9477", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := flagcheck.MetricsAddr(tc.addr)
			if tc.ok {
				flagtest.CheckErr(t, err, "")
			} else {
				flagtest.CheckErr(t, err, "invalid --metrics "+strconv.Quote(tc.addr)+": "+want)
			}
		})
	}
}

// parseFlags registers a config's flags on a fresh FlagSet and parses
// args, as main does.
