package ports

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
)

// Config is what `porttrace ports` takes on the command line.
type Config struct {
	All    bool
	Output string
	// Columns are -o wide's or -o columns='s (Validate sets them); nil:
	// the default table.
	Columns []string
	Netns   []string
	// RuntimeSockets name the container runtime APIs to ask for names.
	RuntimeSockets []string
	Watch          bool
	Interval       time.Duration
	Duration       time.Duration
	Verbose        bool
	Backend        event.Backend
	backend        string
	flags          *pflag.FlagSet // AddFlags's, to tell a flag given from its default
}

// DefaultConfig lists the listeners of porttrace's own namespace.
func DefaultConfig() Config {
	return Config{Output: "table", Interval: time.Second, backend: "auto"}
}

// AddFlags registers the ports flags on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	c.flags = fs
	fs.BoolVarP(&c.All, "all", "a", c.All, "every socket, not only listeners")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output `FORMAT`: table; wide (every column); columns=NAME,... of "+
		strings.Join(ColumnNames(), ",")+"; or json (one object per socket or event, its kind in \"event\")")
	fs.Var((*flagcheck.NetnsList)(&c.Netns), "netns", "network namespace files to look into (/run/netns/NAME, /proc/PID/ns/net), or all")
	fs.StringArrayVar(&c.RuntimeSockets, "runtime-socket", c.RuntimeSockets, flagcheck.RuntimeSocketHelp)
	fs.BoolVarP(&c.Watch, "watch", "w", c.Watch, "after the snapshot, report new binds and listens as they happen and closed listeners")
	fs.DurationVarP(&c.Interval, "interval", "i", c.Interval, "with --watch, how often to look for closed listeners: a `DURATION`")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "with --watch, stop after this long: a `DURATION` such as 30s or 5m")
	fs.StringVar(&c.backend, "backend", c.backend, "with --watch, the kernel hooks, a `BACKEND`: auto, fentry, kprobe or tracepoint")
	fs.BoolVarP(&c.Verbose, "verbose", "v", c.Verbose, flagcheck.VerboseHelp)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	if list, ok := strings.CutPrefix(c.Output, "columns="); ok {
		cols, err := ParseColumns(list)
		if err != nil {
			return fmt.Errorf("invalid --output %q: %w", c.Output, err)
		}
		c.Columns = cols
	} else if c.Output == "wide" {
		c.Columns = wideLayout
	} else if err := flagcheck.Output(c.Output, "table", "wide", "json", "columns=NAME,..."); err != nil {
		return err
	}
	if err := flagcheck.First(flagcheck.Interval(c.Interval), flagcheck.Duration(c.Duration)); err != nil {
		return err
	}
	var err error
	if c.Backend, err = flagcheck.Backend(c.backend); err != nil {
		return err
	}
	if !c.Watch {
		for _, name := range []string{"interval", "duration", "backend"} {
			if flagcheck.Changed(c.flags, name) {
				return fmt.Errorf("--%s needs --watch", name)
			}
		}
		if c.Duration != 0 {
			return errors.New("--duration needs --watch")
		}
	}
	return flagcheck.Netns(c.Netns)
}

// WhoConfig is what `porttrace who PORT[/tcp|/udp]` takes.
type WhoConfig struct {
	Port    uint16
	Proto   uint16 // 0: both
	Wait    bool
	Timeout time.Duration
	Output  string
	Netns   []string
	// RuntimeSockets name the container runtime APIs to ask for names.
	RuntimeSockets []string
	Verbose        bool
	Backend        event.Backend
	backend        string
	flags          *pflag.FlagSet // AddFlags's, to tell --backend given from its default
}

// ErrNobody means no process holds the port (who without --wait): no
// socket is on it, or only what the kernel keeps of closed connections.
var ErrNobody = errors.New("nobody holds the port")

// ErrTimeout means --wait ended with no bind of the port.
var ErrTimeout = errors.New("timed out")

// ErrInterrupted means --wait was stopped (Ctrl-C, SIGTERM) before any bind
// of the port: like a timeout, nothing was bound, and the exit status says so.
var ErrInterrupted = errors.New("interrupted")

// DefaultWhoConfig looks once.
func DefaultWhoConfig() WhoConfig { return WhoConfig{Output: "text", backend: "auto"} }

// AddFlags registers the who flags on fs.
func (c *WhoConfig) AddFlags(fs *pflag.FlagSet) {
	c.flags = fs
	fs.BoolVar(&c.Wait, "wait", c.Wait, "then wait for the next process to bind the port (or be denied it), report it and exit 0; exit 1 if stopped first. Binds that fail otherwise (address in use) are reported and the wait goes on")
	fs.DurationVarP(&c.Timeout, "duration", "d", c.Timeout, "with --wait, give up after this long (exit 1): a `DURATION` such as 30s or 5m")
	// --timeout was its name before -d/--duration, as every command has it.
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "")
	_ = fs.MarkDeprecated("timeout", "use -d/--duration")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output `FORMAT`: text or json")
	fs.Var((*flagcheck.NetnsList)(&c.Netns), "netns", "network namespace files to look into, or all")
	fs.StringArrayVar(&c.RuntimeSockets, "runtime-socket", c.RuntimeSockets, flagcheck.RuntimeSocketHelp)
	fs.StringVar(&c.backend, "backend", c.backend, "with --wait, the kernel hooks, a `BACKEND`: auto, fentry, kprobe or tracepoint")
	fs.BoolVarP(&c.Verbose, "verbose", "v", c.Verbose, flagcheck.VerboseHelp)
}

// ParseTarget sets Port and Proto from "PORT", "PORT/tcp" or "PORT/udp".
func (c *WhoConfig) ParseTarget(arg string) error {
	portStr, proto, hasProto := strings.Cut(arg, "/")
	port, err := tracer.ParsePort(portStr)
	if err != nil {
		return err
	}
	if port == 0 {
		// bind(0) asks for any port: no socket is ever on port 0.
		return fmt.Errorf("invalid port 0 in %q: %s", arg, flagcheck.PortRange)
	}
	c.Port = port
	switch {
	case !hasProto:
	case proto == "tcp":
		c.Proto = event.ProtoTCP
	case proto == "udp":
		c.Proto = event.ProtoUDP
	default:
		return fmt.Errorf("invalid protocol %q in %q: want tcp or udp", proto, arg)
	}
	return nil
}

// Validate checks the flags.
func (c *WhoConfig) Validate() error {
	if err := flagcheck.Output(c.Output, "text", "json"); err != nil {
		return err
	}
	limit := "--duration"
	if flagcheck.Changed(c.flags, "timeout") {
		limit = "--timeout"
	}
	if c.Timeout < 0 {
		return fmt.Errorf("invalid %s %s: want 0 (no limit) or more", limit, c.Timeout)
	}
	if c.Timeout != 0 && !c.Wait {
		return fmt.Errorf("%s needs --wait", limit)
	}
	b, err := flagcheck.Backend(c.backend)
	if err != nil {
		return err
	}
	c.Backend = b
	if flagcheck.Changed(c.flags, "backend") && !c.Wait {
		return errors.New("--backend needs --wait")
	}
	return flagcheck.Netns(c.Netns)
}

func (c *WhoConfig) protoMatches(proto uint16) bool {
	if c.Proto == event.ProtoTCP {
		return proto == event.ProtoTCP || proto == event.ProtoMPTCP
	}
	return c.Proto == 0 || proto == c.Proto
}
