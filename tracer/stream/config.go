// Package stream is porttrace's live stream (`porttrace` with no
// subcommand): its flags and the filters userspace applies, the loop that
// reads, enriches and writes each event, the table and JSON views, the
// summary and the losses told once each, and its Prometheus collector.
package stream

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// Config is everything the command line sets.
type Config struct {
	Output string
	// Columns are -o columns='s, in their order (Validate reads them).
	Columns  []string
	Ports    tracer.PortSet
	PID      uint32
	UID      int64 // -1: every user
	Comm     string
	Events   tracer.KindSet
	Failed   bool
	IPv4     bool
	IPv6     bool
	TCP      bool
	UDP      bool
	Duration time.Duration
	Count    uint64
	Sample   uint32 // one event in Sample, per CPU; 0 or 1: all
	Backend  event.Backend
	Metrics  string
	Verbose  bool
	// WebConfig is --web.config.file: TLS and basic auth for --metrics.
	WebConfig string
	// BuildVersion is the binary's version, which cmd/porttrace sets:
	// porttrace_build_info and the landing page of --metrics show it.
	BuildVersion string
	// NoColor keeps colour off a terminal (NO_COLOR in the environment,
	// which cmd/porttrace reads).
	NoColor bool
	// RingBufferSize in bytes (--buffer); 0 is the tracer's default.
	RingBufferSize uint32

	backend string
	user    userFlag // --uid as given: Validate resolves a name into UID
	// Scope is --cgroup, --netns, --container, --pod, --k8s-namespace
	// and --runtime-socket.
	flagcheck.Scope
}

// DefaultConfig is a Config with every event and no filter.
func DefaultConfig() Config {
	return Config{Output: "table", UID: -1, Events: tracer.AllKinds(), backend: "auto"}
}

// AddFlags registers the flags on fs, grouped as the help text shows them.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.Output, "output", "o", c.Output, "output `FORMAT`: table; wide (every column); columns=NAME,... of "+
		strings.Join(ColumnNames(), ",")+"; json; or none (no events printed: with --metrics, an exporter only)")
	fs.VarP(&c.Ports, "port", "p", "only these ports, local or remote: a `LIST` such as 25,80,8000-8100; in-kernel")
	fs.Var((*pidFlag)(&c.PID), "pid", "only this process (its `PID`, the tgid); in-kernel")
	fs.Var(&c.user, "uid", "only this `USER`, by name or id; in-kernel")
	fs.StringVar(&c.Comm, "comm", c.Comm, "only processes with this command `NAME` (the calling thread's or the process's; first 15 bytes)")
	fs.VarP(&c.Events, "events", "e", "the events to trace, a `LIST` of bind,listen,connect,accept (connect includes connect_done); the others are not attached")
	fs.BoolVar(&c.Failed, "failed", c.Failed, "only denied or failed calls")
	fs.BoolVarP(&c.IPv4, "ipv4", "4", c.IPv4, "only IPv4")
	fs.BoolVarP(&c.IPv6, "ipv6", "6", c.IPv6, "only IPv6")
	fs.BoolVar(&c.TCP, "tcp", c.TCP, "only TCP (and MPTCP)")
	fs.BoolVar(&c.UDP, "udp", c.UDP, "only UDP")
	fs.DurationVarP(&c.Duration, "duration", "d", c.Duration, "stop after this long: a `DURATION` such as 30s or 5m")
	fs.VarP((*countFlag)(&c.Count), "count", "n", "stop after `N` events")
	fs.Var((*bufferFlag)(&c.RingBufferSize), "buffer", "each CPU's ring buffer: a `SIZE`, a power of two such as 4M or 64M (default: 8M in all over up to 4 CPUs, else 2M a CPU)")
	fs.Var((*sampleFlag)(&c.Sample), "sample", "send one event in N (on each CPU) and count the rest: a storm thinned for a consumer that cannot keep up; in-kernel")
	c.Scope.AddFlags(fs)
	fs.StringVar(&c.backend, "backend", c.backend, "the kernel hooks, a `BACKEND`: auto, fentry, kprobe or tracepoint")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics (events by type, result and errno, lost) on this `ADDR` (HOST:PORT or :PORT)")
	fs.StringVar(&c.WebConfig, "web.config.file", c.WebConfig, promserve.WebConfigHelp)
	fs.BoolVarP(&c.Verbose, "verbose", "v", c.Verbose, flagcheck.VerboseHelp)
}

