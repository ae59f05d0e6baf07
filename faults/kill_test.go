package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/porttrace/porttrace/internal/bpfheld"
)

// kernelObjects are the ids of the BPF programs, maps and links one
// process holds.
type kernelObjects struct {
	progs []ebpf.ProgramID
	maps  []ebpf.MapID
	links []link.ID
}

func heldObjects(t *testing.T, pid int) kernelObjects {
	t.Helper()
	held, err := bpfheld.Of(pid)
	if err != nil {
		t.Fatal(err)
	}
	var o kernelObjects
	for _, id := range held.Progs {
		o.progs = append(o.progs, ebpf.ProgramID(id))
	}
	for _, id := range held.Maps {
		o.maps = append(o.maps, ebpf.MapID(id))
	}
	for _, id := range held.Links {
		o.links = append(o.links, link.ID(id))
	}
	return o
}

// left are those of o the kernel still has: an id that does not open
// (ENOENT) is gone.
func (o kernelObjects) left() []string {
	var left []string
	for _, id := range o.progs {
		if p, err := ebpf.NewProgramFromID(id); !errors.Is(err, os.ErrNotExist) {
			if err == nil {
				p.Close()
			}
			left = append(left, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range o.maps {
		if m, err := ebpf.NewMapFromID(id); !errors.Is(err, os.ErrNotExist) {
			if err == nil {
				m.Close()
			}
			left = append(left, fmt.Sprintf("map %d", id))
		}
	}
	for _, id := range o.links {
		if l, err := link.NewFromID(id); !errors.Is(err, os.ErrNotExist) {
			if err == nil {
				l.Close()
			}
			left = append(left, fmt.Sprintf("link %d", id))
		}
	}
	return left
}

// porttrace killed with SIGKILL while events flow leaves none of its
// programs, maps or links in the kernel: each goes with the last fd, and
// porttrace pins nothing. Only the ids that process held are looked at,
// so other porttraces running on the machine do not count. The stream,
// churn (its counting maps) and ports --watch, each mid-run.
func TestFaultKilledMidRun(t *testing.T) {
	bin := porttraceBin(t)
	for _, tc := range []struct {
		name string
		args []string // PORT stands for the port bound
		// first tells the line that shows the run is under way.
		first func(m map[string]any, port int) bool
	}{
		{"stream", []string{"-o", "json", "-p", "PORT"}, func(m map[string]any, port int) bool {
			return m["event"] == "bind" && num(m, "local_port") == port
		}},
		{"churn", []string{"churn", "-o", "json", "-i", "100ms"}, func(m map[string]any, _ int) bool { return true }},
		{"ports --watch", []string{"ports", "--watch", "-o", "json"}, func(m map[string]any, port int) bool {
			return m["event"] == "bind" && num(m, "local_port") == port
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := freePorts(t, 1)
			args := []string{"--backend", backend()}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "PORT", portList(ports)))
			}
			r := start(t, exec.Command(bin, args...))
			r.waitReady(t)
			killMidRun(t, r, ports[0], tc.first)
		})
	}
}

func killMidRun(t *testing.T, r *run, port uint16, first func(map[string]any, int) bool) {
	t.Helper()
	// Events flowing: a bind a millisecond until the kill.
	stop := make(chan struct{})
	flowing := make(chan struct{})
	go func() {
		defer close(flowing)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = bind(port)
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { close(stop); <-flowing }()
	for under := false; !under; {
		select {
		case m := <-r.lines:
			under = first(m, int(port))
		case <-time.After(10 * time.Second):
			t.Fatalf("no line showing it at work within 10s; stderr: %s", r.stderr.String())
		}
	}

	held := heldObjects(t, r.cmd.Process.Pid)
	if len(held.progs) == 0 || len(held.maps) == 0 {
		t.Fatalf("porttrace holds %d programs and %d maps: want some of each", len(held.progs), len(held.maps))
	}
	// Each is found while porttrace runs: what is not found after is gone.
	if left, n := held.left(), len(held.progs)+len(held.maps)+len(held.links); len(left) != n {
		t.Fatalf("%d of the %d objects porttrace holds found by id", len(left), n)
	}
	t.Logf("porttrace held %d programs, %d maps, %d links", len(held.progs), len(held.maps), len(held.links))
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 10*time.Second)
	if ws := r.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("porttrace ended with %v, not killed", r.cmd.ProcessState)
	}
	// The kernel frees an object after its last reference, not always at
	// once (a program after an RCU grace period).
	left := held.left()
	for deadline := time.Now().Add(5 * time.Second); len(left) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		left = held.left()
	}
	if len(left) > 0 {
		t.Errorf("left in the kernel by a killed porttrace: %s", strings.Join(left, ", "))
	}
}
