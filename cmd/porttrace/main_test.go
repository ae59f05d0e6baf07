package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as porttrace: with PORTTRACE_MAIN set it runs main.
func TestMain(m *testing.M) {
	if os.Getenv("PORTTRACE_MAIN") != "" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// porttrace runs exe as porttrace with args. A usage error it failed to
// see would start tracing until stopped: it is killed after a while.
func porttrace(t *testing.T, exe string, uid int, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
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
	// A port taken, for --metrics to fail on at run time.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{[]string{"--version"}, 0, "", "porttrace "},
		{[]string{"version"}, 0, "", "porttrace "},
		// Help is on stdout, with examples, for every command and either way.
		{[]string{"-h"}, 0, "", "Trace bind, listen"},
		{[]string{"help"}, 0, "", "Trace bind, listen"},
		{[]string{"help", "who"}, 0, "", "Tell who holds a port now"},
		{[]string{"ports", "--help"}, 0, "", "List what holds every port now"},
		{[]string{"prots"}, 2, `porttrace: unknown command "prots": did you mean ports?`, ""},
		{[]string{"completion", "bash"}, 0, "", "# bash completion V2 for porttrace"},
		{[]string{"-o", "yaml"}, 2, `porttrace: invalid --output "yaml": want table, wide, json, none or columns=NAME,...`, ""},
		{[]string{"--port", "80-70"}, 2, "porttrace: invalid argument", ""},
		{[]string{"-p", "-5"}, 2, `invalid port range "-5": want FIRST-LAST`, ""},
		{[]string{"-p", "80,"}, 2, `an empty item in port list "80,"`, ""},
		{[]string{"--pid", "4294967296"}, 2, "want a process id from 1 to 4294967295", ""},
		{[]string{"--backend", "xdp"}, 2, `porttrace: invalid --backend: unknown backend "xdp"`, ""},
		{[]string{"--bogus"}, 2, "porttrace: unknown flag: --bogus", ""},
		{[]string{"--bo\x1b[2Jgus"}, 2, `porttrace: unknown flag: --bo\x1b[2Jgus`, ""},
		{[]string{"extra"}, 2, `porttrace: unexpected argument "extra"`, ""},
		{[]string{"-d", "x"}, 2, "porttrace: invalid argument", ""},
		{[]string{"-d", "-1s"}, 2, "porttrace: invalid --duration -1s", ""},
		{[]string{"-4", "-6"}, 2, "porttrace: -4 and -6 together: leaving both out already means both families", ""},
		{[]string{"--tcp", "--udp"}, 2, "porttrace: --tcp and --udp together: leaving both out already means both protocols", ""},
		{[]string{"-p", "0"}, 2, `porttrace: invalid --port "0": want a port from 1 to 65535`, ""},
		{[]string{"--port", "22,0-1023"}, 2, `porttrace: invalid --port "0-1023": want a port from 1 to 65535`, ""},
		{[]string{"-p", "99999"}, 2, `invalid port "99999": want a port from 1 to 65535`, ""},
		{[]string{"-n", "0"}, 2, `porttrace: invalid argument "0" for "-n, --count" flag: want 1 or more events`, ""},
		{[]string{"-n", "99999999999999999999"}, 2, `for "-n, --count" flag: want 1 or more events, at most 18446744073709551615`, ""},
		{[]string{"-e", "bind,bind"}, 2, `porttrace: invalid argument "bind,bind" for "-e, --events" flag: event "bind" named twice`, ""},
		{[]string{"--uid", "4294967295"}, 2, `want a user name or an id from 0 to 4294967294 (4294967295 is the kernel's "no user")`, ""},
		{[]string{"--uid", "no-such-user-here"}, 2, `porttrace: invalid --uid "no-such-user-here": no such user`, ""},
		{[]string{"--metrics", "256.1.1.1:9000"}, 2, `porttrace: invalid --metrics "256.1.1.1:9000": want HOST:PORT or :PORT, HOST an IP address`, ""},
		{[]string{"--metrics", "localhost:http"}, 2, `porttrace: invalid --metrics "localhost:http"`, ""},
		{[]string{"churn", "-d", "-5s"}, 2, "porttrace churn: invalid --duration -5s", ""},
		{[]string{"churn", "--bogus"}, 2, "porttrace churn: unknown flag: --bogus", ""},
		{[]string{"churn", "extra"}, 2, `porttrace churn: unexpected argument "extra"`, ""},
		{[]string{"churn", "--metrics", "metrics.example:9477"}, 2, `porttrace churn: invalid --metrics "metrics.example:9477"`, ""},
		{[]string{"churn", "--metrics", busyAddr}, 3, "porttrace churn: --metrics: listen tcp " + busyAddr, ""},
		// The stream's flags before a subcommand's name are that command's.
		{[]string{"-o", "xml", "ports"}, 2, `porttrace ports: invalid --output "xml"`, ""},
		{[]string{"-d", "-5s", "churn"}, 2, "porttrace churn: invalid --duration -5s", ""},
		{[]string{"who", "80", "--wait", "-d", "-1s"}, 2, "porttrace who: invalid --duration -1s: want 0 (no limit) or more", ""},
		{[]string{"churn", "-i", "1ms"}, 2, "porttrace churn: invalid --interval 1ms", ""},
		{[]string{"churn", "--metrics-destinations", "5"}, 2, "porttrace churn: --metrics-destinations needs --metrics", ""},
		{[]string{"churn", "-h"}, 0, "", "Count ephemeral port allocations"},
		{[]string{"ports", "-o", "xml"}, 2, `porttrace ports: invalid --output "xml"`, ""},
		{[]string{"ports", "--bogus"}, 2, "porttrace ports: unknown flag: --bogus", ""},
		{[]string{"ports", "--netns", missing}, 2, `porttrace ports: invalid --netns "` + missing + `": no such file or directory`, ""},
		{[]string{"ports", "--netns", "/etc/passwd"}, 2, `porttrace ports: invalid --netns "/etc/passwd": not a network namespace file`, ""},
		{[]string{"ports", "--netns", "/proc/self/ns/user"}, 2, "not a network namespace file (a user namespace)", ""},
		{[]string{"ports", "--netns", ""}, 2, "porttrace ports: invalid argument \"\" for \"--netns\" flag: empty namespace path", ""},
		{[]string{"ports", "--netns", "/x\ny"}, 2, "a namespace path with a control character", ""},
		{[]string{"ports", "--netns", "/x\x1b[2Jy"}, 2, `porttrace ports: invalid argument "/x\x1b[2Jy" for "--netns" flag`, ""},
		{[]string{"ports", "--netns", "all,/proc/self/ns/net"}, 2, "porttrace ports: invalid argument", ""},
		{[]string{"ports", "--netns", "all", "--netns", "/proc/self/ns/net"}, 2, "all is every namespace already: name no other with it", ""},
		{[]string{"ports", "-i", "2s"}, 2, "porttrace ports: --interval needs --watch", ""},
		{[]string{"ports", "--backend", "kprobe"}, 2, "porttrace ports: --backend needs --watch", ""},
		{[]string{"ports", "-d", "5s"}, 2, "porttrace ports: --duration needs --watch", ""},
		{[]string{"ports", "-w", "-d", "-5s"}, 2, "porttrace ports: invalid --duration -5s", ""},
		{[]string{"who"}, 2, "porttrace who: want one PORT[/tcp|/udp]", ""},
		{[]string{"who", "--bogus", "80"}, 2, "porttrace who: unknown flag: --bogus", ""},
		{[]string{"who", "80/sctp"}, 2, `porttrace who: invalid protocol "sctp"`, ""},
		{[]string{"who", "0"}, 2, `porttrace who: invalid port 0 in "0": want a port from 1 to 65535`, ""},
		{[]string{"who", "99999"}, 2, `porttrace who: invalid port "99999": want a port from 1 to 65535`, ""},
		{[]string{"who", "80", "--duration", "1s"}, 2, "porttrace who: --duration needs --wait", ""},
		{[]string{"who", "80", "--backend", "kprobe"}, 2, "porttrace who: --backend needs --wait", ""},
		{[]string{"who", "80", "--netns", missing}, 2, `porttrace who: invalid --netns "` + missing + `": no such file or directory`, ""},
		{[]string{"who", "80", "--netns", "/etc/passwd"}, 2, "porttrace who: invalid --netns", ""},
		{[]string{"who", "80", "--netns", "all,/proc/self/ns/net"}, 2, "porttrace who: invalid argument", ""},
		{[]string{"who", "80", "--netns", "/x\x1b[2Jy"}, 2, `porttrace who: invalid argument "/x\x1b[2Jy"`, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := porttrace(t, exe, 0, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) || !strings.HasPrefix(stdout, tc.stdout) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", code, stdout, stderr, tc.code, tc.stderr)
			}
			if tc.code != 0 && stdout != "" {
				t.Errorf("an error wrote to stdout: %q", stdout)
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("usage error is not one line: %q", stderr)
			}
			if tc.code != 0 && strings.ContainsFunc(strings.TrimSuffix(stderr, "\n"), isControl) {
				t.Errorf("a control character reached the terminal: %q", stderr)
			}
		})
	}
}

