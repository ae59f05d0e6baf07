package tracer

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// The tracepoint backend reads a call's arguments at its exit from the
// task's saved registers (bpf_task_pt_regs, 5.15); before, each exit is
// paired with what its entry kept: in the thread's task storage (5.12-5.14),
// or in a hash by thread id (5.10, 5.11). connect is always paired. No
// kernel of the matrix has the middle case, so the helpers are turned off
// here to take each path on this kernel, and every path must report the
// same calls: the failures especially, whose port or listener comes from
// the entry.
func TestKernelCallsPairedAcrossEntryAndExit(t *testing.T) {
	NeedRoot(t)
	found, err := probeHelpers()
	if err != nil {
		t.Fatal(err)
	}
	saved := forceHelpers
	t.Cleanup(func() { forceHelpers = saved })
	for _, tc := range []struct {
		name string
		need bool // the kernel has what the case keeps
		edit func(*helpers)
		says string // what the description says of the pairing, or ""
	}{
		{"registers at exit", found.TaskPtRegs, func(*helpers) {}, ""},
		{"entries in task storage", found.taskStorage(), func(h *helpers) { h.TaskPtRegs = false }, "paired with its sys_enter"},
		{"entries in a hash", true, func(h *helpers) { h.TaskPtRegs, h.TaskStorage = false, false }, "in a hash by thread id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.need {
				t.Skip("this kernel lacks the helpers the case keeps")
			}
			// What the run's own forceHelpers turned off stays off.
			forceHelpers = func(h *helpers) {
				if saved != nil {
					saved(h)
				}
				tc.edit(h)
			}
			ns := NewNetns(t)
			c := startTracer(t, Options{Backend: event.BackendTracepoint, PID: uint32(os.Getpid())})
			if d := c.tr.Describe(true); tc.says != "" && !strings.Contains(d, tc.says) {
				t.Errorf("the description does not say how calls are paired: %s", d)
			}
			ns.Run(t, pairedCalls(t))
			var got []string
			for _, ev := range c.stop(t, ns) {
				got = append(got, pairingLine(&ev))
			}
			want := []string{
				"bind ok - 127.0.0.1:10101 -",
				"listen ok - 127.0.0.1:10101 -",
				"bind failed EADDRINUSE 127.0.0.1:10101 -",
				"bind ok - 127.0.0.1:10102 -",
				"accept failed EINVAL 127.0.0.1:10102 -",
				"connect ok - ephemeral 127.0.0.1:10101",
				"accept ok - 127.0.0.1:10101 ephemeral",
				"connect failed ECONNREFUSED - 127.0.0.1:10103",
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("saw\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// pairedCalls makes, on one thread, a call of each kind that works and one
// of each that fails where the failure's event needs the call's arguments.
func pairedCalls(t *testing.T) func() {
	return func() {
		at := func(port uint16) unix.Sockaddr {
			return Sockaddr(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
		}
		ln, other, unlistened := NewSocket(t, TCP4), NewSocket(t, TCP4), NewSocket(t, TCP4)
		client, refused := NewSocket(t, TCP4), NewSocket(t, TCP4)
		for _, fd := range []int{ln, other, unlistened, client, refused} {
			defer unix.Close(fd)
		}
		if err := unix.Bind(ln, at(10101)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(other, at(10101)); err != unix.EADDRINUSE {
			t.Errorf("second bind: %v, want EADDRINUSE", err)
		}
		if err := unix.Bind(unlistened, at(10102)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := unix.Accept(unlistened); err != unix.EINVAL {
			t.Errorf("accept on a socket not listening: %v, want EINVAL", err)
		}
		if err := unix.Connect(client, at(10101)); err != nil {
			t.Fatal(err)
		}
		fd, _, err := unix.Accept(ln)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		if err := unix.Connect(refused, at(10103)); err != unix.ECONNREFUSED {
			t.Errorf("connect to a closed port: %v, want ECONNREFUSED", err)
		}
	}
}

// pairingLine is an event as the pairing test compares it: an ephemeral
// port, different each run, is named as one.
func pairingLine(ev *event.Event) string {
	addr := func(ap netip.AddrPort, eph bool) string {
		if eph && ap.IsValid() {
			return "ephemeral"
		}
		return AddrString(ap)
	}
	errno := "-"
	if ev.Errno != 0 {
		errno = ev.ErrnoName()
	}
	local, remote := ev.Ephemeral, false
	if ev.Kind == event.KindAccept {
		local, remote = false, true
	}
	return fmt.Sprintf("%s %s %s %s %s", ev.Kind, ev.Result, errno, addr(ev.Local, local), addr(ev.Remote, remote))
}
