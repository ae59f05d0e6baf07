package churn

import (
	"regexp"
	"strings"
	"testing"

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
	scrape := promtest.Scrape(t, c)
	golden.Check(t, "metrics-churn.prom", scrape)
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllStringSubmatch(string(scrape), -1) {
		name, typ := m[1], m[2]
		if strings.Contains(name, "per_second") || strings.HasSuffix(name, "_rate") {
			t.Errorf("%s is a rate: export the total, Prometheus computes rates", name)
		}
		if (typ == "counter") != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s: counters, and only they, end in _total", name, typ)
		}
	}
	promtest.CheckMetrics(t, scrape)
}
