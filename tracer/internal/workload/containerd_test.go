package workload

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerd is a containerd of the test's own: its config, root, state
// and socket in a temporary directory, so that it touches nothing of the
// host's containerd.
type containerd struct {
	dir, sock string
	cmd       *exec.Cmd
}

// sandboxImage is the image the test's containerd runs pod sandboxes
// from: no registry is asked for it, the test imports it.
const sandboxImage = "porttrace.test/pause:1"

// startContainerd starts Debian's containerd (1.6, its cri plugin built
// in) as root, and stops it at the end of the test.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd's CRI API needs root")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Fatal("containerd is not installed (apt-get install containerd containernetworking-plugins): the CRI API tests need it")
	}
	// Short: a unix socket's path has room for 107 bytes.
	dir, err := os.MkdirTemp("", "porttrace-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	// Pods get a network namespace of their own, with a veth to the
	// host's: containerd's CRI (1.6) takes a pod's IP from its eth0, so a
	// loopback-only network fails RunPodSandbox ("failed to find network
	// info for sandbox").
	cni := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(cni, "10-ptp.conflist"), `{"cniVersion": "0.4.0", "name": "porttrace-ptp", "plugins": [{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "subnet": "10.255.77.0/24", "dataDir": "`+dir+`/ipam"}}]}`)
	write(t, filepath.Join(dir, "config.toml"), fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # A sandbox's oom_score_adj is -998; lowering it takes CAP_SYS_RESOURCE,
  # which a root in a container may lack (runc: "failed to update
  # /proc/self/oom_score_adj: Permission denied"): keep it at containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"), sandboxImage, cni))
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
		log.Close()
		if t.Failed() {
			if b, err := os.ReadFile(log.Name()); err == nil {
				t.Logf("containerd's log:\n%s", tail(b, 40))
			}
		}
		unmountBelow(dir)
		os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := os.Stat(c.sock); err == nil {
			return c
		}
		if c.cmd.ProcessState != nil || time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd made no socket in 15s:\n%s", tail(b, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The resolver finds containerd's CRI API, and hears from it that a
// container it does not have is unknown.
func TestContainerdCRI(t *testing.T) {
	c := startContainerd(t)
	r := NewResolver(c.sock)
	defer r.Close()
	if want := "container names from the CRI API (containerd) at " + c.sock; r.Source != want {
		t.Fatalf("Source = %q, want %q", r.Source, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := strings.Repeat("0", 64)
	if n, ok := r.WaitOf(ctx, Identity{Runtime: Containerd, ContainerID: id}); ok || !r.Unknown(id) {
		t.Errorf("a container containerd does not have: %+v %t, unknown %t", n, ok, r.Unknown(id))
	}

	t.Run("pod", func(t *testing.T) { testContainerdPod(t, c, r) })
}

// A container that containerd's CRI API runs in a pod, as the kubelet
// would ask for it, is named from its metadata and the kubelet's labels.
func testContainerdPod(t *testing.T, c *containerd, r *Resolver) {
	for _, p := range []string{"ptp", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Fatal("Debian's CNI plugins are not installed (apt-get install containernetworking-plugins): the pod test needs ptp, host-local and loopback")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.importImage(t, ctx)
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // after the pod's cleanup
	rt := cri.NewRuntimeServiceClient(conn)

	uid := fmt.Sprintf("6d0c2d5e-6a42-4d6b-9f55-%012x", time.Now().UnixNano()&(1<<48-1))
	// A cgroup parent of the test's own, removed at its end: runc makes
	// it in every hierarchy and nothing removes it (the kubelet would).
	parent := "/porttrace-test-pod" + uid
	t.Cleanup(func() { removeCgroups(t, parent) })
	labels := map[string]string{
		"io.kubernetes.pod.name":      "checkout-7d9f",
		"io.kubernetes.pod.namespace": "shop",
		"io.kubernetes.pod.uid":       uid,
	}
	logs := filepath.Join(c.dir, "pods")
	sandbox := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "checkout-7d9f", Uid: uid, Namespace: "shop"},
		Labels:       labels,
		LogDirectory: logs,
		Linux:        &cri.LinuxPodSandboxConfig{CgroupParent: parent},
	}
	pod, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sandbox})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		if _, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
			t.Errorf("RemovePodSandbox: %v", err)
		}
	})
	ctrLabels := map[string]string{"io.kubernetes.container.name": "api"}
	for k, v := range labels {
		ctrLabels[k] = v
	}
	created, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "api"},
			Image:    &cri.ImageSpec{Image: sandboxImage},
			Args:     []string{"127.0.0.1:10121"},
			Labels:   ctrLabels,
			LogPath:  "api.log",
		},
		SandboxConfig: sandbox,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	// Asked as a container of the kubelet's cgroupfs layout, which does
	// not name the runtime.
	want := Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop", Image: sandboxImage}
	if n, ok := r.WaitOf(ctx, Identity{PodUID: uid, ContainerID: created.ContainerId}); !ok || n != want {
		t.Errorf("containerd's container: %+v %t, want %+v", n, ok, want)
	}
	// The sandbox is no container to ContainerStatus.
	if n, ok := r.WaitOf(ctx, Identity{ContainerID: pod.PodSandboxId}); ok || !r.Unknown(pod.PodSandboxId) {
		t.Errorf("the pod's sandbox: %+v %t, unknown %t", n, ok, r.Unknown(pod.PodSandboxId))
	}
}

// importImage makes an image from a static program of the test's (it
// listens on its argument, when given one, and waits to be stopped) and
// imports it into the CRI's namespace, offline.
func (c *containerd) importImage(t *testing.T, ctx context.Context) {
	t.Helper()
	src := t.TempDir()
	write(t, filepath.Join(src, "go.mod"), "module pause\n\ngo 1.22\n")
	write(t, filepath.Join(src, "main.go"), pauseSource)
	bin := filepath.Join(src, "pause")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image's program: %v\n%s", err, out)
	}
	archive := filepath.Join(src, "image.tar")
	if err := ociArchive(archive, bin, sandboxImage); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.sock, "--namespace", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
}

const pauseSource = `package main

import (
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		if _, err := net.Listen("tcp", os.Args[1]); err != nil {
			os.Exit(1)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
`

// ociArchive writes an OCI image layout archive at path: one layer that
// holds program as /pause, its entrypoint, named name.
func ociArchive(path, program, name string) error {
	prog, err := os.ReadFile(program)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	lw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(prog)), Typeflag: tar.TypeReg})
	lw.Write(prog)
	if err := lw.Close(); err != nil {
		return err
	}
	blobs := map[string][]byte{}
	add := func(mediaType string, b []byte) map[string]any {
		d := digest(b)
		blobs[d] = b
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(b)}
	}
	layerDesc := add("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": add("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{layerDesc},
	})
	manifestDesc := add("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
	manifestDesc["platform"] = map[string]string{"architecture": "amd64", "os": "linux"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{manifestDesc}})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := tar.NewWriter(f)
	file := func(name string, b []byte) {
		w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		w.Write(b)
	}
	file("oci-layout", []byte(`{"imageLayoutVersion": "1.0.0"}`))
	file("index.json", index)
	for d, b := range blobs {
		file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unmountBelow unmounts what containerd left mounted under dir (a
// sandbox's shm, a snapshot), deepest first, so that it can be removed.
func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// removeCgroups removes cgroup p, and what is below it, from every
// hierarchy mounted under /sys/fs/cgroup (a v1/v2 hybrid has several).
func removeCgroups(t *testing.T, p string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		dir := filepath.Join(root, p)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				t.Errorf("removing cgroup: %v", err)
			}
		}
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