// Validate checks what flags alone cannot and resolves named values.
func (c *Config) Validate() error {
	if list, ok := strings.CutPrefix(c.Output, "columns="); ok {
		cols, err := ParseColumns(list)
		if err != nil {
			return fmt.Errorf("invalid --output %q: %w", c.Output, err)
		}
		c.Columns = cols
	} else if err := flagcheck.Output(c.Output, "table", "wide", "json", "none", "columns=NAME,..."); err != nil {
		return err
	}
	if c.Output == "none" && c.Metrics == "" {
		return errors.New("-o none prints no events: it needs --metrics to export them")
	}
	if c.Ports.Has(0) {
		return fmt.Errorf("invalid --port %q: %s", c.Ports.Item(0), flagcheck.PortRange)
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
	if err := flagcheck.First(flagcheck.Duration(c.Duration), flagcheck.MetricsAddr(c.Metrics),
		promserve.CheckWebConfig(c.WebConfig, c.Metrics)); err != nil {
		return err
	}
	var err error
	if c.Backend, err = flagcheck.Backend(c.backend); err != nil {
		return err
	}
	if c.Events.Empty() {
		return errors.New("invalid --events: no event selected")
	}
	return c.Scope.Validate()
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
	if c.Failed && !ev.Result.Failed() {
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

// options is what the kernel is asked for: the events and the filters it
// applies itself. --uid 0 keeps root's events like any other user's; only
// -1, the default, asks for no user filter.
func (c *Config) options(nsScope []uint32) tracer.Options {
	return tracer.Options{Backend: c.Backend, Events: c.Events, PID: c.PID, FilterUID: c.UID >= 0,
		UID: uint32(c.UID), Ports: &c.Ports, Cgroups: c.KernelCgroups(), JudgeUnknown: !c.Workloads.Empty(), Netns: nsScope,
		RingBufferSize: c.RingBufferSize, Sample: c.Sample}
}

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

// bufferFlag is --buffer SIZE: bytes, or with K, M or G (powers of 1024).
// The kernel takes a power of two, a multiple of the page size.
type bufferFlag uint32

func (b *bufferFlag) Set(s string) error {
	const want = "want a power of two from 4K to 1G, e.g. 64M"
	n, unit := s, uint64(1)
	if i := len(s) - 1; i > 0 {
		switch s[i] {
		case 'K', 'k':
			n, unit = s[:i], 1<<10
		case 'M', 'm':
			n, unit = s[:i], 1<<20
		case 'G', 'g':
			n, unit = s[:i], 1<<30
		}
	}
	v, err := strconv.ParseUint(n, 10, 32)
	size := v * unit
	if err != nil || size < uint64(os.Getpagesize()) || size > tracer.MaxRingBufferSize || size&(size-1) != 0 {
		return errors.New(want)
	}
	*b = bufferFlag(size)
	return nil
}

func (b *bufferFlag) String() string {
	if *b == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(*b), 10)
}

// Type is what --help shows as the value's kind.
func (b *bufferFlag) Type() string { return "size" }

// sampleFlag is --sample N: 1 is every event, 0 means nothing.
type sampleFlag uint32

func (n *sampleFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 0 {
		return fmt.Errorf("want 1 (every event) or more, at most %d", uint32(math.MaxUint32))
	}
	*n = sampleFlag(v)
	return nil
}

func (n *sampleFlag) String() string { return strconv.FormatUint(uint64(*n), 10) }

// Type is what --help shows as the value's kind.
func (n *sampleFlag) Type() string { return "N" }

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
