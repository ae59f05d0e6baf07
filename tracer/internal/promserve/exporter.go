package promserve

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry holds what /metrics serves: the command's collector,
// porttrace_build_info, and the Go runtime's and the process's own
// metrics (memory, goroutines, CPU, open file descriptors against their
// limit), which say whether porttrace itself is the one in trouble.
func newRegistry(c prometheus.Collector, cfg Config) (*prometheus.Registry, error) {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "porttrace_build_info",
		Help: "Always 1; its labels say which porttrace is running: version, Go version, source revision, and the kernel hooks in use.",
		ConstLabels: prometheus.Labels{
			"version":   cfg.Version,
			"goversion": runtime.Version(),
			"revision":  revision(),
			"backend":   cfg.Backend,
		},
	})
	info.Set(1)
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{c, info, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return reg, nil
}

// revision is the commit the binary was built from, as the go command
// stamps it when building in a git checkout ("" when it did not: go test,
// a build outside the repository or with -buildvcs=false).
func revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

// landingPage is what / shows a person who opens the address in a
// browser. It is porttrace's own rather than the exporter toolkit's,
// whose template does not escape what it is given and links profiling
// endpoints porttrace does not serve. The link is relative, so that it
// still leads to /metrics behind a proxy that serves it under a prefix.
var landingPage = template.Must(template.New("landing").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>porttrace</title></head>
<body>
<h1>porttrace</h1>
<p>Binds, listens, connects and accepts, and ephemeral port churn, as Prometheus metrics.</p>
<p>Version {{.Version}}{{if .Backend}}, {{.Backend}} backend{{end}}</p>
<ul><li><a href="metrics">Metrics</a></li></ul>
</body>
</html>
`))

// newLanding renders the landing page once.
func newLanding(cfg Config) (http.Handler, error) {
	var page bytes.Buffer
	if err := landingPage.Execute(&page, cfg); err != nil {
		return nil, fmt.Errorf("landing page: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page.Bytes())
	}), nil
}
