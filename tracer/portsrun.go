package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
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
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: table or json (one object per socket)")
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

// RunPorts prints what holds every port now and, with --watch, what changes.
func RunPorts(ctx context.Context, cfg PortsConfig, stdout, stderr io.Writer) error {
	var t *Tracer
	if cfg.Watch {
		// Attached before the snapshot, so nothing falls between the two.
		var err error
		t, err = New(Options{Backend: cfg.Backend, Events: kindSet(KindBind, KindListen), UID: -1})
		if err != nil {
			return err
		}
		defer t.Close()
	}
	snap, err := Snapshot(SnapshotOptions{All: cfg.All, Netns: cfg.Netns})
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	if cfg.Output == "json" {
		var buf []byte
		for i := range snap {
			buf = AppendSocketJSON(buf[:0], &snap[i])
			_, _ = out.Write(buf)
		}
	} else if err := WritePortsTable(out, snap, len(cfg.Netns) > 0); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	if !cfg.Watch {
		return nil
	}
	fmt.Fprintf(stderr, "porttrace ports: watching with %s\n", t)
	return watchPorts(ctx, cfg, t, snap, out)
}

type listenerKey struct {
	netns uint32
	proto uint16
	local netip.AddrPort
	inode uint32
}

func keyOf(s *Socket) listenerKey { return listenerKey{s.Netns, s.Proto, s.Local, s.Inode} }

// watchPorts reports binds and listens as the tracer sees them, and every
// interval the listeners that went away.
func watchPorts(ctx context.Context, cfg PortsConfig, t *Tracer, snap []Socket, out *bufio.Writer) error {
	inScope, err := netnsFilter(cfg.Netns)
	if err != nil {
		return err
	}
	known := map[listenerKey]Socket{}
	for _, s := range snap {
		if s.Listening() {
			known[keyOf(&s)] = s
		}
	}
	events := make(chan Event, 256)
	go func() {
		defer close(events)
		en := newEnricher()
		for {
			var ev Event
			if t.Read(&ev) != nil {
				return
			}
			if inScope != nil && !inScope[ev.Netns] {
				continue
			}
			en.enrich(&ev)
			events <- ev
		}
	}()
	stop := context.AfterFunc(ctx, t.Stop)
	defer stop()
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return out.Flush()
			}
			if cfg.Output == "json" {
				buf = AppendJSON(buf[:0], &ev)
				_, _ = out.Write(buf)
			} else {
				fmt.Fprintf(out, "%s + %s %s %s pid %d %s (%s)%s\n", ev.Time.In(displayZone).Format("15:04:05"), ev.Kind,
					ProtoName(ev.Proto), hostPort(ev.Local, 99), ev.PID, ev.Comm, ev.User, resultNote(&ev))
			}
		case <-tick.C:
			snap, err := Snapshot(SnapshotOptions{Netns: cfg.Netns})
			if err != nil {
				return err
			}
			now := map[listenerKey]Socket{}
			for _, s := range snap {
				if s.Listening() {
					now[keyOf(&s)] = s
				}
			}
			for k, s := range known {
				if _, ok := now[k]; ok {
					continue
				}
				if cfg.Output == "json" {
					buf = append(buf[:0], `{"event":"closed",`...)
					buf = append(buf, AppendSocketJSON(nil, &s)[1:]...)
					_, _ = out.Write(buf)
				} else {
					fmt.Fprintf(out, "%s - closed %s %s %s\n", time.Now().Format("15:04:05"), ProtoName(s.Proto), hostPort(s.Local, 99), holderNote(&s))
				}
			}
			known = now
		}
		if err := out.Flush(); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
}

func resultNote(ev *Event) string {
	if ev.Result == ResultOK {
		return ""
	}
	return "  " + ev.ErrnoName() + ": " + ev.Reason
}

func holderNote(s *Socket) string {
	if len(s.Holders) == 0 {
		return ""
	}
	return fmt.Sprintf("(was pid %d %s)", s.Holders[0].PID, s.Holders[0].Comm)
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

// ErrNobody means no socket holds the port (who without --wait).
var ErrNobody = errors.New("nobody holds the port")

// ErrTimeout means --wait ended with no bind of the port.
var ErrTimeout = errors.New("timed out")

// DefaultWhoConfig looks once.
func DefaultWhoConfig() WhoConfig { return WhoConfig{Output: "text", backend: "auto"} }

// AddFlags registers the who flags on fs.
func (c *WhoConfig) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.Wait, "wait", c.Wait, "then wait for the next process to bind the port (or be denied it), report it and exit")
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

// RunWho tells who holds a port now and, with --wait, who binds it next.
func RunWho(ctx context.Context, cfg WhoConfig, stdout, stderr io.Writer) error {
	var t *Tracer
	if cfg.Wait {
		var ports PortSet
		_ = ports.Set(strconv.Itoa(int(cfg.Port)))
		var err error
		// Attached before looking, so a bind in between is not missed.
		t, err = New(Options{Backend: cfg.Backend, Events: kindSet(KindBind), UID: -1, Ports: &ports})
		if err != nil {
			return err
		}
		defer t.Close()
	}
	snap, err := Snapshot(SnapshotOptions{All: true, Netns: cfg.Netns})
	if err != nil {
		return err
	}
	inScope, err := netnsFilter(cfg.Netns)
	if err != nil {
		return err
	}
	var held []Socket
	for _, s := range snap {
		if s.Local.Port() == cfg.Port && cfg.protoMatches(s.Proto) {
			held = append(held, s)
		}
	}
	protoName := "tcp,udp"
	if cfg.Proto != 0 {
		protoName = ProtoName(cfg.Proto)
	}
	if cfg.Output == "json" {
		var buf []byte
		for i := range held {
			buf = AppendSocketJSON(buf, &held[i])
		}
		if _, err := stdout.Write(buf); err != nil {
			return err
		}
	} else if err := WriteWho(stdout, cfg.Port, protoName, held, time.Now()); err != nil {
		return err
	}
	if !cfg.Wait {
		if len(held) == 0 {
			return ErrNobody
		}
		return nil
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, t.Stop)
	defer stop()
	fmt.Fprintf(stderr, "porttrace who: waiting for a bind of port %d/%s with %s\n", cfg.Port, protoName, t)
	en := newEnricher()
	var ev Event
	for {
		if err := t.Read(&ev); err != nil {
			if errors.Is(err, ErrStopped) {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("%w after %s: no bind of port %d/%s", ErrTimeout, cfg.Timeout, cfg.Port, protoName)
				}
				return nil // interrupted
			}
			return err
		}
		if ev.Local.Port() != cfg.Port || !cfg.protoMatches(ev.Proto) || (inScope != nil && !inScope[ev.Netns]) {
			continue
		}
		en.enrich(&ev)
		if cfg.Output == "json" {
			_, err = stdout.Write(AppendJSON(nil, &ev))
		} else {
			_, err = fmt.Fprintf(stdout, "%s %s %s %s by pid %d (%s), user %s, exe %s%s\n", ev.Time.In(displayZone).Format("15:04:05.000"),
				ev.Kind, ProtoName(ev.Proto), hostPort(ev.Local, 99), ev.PID, ev.Comm, ev.User, exeNote(&ev), resultNote(&ev))
		}
		return err
	}
}

func exeNote(ev *Event) string {
	if ev.ExeDeleted {
		return ev.Exe + " (DELETED)"
	}
	return ev.Exe
}
