package main

import (
	"context"
	"fmt"
	"os"

	"github.com/porttrace/porttrace/tracer/stream"
)

// runStream is the default command: the live stream of binds, listens,
// connects and accepts.
func runStream(args []string) int {
	const name = "porttrace"
	cfg := stream.DefaultConfig()
	cfg.NoColor = os.Getenv("NO_COLOR") != "" // https://no-color.org
	fs := newFlagSet("porttrace [flags]\n       porttrace churn [flags]\n       porttrace ports [flags]\n       porttrace who PORT[/tcp|/udp] [flags]",
		"Trace bind, listen, connect and accept with the process behind each.")
	cfg.AddFlags(fs)
	if code, done := parse(name, fs, args); done {
		return code
	}
	if cfg.Version {
		fmt.Println("porttrace", version)
		return 0
	}
	if err := cfg.Validate(); err != nil {
		return usageError(name, err)
	}
	return exit(name, func(ctx context.Context) error { return stream.Run(ctx, cfg, os.Stdout, os.Stderr) })
}
