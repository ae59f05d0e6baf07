package stream

import (
	"bufio"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/golden"
	"github.com/porttrace/porttrace/tracer/internal/promtest"
)

// The errno label of porttrace_events_total takes the fixed set of names
// ErrnoName knows, "" for a call that succeeded, and "other" for a number
// without a name, so that no errno the kernel returns can add series
// without bound.
func TestErrnoLabel(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  string
	}{
		{0, ""},
		{unix.EACCES, "EACCES"},
		{unix.EADDRINUSE, "EADDRINUSE"},
		{unix.EOPNOTSUPP, "EOPNOTSUPP"},
		{unix.EINPROGRESS, "EINPROGRESS"},
		{512, "ERESTARTSYS"},
		{516, "ERESTART_RESTARTBLOCK"},
		{3000, "other"},
		{4095, "other"},
	} {
		ev := event.Event{Errno: tc.errno}
		if got := errnoLabel(&ev); got != tc.want {
			t.Errorf("errno %d: label %q, want %q", int(tc.errno), got, tc.want)
		}
	}
}

// The stream's scrape, in the exposition format, as a golden file: the
// names, types, help and labels a dashboard depends on.
func TestStreamMetricsGolden(t *testing.T) {
	m := NewMetrics()
	for _, ev := range []event.Event{
		{Kind: event.KindBind},
		{Kind: event.KindBind, Result: event.ResultFailed, Errno: unix.EADDRINUSE},
		{Kind: event.KindBind, Result: event.ResultDenied, Errno: unix.EACCES},
		{Kind: event.KindListen},
		{Kind: event.KindConnect, Result: event.ResultInProgress, Errno: unix.EINPROGRESS},
		{Kind: event.KindConnect, Result: event.ResultInProgress, Errno: 512},
		{Kind: event.KindConnectDone, Result: event.ResultFailed, Errno: unix.ECONNREFUSED, HasLatency: true, Latency: 21000},
		{Kind: event.KindConnect, Result: event.ResultFailed, Errno: 3000},
		{Kind: event.KindAccept},
	} {
		m.Event(&ev)
	}
	m.Lost(2)
	golden.Check(t, "metrics-stream.prom", promtest.Scrape(t, m))
}

// -o none writes nothing, lost lines included.
func TestNoOutput(t *testing.T) {
	var stdout strings.Builder
	out := bufio.NewWriter(&stdout)
	cfg := DefaultConfig()
	cfg.Output = "none"
	w, err := openWriter(cfg, out, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(&event.Event{Kind: event.KindBind}, nil); err != nil {
		t.Fatal(err)
	}
	w.Lost(3, "")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out.Flush()
	if stdout.Len() != 0 {
		t.Errorf("-o none wrote %q", stdout.String())
	}
}
