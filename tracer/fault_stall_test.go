package tracer_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
)

// Under TestFaultStalledReader: how long nobody reads, and how much
// porttrace's resident memory may grow meanwhile. The ring buffers are
// mapped whole into porttrace when it starts, and count in its VmRSS from
// then: what may grow is its own, the output's buffer and the Go heap.
const (
	stallFor      = 8 * time.Second
	stallRSSBound = 20 << 20
)

// TestFaultStalledReader: `porttrace -o json` into a pipe nobody reads
// for stallFor while a storm of binds runs. The kernel drops what the
// full rings cannot hold and counts it; porttrace, blocked on its output,
// neither buffers the storm nor grows (VmRSS sampled). Once the reader
// resumes, the output goes on with whole lines, and the lost lines, the
// summary and porttrace_lost_events_total tell the same losses.
func TestFaultStalledReader(t *testing.T) {
	ns := tracer.NewNetns(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Rings of 1 MiB, and the storm on one CPU (its ring), so that a
	// machine with many CPUs or a slow one still fills it while stalled.
	p := startPorttrace(t, w, true, "--backend", tracer.BackendName(), "-o", "json", "--buffer", "1M", "--netns", ns.Path(), "--metrics", "127.0.0.1:0")
	url := p.metricsURL(t)
	rss0 := p.rss(t)

	// The storm: UDP binds on 127.0.0.1 from a thread in ns, in batches
	// with a pause between, so as not to take a whole CPU.
	var stopStorm atomic.Bool
	var binds, bindErrs atomic.Int64
	stormDone := make(chan struct{})
	ns.GoRun(func() {
		defer close(stormDone)
		var one, allowed unix.CPUSet
		if unix.SchedGetaffinity(0, &allowed) == nil {
			for cpu := 0; cpu < len(allowed)*64; cpu++ {
				if allowed.IsSet(cpu) {
					one.Set(cpu)
					break
				}
			}
			_ = unix.SchedSetaffinity(0, &one) // this thread only: GoRun's, which dies with the storm
		}
		sa := tracer.Sockaddr(lo4(0))
		for !stopStorm.Load() {
			for range 500 {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					bindErrs.Add(1)
					continue
				}
				if unix.Bind(fd, sa) != nil {
					bindErrs.Add(1)
				}
				unix.Close(fd)
				binds.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Cleanup(func() { stopStorm.Store(true); <-stormDone })

	rssMax := rss0
	for end := time.Now().Add(stallFor); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		rssMax = max(rssMax, p.rss(t))
	}
	stalledBinds := binds.Load()

	// The reader resumes; the storm goes on a second, then ends, and one
	// bind on a port of its own must come out.
	lines := readLines(r)
	time.Sleep(time.Second)
	stopStorm.Store(true)
	<-stormDone
	rssMax = max(rssMax, p.rss(t))
	const marker = 24251
	bindUDP(t, ns, lo4(marker))
	if !lines.waitFor(0, `"local_port":`+strconv.Itoa(marker)+`,`, 10*time.Second) {
		t.Fatalf("the output did not go on once read again: no bind of port %d within 10s", marker)
	}
	// Losses are told at most a second apart, while events are written.
	var scraped float64
	for deadline := time.Now().Add(10 * time.Second); scraped == 0 && time.Now().Before(deadline); {
		bindUDP(t, ns, lo4(0))
		time.Sleep(200 * time.Millisecond)
		scraped, _ = metric(t, url, "porttrace_lost_events_total")
	}
	p.stop(t)
	<-lines.eof

	var told, events int
	for i, line := range lines.snapshot() {
		var obj struct {
			Event string `json:"event"`
			Count int    `json:"count"`
		}
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not whole: %v: %q", i+1, err, line)
		}
		if obj.Event == "lost" {
			told += obj.Count
		} else {
			events++
		}
	}
	m := regexp.MustCompile(`(?m)^porttrace: \d+ events? \(.*\), \d+ denied, \d+ failed, (\d+) lost`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no summary:\n%s", p.stderr.String())
	}
	summary, _ := strconv.Atoi(m[1])
	grew := rssMax - rss0
	t.Logf("%d binds (%d while stalled, %d failed), %d events written, %d lost (lost lines %d, /metrics %.0f); VmRSS %d KiB at start, %d KiB at most (+%d KiB, bound %d KiB)",
		binds.Load(), stalledBinds, bindErrs.Load(), events, summary, told, scraped, rss0>>10, rssMax>>10, grew>>10, stallRSSBound>>10)
	if summary == 0 || told != summary {
		t.Errorf("lost lines say %d, the summary %d: want the same, not 0", told, summary)
	}
	if scraped == 0 || scraped > float64(summary) {
		t.Errorf("porttrace_lost_events_total %.0f: want more than 0 and at most the summary's %d", scraped, summary)
	}
	if grew > stallRSSBound {
		t.Errorf("VmRSS grew by %d KiB while nobody read, bound %d KiB", grew>>10, stallRSSBound>>10)
	}
	if p.code != 0 {
		t.Errorf("status %d, want 0:\n%s", p.code, p.stderr.String())
	}
}
