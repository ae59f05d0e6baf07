package tracer

import (
	"errors"
	"fmt"
	"math"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
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
	Backend  event.Backend
	Version  bool
	Metrics  string
	Verbose  bool
	// NoColor keeps colour off a terminal (NO_COLOR in the environment,
	// which cmd/porttrace reads).
	NoColor bool

	backend  string
	user     userFlag // --uid as given: Validate resolves a name into UID
	ringSize uint32   // bytes; 0: the default (tests shrink it to force a loss)
}

// DefaultConfig is a Config with every event and no filter.
func DefaultConfig() Config {
	return Config{Output: "table", UID: -1, Events: AllKinds(), backend: "auto"}
}

// AddFlags registers the flags on fs, grouped as the help text shows them.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output format: table or json")
	fs.VarP(&c.Ports, "port", "p", "only these ports, local or remote (e.g. 25,80,8000-8100); in-kernel")
	fs.Var((*pidFlag)(&c.PID), "pid", "only this process (tgid); in-kernel")
	fs.Var(&c.user, "uid", "only this user (a name or an id); in-kernel")
	fs.StringVar(&c.Comm, "comm", c.Comm, "only processes with this command name (the calling thread's or the process's; first 15 bytes)")
	fs.VarP(&c.Events, "events", "e", "events to trace: bind,listen,connect,accept")
	fs.BoolVar(&c.Failed, "failed", c.Failed, "only denied or failed calls")
	fs.BoolVarP(&c.IPv4, "ipv4", "4", c.IPv4, "only IPv4")
	fs.BoolVarP(&c.IPv6, "ipv6", "6", c.IPv6, "only IPv6")
	fs.BoolVar(&c.TCP, "tcp", c.TCP, "only TCP (and MPTCP)")
	fs.BoolVar(&c.UDP, "udp", c.UDP, "only UDP")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "stop after this long (e.g. 30s)")
	fs.VarP((*countFlag)(&c.Count), "count", "n", "stop after this many events")
	fs.StringVar(&c.backend, "backend", c.backend, "kernel hooks: auto, fentry, kprobe or tracepoint")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics (events by type and result, lost) on this address")
	fs.BoolVarP(&c.Verbose, "verbose", "v", c.Verbose, flagcheck.VerboseHelp)
	fs.BoolVar(&c.Version, "version", c.Version, "print the version and exit")
}

// Validate checks what flags alone cannot and resolves named values.
func (c *Config) Validate() error {
	if err := flagcheck.Output(c.Output, "table", "json"); err != nil {
		return err
	}
	if c.Ports.Has(0) {
		return fmt.Errorf("invalid --port %q: %s", c.Ports.itemWith(0), portRange)
	}
	if c.IPv4 && c.IPv6 {
		return errors.New("-4 and -6 together: leaving both out already means both families")
	}
	if c.TCP && c.UDP {
		return errors.New("--tcp and --udp together: leaving both out already means both protocols")
	}
	if c.user != "" {
		uid, err := c.user.resolve()
		if err != nil {
			return err
		}
		c.UID = uid
	}
	if c.UID < -1 || c.UID > maxUID {
		return fmt.Errorf("invalid --uid %d: %s", c.UID, uidRange)
	}
	if err := flagcheck.First(flagcheck.Duration(c.Duration), flagcheck.MetricsAddr(c.Metrics)); err != nil {
		return err
	}
	var err error
	if c.Backend, err = flagcheck.Backend(c.backend); err != nil {
		return err
	}
	if c.Events.Empty() {
		return errors.New("invalid --events: no event selected")
	}
	return nil
}

// taskCommLen is the kernel's TASK_COMM_LEN less its NUL: longer names are
// cut to this many bytes in every event.
const taskCommLen = 15

// mainComms gives the name of a process's main thread, for --comm: the
// event names the thread that made the call, and a worker thread often
// has a name of its own ("tokio-runtime-w", "C2 CompilerThre").
type mainComms interface {
	MainComm(ev *event.Event) string
}

// Wants reports whether ev passes the filters that run in userspace.
func (c *Config) Wants(ev *event.Event, procs mainComms) bool {
	if !c.Events.Has(ev.Kind) {
		return false
	}
	if c.Failed && ev.Result == event.ResultOK {
		return false
	}
	if c.Comm != "" {
		want := c.Comm[:min(len(c.Comm), taskCommLen)]
		if ev.Comm != want && (ev.TID == ev.PID || procs == nil || procs.MainComm(ev) != want) {
			return false
		}
	}
	if c.IPv4 != c.IPv6 && (ev.AddrFamily() == "ipv4") != c.IPv4 {
		return false
	}
	if c.TCP != c.UDP && (ev.Proto == event.ProtoUDP) != c.UDP {
		return false
	}
	return true
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
		if item == "" {
			return fmt.Errorf("an empty item in port list %q: want PORT or FIRST-LAST, comma-separated", s)
		}
		lo, hi, isRange := strings.Cut(item, "-")
		if isRange && (lo == "" || hi == "") {
			return fmt.Errorf("invalid port range %q: want FIRST-LAST, each a port from 1 to 65535", item)
		}
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

// portRange is what every message about a port wants. PortSet itself takes
// 0, which ip_local_reserved_ports may list; the flags refuse it, as no
// socket is on port 0 (bind asks with it for any port).
const portRange = "want a port from 1 to 65535"

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: %s", s, portRange)
	}
	return uint16(n), nil
}

