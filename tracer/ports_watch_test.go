package tracer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/ports"
	"github.com/porttrace/porttrace/tracer/textout"
)

// ports --watch prints the snapshot, then each new bind and listen as the
// tracer sees it, with the scope and flags a snapshot row has, and each
// listener that goes away: also one that lived only between two looks,
// known from its listen alone. In JSON each object says what it reports,
// when and in which namespace; a table line says which namespace when the
// watch spans several.
func TestKernelPortsWatch(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			netns := []string{ns.Path()}
			if output == "table" {
				netns = append(netns, tracer.NewNetns(t).Path())
			}
			var fd int
			ns.Run(t, func() { fd = tracer.ListenTCP(t, netip.MustParseAddrPort("0.0.0.0:6665")) })
			defer unix.Close(fd)
			exe := filepath.Join(t.TempDir(), "implant")
			tracer.CopyHelper(t, exe)
			h := tracer.StartHelper(t, ns, exe, 0, "tcp", "0.0.0.0:6666", "PT_LISTEN=1")
			if err := os.Remove(exe); err != nil {
				t.Fatal(err)
			}
			w := startWatch(t, netns, time.Second, output)
			// The looks fall about a second apart from now: the listener
			// lives from 0.35 s to 0.65 s, in none of them.
			t0 := time.Now()
			time.Sleep(time.Until(t0.Add(350 * time.Millisecond)))
			if _, errno := h.Bind(t); errno != "" {
				t.Fatal(errno)
			}
			time.Sleep(time.Until(t0.Add(650 * time.Millisecond)))
			h.Stdin.Close()
			_ = h.Cmd.Wait()
			pid := h.Cmd.Process.Pid
			if output == "table" {
				w.wait(t, fmt.Sprintf("+ listen tcp 0.0.0.0:6666 netns %d pid %d implant (%s)  all interfaces; ! executable deleted: %s (pid %d)\n",
					ns.Inode, pid, userName(0), exe, pid))
				w.wait(t, fmt.Sprintf("- closed tcp 0.0.0.0:6666 netns %d (was pid %d implant)\n", ns.Inode, pid))
			} else {
				w.wait(t, `"event":"closed"`)
			}
			w.stop(t)
			if output == "json" {
				checkWatchJSON(t, w.out.String(), ns.Inode, pid, exe)
			}
		})
	}
}

// watching is a ports --watch running in the background.
type watching struct {
	out, errOut *tracer.SyncBuilder
	done        chan error
	cancel      context.CancelFunc
	backend     event.Backend
}

// startWatch runs ports --watch --netns netns and returns once it watches.
func startWatch(t *testing.T, netns []string, interval time.Duration, output string) *watching {
	t.Helper()
	cfg := ports.DefaultConfig()
	cfg.Netns = netns
	cfg.Watch = true
	cfg.Interval = interval
	cfg.Output = output
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Backend = tracer.Backend(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{out: &tracer.SyncBuilder{}, errOut: &tracer.SyncBuilder{}, done: make(chan error, 1), cancel: cancel, backend: cfg.Backend}
	t.Cleanup(cancel)
	go func() { w.done <- ports.Run(ctx, cfg, w.out, w.errOut) }()
	waitText(t, w.errOut, "watching with", w.done, w.backend)
	return w
}

// wait waits until the watch has printed want.
func (w *watching) wait(t *testing.T, want string) {
	t.Helper()
	waitText(t, w.out, want, w.done, w.backend)
}

// stop ends the watch as Ctrl-C does; it must end without an error.
func (w *watching) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
}

