package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestImage builds the image from a freshly built static binary and runs
// each container of the DaemonSet in podman as the DaemonSet runs it: the
// node's pid and network namespaces, a cgroup namespace of its own (as
// Kubernetes gives one on cgroup v2), every capability dropped but the
// container's, its mounts, its seccomp profile. The event stream must
// report a bind this test makes, with the process behind it; churn must
// serve /metrics with the usage of a network namespace this test makes.
func TestImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs porttrace's image in podman (make test runs it as root)")
	}
	for _, tool := range []string{"podman", "runc", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the image test needs podman and runc (apt-get install podman runc; .ci/run installs them)", tool)
		}
	}
	ds, _ := daemonSet(t)
	image := buildImage(t)

	t.Run("events", func(t *testing.T) {
		ln, port := freePort(t)
		ln.Close() // the port traced: this test binds it again below
		metrics := freeMetricsPort(t)
		c := container(t, ds, "events")
		args := withMetrics(t, c.Args, metrics)
		stdout, stderr := runContainer(t, ds, c, image, append(args, "-p", strconv.Itoa(port), "-d", "40s"))
		waitFor(t, stderr, "tracing with the", 30*time.Second)

		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ev := waitEvent(t, stdout, stderr, func(e streamEvent) bool {
			return e.Event == "bind" && e.Pid == os.Getpid() && e.LocalPort == port
		})
		exe, _ := os.Executable()
		checks := []struct {
			what      string
			got, want any
		}{
			{"result", ev.Result, "ok"},
			{"local_addr", ev.LocalAddr, "127.0.0.1"},
			{"exe (hostPID, CAP_SYS_PTRACE)", ev.Exe, exe},
			{"user (/etc/passwd)", ev.User, "root"},
			{"cgroup (/sys/fs/cgroup)", ev.Cgroup, ownCgroup(t)},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("bind event %s = %v, want %v", c.what, c.got, c.want)
			}
		}
		getMetrics(t, metrics, stderr, "porttrace_events_total{errno=\"\",event=\"bind\",result=\"ok\"}")
	})

	t.Run("churn", func(t *testing.T) {
		metrics := freeMetricsPort(t)
		c := container(t, ds, "churn")
		args := withMetrics(t, c.Args, metrics)
		for i := range args {
			if args[i] == "-i" && i+1 < len(args) {
				args[i+1] = "1s" // the test has no time for the DaemonSet's interval
			}
		}
		_, stderr := runContainer(t, ds, c, image, append(args, "-d", "40s"))
		waitFor(t, stderr, "counting with the", 30*time.Second)
		// A namespace that connects while churn counts: its usage needs
		// /proc/PID/ns/net (CAP_SYS_PTRACE) and setns (CAP_SYS_ADMIN).
		ino := connectingNetns(t)
		getMetrics(t, metrics, stderr, fmt.Sprintf("porttrace_ephemeral_range_size{netns=%q}", strconv.FormatUint(ino, 10)))
	})
}

// buildImage builds the static binary and the image of ../Containerfile
// from it under a tag of the test's own, removed at the end.
func buildImage(t *testing.T) string {
	dir := t.TempDir()
	start := time.Now()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "porttrace"), "../cmd/porttrace")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cf, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), cf, 0o644); err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("localhost/porttrace-test:%d", os.Getpid())
	podman(t, "build", "--layers=false", "-q", "-f", filepath.Join(dir, "Containerfile"), "-t", image, dir)
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", image).Run() })
	t.Logf("binary and image built in %v", time.Since(start).Round(time.Millisecond))
	return image
}

func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// podmanArgs is `podman run` for container c of the DaemonSet's pod.
func podmanArgs(t *testing.T, spec corev1.PodSpec, c corev1.Container, name string) []string {
	t.Helper()
	args := []string{"run", "--rm", "--name", name, "--runtime", "runc",
		// This machine's limits are not the node's: podman asks for them.
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		// Kubernetes gives each container a cgroup namespace on cgroup v2.
		"--cgroupns", "private"}
	if spec.HostPID {
		args = append(args, "--pid", "host")
	}
	if spec.HostNetwork {
		args = append(args, "--network", "host")
	} else {
		t.Fatal("the DaemonSet has no hostNetwork: this test reaches /metrics on the host")
	}
	sc := c.SecurityContext
	if sc.RunAsUser != nil {
		args = append(args, "--user", strconv.FormatInt(*sc.RunAsUser, 10))
	}
	if sc.Privileged != nil && *sc.Privileged {
		args = append(args, "--privileged")
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	switch sc.SeccompProfile.Type {
	case corev1.SeccompProfileTypeUnconfined:
		args = append(args, "--security-opt", "seccomp=unconfined")
	case corev1.SeccompProfileTypeRuntimeDefault:
	default:
		t.Fatalf("seccomp profile %q: this test runs Unconfined and RuntimeDefault", sc.SeccompProfile.Type)
	}
	for _, drop := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(string(drop)))
	}
	for _, add := range capabilities(c) {
		args = append(args, "--cap-add", add)
	}
	for _, m := range mounts(t, spec, c) {
		v := m.host + ":" + m.path
		if m.readOnly {
			v += ":ro"
		}
		args = append(args, "--volume", v)
	}
	return args
}

