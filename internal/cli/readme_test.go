package cli

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The README's Flags section lists, for each command, exactly the flags
// the command defines: none missing, none that is not there.
func TestREADMEFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := readmeFlags(t, string(readme))
	root := NewRoot("test", io.Discard, io.Discard)
	for _, cmd := range append([]*cobra.Command{root}, root.Commands()...) {
		if cmd.Hidden || !cmd.Runnable() || cmd.Name() == "help" || cmd.Name() == "version" {
			continue
		}
		name := cmd.CommandPath()
		var defined []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && f.Deprecated == "" && f.Name != "help" {
				defined = append(defined, "--"+f.Name)
			}
		})
		slices.Sort(defined)
		got, ok := listed[name]
		if !ok {
			t.Errorf("the README lists no flags of %q", name)
			continue
		}
		slices.Sort(got)
		if !slices.Equal(got, defined) {
			t.Errorf("%s: the README lists %v, the command defines %v", name, got, defined)
		}
	}
}

// readmeFlags reads the Flags section's code block: a line naming a
// command ("porttrace who PORT[/tcp|/udp]") starts its list; each line
// after it names flags left of its description (two spaces or more).
func readmeFlags(t *testing.T, readme string) map[string][]string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n## Flags\n")
	if !ok {
		t.Fatal("the README has no Flags section")
	}
	_, block, _ := strings.Cut(rest, "```\n")
	block, _, _ = strings.Cut(block, "```")
	flagRe := regexp.MustCompile(`--[a-z0-9][a-z0-9.-]*`)
	cmd := "porttrace"
	out := map[string][]string{}
	for _, line := range strings.Split(block, "\n") {
		if strings.HasPrefix(line, "porttrace ") {
			fields := strings.Fields(line)
			cmd = fields[0] + " " + fields[1]
			continue
		}
		left, _, _ := strings.Cut(strings.TrimSpace(line), "   ")
		if !strings.HasPrefix(left, "-") {
			continue // a description's second line
		}
		out[cmd] = append(out[cmd], flagRe.FindAllString(left, -1)...)
	}
	return out
}
