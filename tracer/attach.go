package tracer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/promserve"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// Attach starts a tracer with o and, when web.Addr is set, serves c on its
// /metrics: the tracer first, so that a machine short of file descriptors
// is told so before a server says it is listening, and so that
// porttrace_build_info names the backend chosen. cmd names the command
// and doing what it does, for the lines on stderr. The server is nil
// without web.Addr; the returned func undoes both.
func Attach(o Options, c prometheus.Collector, web promserve.Config, cmd, doing string, verbose bool, stderr io.Writer) (*Tracer, *promserve.Server, func(), error) {
	if web.Addr != "" {
		o.ExtraFDs = promserve.DefaultLimits.FDs()
	}
	t, err := New(o)
	if err != nil {
		return nil, nil, nil, err
	}
	var srv *promserve.Server
	stop := func() {}
	if web.Addr != "" {
		web.Backend = t.Backend().String()
		if srv, err = promserve.Serve(web, c, stderr); err != nil {
			t.Close()
			return nil, nil, nil, err
		}
		stop = srv.Close
		fmt.Fprintf(stderr, "%s: serving metrics on %s\n", cmd, srv.URL())
	}
	fmt.Fprintf(stderr, "%s: %s with %s\n", cmd, doing, t.Describe(verbose))
	if verbose {
		fmt.Fprintf(stderr, "%s: started in %s\n", cmd, t.describePhases())
	}
	return t, srv, func() { stop(); t.Close() }, nil
}

// ScopeWorkloads puts the workloads sel picks in t's scope (t started with
// Options.Cgroups set, so that nothing else is traced): those running now
// and, until ctx ends or the Watcher is stopped, those that start later.
// The Watcher judges the calls of cgroups it has not judged yet
// (Options.JudgeUnknown). stderr is told when none runs yet. With no
// workload asked for, it does nothing and the Watcher is nil (its Stop
// does nothing).
func ScopeWorkloads(ctx context.Context, t *Tracer, sel workload.Selector, names *workload.Resolver, cmd string, stderr io.Writer) (*workload.Watcher, error) {
	if sel.Empty() {
		return nil, nil
	}
	root, ok := proc.Cgroup2Root()
	if !ok {
		return nil, errors.New("--container, --pod and --k8s-namespace need cgroup v2, mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	if sel.NeedsNames() && !names.Active() {
		return nil, fmt.Errorf("%s names a workload, and naming takes a container runtime API: %s", sel, names.Source)
	}
	w, n, err := workload.Watch(ctx, root, sel, names, t.SetCgroup)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		fmt.Fprintf(stderr, "%s: nothing running matches %s yet; it is traced once it starts\n", cmd, sel)
	}
	return w, nil
}
