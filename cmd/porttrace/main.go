// Command porttrace reports, as they happen, the binds, listens, connects
// and accepts of every process, with the port each asked for or was given
// and why a call failed.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/textout"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// init keeps the main thread for the main goroutine. porttrace enters
// other network namespaces on threads it locks and lets die (netns.Do);
// Go cannot end the main thread, and would keep one that entered a
// namespace for good, and /proc/self/ns/net, which porttrace reads as its
// own namespace, is the main thread's.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:]))
}

// run picks the subcommand by its first word; with none, the stream runs.
func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "churn":
			return runChurn(args[1:])
		case "ports":
			return runPorts(args[1:])
		case "who":
			return runWho(args[1:])
		}
	}
	return runStream(args)
}

// errQuiet exits 1 without a message: the command already said why.
var errQuiet = errors.New("")

func newFlagSet(usage, about string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s\n\n%s\n\n%s", usage, about, fs.FlagUsages())
	}
	return fs
}

// parse parses args; done is true when the command should exit with code.
func parse(name string, fs *pflag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0, true
		}
		return usageError(name, err), true
	}
	if fs.NArg() > 0 {
		return usageError(name, fmt.Errorf("unexpected argument %q", fs.Arg(0))), true
	}
	return 0, false
}

// say prints err on one line of stderr after the command's name. Every
// message goes through here escaped: flag errors echo what was typed, and
// runtime errors name --netns paths and --metrics addresses.
func say(name string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", name, textout.Printable(err.Error()))
}

// usageError says err and returns the exit code of a usage error.
func usageError(name string, err error) int {
	say(name, err)
	return 2
}

// exit runs fn until SIGINT or SIGTERM and turns its error into an exit code.
func exit(name string, fn func(context.Context) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fn(ctx); err != nil {
		if err != errQuiet {
			say(name, err)
		}
		return 1
	}
	return 0
}
