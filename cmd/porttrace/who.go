package main

import (
	"context"
	"errors"
	"os"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/ports"
)

// runWho tells who holds one port now, or with --wait who binds it next.
func runWho(args []string) int {
	const name = "porttrace who"
	cfg := ports.DefaultWhoConfig()
	fs := newFlagSet("porttrace who PORT[/tcp|/udp] [flags]",
		"Tell who holds a port now; with --wait, who binds it next.\n"+
			"Exits 1 when no process holds the port (sockets a closed connection left in TIME-WAIT are\n"+
			"listed but do not count), or when --wait ends with no bind (--timeout, Ctrl-C).")
	cfg.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return usageError(name, err)
	}
	if fs.NArg() != 1 {
		return usageError(name, errors.New("want one PORT[/tcp|/udp]"))
	}
	if err := cfg.ParseTarget(fs.Arg(0)); err != nil {
		return usageError(name, err)
	}
	if err := cfg.Validate(); err != nil {
		return usageError(name, err)
	}
	return exit(name, func(ctx context.Context) error {
		err := ports.RunWho(ctx, cfg, os.Stdout, os.Stderr)
		if errors.Is(err, ports.ErrNobody) {
			return errQuiet // already said
		}
		return err
	})
}