// runContainer runs c in the foreground, its stdout and stderr read as
// they come; the container is removed at the end.
func runContainer(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, image string, args []string) (*lines, *lines) {
	t.Helper()
	name := fmt.Sprintf("porttrace-test-%s-%d", c.Name, os.Getpid())
	cmdArgs := append(podmanArgs(t, ds.Spec.Template.Spec, c, name), image)
	cmd := exec.Command("podman", append(cmdArgs, args...)...)
	stdout, stderr := newLines(), newLines()
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go stdout.read(outPipe)
	go stderr.read(errPipe)
	t.Cleanup(func() {
		exec.Command("podman", "rm", "-f", "-t", "2", name).Run()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	return stdout, stderr
}

// withMetrics puts a free loopback port of the test's in --metrics, so
// that nothing on the machine's 9470 and 9471 is in the way.
func withMetrics(t *testing.T, args []string, port int) []string {
	t.Helper()
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == "--metrics" && i+1 < len(out) {
			out[i+1] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			return out
		}
	}
	t.Fatalf("args %q have no --metrics", args)
	return nil
}

func freePort(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l, l.Addr().(*net.TCPAddr).Port
}

func freeMetricsPort(t *testing.T) int {
	l, port := freePort(t)
	l.Close()
	return port
}

// ownCgroup is this process's cgroup v2 path, as the host sees it.
func ownCgroup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/self/cgroup:\n%s", b)
	return ""
}

// streamEvent is what this test reads of the event contract.
type streamEvent struct {
	Event     string `json:"event"`
	Result    string `json:"result"`
	Pid       int    `json:"pid"`
	User      string `json:"user"`
	Exe       string `json:"exe"`
	Cgroup    string `json:"cgroup"`
	LocalAddr string `json:"local_addr"`
	LocalPort int    `json:"local_port"`
}

func waitEvent(t *testing.T, stdout, stderr *lines, match func(streamEvent) bool) streamEvent {
	t.Helper()
	var found streamEvent
	ok := stdout.wait(20*time.Second, func(line string) bool {
		var e streamEvent
		if json.Unmarshal([]byte(line), &e) != nil {
			return false
		}
		found = e
		return match(e)
	})
	if !ok {
		t.Fatalf("no such event on the container's stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	return found
}

func waitFor(t *testing.T, l *lines, text string, d time.Duration) {
	t.Helper()
	if !l.wait(d, func(line string) bool { return strings.Contains(line, text) }) {
		t.Fatalf("the container never said %q:\n%s", text, l)
	}
}

// getMetrics polls /metrics until a sample of the series appears.
func getMetrics(t *testing.T, port int, stderr *lines, series string) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		resp, err := http.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
		for line := range strings.Lines(last) {
			if strings.HasPrefix(line, series+" ") {
				return
			}
		}
	}
	t.Fatalf("%s has no %s:\n%s\nstderr:\n%s", url, series, last, stderr)
}

// connectingNetns makes a network namespace whose thread connects to a
// listener in it every 100 ms until the test ends, and returns its inode.
func connectingNetns(t *testing.T) uint64 {
	t.Helper()
	ready := make(chan uint64)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The thread stays locked: it ends with the goroutine, never to
		// run another in this namespace.
		runtime.LockOSThread()
		ino, err := func() (uint64, error) {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return 0, fmt.Errorf("unshare: %w", err)
			}
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				return 0, fmt.Errorf("lo up: %w", err)
			}
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				return 0, err
			}
			return st.Ino, nil
		}()
		if err != nil {
			errc <- err
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			errc <- err
			return
		}
		defer l.Close()
		go func() {
			var accepted []net.Conn
			for {
				c, err := l.Accept()
				if err != nil {
					break
				}
				accepted = append(accepted, c)
			}
			for _, c := range accepted {
				c.Close()
			}
		}()
		ready <- ino
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var dialed []net.Conn
		defer func() {
			for _, c := range dialed {
				c.Close()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
					dialed = append(dialed, c)
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case ino := <-ready:
		return ino
	case err := <-errc:
		t.Fatalf("network namespace: %v", err)
	}
	return 0
}

// lines collects a stream's lines and lets a test wait for one.
type lines struct {
	mu    sync.Mutex
	cond  *sync.Cond
	all   []string
	ended bool
}

func newLines() *lines {
	l := &lines{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.cond.Broadcast()
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.ended = true
	l.cond.Broadcast()
	l.mu.Unlock()
}

// wait reports whether a line matching match came within d.
func (l *lines) wait(d time.Duration, match func(string) bool) bool {
	timer := time.AfterFunc(d, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(d)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; ; {
		for ; i < len(l.all); i++ {
			if match(l.all[i]) {
				return true
			}
		}
		if l.ended || !time.Now().Before(deadline) {
			return false
		}
		l.cond.Wait()
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	for _, s := range l.all {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.String()
}
