package main

import (
	"context"
	"os"

	"github.com/porttrace/porttrace/tracer/churn"
)

// runChurn counts ephemeral port allocations and the range left.
func runChurn(args []string) int {
	const name = "porttrace churn"
	cfg := churn.DefaultConfig()
	fs := newFlagSet("porttrace churn [flags]",
		"Count ephemeral port allocations in the kernel: rate, failures, range usage and time to exhaustion.")
	cfg.AddFlags(fs)
	if code, done := parse(name, fs, args); done {
		return code
	}
	if err := cfg.Validate(); err != nil {
		return usageError(name, err)
	}
	return exit(name, func(ctx context.Context) error { return churn.Run(ctx, cfg, os.Stdout, os.Stderr) })
}
