package churn

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/promtest"
)

// churn's scrape, as a golden file: what the kernel counts is a counter
// of totals (allocations and failures, by namespace, destination and
// workload), never a rate, and what is held now is a gauge; promtool
// finds nothing to say of it.
func TestChurnMetricsGolden(t *testing.T) {
	c := NewCollector(2, 2)
	c.Set(sampleChurnReport())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	golden.Check(t, "metrics-churn.prom", buf.Bytes())
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllStringSubmatch(buf.String(), -1) {
		name, typ := m[1], m[2]
		if strings.Contains(name, "per_second") || strings.HasSuffix(name, "_rate") {
			t.Errorf("%s is a rate: export the total, Prometheus computes rates", name)
		}
		if (typ == "counter") != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s: counters, and only they, end in _total", name, typ)
		}
	}
	promtest.CheckMetrics(t, buf.Bytes())
}
