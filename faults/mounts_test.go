package faults

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Capabilities (linux/capability.h) a case drops from porttrace.
const (
	capSysResource = 24
	capSysAdmin    = 21
)

// porttrace started in a world missing something it needs or may use:
// tracefs not mounted (it mounts it itself, in its own mount namespace
// here; without CAP_SYS_ADMIN it cannot, and says so), bpffs not mounted
// (it pins nothing), kernel BTF unreadable, RLIMIT_MEMLOCK at 64 KiB (it
// raises the limit with CAP_SYS_RESOURCE; without it a kernel that
// charges BPF memory to memcg, 5.11+, as this one, needs no raise). Each
// case runs porttrace in a private mount namespace the helper sets up, so
// the machine's own mounts are untouched. What works must trace a bind and
// exit 0 with its summary; what cannot must say why in one line, exit 3.
func TestFaultMissingMounts(t *testing.T) {
	bin := porttraceBin(t)
	for _, tc := range []struct {
		name    string
		env     []string
		refused *regexp.Regexp // nil: it traces
	}{
		{name: "tracefs not mounted", env: []string{"PT_MOUNTS=umount:/sys/kernel/tracing"}},
		{name: "tracefs not mounted, no CAP_SYS_ADMIN", env: []string{"PT_MOUNTS=umount:/sys/kernel/tracing", fmt.Sprintf("PT_DROP_CAPS=%d", capSysAdmin)},
			refused: regexp.MustCompile(`^porttrace: tracefs is not mounted and porttrace could not mount it at /sys/kernel/tracing \(operation not permitted\): mount it \(mount -t tracefs nodev /sys/kernel/tracing\) or give porttrace CAP_SYS_ADMIN; [^\n]*\n$`)},
		{name: "bpffs not mounted", env: []string{"PT_MOUNTS=umount:/sys/fs/bpf"}},
		{name: "kernel BTF unreadable", env: []string{"PT_MOUNTS=bind:/dev/null:/sys/kernel/btf/vmlinux"},
			refused: regexp.MustCompile(`^porttrace: reading kernel BTF \(/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF\): [^\n]*\n$`)},
		{name: "RLIMIT_MEMLOCK 64 KiB", env: []string{"PT_MEMLOCK=65536"}},
		{name: "RLIMIT_MEMLOCK 64 KiB, no CAP_SYS_RESOURCE", env: []string{"PT_MEMLOCK=65536", fmt.Sprintf("PT_DROP_CAPS=%d", capSysResource)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := freePorts(t, 1)
			b := backend()
			if strings.HasPrefix(tc.name, "tracefs") {
				b = "tracepoint" // the backend that needs tracefs
			}
			cmd := helper("setup", append(tc.env, "PT_EXEC="+jsonArgs(bin, "--backend", b, "-o", "json", "-p", portList(ports)))...)
			r := start(t, cmd)
			if tc.refused != nil {
				code := r.wait(t, 30*time.Second)
				stderr := r.stderr.String()
				if code != 3 || !tc.refused.MatchString(stderr) {
					t.Errorf("exit %d, stderr %q: want 3 and one line matching %s", code, stderr, tc.refused)
				}
				t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
				return
			}
			r.waitReady(t)
			if strings.Contains(tc.name, "MEMLOCK") {
				limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", r.cmd.Process.Pid))
				for line := range strings.Lines(string(limits)) {
					if strings.HasPrefix(line, "Max locked memory") {
						t.Logf("porttrace tracing with %s", strings.Join(strings.Fields(line), " "))
					}
				}
			}
			if tc.name == "tracefs not mounted" {
				// It traces through the tracefs it mounted in its own
				// namespace, where the helper had none.
				mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", r.cmd.Process.Pid))
				if err != nil || !strings.Contains(string(mi), " /sys/kernel/tracing ") {
					t.Errorf("no tracefs mounted by porttrace in its namespace: %v", err)
				}
			}
			if err := bind(ports[0]); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-r.lines:
				if m["event"] != "bind" || num(m, "local_port") != int(ports[0]) || num(m, "pid") != os.Getpid() {
					t.Errorf("line %v, want this bind", m)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no event within 10s; stderr: %s", r.stderr.String())
			}
			r.cmd.Process.Signal(syscall.SIGINT)
			if code := r.wait(t, 20*time.Second); code != 0 || !strings.Contains(r.stderr.String(), "porttrace: 1 event (bind 1,") {
				t.Errorf("exit %d, stderr %q: want 0 and the summary of one bind", code, r.stderr.String())
			}
		})
	}
}
