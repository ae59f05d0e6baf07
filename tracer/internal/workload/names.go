package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// CRISockets are where containerd and CRI-O serve the Kubernetes CRI API.
var CRISockets = []string{"/run/containerd/containerd.sock", "/var/run/crio/crio.sock"}

// DockerSockets are where the Docker Engine API is served, by docker and
// by podman's compatible service (podman.socket).
var DockerSockets = []string{"/var/run/docker.sock", "/run/podman/podman.sock"}

// DefaultSockets are the sockets NewResolver tries when given none: every
// one that answers is kept, since a host may run several runtimes (a
// Kubernetes node with containerd and docker).
var DefaultSockets = append(append([]string(nil), CRISockets...), DockerSockets...)

// runtimeAPI is one container runtime's API, as the resolver uses it.
type runtimeAPI interface {
	// inspect gives container id's names; errNoSuchContainer when the
	// runtime does not know it.
	inspect(ctx context.Context, id string) (Names, error)
	// kind names the API for messages: "the Docker Engine API".
	kind() string
	// runtime is the runtime behind the API, as Identity.Runtime names
	// it: the containers it can name.
	runtime() string
	close()
}

// dialers are the APIs a socket may serve, tried in turn: each returns an
// API only when the socket answers as that API.
var dialers = []func(ctx context.Context, socket string) (runtimeAPI, error){dialCRI, dialDocker}

var errNoSuchContainer = errors.New("no such container")

// maxNames bounds the cache of names; past it, it starts over.
const maxNames = 4096

// askTimeout bounds one question to the runtime.
const askTimeout = 2 * time.Second

// endpoint is an API that answered, and its socket.
type endpoint struct {
	socket string
	api    runtimeAPI
}

// Resolver gives the names of containers by id from the runtimes' APIs,
// off the event path: NamesOf answers from a cache at once and, for an id
// it has not asked about, asks in the background, so an event never waits
// for a runtime (the next event of that container has its names).
type Resolver struct {
	// Source says which APIs answer, or why none does, for one line on
	// stderr.
	Source string

	apis []endpoint // in the order of the sockets

	told atomic.Bool // Announce has spoken

	// names and unknown are read on every event of a container, by the
	// stream's workers at once, without the lock; they are written under it.
	names   idCache // container id → Names
	unknown idCache // ids no runtime asked knows → true

	mu      sync.Mutex
	asked   map[string]chan struct{} // closed when the answer is in names
	stopped bool
	wg      sync.WaitGroup
}

// NewResolver finds the runtime APIs among sockets (DefaultSockets when
// none are given): each socket is tried as the CRI API, then as the
// Docker Engine API, and every one that answers is kept.
func NewResolver(sockets ...string) *Resolver {
	if len(sockets) == 0 {
		sockets = DefaultSockets
	}
	r := &Resolver{asked: map[string]chan struct{}{}}
	var why, using []string
	for _, s := range sockets {
		if _, err := os.Stat(s); err != nil {
			why = append(why, s+": none")
			continue
		}
		api, err := dial(s)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", s, err))
			continue
		}
		r.apis = append(r.apis, endpoint{s, api})
		using = append(using, api.kind()+" at "+s)
	}
	if len(r.apis) == 0 {
		r.Source = "no container runtime API to name containers (" + strings.Join(why, "; ") + "): ids only"
	} else {
		r.Source = "container names from " + strings.Join(using, ", ")
	}
	return r
}

