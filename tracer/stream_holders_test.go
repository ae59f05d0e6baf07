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
	for _, tc := range []struct {
		name                   string
		port                   uint16
		holderReuse, bindReuse bool
		wantOpts               []string
		wantNote               string
	}{
		{"only the bind sets SO_REUSEPORT", 31601, false, true, []string{}, "LISTEN, no SO_REUSEPORT"},
		{"only the holder sets SO_REUSEPORT", 31602, true, false, []string{"reuseport"}, "LISTEN, SO_REUSEPORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tc.port)
			env := []string{"PT_LISTEN=1"}
			if tc.holderReuse {
				env = append(env, "PT_REUSEPORT=1")
			}
			h := tracer.StartHelper(t, ns, exe, 0, "tcp", addr.String(), env...)
			if _, errno := h.Bind(t); errno != "" {
				t.Fatalf("holder: %s", errno)
			}
			pid := h.Cmd.Process.Pid
			bind := func() {
				ns.Run(t, func() {
					fd := tracer.NewSocket(t, tracer.TCP4)
					defer unix.Close(fd)
					if tc.bindReuse {
						if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
							t.Fatal(err)
						}
					}
					if err := unix.Bind(fd, tracer.Sockaddr(addr)); err != unix.EADDRINUSE {
						t.Fatalf("bind %s: %v, want EADDRINUSE", addr, err)
					}
				})
			}
			line := holdersRun(t, "json", fmt.Sprintf(`"local_port":%d`, tc.port), bind)
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
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if ev.Errno != "EADDRINUSE" || len(ev.Holders) != 1 {
				t.Fatalf("got %s", line)
			}
			got := ev.Holders[0]
			if got.State != "LISTEN" || got.PID != pid || got.Comm != "holdsport" || got.Proto != "tcp" ||
				got.LocalAddr != "127.0.0.1" || got.LocalPort != tc.port || !reflect.DeepEqual(got.SockOpts, tc.wantOpts) {
				t.Errorf("holder %+v, want LISTEN by holdsport (pid %d) on %s with %v", got, pid, addr, tc.wantOpts)
			}
			want := fmt.Sprintf("held by holdsport (pid %d), %s", pid, tc.wantNote)
			table := holdersRun(t, "table", want, bind)
			if !strings.Contains(table, fmt.Sprintf("127.0.0.1:%d", tc.port)) {
				t.Errorf("table:\n%s", table)
			}
		})
	}
}

// holdersRun runs the stream with output until it writes want, calling
// bind now and then (the stream attaches in the background), and returns
// the line that says it (JSON) or all it wrote (table).
func holdersRun(t *testing.T, output, want string, bind func()) string {
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
	for !strings.Contains(stdout.String(), want) {
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
		return stdout.String()
	}
	for _, l := range strings.Split(stdout.String(), "\n") {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}
