package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// nobody is the user porttrace runs as in TestAnotherUser.
const nobody = 65534

// userRun runs porttrace as nobody with caps as ambient capabilities, from
// a copy of the test binary that nobody may execute.
func userRun(t *testing.T, caps []uintptr, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "porttrace-user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	copyExe := filepath.Join(dir, "porttrace")
	if err := copyFile(exe, copyExe); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyExe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody},
		AmbientCaps: caps,
	}
	return runTraced(t, cmd, nil)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Capability numbers (linux/capability.h), for ambient capabilities.
const (
	capDacReadSearch = 2
	capSysPtrace     = 19
	capPerfmon       = 38
	capBPF           = 39
)

// As another user, who names root's processes with CAP_SYS_PTRACE and
// CAP_DAC_READ_SEARCH, and only with both; tracing is refused in one line
// whatever capabilities it has, since tracefs is root's alone.
func TestAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run porttrace as another user with capabilities")
	}
	port := listener(t)
	for _, tc := range []struct {
		name string
		caps []uintptr
		want string
	}{
		{"both", []uintptr{capSysPtrace, capDacReadSearch}, "ok"},
		{"no CAP_DAC_READ_SEARCH", []uintptr{capSysPtrace}, "no holder"},
		{"no CAP_SYS_PTRACE", []uintptr{capDacReadSearch}, "no holder"},
		{"none", nil, "no holder"},
	} {
		t.Run("who "+tc.name, func(t *testing.T) {
			code, stdout, stderr := userRun(t, tc.caps, "who", strconv.Itoa(port), "-o", "json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			who := jsonLines(t, stdout)
			got := "no holder"
			if len(who) != 1 || who[0]["held"] != true {
				got = "not held: " + stdout
			} else if heldBy(who[0]["holders"], os.Getpid()) {
				got = "ok"
			}
			if got != tc.want {
				t.Errorf("%s, want %s", got, tc.want)
			}
		})
	}
	t.Run("tracing", func(t *testing.T) {
		code, _, stderr := userRun(t, []uintptr{capBPF, capPerfmon}, "-d", "1s")
		want := regexp.MustCompile(`^porttrace: .*permission denied: run porttrace as root \(CAP_BPF and CAP_PERFMON are not enough where tracefs is root's alone\)`)
		if code != 3 || !want.MatchString(stderr) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("exit %d, stderr %q; want 3 and one line saying tracefs is root's", code, stderr)
		}
	})
}

// writeCalls are the system calls that make, change or remove a file.
var writeCalls = []string{"creat", "mkdir", "mkdirat", "mknod", "mknodat", "link", "linkat", "symlink", "symlinkat",
	"rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "truncate"}

// openForWriting matches an open(2) of strace's output that may write:
// the path and its flags.
var openForWriting = regexp.MustCompile(`\bopen(?:at2?)?\((?:[^,]*, )?"([^"]*)", [^)]*\b(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC)\b`)

// porttrace writes no file: every command, run to its end under strace,
// opens nothing for writing and makes, renames or removes nothing. The
// kprobe backend's kprobe_events in tracefs is the one file it may write.
func TestWritesNoFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to trace")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace(1) checks what porttrace opens: ", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(listener(t))
	calls := "trace=open,openat,openat2," + strings.Join(writeCalls, ",")
	for _, args := range [][]string{
		{"-o", "json", "-d", "1s"},
		{"-d", "1s"},
		{"churn", "-i", "200ms", "-d", "700ms"},
		{"churn", "-o", "json", "-i", "200ms", "-d", "700ms", "--metrics", "127.0.0.1:0"},
		{"ports", "-a"},
		{"who", port},
		{"who", "1", "--wait", "-d", "500ms"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "strace")
			cmd := exec.Command("strace", append([]string{"-f", "-qq", "-e", calls, "-e", "signal=none", "-o", log, exe}, args...)...)
			cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
			if out, err := cmd.CombinedOutput(); err != nil && !(args[0] == "who" && len(args) > 2) {
				t.Fatalf("%v: %s", err, out)
			}
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			opens := 0
			for line := range strings.Lines(string(b)) {
				if m := openForWriting.FindStringSubmatch(line); m != nil && !strings.HasSuffix(m[1], "/kprobe_events") {
					t.Errorf("opened for writing: %s", strings.TrimSpace(line))
				}
				for _, c := range writeCalls {
					if strings.Contains(line, " "+c+"(") {
						t.Errorf("%s: %s", c, strings.TrimSpace(line))
					}
				}
				if strings.Contains(line, "open") {
					opens++
				}
			}
			if opens == 0 {
				t.Fatalf("strace saw no open at all: %s", b)
			}
		})
	}
}

// The check above sees a write in strace's words.
func TestOpenForWriting(t *testing.T) {
	for _, tc := range []struct {
		line string
		path string
	}{
		{`812 openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600) = 3`, "/tmp/x"},
		{`812 open("/run/porttrace.pid", O_RDWR|O_CLOEXEC) = 3`, "/run/porttrace.pid"},
		{`812 openat2(AT_FDCWD, "/var/x", {flags=O_CREAT|O_CLOEXEC, mode=0600}, 24) = 3`, "/var/x"},
		{`812 openat(AT_FDCWD, "/proc/1/stat", O_RDONLY|O_CLOEXEC) = 3`, ""},
		{`812 openat(AT_FDCWD, "/etc/O_WRONLY", O_RDONLY) = -1 ENOENT (No such file or directory)`, ""},
	} {
		got := ""
		if m := openForWriting.FindStringSubmatch(tc.line); m != nil {
			got = m[1]
		}
		if got != tc.path {
			t.Errorf("%s: %q, want %q", tc.line, got, tc.path)
		}
	}
}
