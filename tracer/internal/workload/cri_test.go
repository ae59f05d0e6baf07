package workload

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI serves the two RuntimeService calls the resolver makes, as a
// runtime named name answers them, from containers by id; it counts
// status questions.
type fakeCRI struct {
	cri.UnimplementedRuntimeServiceServer
	name       string
	containers map[string]*cri.ContainerStatus
	asked      atomic.Int32
}

func (f *fakeCRI) Version(context.Context, *cri.VersionRequest) (*cri.VersionResponse, error) {
	return &cri.VersionResponse{Version: "0.1.0", RuntimeName: f.name, RuntimeVersion: "1.0.0", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, req *cri.ContainerStatusRequest) (*cri.ContainerStatusResponse, error) {
	f.asked.Add(1)
	s, ok := f.containers[req.ContainerId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find container %q: not found", req.ContainerId)
	}
	return &cri.ContainerStatusResponse{Status: s}, nil
}

// serveCRI serves f on a unix socket in a temporary directory.
func serveCRI(t *testing.T, f *fakeCRI) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cri.RegisterRuntimeServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

// podContainer is a container's CRI status as the kubelet makes it: its
// name in the pod in its metadata, the pod's in its labels.
func podContainer(id, name, pod, ns, image string) *cri.ContainerStatus {
	return &cri.ContainerStatus{
		Id:       id,
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: image},
		ImageRef: "sha256:" + strings.Repeat("e", 64),
		Labels: map[string]string{
			"io.kubernetes.pod.name":       pod,
			"io.kubernetes.pod.namespace":  ns,
			"io.kubernetes.container.name": name,
			"io.kubernetes.pod.uid":        "6d0c2d5e-6a42-4d6b-9f55-2b7c4f5e8a11",
		},
	}
}

