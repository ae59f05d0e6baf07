package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Config is everything the command line sets.
type Config struct {
	Output   string
	Ports    PortSet
	PID      uint32
	UID      int64 // -1: every user
	Comm     string
	Events   KindSet
	Failed   bool
	IPv4     bool
	IPv6     bool
	TCP      bool
	UDP      bool
	Duration time.Duration
	Count    uint64
	Backend  Backend
	Version  bool
	Metrics  string

	backend  string
	ringSize uint32 // bytes; 0: the default (tests shrink it to force a loss)
}

// DefaultConfig is a Config with every event and no filter.
func DefaultConfig() Config {
	return Config{Output: "table", UID: -1, Events: AllKinds(), backend: "auto"}
}

// AddFlags registers the flags on fs, grouped as the help text shows them.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: table or json")
	fs.VarP(&c.Ports, "port", "p", "only these ports, local or remote (e.g. 25,80,8000-8100); in-kernel")
	fs.Uint32Var(&c.PID, "pid", c.PID, "only this process (tgid); in-kernel")
	fs.Int64Var(&c.UID, "uid", c.UID, "only this user id; in-kernel")
	fs.StringVar(&c.Comm, "comm", c.Comm, "only processes with this command name (the calling thread's or the process's; first 15 bytes)")
	fs.VarP(&c.Events, "events", "e", "events to trace: bind,listen,connect,accept")
	fs.BoolVar(&c.Failed, "failed", c.Failed, "only denied or failed calls")
	fs.BoolVarP(&c.IPv4, "ipv4", "4", c.IPv4, "only IPv4")
	fs.BoolVarP(&c.IPv6, "ipv6", "6", c.IPv6, "only IPv6")
	fs.BoolVar(&c.TCP, "tcp", c.TCP, "only TCP (and MPTCP)")
	fs.BoolVar(&c.UDP, "udp", c.UDP, "only UDP")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "stop after this long (e.g. 30s)")
	fs.Uint64VarP(&c.Count, "count", "n", c.Count, "stop after this many events")
	fs.StringVar(&c.backend, "backend", c.backend, "kernel hooks: auto, fentry, kprobe or tracepoint")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics (events by type and result, lost) on this address")
	fs.BoolVar(&c.Version, "version", c.Version, "print the version and exit")
}

// Validate checks what flags alone cannot and resolves named values.
func (c *Config) Validate() error {
	if err := checkOutput(c.Output, "table", "json"); err != nil {
		return err
	}
	if c.UID < -1 || c.UID > 0xfffffffe {
		return fmt.Errorf("invalid --uid %d", c.UID)
	}
	if err := checkDuration(c.Duration); err != nil {
		return err
	}
	b, err := backendFlag(c.backend)
	if err != nil {
		return err
	}
	c.Backend = b
	if c.Events.Empty() {
		return errors.New("invalid --events: no event selected")
	}
	return nil
}

// checkOutput, checkInterval, checkDuration and backendFlag are the checks every
// subcommand's flags share, worded once.
func checkOutput(output string, formats ...string) error {
	if slices.Contains(formats, output) {
		return nil
	}
	return fmt.Errorf("invalid --output %q: want %s", output, strings.Join(formats, " or "))
}

func checkInterval(d time.Duration) error {
	if d < 10*time.Millisecond {
		return fmt.Errorf("invalid --interval %s: want 10ms or more", d)
	}
	return nil
}

// checkDuration refuses a negative --duration; 0 means until stopped.
func checkDuration(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("invalid --duration %s: want 0 (until stopped) or more", d)
	}
	return nil
}

func backendFlag(s string) (Backend, error) {
	b, err := ParseBackend(s)
	if err != nil {
		return 0, fmt.Errorf("invalid --backend: %w", err)
	}
	return b, nil
}

// taskCommLen is the kernel's TASK_COMM_LEN less its NUL: longer names are
// cut to this many bytes in every event.
const taskCommLen = 15

