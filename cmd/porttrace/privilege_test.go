package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privRow is a row of the README's table of privileges: a command, the
// capabilities it cannot run without, and those it uses when it has them.
type privRow struct {
	command string
	needs   []string
	uses    []string
}

// readmePrivileges reads the table under "## Privileges" in the README.
func readmePrivileges(t *testing.T) []privRow {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Privileges\n")
	if !ok {
		t.Fatal("README.md has no Privileges section")
	}
	var rows []privRow
	for line := range strings.Lines(section) {
		if strings.HasPrefix(line, "## ") {
			break
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 || !strings.HasPrefix(strings.TrimSpace(cells[0]), "`porttrace") {
			if len(rows) > 0 {
				break // the end of the first table
			}
			continue
		}
		rows = append(rows, privRow{
			command: strings.Trim(strings.TrimSpace(cells[0]), "`"),
			needs:   capsIn(cells[1]),
			uses:    capsIn(cells[2]),
		})
	}
	if len(rows) == 0 {
		t.Fatal("README.md's Privileges section has no table")
	}
	return rows
}

// capsIn are the capabilities a cell names, as setpriv(1) spells them:
// `CAP_SYS_PTRACE` is sys_ptrace.
func capsIn(cell string) []string {
	var caps []string
	for _, f := range strings.Split(cell, "`") {
		if name, ok := strings.CutPrefix(f, "CAP_"); ok && !slices.Contains(caps, strings.ToLower(name)) {
			caps = append(caps, strings.ToLower(name))
		}
	}
	return caps
}

// capsRun runs the test binary as porttrace with args, as root but with
// no capability but caps: setpriv empties the bounding set, from which
// root's are drawn at exec, and the inheritable one.
func capsRun(t *testing.T, caps []string, start func(), args ...string) (code int, stdout, stderr string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + c
	}
	return runTraced(t, exec.Command("setpriv", append([]string{"--inh-caps", "-all", "--bounding-set", bounding, exe}, args...)...), start)
}

// runTraced runs cmd, the test binary as porttrace, and calls start, if
// not nil, once porttrace has said on stderr that it traces.
func runTraced(t *testing.T, cmd *exec.Cmd, start func()) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	cmd.Env = append(os.Environ(), "PORTTRACE_MAIN=1")
	var o bytes.Buffer
	cmd.Stdout = &o
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var e strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		e.WriteString(sc.Text() + "\n")
		if start != nil && strings.Contains(sc.Text(), " with the ") && strings.Contains(sc.Text(), " backend") {
			start()
			start = nil
		}
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// denied is how porttrace says it lacks what tracing needs, noEndWatch
// that it cannot watch its --netns namespaces for their end.
const (
	denied     = "permission denied: run porttrace as root"
	noEndWatch = "it will not see --netns namespaces end"
)

// A scenario runs a command of the table with caps and says what came of
// it in a word: "ok" when every fact is there, "denied" when it could not
// run for want of privilege, else what was missing.
type scenario func(t *testing.T, caps []string) string

// listener is a TCP socket of the test's, on loopback, held by a process
// with every capability: porttrace without CAP_SYS_PTRACE may not look
// into its /proc files.
func listener(t *testing.T) (port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// netnsSeq numbers the namespaces namedNetns makes.
var netnsSeq int

// namedNetns makes a network namespace under /run/netns for the test.
func namedNetns(t *testing.T) string {
	t.Helper()
	netnsSeq++
	name := fmt.Sprintf("porttrace-priv-%d-%d", os.Getpid(), netnsSeq)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// heldNetns is a network namespace that only a process of the test's
// holds, found through /proc/PID/ns/net as churn finds a pod's.
func heldNetns(t *testing.T) (path string, inode uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	path = fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return path, st.Ino
}

// jsonLines decodes each line of out that is a JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for line := range strings.Lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a line that is not JSON: %q", line)
		}
		objs = append(objs, m)
	}
	return objs
}

// heldBy says whether holders, a JSON list of processes, has pid.
func heldBy(holders any, pid int) bool {
	list, _ := holders.([]any)
	for _, h := range list {
		if m, ok := h.(map[string]any); ok && m["pid"] == float64(pid) {
			return true
		}
	}
	return false
}

// verdict classifies an exit that is not a success: denied, or the first
// line of stderr.
func verdict(code int, stderr string) string {
	if code == 3 && strings.Contains(stderr, denied) {
		return "denied"
	}
	first, _, _ := strings.Cut(stderr, "\n")
	return fmt.Sprintf("exit %d: %s", code, first)
}

func streamScenario(t *testing.T, caps []string) string {
	port := 20000 + os.Getpid()%20000
	code, stdout, stderr := capsRun(t, caps, func() {
		s, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			s.Close()
		}
	}, "-o", "json", "--events", "bind", "-p", strconv.Itoa(port), "-d", "3s", "--netns", "/proc/self/ns/net,"+namedNetns(t))
	if code != 0 {
		return verdict(code, stderr)
	}
	if strings.Contains(stderr, noEndWatch) {
		return "no end watch"
	}
	for _, ev := range jsonLines(t, stdout) {
		if ev["local_port"] == float64(port) && ev["pid"] == float64(os.Getpid()) {
			if _, ok := ev["exe"]; !ok {
				return "no exe"
			}
			return "ok"
		}
	}
	return "no event: " + stdout
}

