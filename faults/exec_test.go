package faults

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A process that binds and then at once execs another program, or exits,
// is gone or changed by the time porttrace reads /proc for its event.
// What the kernel put in the event (pid, comm, ppid, uid) is the process
// at bind time; what /proc would add (exe) is that process's or left out,
// never the program it exec'd into. Each helper binds, then execs sleep
// (which lives on a while, so /proc shows it) or exits; many times, so
// porttrace's read falls before, between and after.
//
// Pid reuse (the pid of the bind reused by another process before the
// read) cannot be forced here: porttrace guards against it the same way,
// by the thread's name (comm) at the event and in /proc agreeing.
func TestFaultExecOrExitBeforeProcRead(t *testing.T) {
	bin := porttraceBin(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	sleepReal, _ := filepath.EvalSymlinks(sleep)
	comm := filepath.Base(self)[:min(15, len(filepath.Base(self)))]
	for _, tc := range []struct {
		name string
		then string // what the helper execs after its bind; "" exits
	}{
		{"exec", jsonArgs(sleep, "0.2")},
		{"exit", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100
			ports := freePorts(t, 1)
			r := start(t, exec.Command(bin, "--backend", backend(), "-o", "json", "-p", portList(ports), "-e", "bind"))
			r.waitReady(t)
			pids := map[int]bool{}
			var helpers []*exec.Cmd
			for range n {
				h := helper("bind-then", "PT_PORT="+portList(ports), "PT_THEN="+tc.then)
				if err := h.Start(); err != nil {
					t.Fatal(err)
				}
				pids[h.Process.Pid] = true
				helpers = append(helpers, h)
			}
			for _, h := range helpers {
				if err := h.Wait(); err != nil {
					t.Fatalf("helper: %v", err)
				}
			}
			r.cmd.Process.Signal(os.Interrupt)
			if code := r.wait(t, 20*time.Second); code != 0 {
				t.Fatalf("porttrace exited %d: %s", code, r.stderr.String())
			}
			seen, withExe := 0, 0
			for _, m := range r.drain() {
				pid := num(m, "pid")
				if !pids[pid] {
					t.Errorf("a bind of pid %d, none of the helpers': %v", pid, m)
					continue
				}
				seen++
				if m["comm"] != comm || num(m, "ppid") != os.Getpid() || num(m, "uid") != os.Getuid() {
					t.Errorf("pid %d: comm %v ppid %d uid %d, want %s %d %d (the helper at its bind)", pid, m["comm"], num(m, "ppid"), num(m, "uid"), comm, os.Getpid(), os.Getuid())
				}
				switch exe, _ := m["exe"].(string); exe {
				case "":
				case self:
					withExe++
				default:
					t.Errorf("pid %d: exe %q, want %s or none: the program it became after its bind", pid, exe, self)
				}
			}
			if seen != n {
				t.Errorf("%d binds seen, want %d", seen, n)
			}
			t.Logf("%d binds: %d with the helper's exe, %d without, none with %s", seen, withExe, seen-withExe, sleepReal)
		})
	}
}
