package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as porttrace: with PORTTRACE_MAIN set it runs main.
func TestMain(m *testing.M) {
	if os.Getenv("PORTTRACE_MAIN") != "" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func porttrace(t *testing.T, exe string, uid int, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

func TestExitCodes(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{[]string{"--version"}, 0, "", "porttrace "},
		{[]string{"-h"}, 0, "usage: porttrace", ""},
		{[]string{"-o", "yaml"}, 2, `porttrace: invalid --output "yaml": want table or json`, ""},
		{[]string{"--port", "80-70"}, 2, "porttrace: invalid argument", ""},
		{[]string{"--backend", "xdp"}, 2, `porttrace: invalid --backend: unknown backend "xdp"`, ""},
		{[]string{"--bogus"}, 2, "porttrace: unknown flag: --bogus", ""},
		{[]string{"extra"}, 2, `porttrace: unexpected argument "extra"`, ""},
		{[]string{"-d", "x"}, 2, "porttrace: invalid argument", ""},
		{[]string{"-d", "-1s"}, 2, "porttrace: invalid --duration -1s", ""},
		{[]string{"churn", "-d", "-5s"}, 2, "porttrace churn: invalid --duration -5s", ""},
		{[]string{"who", "80", "--wait", "--timeout", "-1s"}, 2, "porttrace who: invalid --timeout -1s", ""},
		{[]string{"churn", "-i", "1ms"}, 2, "porttrace churn: invalid --interval 1ms", ""},
		{[]string{"churn", "--metrics-destinations", "5"}, 2, "porttrace churn: --metrics-destinations needs --metrics", ""},
		{[]string{"churn", "-h"}, 0, "usage: porttrace churn", ""},
		{[]string{"ports", "-o", "xml"}, 2, `porttrace ports: invalid --output "xml"`, ""},
		{[]string{"ports", "--netns", "/nonexistent"}, 1, "porttrace: --netns /nonexistent: no such file or directory", ""},
		{[]string{"ports", "--netns", "/etc/passwd"}, 1, "porttrace: netns /etc/passwd: not a network namespace file", ""},
		{[]string{"who"}, 2, "porttrace who: want one PORT[/tcp|/udp]", ""},
		{[]string{"who", "80/sctp"}, 2, `porttrace who: invalid protocol "sctp"`, ""},
		{[]string{"who", "0"}, 2, `porttrace who: invalid port 0 in "0"`, ""},
		{[]string{"who", "80", "--timeout", "1s"}, 2, "porttrace who: --timeout needs --wait", ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := porttrace(t, exe, 0, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) || !strings.HasPrefix(stdout, tc.stdout) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", code, stdout, stderr, tc.code, tc.stderr)
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("usage error is not one line: %q", stderr)
			}
		})
	}
}

// Without privileges porttrace says what is missing, on one line, and exits 1.
func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a copy of itself as another user")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "porttrace-main-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "porttrace")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := porttrace(t, exe, 65534, "-d", "1s")
	if code != 1 || !strings.Contains(stderr, "run porttrace as root") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("exit %d, stderr %q; want 1 and one line asking for root", code, stderr)
	}
}

// Ctrl-C and SIGTERM are a normal stop: the tracer detaches, the summary
// goes to stderr, and the exit status is 0.
func TestSignalsStopCleanly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("tracing needs root")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(exe, "-o", "json", "-p", "1")
			cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(stderr)
			first, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(first, "porttrace: tracing with ") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("first stderr line %q: %v", first, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(r)
			err = cmd.Wait()
			if err != nil {
				t.Errorf("exit: %v; stderr %q", err, rest)
			}
			want := "porttrace: 0 events (bind 0, listen 0, connect 0, accept 0), 0 denied, 0 failed, 0 lost\n"
			if string(rest) != want {
				t.Errorf("stderr after the signal %q, want %q", rest, want)
			}
		})
	}
}
