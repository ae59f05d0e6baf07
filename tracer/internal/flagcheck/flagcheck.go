// Package flagcheck is the checks the commands' flags share, worded once:
// output formats, intervals and durations, the --metrics address and the
// backend name.
package flagcheck

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
)

// VerboseHelp is -v's help, the same for every command.
const VerboseHelp = "say why other backends were refused, and other details"

// First is the first of the checks that failed: several commands'
// flags share the same checks, run in one line.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Output refuses an --output not among formats.
func Output(output string, formats ...string) error {
	if slices.Contains(formats, output) {
		return nil
	}
	want := formats[len(formats)-1]
	if len(formats) > 1 {
		want = strings.Join(formats[:len(formats)-1], ", ") + " or " + want
	}
	return fmt.Errorf("invalid --output %q: want %s", output, want)
}

// Interval refuses an --interval under 10ms.
func Interval(d time.Duration) error {
	if d < 10*time.Millisecond {
		return fmt.Errorf("invalid --interval %s: want 10ms or more", d)
	}
	return nil
}

// Duration refuses a negative --duration; 0 means until stopped.
func Duration(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("invalid --duration %s: want 0 (until stopped) or more", d)
	}
	return nil
}

// MetricsAddr accepts only addresses net.Listen takes without a lookup:
// a name would wait on DNS at startup and could listen somewhere else than
// meant. localhost, from /etc/hosts, is the one name allowed.
func MetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	bad := fmt.Errorf("invalid --metrics %q: want HOST:PORT or :PORT, HOST an IP address ([ADDR] for IPv6) or localhost, PORT a number from 0 to 65535", addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return bad
	}
	bracketed := strings.HasPrefix(addr, "[")
	switch host {
	case "", "localhost":
		if bracketed {
			return bad
		}
	default:
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.Is6() != bracketed {
			return bad
		}
	}
	return nil
}

// Changed reports whether the command line gave the flag name: a flag
// that only means something with another (--interval with --watch) has a
// default, so its value cannot tell. A config built without AddFlags was
// given no flag.
func Changed(fs *pflag.FlagSet, name string) bool {
	return fs != nil && fs.Changed(name)
}

// Backend parses --backend.
func Backend(s string) (event.Backend, error) {
	b, err := event.ParseBackend(s)
	if err != nil {
		return 0, fmt.Errorf("invalid --backend: %w", err)
	}
	return b, nil
}

// PortRange is what every message about a port wants. PortSet itself takes
// 0, which ip_local_reserved_ports may list; the flags refuse it, as no
// socket is on port 0 (bind asks with it for any port).
const PortRange = "want a port from 1 to 65535"

// RuntimeSocketHelp is --runtime-socket's help, the same for every command.
const RuntimeSocketHelp = "name containers through the CRI API or Docker Engine API at this socket `PATH` (repeatable; default: containerd's, CRI-O's, docker's and podman's sockets)"

// NetnsScopeHelp is --netns's help where it scopes a trace.
const NetnsScopeHelp = "only sockets in these network namespaces (/run/netns/NAME, /proc/PID/ns/net), or all (the default); in-kernel"

// Workload flags' help, the same for every command.
const (
	ContainerHelp    = "only this container, by `ID|NAME` (an id or its first digits, or a name; repeatable); in-kernel, and one that starts later too"
	PodHelp          = "only this Kubernetes pod, by `NAME|UID` (repeatable); in-kernel, and one that starts later too"
	K8sNamespaceHelp = "only the pods of this Kubernetes namespace, by `NAME` (repeatable); in-kernel"
)

// Workloads checks --container, --pod and --k8s-namespace values: names
// and ids, none empty, none with a control byte (they are echoed).
func Workloads(sets ...[]string) error {
	for _, set := range sets {
		for _, v := range set {
			if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return fmt.Errorf("invalid workload %q: want a name or an id", v)
			}
		}
	}
	return nil
}

// CgroupHelp is --cgroup's help, the same for every command.
const CgroupHelp = "only tasks in this cgroup or below it: a `PATH` as the cgroup field prints it, or its path under /sys/fs/cgroup (repeatable); in-kernel"

// Cgroups resolves --cgroup's paths into cgroup v2 ids: nil without one.
func Cgroups(paths []string) ([]uint64, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	ids := make([]uint64, 0, len(paths))
	for _, p := range paths {
		id, err := proc.CgroupByPath(p)
		if err != nil {
			return nil, fmt.Errorf("invalid --cgroup %q: %w", p, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Columns reads -o columns=NAME,... of a table whose columns are known:
// names among them, each once, in the order given (any case).
func Columns(list string, known []string) ([]string, error) {
	var names []string
	for _, name := range strings.Split(list, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case name == "":
			return nil, fmt.Errorf("an empty column name in %q", list)
		case !slices.Contains(known, name):
			return nil, fmt.Errorf("no column %q: want some of %s", name, strings.Join(known, ","))
		case slices.Contains(names, name):
			return nil, fmt.Errorf("column %q named twice", name)
		}
		names = append(names, name)
	}
	return names, nil
}
