package faults

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Several porttraces at once each get every event, each on rings of its
// own: N processes scoped to the same ports see every one of the binds
// made on them, by port and pid, none lost, none twice, and each, stopped
// with SIGINT or at the end of its -d, exits 0 with a summary that counts
// them.
func TestFaultManyAtOnce(t *testing.T) {
	bin := porttraceBin(t)
	for _, procs := range []int{2, 10} {
		t.Run(strconv.Itoa(procs), func(t *testing.T) {
			const binds = 50
			ports := freePorts(t, binds)
			runs := make([]*run, procs)
			// Every other one stops at its -d, the rest at SIGINT.
			const duration = 8 * time.Second
			for i := range runs {
				// Its own binds alone: other tests' connects may have a
				// chosen port as their remote one.
				args := []string{"--backend", backend(), "-o", "json", "-p", portList(ports), "--pid", strconv.Itoa(os.Getpid())}
				if i%2 == 1 {
					args = append(args, "-d", duration.String())
				}
				runs[i] = start(t, exec.Command(bin, args...))
			}
			for _, r := range runs {
				r.waitReady(t)
			}
			for _, p := range ports {
				if err := bind(p); err != nil {
					t.Fatal(err)
				}
			}
			// The binds are in every ring now: stopping, porttrace
			// drains its rings before the summary.
			for i, r := range runs {
				if i%2 == 0 {
					r.cmd.Process.Signal(syscall.SIGINT)
				}
			}
			summary := regexp.MustCompile(`porttrace: 50 events \(bind 50, listen 0, connect 0, accept 0\), 0 denied, 0 failed, 0 lost\n`)
			for i, r := range runs {
				if code := r.wait(t, duration+20*time.Second); code != 0 {
					t.Errorf("porttrace %d exited %d: %s", i, code, r.stderr.String())
				}
				seen := map[int]int{}
				for _, m := range r.drain() {
					if m["event"] != "bind" || num(m, "pid") != os.Getpid() || m["result"] != "ok" {
						t.Errorf("porttrace %d: unexpected line %v", i, m)
						continue
					}
					seen[num(m, "local_port")]++
				}
				for _, p := range ports {
					if seen[int(p)] != 1 {
						t.Errorf("porttrace %d: the bind to port %d seen %d times", i, p, seen[int(p)])
					}
				}
				if !summary.MatchString(r.stderr.String()) {
					t.Errorf("porttrace %d: no summary counting the %d binds: %q", i, binds, r.stderr.String())
				}
			}
		})
	}
}
