package tracer

import (
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer/internal/promserve"
)

// Attach starts a tracer with o and, when addr is set, serves c on its
// /metrics: the tracer first, so that a machine short of file descriptors
// is told so before a server says it is listening. cmd names the command
// and doing what it does, for the lines on stderr. The server is nil
// without addr; the returned func undoes both.
func Attach(o Options, c prometheus.Collector, addr, cmd, doing string, verbose bool, stderr io.Writer) (*Tracer, *promserve.Server, func(), error) {
	if addr != "" {
		o.ExtraFDs = promserve.DefaultLimits.FDs()
	}
	t, err := New(o)
	if err != nil {
		return nil, nil, nil, err
	}
	var srv *promserve.Server
	stop := func() {}
	if addr != "" {
		if srv, err = promserve.Serve(addr, c, promserve.DefaultLimits, stderr); err != nil {
			t.Close()
			return nil, nil, nil, err
		}
		stop = srv.Close
		fmt.Fprintf(stderr, "%s: serving metrics on http://%s/metrics\n", cmd, srv.Addr())
	}
	fmt.Fprintf(stderr, "%s: %s with %s\n", cmd, doing, t.Describe(verbose))
	return t, srv, func() { stop(); t.Close() }, nil
}
