package faults

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ipNetns runs ip netns with args.
func ipNetns(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip netns %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// A namespace porttrace watches (--netns) deleted while it runs: first
// its name (ip netns delete), with a process still in it, which changes
// nothing, then that last process, which ends the namespace. porttrace
// then says "network namespace PATH is gone: stopping" in one line and
// stops as at the end of -d, with its summary, exit 0: the stream and
// churn as the kernel destroys the namespace (they hold it not), ports
// --watch (which holds it, to look into it after its name is gone) once
// nothing but porttrace keeps it.
func TestFaultNetnsDeleted(t *testing.T) {
	bin := porttraceBin(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8) (iproute2)")
	}
	for i, tc := range []struct {
		name  string
		args  []string // after which --netns PATH
		cmd   string   // how porttrace names itself on stderr
		event bool     // the bind made inside shows as a line
	}{
		{"stream", []string{"-o", "json", "-e", "bind"}, "porttrace", true},
		{"churn", []string{"churn", "-o", "json", "-i", "200ms"}, "porttrace churn", false},
		{"ports --watch", []string{"ports", "--watch", "-o", "json", "-i", "200ms"}, "porttrace ports", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("porttrace-fault-%d-%d", os.Getpid(), i)
			path := "/run/netns/" + name
			ipNetns(t, "add", name)
			t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
			if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
				t.Fatalf("lo up: %v: %s", err, out)
			}
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			// The process that keeps the namespace once its name is gone.
			last := exec.Command("ip", "netns", "exec", name, "sleep", "600")
			if err := last.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { last.Process.Kill(); last.Wait() })

			r := start(t, exec.Command(bin, append(tc.args, "--backend", backend(), "--netns", path)...))
			r.waitReady(t)
			port := freePorts(t, 1)[0]
			b := exec.Command("ip", "netns", "exec", name, os.Args[0])
			b.Env = append(os.Environ(), "PORTTRACE_FAULT_HELPER=bind-then", fmt.Sprintf("PT_PORT=%d", port))
			if out, err := b.CombinedOutput(); err != nil {
				t.Fatalf("bind inside: %v: %s", err, out)
			}
			if tc.event {
				deadline := time.After(10 * time.Second)
				for found := false; !found; {
					select {
					case m := <-r.lines:
						found = m["event"] == "bind" && num(m, "local_port") == int(port) && num(m, "netns") == int(st.Ino)
					case <-deadline:
						t.Fatalf("no bind in the namespace within 10s; stderr: %s", r.stderr.String())
					}
				}
			}

			ipNetns(t, "del", name)
			time.Sleep(1500 * time.Millisecond)
			select {
			case <-r.done:
				t.Fatalf("porttrace ended while a process was still in the namespace: %v: %s", r.err, r.stderr.String())
			default:
			}
			if strings.Contains(r.stderr.String(), "gone") {
				t.Fatalf("gone said while a process was still in the namespace: %s", r.stderr.String())
			}

			last.Process.Kill()
			last.Wait()
			killed := time.Now()
			code := r.wait(t, 30*time.Second) // the kernel destroys a namespace on a workqueue, after others in its batch
			t.Logf("ended %s after the last process in the namespace", time.Since(killed).Round(time.Millisecond))
			want := fmt.Sprintf("%s: network namespace %s is gone: stopping\n", tc.cmd, path)
			if stderr := r.stderr.String(); code != 0 || strings.Count(stderr, want) != 1 {
				t.Errorf("exit %d, stderr %q: want 0 and %q once", code, stderr, want)
			}
		})
	}
}