func TestResolverCRINames(t *testing.T) {
	inPod, bare, noImage, gone := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64), strings.Repeat("4", 64)
	f := &fakeCRI{name: "containerd", containers: map[string]*cri.ContainerStatus{
		inPod: podContainer(inPod, "api", "checkout-7d9f", "shop", "registry.example/shop/checkout:1.4"),
		// A container made through the CRI API without the kubelet
		// (crictl) has no pod labels.
		bare:    {Id: bare, Metadata: &cri.ContainerMetadata{Name: "debug"}, Image: &cri.ImageSpec{Image: "busybox:1.36"}},
		noImage: {Id: noImage, Metadata: &cri.ContainerMetadata{Name: "side"}, ImageRef: "sha256:" + strings.Repeat("f", 64)},
	}}
	sock := serveCRI(t, f)
	r := NewResolver(sock)
	defer r.Close()
	if want := "container names from the CRI API (containerd) at " + sock; r.Source != want {
		t.Fatalf("Source = %q, want %q", r.Source, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		id   string
		want Names
		ok   bool
	}{
		{inPod, Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop", Image: "registry.example/shop/checkout:1.4"}, true},
		{bare, Names{Container: "debug", Image: "busybox:1.36"}, true},
		{noImage, Names{Container: "side", Image: "sha256:" + strings.Repeat("f", 64)}, true},
		{gone, Names{}, false},
	} {
		if n, ok := r.WaitOf(ctx, Identity{Runtime: Containerd, ContainerID: tc.id}); n != tc.want || ok != tc.ok {
			t.Errorf("WaitOf(%s…) = %+v %t, want %+v %t", tc.id[:4], n, ok, tc.want, tc.ok)
		}
	}
	if !r.Unknown(gone) || r.Unknown(inPod) {
		t.Errorf("Unknown: %s… %t, %s… %t", gone[:4], r.Unknown(gone), inPod[:4], r.Unknown(inPod))
	}
	before := f.asked.Load()
	r.WaitOf(ctx, Identity{ContainerID: gone})
	r.NamesOf(Identity{ContainerID: inPod})
	if got := f.asked.Load(); got != before {
		t.Errorf("%d more questions for answers already had", got-before)
	}
}

// A runtime that fails (not "no such container") is asked again later,
// and its container is not taken for unknown.
func TestResolverCRIFailure(t *testing.T) {
	id := strings.Repeat("5", 64)
	f := &failingCRI{fakeCRI: fakeCRI{name: "cri-o"}}
	sock := filepath.Join(t.TempDir(), "crio.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cri.RegisterRuntimeServiceServer(srv, f)
	go srv.Serve(l)
	defer srv.Stop()
	r := NewResolver(sock)
	defer r.Close()
	if !strings.Contains(r.Source, "the CRI API (cri-o)") {
		t.Fatalf("Source = %q", r.Source)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		if n, ok := r.WaitOf(ctx, Identity{Runtime: CRIO, ContainerID: id}); ok {
			t.Errorf("names from a failing runtime: %+v", n)
		}
	}
	if r.Unknown(id) {
		t.Error("a failing runtime's container taken for unknown")
	}
	if got := f.asked.Load(); got != 2 {
		t.Errorf("asked %d times, want 2 (a failure is not kept)", got)
	}
}

type failingCRI struct{ fakeCRI }

func (f *failingCRI) ContainerStatus(context.Context, *cri.ContainerStatusRequest) (*cri.ContainerStatusResponse, error) {
	f.asked.Add(1)
	return nil, status.Error(codes.Unavailable, "runtime is restarting")
}

// Every API that answers is kept; a container whose runtime its cgroup
// names is asked of that runtime's API alone, one whose runtime is not
// known of each in turn.
func TestResolverRoutes(t *testing.T) {
	k8s, ctr, plain := strings.Repeat("6", 64), strings.Repeat("7", 64), strings.Repeat("8", 64)
	f := &fakeCRI{name: "containerd", containers: map[string]*cri.ContainerStatus{
		k8s: podContainer(k8s, "api", "checkout-7d9f", "shop", "shop/checkout:1.4"),
	}}
	criSock := serveCRI(t, f)
	var inspected atomic.Int32
	dockerSock := dockerAPI(t, map[string]any{
		plain: map[string]any{"Name": "/redis", "Config": map[string]any{"Image": "redis:7"}},
		ctr:   map[string]any{"Name": "/ctr", "Config": map[string]any{"Image": "ctr:1"}},
	}, &inspected)
	none := filepath.Join(t.TempDir(), "none.sock")
	r := NewResolver(criSock, none, dockerSock)
	defer r.Close()
	want := "container names from the CRI API (containerd) at " + criSock + ", the Docker Engine API at " + dockerSock
	if r.Source != want {
		t.Fatalf("Source = %q, want %q", r.Source, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// The runtime known: only its API is asked.
	if n, ok := r.WaitOf(ctx, Identity{Runtime: Docker, ContainerID: plain}); !ok || n.Container != "redis" {
		t.Errorf("docker's container: %+v %t", n, ok)
	}
	if got := f.asked.Load(); got != 0 {
		t.Errorf("the CRI API asked %d times about docker's container", got)
	}
	// containerd's CRI does not know ctr: the Docker API, which does, is
	// not asked, since the container is containerd's.
	if n, ok := r.WaitOf(ctx, Identity{Runtime: Containerd, ContainerID: ctr}); ok || !r.Unknown(ctr) {
		t.Errorf("containerd's unknown container: %+v %t, unknown %t", n, ok, r.Unknown(ctr))
	}
	if got := inspected.Load(); got != 1 {
		t.Errorf("the Docker API asked %d times, want 1", got)
	}
	// The runtime not known (the kubelet's cgroupfs layout): each API in
	// turn, until one knows the container.
	inspected.Store(0)
	if n, ok := r.WaitOf(ctx, Identity{ContainerID: k8s}); !ok || n.Pod != "checkout-7d9f" {
		t.Errorf("kubelet's container: %+v %t", n, ok)
	}
	if got := inspected.Load(); got != 0 {
		t.Errorf("the Docker API asked %d times after the CRI API knew the container", got)
	}
	unknownRuntime := strings.Repeat("9", 64)
	if n, ok := r.WaitOf(ctx, Identity{ContainerID: unknownRuntime}); ok || !r.Unknown(unknownRuntime) {
		t.Errorf("a container no runtime knows: %+v %t, unknown %t", n, ok, r.Unknown(unknownRuntime))
	}
	if got := inspected.Load(); got != 1 {
		t.Errorf("the Docker API asked %d times about a container the CRI API does not know, want 1", got)
	}
	// A runtime without an API of its own (podman here): each API in turn.
	if n, ok := r.WaitOf(ctx, Identity{Runtime: Podman, ContainerID: plain}); !ok || n.Container != "redis" {
		t.Errorf("podman's container with no podman API: %+v %t", n, ok)
	}
}

// On a podman host, podman's service says it is podman, and is asked
// about podman's containers, not docker's.
func TestResolverPodmanAPI(t *testing.T) {
	id := strings.Repeat("a", 64)
	var dockerAsked, podmanAsked atomic.Int32
	dockerSock := dockerAPI(t, map[string]any{id: map[string]any{"Name": "/in-docker"}}, &dockerAsked)
	podmanSock := podmanAPI(t, map[string]any{id: map[string]any{"Name": "/in-podman"}}, &podmanAsked)
	r := NewResolver(dockerSock, podmanSock)
	defer r.Close()
	if !strings.Contains(r.Source, "the Docker Engine API (podman) at "+podmanSock) {
		t.Fatalf("Source = %q", r.Source)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, ok := r.WaitOf(ctx, Identity{Runtime: Podman, ContainerID: id}); !ok || n.Container != "in-podman" {
		t.Errorf("podman's container: %+v %t", n, ok)
	}
	if dockerAsked.Load() != 0 || podmanAsked.Load() != 1 {
		t.Errorf("asked docker %d times, podman %d", dockerAsked.Load(), podmanAsked.Load())
	}
}
