package churn

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// WriteTable prints one report as a block of text: per network
// namespace a status line, the busiest destinations and processes.
func WriteTable(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "porttrace churn  %s  every %s", r.Time.In(textout.DisplayZone).Format("15:04:05"), r.Interval.Round(time.Millisecond))
	if r.Overflow > 0 {
		fmt.Fprintf(&b, "  (%d keys uncounted: churn maps full)", r.Overflow)
	}
	b.WriteString("\n")
	for i := range r.Netns {
		n := &r.Netns[i]
		fmt.Fprintf(&b, "\nnetns %d", n.Netns)
		if n.UsageErr != "" {
			fmt.Fprintf(&b, "  usage unknown: %s\n", textout.Printable(n.UsageErr))
		} else {
			fmt.Fprintf(&b, "  range %d-%d (%d %s", n.Range[0], n.Range[1], n.RangeSize, textout.Plural(n.RangeSize, "port", "ports"))
			if n.Reserved > 0 {
				fmt.Fprintf(&b, ", %d reserved", n.Reserved)
			}
			fmt.Fprintf(&b, ")  ports in use %d/%d (%.1f%%)  %d %s  TIME_WAIT %d\n", n.InUse, n.RangeSize, n.UsagePct,
				n.Sockets, textout.Plural(n.Sockets, "socket", "sockets"), n.TimeWait)
		}
		fmt.Fprintf(&b, "allocations %s/s  failures %s/s  exhaustion %s  %s\n",
			rate(n.AllocsPerSec), rate(n.FailsPerSec), etaString(n.Exhaustion), Sparkline(n.History))
		if fails := failString(n.FailsTotal); fails != "" {
			fmt.Fprintf(&b, "failed so far: %s\n", fails)
		}
		if len(n.Dests) > 0 {
			fmt.Fprintf(&b, "  %-28s %7s %7s %7s %9s %s\n", "DESTINATION", "ALLOC/S", "FAIL/S", "IN USE", "HEADROOM", "EXHAUSTION")
			for _, d := range n.Dests[:min(topN, len(n.Dests))] {
				inUse, headroom := strconv.Itoa(d.InUse), strconv.Itoa(d.Headroom)
				if n.UsageErr != "" {
					inUse, headroom = "-", "-"
				}
				fmt.Fprintf(&b, "  %-28s %7s %7s %7s %9s %s\n", d.Dest, rate(d.AllocsPerSec), rate(d.FailsPerSec), inUse, headroom, etaString(d.Exhaustion))
			}
		}
		for _, rows := range []struct {
			title string
			rows  []WorkloadReport
		}{{"POD", n.Pods}, {"CONTAINER", n.Workloads}} {
			if len(rows.rows) == 0 {
				continue
			}
			fmt.Fprintf(&b, "  %-27s %7s %7s %9s %7s\n", rows.title, "ALLOC/S", "FAIL/S", "ALLOCS", "FAILS")
			for _, w := range rows.rows[:min(topN, len(rows.rows))] {
				fmt.Fprintf(&b, "  %-27s %7s %7s %9d %7d\n", textout.Printable(workload.Cell(w.Workload, w.Names)), rate(w.AllocsPerSec), rate(w.FailsPerSec), w.Allocs, w.Fails)
			}
		}
		if len(n.Procs) > 0 {
			fmt.Fprintf(&b, "  %-8s %-16s %7s %7s %9s %7s\n", "PID", "COMM", "ALLOC/S", "FAIL/S", "ALLOCS", "FAILS")
			for _, p := range n.Procs[:min(topN, len(n.Procs))] {
				fmt.Fprintf(&b, "  %-8d %-16s %7s %7s %9d %7d\n", p.PID, textout.Printable(p.Comm), rate(p.AllocsPerSec), rate(p.FailsPerSec), p.Allocs, p.Fails)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rate(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func etaString(d time.Duration) string {
	switch {
	case d < 0:
		return "never"
	case d == 0:
		return "EXHAUSTED"
	case d > 99*time.Hour:
		return ">99h"
	}
	return d.Round(time.Second).String()
}

func failString(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// Sparkline draws values as a row of block characters scaled to their maximum.
func Sparkline(values []float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	runes := []rune(bars)
	top := 0.0
	for _, v := range values {
		top = math.Max(top, v)
	}
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 {
			i = int(math.Round(v / top * float64(len(runes)-1)))
		}
		b.WriteRune(runes[i])
	}
	return b.String()
}

// AppendJSON appends one report as a JSON object and a newline.
func AppendJSON(buf []byte, r *Report) []byte {
	buf = append(buf, `{"time":"`...)
	buf = r.Time.UTC().AppendFormat(buf, textout.TimeLayout)
	buf = append(buf, `","interval_s":`...)
	buf = strconv.AppendFloat(buf, r.Interval.Seconds(), 'f', 3, 64)
	buf = textout.AppendUint(buf, "overflow", r.Overflow)
	buf = append(buf, `,"netns":[`...)
	for i := range r.Netns {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendNetnsJSON(buf, &r.Netns[i])
	}
	return append(buf, "]}\n"...)
}

// appendNetnsJSON appends one namespace of a churn report.
func appendNetnsJSON(buf []byte, n *NetnsReport) []byte {
	buf = append(buf, `{"netns":`...)
	buf = strconv.AppendUint(buf, uint64(n.Netns), 10)
	if n.UsageErr != "" {
		buf = textout.AppendStr(buf, "usage_error", n.UsageErr)
	} else {
		buf = append(buf, `,"range":[`...)
		buf = strconv.AppendUint(buf, uint64(n.Range[0]), 10)
		buf = append(buf, ',')
		buf = strconv.AppendUint(buf, uint64(n.Range[1]), 10)
		buf = append(buf, ']')
		buf = textout.AppendUint(buf, "range_size", uint64(n.RangeSize))
		buf = textout.AppendUint(buf, "reserved", uint64(n.Reserved))
		buf = textout.AppendUint(buf, "in_use", uint64(n.InUse))
		buf = textout.AppendUint(buf, "sockets", uint64(n.Sockets))
		buf = textout.AppendUint(buf, "time_wait", uint64(n.TimeWait))
		buf = textout.AppendFloat(buf, "usage_pct", n.UsagePct)
	}
	buf = textout.AppendFloat(buf, "allocs_per_s", n.AllocsPerSec)
	buf = textout.AppendFloat(buf, "fails_per_s", n.FailsPerSec)
	buf = appendCounts(buf, "allocs_total", n.AllocsTotal)
	buf = appendCounts(buf, "fails_total", n.FailsTotal)
	buf = appendETA(buf, n.Exhaustion)
	buf = append(buf, `,"destinations":[`...)
	for j, d := range n.Dests {
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"proto":`...)
		buf = textout.AppendJSONString(buf, event.ProtoName(d.Dest.Proto))
		buf = textout.AppendStr(buf, "remote_addr", d.Dest.Remote.Addr().String())
		buf = textout.AppendUint(buf, "remote_port", uint64(d.Dest.Remote.Port()))
		buf = textout.AppendFloat(buf, "allocs_per_s", d.AllocsPerSec)
		buf = textout.AppendFloat(buf, "fails_per_s", d.FailsPerSec)
		if n.UsageErr == "" {
			buf = textout.AppendUint(buf, "in_use", uint64(d.InUse))
			buf = textout.AppendUint(buf, "headroom", uint64(d.Headroom))
		}
		buf = appendETA(buf, d.Exhaustion)
		buf = append(buf, '}')
	}
	buf = append(buf, `],"processes":[`...)
	for j, p := range n.Procs {
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"pid":`...)
		buf = strconv.AppendUint(buf, uint64(p.PID), 10)
		buf = textout.AppendText(buf, "comm", p.Comm)
		buf = workload.AppendJSON(buf, p.Workload, p.Names)
		buf = textout.AppendFloat(buf, "allocs_per_s", p.AllocsPerSec)
		buf = textout.AppendFloat(buf, "fails_per_s", p.FailsPerSec)
		buf = textout.AppendUint(buf, "allocs_total", p.Allocs)
		buf = textout.AppendUint(buf, "fails_total", p.Fails)
		buf = append(buf, '}')
	}
	buf = appendWorkloads(append(buf, `],"workloads":[`...), n.Workloads)
	buf = appendWorkloads(append(buf, `],"pods":[`...), n.Pods)
	buf = append(buf, "]}"...)
	return buf
}

// appendWorkloads writes container or pod rows as JSON objects.
func appendWorkloads(buf []byte, rows []WorkloadReport) []byte {
	for j, w := range rows {
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"workload":`...)
		buf = textout.AppendJSONString(buf, workload.Cell(w.Workload, w.Names))
		buf = workload.AppendJSON(buf, w.Workload, w.Names)
		buf = textout.AppendFloat(buf, "allocs_per_s", w.AllocsPerSec)
		buf = textout.AppendFloat(buf, "fails_per_s", w.FailsPerSec)
		buf = textout.AppendUint(buf, "allocs_total", w.Allocs)
		buf = textout.AppendUint(buf, "fails_total", w.Fails)
		buf = append(buf, '}')
	}
	return buf
}

// appendETA writes exhaustion_s: seconds, 0 when exhausted, null when usage is not growing.
func appendETA(buf []byte, d time.Duration) []byte {
	buf = textout.AppendKey(buf, "exhaustion_s")
	if d < 0 {
		return append(buf, "null"...)
	}
	return strconv.AppendFloat(buf, d.Seconds(), 'f', 1, 64)
}

func appendCounts(buf []byte, key string, m map[string]uint64) []byte {
	buf = textout.AppendKey(buf, key)
	buf = append(buf, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = textout.AppendJSONString(buf, k)
		buf = append(buf, ':')
		buf = strconv.AppendUint(buf, m[k], 10)
	}
	return append(buf, '}')
}
