package churn

import (
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

func TestChurnConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"--metrics", ":9477", "--metrics-destinations", "5", "-v"}},
		{args: []string{"--metrics", "localhost:9477"}},
		{args: []string{"--metrics", "256.1.1.1:9000"}, wantErr: `invalid --metrics "256.1.1.1:9000"`},
		{args: []string{"--metrics", "metrics.example:9000"}, wantErr: `invalid --metrics "metrics.example:9000"`},
		{args: []string{"--cgroup", "/no/such/cgroup-here"}, wantErr: `invalid --cgroup "/no/such/cgroup-here": `},
		{args: []string{"--web.config.file", "/no/such/web.yml"}, wantErr: "--web.config.file needs --metrics"},
		{args: []string{"--metrics", ":9477", "--web.config.file", "/no/such/web.yml"},
			wantErr: `invalid --web.config.file "/no/such/web.yml": open /no/such/web.yml: no such file or directory`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := DefaultConfig()
			err := flagtest.Parse(t, c.AddFlags, tc.args)
			if err == nil {
				err = c.Validate()
			}
			flagtest.CheckErr(t, err, tc.wantErr)
		})
	}
}
