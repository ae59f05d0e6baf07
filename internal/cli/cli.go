// Package cli is porttrace's command line: the commands, their flags and
// help, and what each outcome exits with. cmd/porttrace only calls Run;
// internal/cli/mangen writes the man pages from the same commands.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/textout"
)

// Exit statuses, one table in the README ("Exit status").
const (
	ExitOK      = 0 // done, or stopped by a signal, --duration, --count or the output's reader leaving
	ExitNobody  = 1 // who: nobody holds the port, or --wait ended with no bind
	ExitUsage   = 2 // a flag or argument is wrong, or two conflict
	ExitRuntime = 3 // it could not run: not root, no BTF, no backend, a namespace it cannot enter, output it cannot write
)

// usageError marks an error of the command line, as opposed to one met
// while running.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// nobody ends who with ExitNobody: nobody holds the port, which who has
// said (err nil), or --wait ended with no bind (err says how).
type nobody struct{ err error }

func (n nobody) Error() string {
	if n.err == nil {
		return ""
	}
	return n.err.Error()
}

// Run runs porttrace with args (os.Args[1:]) and returns the exit status.
// version is the build's (-ldflags -X main.version); "dev" or empty falls
// back to what the Go toolchain recorded.
func Run(args []string, version string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGPIPE handled rather than left to kill porttrace: a write to a
	// pipe with no reader then fails with EPIPE, and porttrace stops as
	// below, detaching from the kernel on its way out.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	quiet := &quietWriter{w: stderr}
	root := NewRoot(Version(version), stdout, quiet)
	root.SetArgs(args)
	// Watched once the flags are read: -o none writes nothing to stdout,
	// whose reader (a journal, say) may then come and go.
	stopWatch := func() {}
	defer func() { stopWatch() }()
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		if o := cmd.Flags().Lookup("output"); o != nil && o.Value.String() == "none" {
			return
		}
		stopWatch = watchReader(stdout, func() {
			quiet.shut.Store(true)
			cancel(errReaderGone)
		})
	}
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil || readerGone(ctx, err) {
		return ExitOK
	}
	if cmd == nil {
		cmd = root
	}
	var u usageError
	var nb nobody
	switch {
	case errors.As(err, &nb):
		if nb.err != nil {
			say(stderr, cmd.CommandPath(), nb.err)
		}
		return ExitNobody
	case errors.As(err, &u):
		say(stderr, cmd.CommandPath(), err)
		return ExitUsage
	case isCobraUsage(err):
		say(stderr, cmd.CommandPath(), err)
		return ExitUsage
	}
	say(stderr, cmd.CommandPath(), err)
	return ExitRuntime
}

// isCobraUsage tells the command-line errors cobra makes itself (an
// unknown command) from those of a run.
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// say prints err on one line of stderr after the command's name. Every
// message goes through here escaped: flag errors echo what was typed, and
// runtime errors name --netns paths and --metrics addresses.
func say(stderr io.Writer, name string, err error) {
	fmt.Fprintf(stderr, "%s: %s\n", name, textout.Printable(err.Error()))
}

// Version is v, or where v is empty or "dev" (a build without the
// Makefile's -ldflags), the module version `go install ...@vX` recorded,
// else the commit it was built from: "dev-0123456789ab(-dirty)".
func Version(v string) string {
	if v != "" && v != "dev" {
		return v
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if mv := info.Main.Version; mv != "" && mv != "(devel)" {
		return mv
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	v = "dev-" + rev[:min(12, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

// noArgs refuses arguments, saying which command was meant when one looks
// like a misspelt subcommand.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		return usage(fmt.Errorf("unknown command %q: did you mean %s?", args[0], strings.Join(s, " or ")))
	}
	return usage(fmt.Errorf("unexpected argument %q", args[0]))
}

// setup sets what every command shares: errors said once by Run, flag
// errors as usage errors (tidy does the rest, once the tree is whole).
func setup(cmd *cobra.Command) *cobra.Command {
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	return cmd
}

// tidy readies the help of cmd and the commands under it: cobra's own
// flags and commands added now rather than at run time, flags in the order
// they are added, bool flags shown as "--failed" rather than pflag's
// "--failed[=true|false]", and suggestions for a misspelt command.
func tidy(cmd *cobra.Command) {
	cmd.SuggestionsMinimumDistance = 2
	cmd.InitDefaultHelpFlag()
	if !cmd.HasParent() {
		cmd.InitDefaultHelpCmd()
		cmd.InitDefaultCompletionCmd()
		cmd.InitDefaultVersionFlag()
	}
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.PersistentFlags()} {
		fs.SortFlags = false
		fs.VisitAll(func(f *pflag.Flag) {
			if _, plain := f.Value.(plainBool); f.Value.Type() == "bool" && !plain {
				f.Value = plainBool{f.Value}
			}
		})
	}
	for _, c := range cmd.Commands() {
		tidy(c)
	}
}

// plainBool is a bool flag's value without IsBoolFlag: pflag then shows
// no "[=true|false]" after its name, and NoOptDefVal ("true") still lets
// it stand alone.
type plainBool struct{ pflag.Value }
