package tracer

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// PortsConfig is what `porttrace ports` takes on the command line.
type PortsConfig struct {
	All      bool
	Output   string
	Netns    []string
	Watch    bool
	Interval time.Duration
	Backend  Backend
	backend  string
}

// DefaultPortsConfig lists the listeners of porttrace's own namespace.
func DefaultPortsConfig() PortsConfig {
	return PortsConfig{Output: "table", Interval: time.Second, backend: "auto"}
}

// AddFlags registers the ports flags on fs.
func (c *PortsConfig) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVarP(&c.All, "all", "a", c.All, "every socket, not only listeners")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: table or json (one object per socket or event, its kind in \"event\")")
	fs.StringSliceVar(&c.Netns, "netns", c.Netns, "network namespace files to look into (/run/netns/NAME, /proc/PID/ns/net), or all")
	fs.BoolVarP(&c.Watch, "watch", "w", c.Watch, "after the snapshot, report new binds and listens as they happen and closed listeners")
	fs.DurationVarP(&c.Interval, "interval", "i", c.Interval, "with --watch, how often to look for closed listeners")
	fs.StringVar(&c.backend, "backend", c.backend, "with --watch, kernel hooks: auto, fentry, kprobe or tracepoint")
}

// Validate checks the flags.
func (c *PortsConfig) Validate() error {
	if err := checkOutput(c.Output, "table", "json"); err != nil {
		return err
	}
	if err := checkInterval(c.Interval); err != nil {
		return err
	}
	b, err := backendFlag(c.backend)
	if err != nil {
		return err
	}
	c.Backend = b
	return nil
}

// WhoConfig is what `porttrace who PORT[/tcp|/udp]` takes.
type WhoConfig struct {
	Port    uint16
	Proto   uint16 // 0: both
	Wait    bool
	Timeout time.Duration
	Output  string
	Netns   []string
	Backend Backend
	backend string
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
	fs.BoolVar(&c.Wait, "wait", c.Wait, "then wait for the next process to bind the port (or be denied it), report it and exit 0; exit 1 if stopped first. Binds that fail otherwise (address in use) are reported and the wait goes on")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "with --wait, give up after this long (exit 1)")
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: text or json")
	fs.StringSliceVar(&c.Netns, "netns", c.Netns, "network namespace files to look into, or all")
	fs.StringVar(&c.backend, "backend", c.backend, "with --wait, kernel hooks: auto, fentry, kprobe or tracepoint")
}

// ParseTarget sets Port and Proto from "PORT", "PORT/tcp" or "PORT/udp".
func (c *WhoConfig) ParseTarget(arg string) error {
	portStr, proto, hasProto := strings.Cut(arg, "/")
	port, err := parsePort(portStr)
	if err != nil {
		return err
	}
	if port == 0 {
		// bind(0) asks for any port: no socket is ever on port 0.
		return fmt.Errorf("invalid port 0 in %q: want a port from 1 to 65535", arg)
	}
	c.Port = port
	switch {
	case !hasProto:
	case proto == "tcp":
		c.Proto = ProtoTCP
	case proto == "udp":
		c.Proto = ProtoUDP
	default:
		return fmt.Errorf("invalid protocol %q in %q: want tcp or udp", proto, arg)
	}
	return nil
}

// Validate checks the flags.
func (c *WhoConfig) Validate() error {
	if err := checkOutput(c.Output, "text", "json"); err != nil {
		return err
	}
	if c.Timeout < 0 {
		return fmt.Errorf("invalid --timeout %s: want more than 0", c.Timeout)
	}
	if c.Timeout != 0 && !c.Wait {
		return errors.New("--timeout needs --wait")
	}
	b, err := backendFlag(c.backend)
	if err != nil {
		return err
	}
	c.Backend = b
	return nil
}

func (c *WhoConfig) protoMatches(proto uint16) bool {
	if c.Proto == ProtoTCP {
		return proto == ProtoTCP || proto == ProtoMPTCP
	}
	return c.Proto == 0 || proto == c.Proto
}