// mainComms gives the name of a process's main thread, for --comm: the
// event names the thread that made the call, and a worker thread often
// has a name of its own ("tokio-runtime-w", "C2 CompilerThre").
type mainComms interface {
	mainComm(ev *Event) string
}

// Wants reports whether ev passes the filters that run in userspace.
func (c *Config) Wants(ev *Event, procs mainComms) bool {
	if !c.Events.Has(ev.Kind) {
		return false
	}
	if c.Failed && ev.Result == ResultOK {
		return false
	}
	if c.Comm != "" {
		want := c.Comm[:min(len(c.Comm), taskCommLen)]
		if ev.Comm != want && (ev.TID == ev.PID || procs == nil || procs.mainComm(ev) != want) {
			return false
		}
	}
	if c.IPv4 != c.IPv6 && (eventFamily(ev) == "ipv4") != c.IPv4 {
		return false
	}
	if c.TCP != c.UDP && (ev.Proto == ProtoUDP) != c.UDP {
		return false
	}
	return true
}

// eventFamily is the family of ev's addresses: an IPv6 socket talking to
// an IPv4 peer (a dual-stack listener's IPv4 client) counts as IPv4.
func eventFamily(ev *Event) string {
	if ap := cmp.Or(ev.Remote, ev.Local); ap.IsValid() && ap.Addr().Is4In6() {
		return "ipv4"
	}
	return FamilyName(ev.Family)
}

// PortSet is a set of ports, set from a list such as "25,80,8000-8100".
type PortSet struct {
	bits [65536 / 64]uint64
	spec []string
}

// Set adds the ports of a comma-separated list of ports and ranges.
func (p *PortSet) Set(s string) error {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parsePort(lo)
		if err != nil {
			return err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return err
			}
			if last < first {
				return fmt.Errorf("port range %q runs backwards", item)
			}
		}
		for port := int(first); port <= int(last); port++ {
			p.bits[port/64] |= 1 << (port % 64)
		}
		p.spec = append(p.spec, item)
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: want a number from 0 to 65535", s)
	}
	return uint16(n), nil
}

// Has reports whether port is in the set.
func (p *PortSet) Has(port uint16) bool { return p.bits[port/64]&(1<<(port%64)) != 0 }

// Empty reports whether no port was set.
func (p *PortSet) Empty() bool { return len(p.spec) == 0 }

func (p *PortSet) String() string { return strings.Join(p.spec, ",") }

// Type is what --help shows as the value's kind.
func (p *PortSet) Type() string { return "ports" }

// KindSet is a set of event kinds, set from a list such as "bind,connect".
type KindSet struct {
	set  uint8
	user bool // Set has been called: replace the default instead of adding
}

// AllKinds is every event kind.
func AllKinds() KindSet {
	var k KindSet
	for _, kind := range []Kind{KindBind, KindListen, KindConnect, KindAccept} {
		k.set |= 1 << kind
	}
	return k
}

// Set replaces the default with the kinds in a comma-separated list.
func (k *KindSet) Set(s string) error {
	if !k.user {
		k.set, k.user = 0, true
	}
	for _, name := range strings.Split(s, ",") {
		kind, err := ParseKind(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		k.set |= 1 << kind
	}
	return nil
}

// Has reports whether kind is in the set.
func (k *KindSet) Has(kind Kind) bool { return kind < 8 && k.set&(1<<kind) != 0 }

// Empty reports whether no kind is set.
func (k *KindSet) Empty() bool { return k.set == 0 }

func (k *KindSet) String() string {
	var names []string
	for kind := KindBind; kind <= KindAccept; kind++ {
		if k.Has(kind) {
			names = append(names, kind.String())
		}
	}
	return strings.Join(names, ",")
}

// Type is what --help shows as the value's kind.
func (k *KindSet) Type() string { return "events" }
