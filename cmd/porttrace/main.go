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
	"syscall"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg := tracer.DefaultConfig()
	fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
	fs.SortFlags = false
	cfg.AddFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: porttrace [flags]\n\nTrace bind, listen, connect and accept with the process behind each.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "porttrace: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "porttrace: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if cfg.Version {
		fmt.Println("porttrace", version)
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "porttrace: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := tracer.Run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "porttrace: %v\n", err)
		return 1
	}
	return 0
}
