package main

import (
	"context"
	"os"

	"github.com/porttrace/porttrace/tracer/ports"
)

// runPorts lists what holds every port now, or watches it with --watch.
func runPorts(args []string) int {
	const name = "porttrace ports"
	cfg := ports.DefaultConfig()
	fs := newFlagSet("porttrace ports [flags]",
		"List what holds every port now (listeners; -a for all sockets), with the processes, and flag the suspicious.")
	cfg.AddFlags(fs)
	if code, done := parse(name, fs, args); done {
		return code
	}
	if err := cfg.Validate(); err != nil {
		return usageError(name, err)
	}
	return exit(name, func(ctx context.Context) error { return ports.Run(ctx, cfg, os.Stdout, os.Stderr) })
}
