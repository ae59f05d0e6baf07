package flagcheck

import (
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

func TestNetnsFlag(t *testing.T) {
	for _, tc := range []struct {
		in      []string // one --netns flag each
		want    string
		wantErr string
	}{
		{in: []string{"/run/netns/a,/proc/1/ns/net"}, want: "/run/netns/a,/proc/1/ns/net"},
		{in: []string{"/run/netns/a", "/run/netns/b"}, want: "/run/netns/a,/run/netns/b"},
		{in: []string{"all"}, want: "all"},
		{in: []string{""}, wantErr: "empty namespace path: want PATH,... or all"},
		{in: []string{"/run/netns/a,"}, wantErr: "empty namespace path"},
		{in: []string{"/x\ny"}, wantErr: "a namespace path with a control character"},
		{in: []string{"/x\x1b[2Jy"}, wantErr: "control character"},
		{in: []string{"/x\x7fy"}, wantErr: "control character"},
		{in: []string{"all,/run/netns/a"}, wantErr: "all is every namespace already: name no other with it"},
		{in: []string{"/run/netns/a", "all"}, wantErr: "all is every namespace already"},
		{in: []string{"all", "all"}, wantErr: "all is every namespace already"},
	} {
		t.Run(strings.Join(tc.in, " "), func(t *testing.T) {
			var n NetnsList
			var err error
			for _, s := range tc.in {
				if err = n.Set(s); err != nil {
					break
				}
			}
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && n.String() != tc.want {
				t.Errorf("netns %q, want %q", n.String(), tc.want)
			}
		})
	}
}
