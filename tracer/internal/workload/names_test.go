package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dockerAPI serves the two calls the resolver makes, as docker's Engine
// API answers them, from containers by id; it counts inspections.
func dockerAPI(t *testing.T, containers map[string]any, inspected *atomic.Int32) string {
	t.Helper()
	return engineAPI(t, "docker.sock", nil, containers, inspected)
}

// podmanAPI is dockerAPI as podman's compatible service answers.
func podmanAPI(t *testing.T, containers map[string]any, inspected *atomic.Int32) string {
	t.Helper()
	return engineAPI(t, "podman.sock", http.Header{"Libpod-Api-Version": {"4.3.1"}}, containers, inspected)
}

func engineAPI(t *testing.T, name string, header http.Header, containers map[string]any, inspected *atomic.Int32) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), name)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Write([]byte("OK"))
	})
	mux.HandleFunc("GET /v1.41/containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		inspected.Add(1)
		c, ok := containers[r.PathValue("id")]
		if !ok {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(c)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestResolverNames(t *testing.T) {
	plain, inPod, gone := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	var inspected atomic.Int32
	sock := dockerAPI(t, map[string]any{
		plain: map[string]any{"Name": "/redis", "Config": map[string]any{"Image": "docker.io/library/redis:7"}},
		inPod: map[string]any{"Name": "/k8s_api_checkout-7d9f_shop_6d0c_0", "Config": map[string]any{"Image": "shop/checkout:1.4",
			"Labels": map[string]string{"io.kubernetes.pod.name": "checkout-7d9f", "io.kubernetes.pod.namespace": "shop", "io.kubernetes.container.name": "api"}}},
	}, &inspected)
	r := NewResolver(filepath.Join(t.TempDir(), "none.sock"), sock)
	defer r.Close()
	if !r.Active() || !strings.Contains(r.Source, sock) {
		t.Fatalf("resolver not on %s: %s", sock, r.Source)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		id   string
		want Names
		ok   bool
	}{
		{plain, Names{Container: "redis", Image: "docker.io/library/redis:7"}, true},
		{inPod, Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop", Image: "shop/checkout:1.4"}, true},
		{gone, Names{}, false},
	} {
		if n, ok := r.WaitOf(ctx, Identity{ContainerID: tc.id}); n != tc.want || ok != tc.ok {
			t.Errorf("Wait(%s…) = %+v %t, want %+v %t", tc.id[:4], n, ok, tc.want, tc.ok)
		}
	}
	// Answers are kept: no question is asked twice, a container the
	// runtime does not know included.
	before := inspected.Load()
	if n, ok := r.NamesOf(Identity{ContainerID: plain}); !ok || n.Container != "redis" {
		t.Errorf("Names after Wait: %+v %t", n, ok)
	}
	r.WaitOf(ctx, Identity{ContainerID: gone})
	if got := inspected.Load(); got != before {
		t.Errorf("%d more inspections for answers already had", got-before)
	}
}

// Names never waits: the first call for an id answers nothing and asks in
// the background; a later one has the answer.
func TestResolverNamesDoesNotWait(t *testing.T) {
	id := strings.Repeat("d", 64)
	var inspected atomic.Int32
	sock := dockerAPI(t, map[string]any{id: map[string]any{"Name": "/web"}}, &inspected)
	r := NewResolver(sock)
	defer r.Close()
	if _, ok := r.NamesOf(Identity{ContainerID: id}); ok {
		t.Fatal("Names answered before asking")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, ok := r.NamesOf(Identity{ContainerID: id}); ok {
			if n.Container != "web" {
				t.Errorf("got %+v", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without an API, the resolver says why, once, and only once a container
// is seen; with one, it says which at once.
func TestResolverAnnounce(t *testing.T) {
	none := NewResolver(filepath.Join(t.TempDir(), "none.sock"))
	var b strings.Builder
	none.Announce(&b, "porttrace", false)
	if b.Len() != 0 {
		t.Errorf("said %q before any container", b.String())
	}
	none.Announce(&b, "porttrace", true)
	none.Announce(&b, "porttrace", true)
	if got := b.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "no container runtime API") || !strings.Contains(got, "none.sock: none") {
		t.Errorf("said %q", got)
	}
	var inspected atomic.Int32
	r := NewResolver(dockerAPI(t, nil, &inspected))
	b.Reset()
	r.Announce(&b, "porttrace", false)
	if !strings.Contains(b.String(), "container names from the Docker Engine API at ") {
		t.Errorf("said %q", b.String())
	}
}

// namedAPI names every container after its id.
type namedAPI struct{}

func (namedAPI) inspect(_ context.Context, id string) (Names, error) {
	return Names{Container: "c-" + id[:4]}, nil
}
func (namedAPI) kind() string    { return "a test API" }
func (namedAPI) runtime() string { return Docker }
func (namedAPI) close()          {}

// BenchmarkResolverNamesOf is what the stream's workers ask for each event
// of a container, all at once, once its names are in: run with -cpu 1,2,4
// to see whether they wait for each other.
func BenchmarkResolverNamesOf(b *testing.B) {
	r := &Resolver{apis: []endpoint{{"test.sock", namedAPI{}}}, asked: map[string]chan struct{}{}}
	defer r.Close()
	ids := make([]Identity, 64)
	for i := range ids {
		ids[i] = Identity{Runtime: Docker, ContainerID: fmt.Sprintf("%064x", i)}
		if _, ok := r.WaitOf(context.Background(), ids[i]); !ok {
			b.Fatalf("no names for %s", ids[i].ContainerID)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := r.NamesOf(ids[i%len(ids)]); !ok {
				b.Fatal("names lost")
			}
			i++
		}
	})
}
