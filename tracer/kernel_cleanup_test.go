package tracer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/internal/bpfheld"
	"github.com/porttrace/porttrace/tracer/event"
)

// holdTracer is the test binary re-executed to hold a tracer of
// PORTTRACE_BACKEND until it is killed: it says "attached" once its hooks
// are in place.
func holdTracer() int {
	b, err := event.ParseBackend(BackendName())
	if err == nil {
		var tr *Tracer
		if tr, err = New(Options{Backend: b, Events: AllKinds()}); err == nil {
			defer tr.Close()
			fmt.Println("attached")
			time.Sleep(time.Hour)
			return 0
		}
	}
	fmt.Println("error", err)
	return 1
}

// heldPrograms are the ids of the BPF programs process pid holds open:
// its own, whatever else runs on the machine.
func heldPrograms(t *testing.T, pid int) []ebpf.ProgramID {
	t.Helper()
	held, err := bpfheld.Of(pid)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	for _, id := range held.Progs {
		ids = append(ids, ebpf.ProgramID(id))
	}
	return ids
}

// stillLoaded are those of ids the kernel still has.
func stillLoaded(ids []ebpf.ProgramID) []ebpf.ProgramID {
	var left []ebpf.ProgramID
	for _, id := range ids {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			left = append(left, id)
		}
	}
	return left
}

// porttraceKprobes counts the kprobe events named for porttrace in tracefs.
func porttraceKprobes() int {
	n := 0
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(dir + "/kprobe_events")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if _, rest, _ := strings.Cut(line, ":"); strings.HasPrefix(rest, "porttrace_") {
				n++
			}
		}
		break
	}
	return n
}

// A porttrace killed with SIGKILL leaves nothing in the kernel once the
// next one has started and stopped: its programs and links go with its
// file descriptors, and the kprobe events its kretprobes need in tracefs
// (more than one call in flight per CPU takes them there) are removed by
// the next kprobe tracer, which leaves those of a porttrace still running.
func TestKernelKilledTracerLeavesNothing(t *testing.T) {
	NeedRoot(t)
	newTracer(t, Options{Backend: Backend(t), Events: AllKinds()}).Close()
	kprobes := porttraceKprobes()

	hold := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "PORTTRACE_HOLD_TRACER=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		if line, err := bufio.NewReader(out).ReadString('\n'); line != "attached\n" {
			t.Fatalf("holder: %q %v", line, err)
		}
		return cmd
	}
	holder := hold()
	progs := heldPrograms(t, holder.Process.Pid)
	if len(progs) == 0 {
		t.Fatal("the tracer holds no BPF program")
	}
	heldKprobes := porttraceKprobes()

	// Running: another tracer coming and going leaves them alone.
	newTracer(t, Options{Backend: Backend(t), Events: AllKinds()}).Close()
	if got := porttraceKprobes(); got != heldKprobes {
		t.Fatalf("a running porttrace's kprobe events: %d, then %d after another tracer came and went", heldKprobes, got)
	}

	holder.Process.Signal(syscall.SIGKILL)
	holder.Wait()
	newTracer(t, Options{Backend: Backend(t), Events: AllKinds()}).Close()
	// The kernel frees a program after its last reference, not always at once.
	left := stillLoaded(progs)
	for deadline := time.Now().Add(5 * time.Second); len(left) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		left = stillLoaded(progs)
	}
	if len(left) > 0 {
		t.Errorf("programs %v of a killed tracer still loaded", left)
	}
	if got := porttraceKprobes(); got > kprobes {
		t.Errorf("%d porttrace kprobe events left after a killed tracer, %d before it", got, kprobes)
	}
}