// dial returns the first API that socket answers as.
func dial(socket string) (runtimeAPI, error) {
	var errs []string
	for _, d := range dialers {
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		api, err := d(ctx, socket)
		cancel()
		if err == nil {
			return api, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

// Announce says on w, once, which APIs name containers, or why none
// does: at once when one does; else when the first container is seen
// (sawContainer), since a host without containers needs no names.
func (r *Resolver) Announce(w io.Writer, cmd string, sawContainer bool) {
	if r == nil || r.told.Load() || (!r.Active() && !sawContainer) || r.told.Swap(true) {
		return
	}
	fmt.Fprintf(w, "%s: %s\n", cmd, r.Source)
}

// Active reports whether a runtime API answers.
func (r *Resolver) Active() bool { return r != nil && len(r.apis) > 0 }

// NamesOf gives what is known of container w now, and asks its runtime in
// the background when it has not yet: the API of w.Runtime where one
// answers, else each API in turn until one knows the container.
func (r *Resolver) NamesOf(w Identity) (Names, bool) {
	if !r.Active() || w.ContainerID == "" {
		return Names{}, false
	}
	if n, ok := r.names.load(w.ContainerID); ok {
		return n.(Names), true
	}
	if _, ok := r.unknown.load(w.ContainerID); ok {
		return Names{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.names.load(w.ContainerID); ok { // answered since
		return n.(Names), true
	}
	r.ask(w)
	return Names{}, false
}

// WaitOf gives container w's names, asking its runtime (as NamesOf does)
// and waiting for the answer until ctx ends: for views that show a
// snapshot, not a stream.
func (r *Resolver) WaitOf(ctx context.Context, w Identity) (Names, bool) {
	if !r.Active() || w.ContainerID == "" {
		return Names{}, false
	}
	r.mu.Lock()
	if n, ok := r.names.load(w.ContainerID); ok {
		r.mu.Unlock()
		return n.(Names), true
	}
	done := r.ask(w)
	r.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return Names{}, false
	}
	if n, ok := r.names.load(w.ContainerID); ok {
		return n.(Names), true
	}
	return Names{}, false
}

// idCache is a map of container ids read without a lock and written under
// the resolver's, which starts over once it holds maxNames ids.
type idCache struct {
	m sync.Map
	n int // ids held, counted under the lock
}

func (c *idCache) load(id string) (any, bool) { return c.m.Load(id) }

// store sets id to v, starting over first when full; r.mu is held.
func (c *idCache) store(id string, v any) {
	if c.n >= maxNames {
		c.m.Clear()
		c.n = 0
	}
	if _, had := c.m.Swap(id, v); !had {
		c.n++
	}
}

// ask starts one question about container w, unless one is under way;
// r.mu is held.
func (r *Resolver) ask(w Identity) chan struct{} {
	id := w.ContainerID
	if done, ok := r.asked[id]; ok {
		return done
	}
	done := make(chan struct{})
	if r.stopped {
		close(done)
		return done
	}
	r.asked[id] = done
	apis := r.route(w.Runtime)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		n, err := inspectEach(apis, id)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err == nil {
			r.names.store(id, n)
		}
		// A container no runtime asked knows (another runtime's, or
		// gone) is not asked about again until the cache starts over.
		switch {
		case errors.Is(err, errNoSuchContainer):
			r.unknown.store(id, true)
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

// route gives the APIs to ask about a container of runtime rt: those of
// that runtime, or every one when none is (or rt is not known: the
// kubelet's cgroupfs layout does not say).
func (r *Resolver) route(rt string) []runtimeAPI {
	var mine, all []runtimeAPI
	for _, e := range r.apis {
		all = append(all, e.api)
		if rt != "" && e.api.runtime() == rt {
			mine = append(mine, e.api)
		}
	}
	if len(mine) > 0 {
		return mine
	}
	return all
}

// inspectEach asks apis in turn for container id's names, until one knows
// it; errNoSuchContainer only when every one said it does not.
func inspectEach(apis []runtimeAPI, id string) (Names, error) {
	var failed error
	for _, api := range apis {
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		n, err := api.inspect(ctx, id)
		cancel()
		switch {
		case err == nil:
			return n, nil
		case !errors.Is(err, errNoSuchContainer) && failed == nil:
			failed = fmt.Errorf("%s: %w", api.kind(), err)
		}
	}
	if failed != nil {
		return Names{}, failed
	}
	return Names{}, errNoSuchContainer
}

// Unknown reports whether no runtime asked has container id (it belongs
// to another runtime, or is gone).
func (r *Resolver) Unknown(id string) bool {
	if !r.Active() {
		return false
	}
	_, ok := r.unknown.load(id)
	return ok
}

// Close waits for the questions under way and lets the APIs go.
func (r *Resolver) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
	for _, e := range r.apis {
		e.api.close()
	}
}