// checkWatchJSON asserts the JSON of a --watch run in namespace netns: the
// snapshot row of port 6665, the bind and listen of 6666 (the listen with
// its scope and flags), and its close, each with its time and namespace.
func checkWatchJSON(t *testing.T, out string, netns uint32, pid int, exe string) {
	t.Helper()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var o struct {
			Time       string
			Event      string
			Netns      uint32
			LocalPort  int `json:"local_port"`
			PID        int
			Scope      *string
			Suspicious []string
		}
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if o.Event == "" {
			t.Errorf("no event key: %s", line)
		}
		if at, err := time.Parse(textout.TimeLayout, o.Time); err != nil || len(o.Time) != len("2006-01-02T15:04:05.000000000Z") ||
			time.Since(at) > time.Minute || time.Since(at) < 0 {
			t.Errorf("time %q (%v), want now in RFC 3339 UTC with nanoseconds: %s", o.Time, err, line)
		}
		if o.Netns != netns {
			t.Errorf("netns %d, want %d: %s", o.Netns, netns, line)
		}
		scope := "-"
		if o.Scope != nil {
			scope = *o.Scope
		}
		got = append(got, fmt.Sprintf("%s %d %d %s %q", o.Event, o.LocalPort, o.PID, scope, o.Suspicious))
	}
	flag := fmt.Sprintf("executable deleted: %s (pid %d)", exe, pid)
	want := []string{
		fmt.Sprintf("snapshot 6665 %d all interfaces []", os.Getpid()),
		fmt.Sprintf("bind 6666 %d - []", pid),
		fmt.Sprintf("listen 6666 %d all interfaces [%q]", pid, flag),
		fmt.Sprintf("closed 6666 %d all interfaces [%q]", pid, flag),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s\nfrom\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
}

// waitText waits until w has said want, failing if the command ends first.
func waitText(t *testing.T, w *tracer.SyncBuilder, want string, done chan error, b event.Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.String(), want) {
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, b, err)
			t.Fatalf("ended before saying %q: %v\n%s", want, err, w.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never said %q:\n%s", want, w.String())
		}
	}
}

// An IPv6 wildcard listener that --watch knows from its event alone (no
// event carries IPV6_V6ONLY) is looked up at once: a dual-stack one reads
// *:PORT and reaches IPv4 too, an IPv6-only one [::]:PORT, as in the
// snapshot; in JSON v6only says which.
func TestKernelPortsWatchV6Only(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			ns := tracer.NewNetns(t)
			w := startWatch(t, []string{ns.Path()}, time.Second, output)
			var th tracer.Thread
			ns.Run(t, func() {
				th = tracer.Self()
				openListener(t, tracer.TCP6, netip.MustParseAddrPort("[::]:6667"), 0)
				openListener(t, tracer.TCP6, netip.MustParseAddrPort("[::]:6668"), 1)
				openListener(t, tracer.UDP6, netip.MustParseAddrPort("[::]:6669"), 0)
			})
			if output == "table" {
				by := fmt.Sprintf(" pid %d %s (%s)  ", os.Getpid(), th.Comm, userName(0))
				w.wait(t, "+ listen tcp *:6667"+by+"all interfaces, IPv4 and IPv6\n")
				w.wait(t, "+ listen tcp [::]:6668"+by+"all IPv6 interfaces\n")
				w.wait(t, "+ bind udp *:6669"+by+"all interfaces, IPv4 and IPv6\n")
				w.stop(t)
				return
			}
			w.wait(t, `"local_port":6669`)
			w.stop(t)
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
				var o struct {
					Event     string
					LocalAddr string `json:"local_addr"`
					LocalPort int    `json:"local_port"`
					V6Only    *bool
					Scope     string
				}
				if err := json.Unmarshal([]byte(line), &o); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if o.Event == "bind" && o.LocalPort != 6669 {
					continue // a TCP bind makes no listener
				}
				v6only := "-"
				if o.V6Only != nil {
					v6only = strconv.FormatBool(*o.V6Only)
				}
				got = append(got, fmt.Sprintf("%s %s %d v6only=%s %s", o.Event, o.LocalAddr, o.LocalPort, v6only, o.Scope))
			}
			want := []string{
				"listen :: 6667 v6only=false all interfaces, IPv4 and IPv6",
				"listen :: 6668 v6only=true all IPv6 interfaces",
				"bind :: 6669 v6only=false all interfaces, IPv4 and IPv6",
			}
			if !slices.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
