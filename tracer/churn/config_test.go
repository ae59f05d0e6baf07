package churn

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
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
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := DefaultConfig()
			err := parseFlags(t, c.AddFlags, tc.args)
			if err == nil {
				err = c.Validate()
			}
			checkErr(t, err, tc.wantErr)
		})
	}
}

func parseFlags(t *testing.T, add func(*pflag.FlagSet), args []string) error {
	t.Helper()
	fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	add(fs)
	return fs.Parse(args)
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" && err != nil {
		t.Fatal(err)
	}
	if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
		t.Fatalf("error %v, want %q", err, want)
	}
}