func churnScenario(t *testing.T, caps []string) string {
	path, inode := heldNetns(t)
	code, stdout, stderr := capsRun(t, caps, nil, "churn", "--netns", path, "-i", "200ms", "-d", "700ms", "-o", "json")
	switch {
	case code == 3 && strings.Contains(stderr, "--netns "+path+": permission denied"):
		return "netns unreadable"
	case code != 0:
		return verdict(code, stderr)
	case strings.Contains(stderr, noEndWatch):
		return "no end watch"
	}
	for _, r := range jsonLines(t, stdout) {
		rows, _ := r["netns"].([]any)
		for _, row := range rows {
			m, _ := row.(map[string]any)
			if m["netns"] != float64(inode) {
				continue
			}
			if e, ok := m["usage_error"].(string); ok {
				if strings.Contains(e, "needs root or CAP_SYS_ADMIN") {
					return "usage unknown"
				}
				return "usage_error: " + e
			}
			if _, ok := m["range"]; ok {
				return "ok"
			}
		}
	}
	return "no row for the namespace: " + stdout
}

// portsScenario lists the sockets of the test's namespace and of another,
// entered.
func portsScenario(t *testing.T, caps []string) string {
	port := listener(t)
	code, stdout, stderr := capsRun(t, caps, nil, "ports", "-o", "json", "--netns", "/proc/self/ns/net,"+namedNetns(t))
	switch {
	case code == 3 && strings.Contains(stderr, "needs root or CAP_SYS_ADMIN"):
		return "netns denied"
	case code != 0:
		return verdict(code, stderr)
	}
	for _, s := range jsonLines(t, stdout) {
		if s["local_port"] == float64(port) && s["state"] == "LISTEN" {
			if heldBy(s["holders"], os.Getpid()) {
				return "ok"
			}
			return "no holder"
		}
	}
	return "no socket: " + stdout
}

func whoScenario(t *testing.T, caps []string) string {
	port := listener(t)
	code, stdout, stderr := capsRun(t, caps, nil, "who", strconv.Itoa(port), "-o", "json", "--netns", "/proc/self/ns/net,"+namedNetns(t))
	switch {
	case code == 3 && strings.Contains(stderr, "needs root or CAP_SYS_ADMIN"):
		return "netns denied"
	case code != 0:
		return verdict(code, stderr)
	}
	who := jsonLines(t, stdout)
	if len(who) != 1 || who[0]["held"] != true {
		return "not held: " + stdout
	}
	if heldBy(who[0]["holders"], os.Getpid()) {
		return "ok"
	}
	return "no holder"
}

func whoWaitScenario(t *testing.T, caps []string) string {
	port := 20000 + (os.Getpid()+1)%20000
	var l net.Listener
	code, stdout, stderr := capsRun(t, caps, func() {
		l, _ = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	}, "who", strconv.Itoa(port), "--wait", "-d", "5s", "-o", "json")
	if l != nil {
		defer l.Close()
	}
	if code != 0 {
		return verdict(code, stderr)
	}
	for _, ev := range jsonLines(t, stdout) {
		if ev["event"] == "bind" && ev["pid"] == float64(os.Getpid()) {
			if _, ok := ev["exe"]; !ok {
				return "no exe"
			}
			return "ok"
		}
	}
	return "no bind: " + stdout
}

// scenarios are the README table's commands, by the name it gives them.
var scenarios = map[string]scenario{
	"porttrace":            streamScenario,
	"porttrace churn":      churnScenario,
	"porttrace ports":      portsScenario,
	"porttrace who":        whoScenario,
	"porttrace who --wait": whoWaitScenario,
}

// without is what a command does with one of the capabilities it uses
// left out, as the README says under its table.
var without = map[string]map[string]string{
	"porttrace":            {"sys_ptrace": "no exe", "net_admin": "no end watch"},
	"porttrace churn":      {"sys_admin": "usage unknown", "sys_ptrace": "netns unreadable", "net_admin": "no end watch"},
	"porttrace ports":      {"sys_admin": "netns denied", "sys_ptrace": "no holder"},
	"porttrace who":        {"sys_admin": "netns denied", "sys_ptrace": "no holder"},
	"porttrace who --wait": {"sys_ptrace": "no exe"},
}

// Each command runs as root with only the capabilities the README names
// for it, and in full: nothing it is said to need is spare (without one
// it is denied) and nothing it uses is left unsaid (without one, what it
// loses is the README's word for it).
func TestLeastPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run porttrace with fewer capabilities")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) runs porttrace with fewer capabilities: ", err)
	}
	rows := readmePrivileges(t)
	for _, row := range rows {
		t.Run(row.command, func(t *testing.T) {
			run := scenarios[row.command]
			if run == nil {
				t.Fatalf("no scenario for the README's %q", row.command)
			}
			all := slices.Concat(row.needs, row.uses)
			if got := run(t, all); got != "ok" {
				t.Fatalf("with %v: %s, want ok", all, got)
			}
			for _, c := range all {
				want := "denied"
				if !slices.Contains(row.needs, c) {
					if want = without[row.command][c]; want == "" {
						t.Errorf("the README says %s uses CAP_%s, and nothing here says what it does without", row.command, strings.ToUpper(c))
						continue
					}
				}
				// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON,
				// as on kernels before 5.8 that know only it.
				less := slices.DeleteFunc(slices.Clone(all), func(x string) bool {
					return x == c || (x == "sys_admin" && slices.Contains(row.needs, c))
				})
				if got := run(t, less); got != want {
					t.Errorf("without CAP_%s: %s, want %s", strings.ToUpper(c), got, want)
				}
			}
			for c := range without[row.command] {
				if !slices.Contains(row.uses, c) {
					t.Errorf("the README leaves out that %s uses CAP_%s", row.command, strings.ToUpper(c))
				}
			}
		})
	}
	for name := range scenarios {
		if !slices.ContainsFunc(rows, func(r privRow) bool { return r.command == name }) {
			t.Errorf("the README's Privileges table has no row for %s", name)
		}
	}
}
