package tracer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/stream"
)

// A bind that finds its address in use names what holds it: another
// process's listener, with its pid, name, state and options, SO_REUSEPORT
// on one side only (the case that surprises: both must set it). In JSON
// (holders) and in the table ("held by ... (pid N), LISTEN, no
// SO_REUSEPORT").
func TestKernelRunHolders(t *testing.T) {
	ns := tracer.NewNetns(t)
	exe := filepath.Join(t.TempDir(), "holdsport")
	tracer.CopyHelper(t, exe)
	type holderCase struct {
		name                   string
		port                   uint16
		holderReuse, bindReuse bool
		wantOpts               []string
		wantNote               string
		pid                    int
	}
	cases := []*holderCase{
		{"only the bind sets SO_REUSEPORT", 31601, false, true, []string{}, "LISTEN, no SO_REUSEPORT", 0},
		{"only the holder sets SO_REUSEPORT", 31602, true, false, []string{"reuseport"}, "LISTEN, SO_REUSEPORT", 0},
	}
	addr := func(tc *holderCase) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tc.port)
	}
	for _, tc := range cases {
		env := []string{"PT_LISTEN=1"}
		if tc.holderReuse {
			env = append(env, "PT_REUSEPORT=1")
		}
		h := tracer.StartHelper(t, ns, exe, 0, "tcp", addr(tc).String(), env...)
		if _, errno := h.Bind(t); errno != "" {
			t.Fatalf("holder: %s", errno)
		}
		tc.pid = h.Cmd.Process.Pid
	}
	// Both binds, again and again until the stream has said what it must.
	bind := func() {
		ns.Run(t, func() {
			for _, tc := range cases {
				fd := tracer.NewSocket(t, tracer.TCP4)
				if tc.bindReuse {
					if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
						t.Fatal(err)
					}
				}
				err := unix.Bind(fd, tracer.Sockaddr(addr(tc)))
				unix.Close(fd)
				if err != unix.EADDRINUSE {
					t.Fatalf("bind %s: %v, want EADDRINUSE", addr(tc), err)
				}
			}
		})
	}
	var wantJSON, wantTable []string
	for _, tc := range cases {
		wantJSON = append(wantJSON, fmt.Sprintf(`"local_port":%d`, tc.port))
		wantTable = append(wantTable, fmt.Sprintf("held by holdsport (pid %d), %s", tc.pid, tc.wantNote))
	}
	lines := holdersRun(t, "json", wantJSON, bind)
	table := holdersRun(t, "table", wantTable, bind)[0]
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ev struct {
				Errno   string
				Holders []struct {
					State, Comm, Proto string
					PID                int
					LocalAddr          string   `json:"local_addr"`
					LocalPort          uint16   `json:"local_port"`
					SockOpts           []string `json:"sock_opts"`
				}
			}
			if err := json.Unmarshal([]byte(lines[i]), &ev); err != nil {
				t.Fatalf("%v: %s", err, lines[i])
			}
			if ev.Errno != "EADDRINUSE" || len(ev.Holders) != 1 {
				t.Fatalf("got %s", lines[i])
			}
			got := ev.Holders[0]
			if got.State != "LISTEN" || got.PID != tc.pid || got.Comm != "holdsport" || got.Proto != "tcp" ||
				got.LocalAddr != "127.0.0.1" || got.LocalPort != tc.port || !reflect.DeepEqual(got.SockOpts, tc.wantOpts) {
				t.Errorf("holder %+v, want LISTEN by holdsport (pid %d) on %s with %v", got, tc.pid, addr(tc), tc.wantOpts)
			}
			if !strings.Contains(table, wantTable[i]) {
				t.Errorf("table:\n%s", table)
			}
		})
	}
}

// holdersRun runs the stream with output until it has written each of
// want, calling bind now and then (the stream attaches in the background),
// and returns the first line that says each (JSON), or all it wrote, once
// (table).
func holdersRun(t *testing.T, output string, want []string, bind func()) []string {
	t.Helper()
	cfg := stream.DefaultConfig()
	cfg.Output = output
	cfg.PID = uint32(os.Getpid())
	cfg.Events = tracer.KindsOf(event.KindBind)
	cfg.Backend = tracer.Backend(t)
	var stdout, stderr tracer.SyncBuilder
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, cfg, &stdout, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	said := func() bool {
		for _, w := range want {
			if !strings.Contains(stdout.String(), w) {
				return false
			}
		}
		return true
	}
	for !said() {
		bind()
		select {
		case err := <-done:
			tracer.SkipUnsupported(t, cfg.Backend, err)
			t.Fatalf("the stream ended: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never said %q:\n%s\n%s", want, stdout.String(), stderr.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if output == "table" {
		return []string{stdout.String()}
	}
	var lines []string
	for _, w := range want {
		for _, l := range strings.Split(stdout.String(), "\n") {
			if strings.Contains(l, w) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}
