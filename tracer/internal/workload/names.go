package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Names are what a container runtime's API says of a container: its name,
// and its pod's name and Kubernetes namespace where it is in a pod.
type Names struct {
	Container string
	Pod       string
	Namespace string // the pod's Kubernetes namespace
	Image     string
}

// DockerSockets are where the Docker Engine API is served, by docker and
// by podman's compatible service (podman.socket), in the order tried.
var DockerSockets = []string{"/var/run/docker.sock", "/run/podman/podman.sock"}

// runtimeAPI is one container runtime's API, as the resolver uses it.
type runtimeAPI interface {
	// inspect gives container id's names; errNoSuchContainer when the
	// runtime does not know it.
	inspect(ctx context.Context, id string) (Names, error)
	// kind names the API for messages: "the Docker Engine API".
	kind() string
}

// dialers are the APIs a socket may serve, tried in turn: each returns an
// API only when the socket answers as that API.
var dialers = []func(ctx context.Context, socket string) (runtimeAPI, error){dialDocker}

// maxNames bounds the cache of names; past it, it starts over.
const maxNames = 4096

// askTimeout bounds one question to the runtime.
const askTimeout = 2 * time.Second

// Resolver gives the names of containers by id from a runtime's API, off
// the event path: Names answers from a cache at once and, for an id it
// has not asked about, asks in the background, so an event never waits
// for a runtime (the next event of that container has its names).
type Resolver struct {
	// Source says which API answers, or why none does, for one line on
	// stderr.
	Source string

	socket string
	api    runtimeAPI

	told bool // Announce has spoken

	mu      sync.Mutex
	names   map[string]Names
	unknown map[string]bool          // ids the runtime said it does not know
	asked   map[string]chan struct{} // closed when the answer is in names
	stopped bool
	wg      sync.WaitGroup
}

// NewResolver finds a runtime API among sockets (DockerSockets when none
// are given): the first whose socket answers.
func NewResolver(sockets ...string) *Resolver {
	if len(sockets) == 0 {
		sockets = DockerSockets
	}
	r := &Resolver{names: map[string]Names{}, unknown: map[string]bool{}, asked: map[string]chan struct{}{}}
	var why []string
	for _, s := range sockets {
		if _, err := os.Stat(s); err != nil {
			why = append(why, s+": none")
			continue
		}
		var errs []string
		for _, dial := range dialers {
			ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
			api, err := dial(ctx, s)
			cancel()
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			r.socket, r.api = s, api
			r.Source = "container names from " + api.kind() + " at " + s
			return r
		}
		why = append(why, fmt.Sprintf("%s: %s", s, strings.Join(errs, "; ")))
	}
	r.Source = "no container runtime API to name containers (" + strings.Join(why, "; ") + "): ids only"
	return r
}

// Announce says on w, once, which API names containers, or why none
// does: at once when one does; else when the first container is seen
// (sawContainer), since a host without containers needs no names.
func (r *Resolver) Announce(w io.Writer, cmd string, sawContainer bool) {
	if r == nil || r.told || (!r.Active() && !sawContainer) {
		return
	}
	r.told = true
	fmt.Fprintf(w, "%s: %s\n", cmd, r.Source)
}

// Active reports whether a runtime API answers.
func (r *Resolver) Active() bool { return r != nil && r.api != nil }

// Names gives what is known of container id now, and asks the runtime in
// the background when it has not yet.
func (r *Resolver) Names(id string) (Names, bool) {
	if !r.Active() || id == "" {
		return Names{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.names[id]; ok {
		return n, true
	}
	r.ask(id)
	return Names{}, false
}

// Wait gives container id's names, asking the runtime and waiting for its
// answer until ctx ends: for views that show a snapshot, not a stream.
func (r *Resolver) Wait(ctx context.Context, id string) (Names, bool) {
	if !r.Active() || id == "" {
		return Names{}, false
	}
	r.mu.Lock()
	if n, ok := r.names[id]; ok {
		r.mu.Unlock()
		return n, true
	}
	done := r.ask(id)
	r.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return Names{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.names[id]
	return n, ok
}

// ask starts one question about id, unless one is under way; r.mu is held.
func (r *Resolver) ask(id string) chan struct{} {
	if done, ok := r.asked[id]; ok {
		return done
	}
	done := make(chan struct{})
	if r.stopped {
		close(done)
		return done
	}
	r.asked[id] = done
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		n, err := r.api.inspect(ctx, id)
		cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		if err == nil {
			if len(r.names) >= maxNames {
				clear(r.names)
			}
			r.names[id] = n
		}
		// A container the runtime does not know (another runtime's, or
		// gone) is not asked about again until the cache starts over.
		switch {
		case errors.Is(err, errNoSuchContainer):
			if len(r.unknown) >= maxNames {
				clear(r.unknown)
			}
			r.unknown[id] = true
		case err != nil:
			delete(r.asked, id)
		}
		if len(r.asked) >= maxNames {
			clear(r.asked)
		}
		close(done)
	}()
	return done
}

// Unknown reports whether the runtime said it has no container id (it
// belongs to another runtime, or is gone).
func (r *Resolver) Unknown(id string) bool {
	if !r.Active() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unknown[id]
}

// Close waits for the questions under way.
func (r *Resolver) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}

// docker is the Docker Engine API (docker, podman's compatible service).
type docker struct{ c *http.Client }

func (docker) kind() string { return "the Docker Engine API" }

// dialDocker returns the Docker Engine API at socket, if it answers a ping.
func dialDocker(ctx context.Context, socket string) (runtimeAPI, error) {
	c := dockerClient(socket)
	if err := ping(ctx, c); err != nil {
		return nil, err
	}
	return docker{c}, nil
}

func (d docker) inspect(ctx context.Context, id string) (Names, error) { return inspect(ctx, d.c, id) }

// dockerClient talks HTTP over the unix socket at path.
func dockerClient(path string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns: 2,
		},
		Timeout: askTimeout,
	}
}

// apiVersion is the Docker Engine API version asked for: docker 20.10 and
// podman 3 serve it.
const apiVersion = "v1.41"

func ping(ctx context.Context, c *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://runtime/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: %s", resp.Status)
	}
	return nil
}

var errNoSuchContainer = errors.New("no such container")

// inspect asks the Docker Engine API about container id. Kubernetes puts
// the pod's name and namespace, and the container's name in its pod, in
// the container's labels (docker through cri-dockerd).
func inspect(ctx context.Context, c *http.Client, id string) (Names, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://runtime/"+apiVersion+"/containers/"+id+"/json", nil)
	if err != nil {
		return Names{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Names{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Names{}, errNoSuchContainer
	default:
		return Names{}, fmt.Errorf("inspecting container %s: %s", id, resp.Status)
	}
	var body struct {
		Name   string
		Config struct {
			Image  string
			Labels map[string]string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Names{}, fmt.Errorf("inspecting container %s: %w", id, err)
	}
	return namesOf(body.Name, body.Config.Image, body.Config.Labels), nil
}

// namesOf is a container's names from its inspection: in a pod, the
// kubelet's labels name the container within it.
func namesOf(name, image string, labels map[string]string) Names {
	n := Names{Container: strings.TrimPrefix(name, "/"), Image: image}
	if pod := labels["io.kubernetes.pod.name"]; pod != "" {
		n.Pod, n.Namespace = pod, labels["io.kubernetes.pod.namespace"]
		if c := labels["io.kubernetes.container.name"]; c != "" {
			n.Container = c
		}
	}
	return n
}
