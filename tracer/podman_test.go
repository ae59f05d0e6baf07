package tracer_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/ports"
	"github.com/porttrace/porttrace/tracer/stream"
)

// listenerSource is the program the test's container runs: it listens on
// its argument and says so, then waits to be stopped.
const listenerSource = `package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Println("err", err)
		os.Exit(1)
	}
	fmt.Println("ok", l.Addr())
	time.Sleep(time.Hour)
}
`

// podman runs podman with args, failing the test on an error.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// podmanImage builds an image FROM scratch that holds a static listener,
// offline (no registry), and removes it at the end.
func podmanImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"main.go":       listenerSource,
		"go.mod":        "module listener\n\ngo 1.22\n",
		"Containerfile": "FROM scratch\nCOPY listener /listener\nENTRYPOINT [\"/listener\"]\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", "listener", ".")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the listener: %v\n%s", err, out)
	}
	image := fmt.Sprintf("localhost/porttrace-test-listener:%d", time.Now().UnixNano())
	podman(t, "build", "-q", "-t", image, dir)
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", image).Run() })
	return image
}

// podmanAPI serves podman's Docker-compatible API on a socket of the
// test's, for as long as the test runs.
func podmanAPI(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	svc := exec.Command("podman", "system", "service", "--time=0", "unix://"+sock)
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Process.Kill(); svc.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("podman system service made no socket in 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A container that podman (Debian's) runs is named in the stream and by
// who: its runtime and full id from its cgroup, its name and image from
// podman's API.
func TestPodmanContainerNamed(t *testing.T) {
	tracer.NeedRoot(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is not installed (apt-get install podman runc): the container tests need it")
	}
	image := podmanImage(t)
	sock := podmanAPI(t)
	tr, err := tracer.New(tracer.Options{Backend: tracer.Backend(t), Events: tracer.KindsOf(event.KindListen)})
	tracer.SkipUnsupported(t, tracer.Backend(t), err)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	name := fmt.Sprintf("porttrace-test-%d", time.Now().UnixNano())
	// runc and explicit limits: crun and podman's default limits fail on
	// some hosts (a cgroup v1/v2 hybrid, a low hard RLIMIT_NOFILE).
	id := podman(t, "run", "-d", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"--network", "none", "--name", name, image, "127.0.0.1:10120")
	t.Cleanup(func() { exec.Command("podman", "rm", "-f", "-t", "0", name).Run() })
	logs := exec.Command("podman", "logs", "-f", name)
	out, _ := logs.StdoutPipe()
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	defer logs.Process.Kill()
	if line, err := bufio.NewReader(out).ReadString('\n'); !strings.HasPrefix(line, "ok ") {
		t.Fatalf("the container's listener: %q %v", line, err)
	}

	names := workload.NewResolver(sock)
	defer names.Close()
	if !names.Active() {
		t.Fatalf("podman's API: %s", names.Source)
	}
	en := proc.NewEnricher()
	en.NameContainers(names)
	var ev event.Event
	for {
		done := make(chan error, 1)
		go func() { done <- tr.Read(&ev) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no listen event from the container in 10s")
		}
		if ev.Local.Port() == 10120 {
			break
		}
	}
	en.Enrich(&ev)
	if ev.Workload.Runtime != "podman" || ev.Workload.ContainerID != id {
		t.Errorf("runtime %q id %q, want podman %s (cgroup %s)", ev.Workload.Runtime, ev.Workload.ContainerID, id, ev.Cgroup)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, ok := names.WaitOf(ctx, ev.Workload); !ok || n.Container != name || n.Image != strings.TrimPrefix(image, "localhost/") && n.Image != image {
		t.Errorf("names %+v %t, want container %s image %s", n, ok, name, image)
	}

	pid := podman(t, "inspect", "-f", "{{.State.Pid}}", name)
	cfg := ports.DefaultWhoConfig()
	cfg.Netns = []string{"/proc/" + pid + "/ns/net"}
	cfg.RuntimeSockets = []string{sock}
	if err := cfg.ParseTarget("10120"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var whoOut, whoErr strings.Builder
	if err := ports.RunWho(context.Background(), cfg, &whoOut, &whoErr); err != nil {
		t.Fatal(err)
	}
	if want := "container " + name; !strings.Contains(whoOut.String(), want) {
		t.Errorf("who said:\n%s\nwant it to contain %q", whoOut.String(), want)
	}
	if want := "the Docker Engine API (podman) at " + sock; !strings.Contains(whoErr.String(), want) {
		t.Errorf("who's stderr:\n%s\nwant it to name the API: %q", whoErr.String(), want)
	}
}

// --container NAME scopes the stream to a container that podman starts
// after porttrace did: its listen is reported, named; another container's
// is not.
func TestPodmanContainerScope(t *testing.T) {
	tracer.NeedRoot(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is not installed (apt-get install podman runc): the container tests need it")
	}
	image := podmanImage(t)
	sock := podmanAPI(t)
	name := fmt.Sprintf("porttrace-scoped-%d", time.Now().UnixNano())
	cfg := stream.DefaultConfig()
	cfg.Output = "json"
	cfg.Workloads.Containers = []string{name}
	cfg.RuntimeSockets = []string{sock}
	cfg.Events = tracer.KindsOf(event.KindListen)
	cfg.Backend = tracer.Backend(t)
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &tracer.SyncBuilder{}, &tracer.SyncBuilder{}
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, cfg, out, errOut) }()
	waitText(t, errOut, "nothing running matches --container "+name+" yet", done, cfg.Backend)

	run := func(name, addr string) {
		podman(t, "run", "-d", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
			"--network", "none", "--name", name, image, addr)
		t.Cleanup(func() { exec.Command("podman", "rm", "-f", "-t", "0", name).Run() })
	}
	run(name+"-other", "127.0.0.1:10131")
	run(name, "127.0.0.1:10130")
	waitText(t, out, `"local_port":10130`, done, cfg.Backend)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), `"local_port":10131`) {
		t.Errorf("the other container's listen is in scope:\n%s", out.String())
	}
	if want := `"container_runtime":"podman"`; !strings.Contains(out.String(), want) {
		t.Errorf("want %s in:\n%s", want, out.String())
	}
}
