// Package flagtest is what the commands' flag tests share: parse a command
// line into a FlagSet, and check an error against the words wanted.
package flagtest

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Parse registers flags with add on a fresh FlagSet and parses args.
func Parse(t *testing.T, add func(*pflag.FlagSet), args []string) error {
	t.Helper()
	fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	add(fs)
	return fs.Parse(args)
}

// CheckErr fails t unless err contains want, or is nil when want is "".
func CheckErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" && err != nil {
		t.Fatal(err)
	}
	if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
		t.Fatalf("error %v, want %q", err, want)
	}
}
