package churn

import (
	"net/netip"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/schematest"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// Each interval AppendJSON writes follows churn.schema.json: the sample
// report, one with no namespace at all, and one whose rows carry what the
// sample's lack (names that are not UTF-8, an image, a destination
// reached from an IPv6 socket by its IPv4-mapped address, an overflow).
func TestSchemaChurn(t *testing.T) {
	odd := sampleChurnReport()
	odd.Overflow = 12
	ns := &odd.Netns[0]
	names := workload.Names{Container: "c\xff", Pod: "p\xfe", Namespace: "n\xfd", Image: "i\xfc"}
	ns.Procs[0].Names = names
	ns.Workloads[0].Names = names
	ns.Dests = append(ns.Dests, DestReport{Dest: tracer.Dest{Proto: event.ProtoMPTCP,
		Remote: netip.MustParseAddrPort("[::ffff:10.0.0.1]:443")}, InUse: 1, Headroom: 9, Exhaustion: -1})
	ns.FailsTotal["ETIMEDOUT"] = 1
	var out []byte
	for _, r := range []*Report{sampleChurnReport(), {Time: time.Unix(0, 0), Interval: 5 * time.Second}, odd} {
		out = AppendJSON(out, r)
	}
	if counts := schematest.CheckLines(t, schematest.ChurnLines, out); counts[""] != 3 {
		t.Errorf("%d lines, want 3", counts[""])
	}
}