// itemWith is the item of the list that set port, for a message.
func (p *PortSet) itemWith(port uint16) string {
	for _, item := range p.spec {
		lo, hi, isRange := strings.Cut(item, "-")
		first, _ := parsePort(lo)
		last := first
		if isRange {
			last, _ = parsePort(hi)
		}
		if first <= port && port <= last {
			return item
		}
	}
	return strconv.Itoa(int(port))
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
	for _, kind := range []event.Kind{event.KindBind, event.KindListen, event.KindConnect, event.KindAccept} {
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
		kind, err := event.ParseKind(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		if k.Has(kind) {
			return fmt.Errorf("event %q named twice", kind)
		}
		k.set |= 1 << kind
	}
	return nil
}

// Has reports whether kind is in the set.
func (k *KindSet) Has(kind event.Kind) bool { return kind < 8 && k.set&(1<<kind) != 0 }

// Empty reports whether no kind is set.
func (k *KindSet) Empty() bool { return k.set == 0 }

func (k *KindSet) String() string {
	var names []string
	for kind := event.KindBind; kind <= event.KindAccept; kind++ {
		if k.Has(kind) {
			names = append(names, kind.String())
		}
	}
	return strings.Join(names, ",")
}

// Type is what --help shows as the value's kind.
func (k *KindSet) Type() string { return "events" }

// countFlag is --count. Its zero value, the default, means no limit, which
// is why 0 cannot be asked for.
type countFlag uint64

func (n *countFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return fmt.Errorf("want 1 or more events, at most %d", uint64(math.MaxUint64))
	}
	*n = countFlag(v)
	return nil
}

func (n *countFlag) String() string { return strconv.FormatUint(uint64(*n), 10) }

// Type is what --help shows as the value's kind.
func (n *countFlag) Type() string { return "uint" }

// maxUID is the highest user id: (uid_t)-1, 4294967295, is the kernel's
// "no user" (INVALID_UID), which no process runs as.
const maxUID = 0xfffffffe

const uidRange = `want a user name or an id from 0 to 4294967294 (4294967295 is the kernel's "no user")`

// userFlag is --uid as given, a user name or id. A name is looked up by
// resolve, after parsing: the lookup reads /etc/passwd or asks NSS, which
// no flag parser should do while help is all that was asked for.
type userFlag string

func (u *userFlag) Set(s string) error {
	if s == "" {
		return errors.New(uidRange)
	}
	if isUID(s) {
		if _, err := parseUID(s); err != nil {
			return err
		}
	}
	*u = userFlag(s)
	return nil
}

func (u *userFlag) String() string { return string(*u) }

// Type is what --help shows as the value's kind.
func (u *userFlag) Type() string { return "user" }

// resolve is the user id u names.
func (u userFlag) resolve() (int64, error) {
	s := string(u)
	if isUID(s) {
		uid, err := parseUID(s)
		if err != nil {
			return 0, fmt.Errorf("invalid --uid %q: %w", s, err)
		}
		return uid, nil
	}
	usr, err := user.Lookup(s)
	if errors.As(err, new(user.UnknownUserError)) {
		return 0, fmt.Errorf("invalid --uid %q: no such user; %s", s, uidRange)
	}
	if err != nil {
		return 0, fmt.Errorf("looking up --uid %q: %w", s, err)
	}
	uid, err := parseUID(usr.Uid)
	if err != nil {
		return 0, fmt.Errorf("user %q has id %s: %w", s, usr.Uid, err)
	}
	return uid, nil
}

// isUID reports whether s is written as a number (negative ones too, to
// be refused as such), not a name.
func isUID(s string) bool {
	digits := strings.TrimLeft(s, "+-")
	return len(s)-len(digits) <= 1 && digits != "" && strings.Trim(digits, "0123456789") == ""
}

func parseUID(s string) (int64, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxUID {
		return 0, errors.New(uidRange)
	}
	return int64(n), nil
}

// pidFlag is --pid: a process id, said plainly when it is not one.
type pidFlag uint32

func (p *pidFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return fmt.Errorf("want a process id from 1 to 4294967295")
	}
	*p = pidFlag(n)
	return nil
}

func (p *pidFlag) String() string { return strconv.FormatUint(uint64(*p), 10) }

// Type is what --help shows as the value's kind.
func (p *pidFlag) Type() string { return "pid" }

func KindsOf(kinds ...event.Kind) KindSet {
	var s KindSet
	for _, k := range kinds {
		s.set |= 1 << k
	}
	return s
}