// who's --timeout, now -d/--duration as everywhere else, still works, and
// says so on stderr.
func TestDeprecatedTimeout(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := porttrace(t, exe, 0, "who", "80", "--timeout", "1s")
	want := "Flag --timeout has been deprecated, use -d/--duration\nporttrace who: --timeout needs --wait\n"
	if code != 2 || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 2 and stderr %q", code, stdout, stderr, want)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// Without privileges porttrace says what is missing, on one line, and exits 3.
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
	if code != 3 || !strings.Contains(stderr, "run porttrace as root") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("exit %d, stderr %q; want 3 and one line asking for root", code, stderr)
	}
	// A runtime error names the subcommand that failed.
	code, _, stderr = porttrace(t, exe, 65534, "churn", "-d", "1s")
	if code != 3 || !strings.HasPrefix(stderr, "porttrace churn: ") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("churn: exit %d, stderr %q; want 3 and one line from porttrace churn", code, stderr)
	}
	// who could not look: 3, not the 1 of a free port.
	code, _, stderr = porttrace(t, exe, 65534, "who", "22", "--wait", "-d", "1s")
	if code != 3 || !strings.HasPrefix(stderr, "porttrace who: ") {
		t.Errorf("who --wait: exit %d, stderr %q; want 3 and one line from porttrace who", code, stderr)
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

// Too few file descriptors is said as such, not as the missing kernel
// feature a probe that hit EMFILE would report.
func TestTooFewFileDescriptors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to get past the privilege check")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-d", "1s"}, {"churn", "-d", "1s"}} {
		cmd := exec.Command("sh", append([]string{"-c", `ulimit -n 30 && exec "$0" "$@"`, exe}, args...)...)
		cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 3 || !strings.Contains(stderr.String(), "too many open files: porttrace needs about") ||
			strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("%v under ulimit -n 30: exit %d, stderr %q; want 3 and one line on file descriptors", args, code, stderr.String())
		}
	}
}

// --metrics with port 0 says on stderr which port the kernel picked, and
// it is there to scrape while porttrace runs.
func TestMetricsAnnounced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach the tracer")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// churn serves its first report after its first interval.
	for _, args := range [][]string{{"-p", "1", "-d", "3s"}, {"churn", "-i", "100ms", "-d", "3s"}} {
		cmd := exec.Command(exe, append(args, "--metrics", "127.0.0.1:0")...)
		cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^porttrace( churn)?: serving metrics on (http://127\.0\.0\.1:([1-9][0-9]*)/metrics)$`)
		var url string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				url = m[2]
				break
			}
		}
		if url == "" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%v: no line announcing the metrics address", args)
		}
		time.Sleep(500 * time.Millisecond)
		resp, err := http.Get(url)
		if err != nil {
			t.Errorf("%v: scraping %s: %v", args, url, err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "porttrace_") {
				t.Errorf("%v: %s served no porttrace metrics:\n%s", args, url, body)
			}
		}
		go io.Copy(io.Discard, stderr)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
