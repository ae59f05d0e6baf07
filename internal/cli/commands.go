package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/porttrace/porttrace/tracer/churn"
	"github.com/porttrace/porttrace/tracer/ports"
	"github.com/porttrace/porttrace/tracer/stream"
)

// NewRoot is porttrace's command tree: the stream, with churn, ports, who,
// version, completion and help under it. Flags go before or after a
// subcommand's name: those the stream shares with it (-o, -d, --netns,
// -v, --backend) are found either side.
func NewRoot(version string, stdout, stderr io.Writer) *cobra.Command {
	cfg := stream.DefaultConfig()
	cfg.BuildVersion = version
	cfg.NoColor = os.Getenv("NO_COLOR") != "" // https://no-color.org
	root := setup(&cobra.Command{
		Use:   "porttrace",
		Short: "Trace bind, listen, connect and accept with the process behind each",
		Long: `Trace bind, listen, connect and accept with the process behind each, as they
happen: the port a bind asked for and why it failed, the port the kernel
gave a connect and how its handshake ended, who accepted what.

Run alone, porttrace streams the events. Its commands answer the other
questions of an incident: churn (ephemeral ports used and left), ports
(what holds every port now) and who (who holds one port, or binds it next).`,
		Example: streamExamples,
		Version: version,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return stream.Run(cmd.Context(), cfg, stdout, stderr)
		},
	})
	// Help and --version go to the standard output (cobra's OutOrStdout),
	// and a deprecated flag's notice to stderr (its OutOrStderr, while no
	// output is set).
	root.SetErr(stderr)
	root.SetVersionTemplate("porttrace {{.Version}}\n")
	cfg.AddFlags(root.Flags())
	root.AddCommand(newChurn(version, stdout, stderr), newPorts(stdout, stderr), newWho(stdout, stderr), newVersion(version, stdout))
	tidy(root)
	return root
}

func newChurn(version string, stdout, stderr io.Writer) *cobra.Command {
	cfg := churn.DefaultConfig()
	cfg.BuildVersion = version
	cmd := setup(&cobra.Command{
		Use:   "churn",
		Short: "Count ephemeral port allocations: rate, failures, range used, time to exhaustion",
		Long: `Count ephemeral port allocations in the kernel, per network namespace and
destination: the rate, the failures (EADDRNOTAVAIL when the range is used
up), how much of ip_local_port_range is in use and how long until it runs
out at the current rate. Nothing is sent per event, so it costs little
under load.`,
		Example: churnExamples,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return churn.Run(cmd.Context(), cfg, stdout, stderr)
		},
	})
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newPorts(stdout, stderr io.Writer) *cobra.Command {
	cfg := ports.DefaultConfig()
	cmd := setup(&cobra.Command{
		Use:   "ports",
		Short: "List what holds every port now, with the processes; flag the suspicious",
		Long: `List what holds every port now (listeners; -a for every socket), with the
processes behind them and the containers they run in, and flag the
suspicious: a deleted executable, a listener on every address of a
privileged port held by an unprivileged user. With --watch, then report
new binds and listens as they happen and listeners as they close.`,
		Example: portsExamples,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return ports.Run(cmd.Context(), cfg, stdout, stderr)
		},
	})
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newWho(stdout, stderr io.Writer) *cobra.Command {
	cfg := ports.DefaultWhoConfig()
	cmd := setup(&cobra.Command{
		Use:   "who PORT[/tcp|/udp]",
		Short: "Tell who holds a port now, or with --wait who binds it next",
		Long: `Tell who holds a port now: the processes, their sockets and states, in every
namespace asked for. With --wait, then wait for the next process to bind the
port (or be denied it) and report it.

Exits 0 when a process holds the port (or --wait saw a bind), 1 when none
does (sockets a closed connection left in TIME-WAIT are listed but do not
count) or --wait ended with no bind, 2 on a usage error, 3 when it could
not look.`,
		Example: whoExamples,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usage(errors.New("want one PORT[/tcp|/udp]"))
			}
			return usage(cfg.ParseTarget(args[0]))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			err := ports.RunWho(cmd.Context(), cfg, stdout, stderr)
			switch {
			case errors.Is(err, ports.ErrNobody):
				return nobody{}
			case errors.Is(err, ports.ErrTimeout), errors.Is(err, ports.ErrInterrupted):
				return nobody{err}
			}
			return err
		},
	})
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newVersion(version string, stdout io.Writer) *cobra.Command {
	return setup(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "porttrace %s\n", version)
			return err
		},
	})
}
