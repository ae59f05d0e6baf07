package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// docker is the Docker Engine API (docker, podman's compatible service).
type docker struct {
	c  *http.Client
	rt string // Docker or Podman
}

func (d docker) kind() string {
	if d.rt == Podman {
		return "the Docker Engine API (podman)"
	}
	return "the Docker Engine API"
}

func (d docker) runtime() string { return d.rt }

func (d docker) close() { d.c.CloseIdleConnections() }

// dialDocker returns the Docker Engine API at socket, if it answers a ping.
func dialDocker(ctx context.Context, socket string) (runtimeAPI, error) {
	c := dockerClient(socket)
	h, err := ping(ctx, c)
	if err != nil {
		return nil, err
	}
	// podman's service says so in every answer; docker does not.
	rt := Docker
	if h.Get("Libpod-Api-Version") != "" {
		rt = Podman
	}
	return docker{c, rt}, nil
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

// ping asks the Docker Engine API whether it is there, and gives the
// answer's header.
func ping(ctx context.Context, c *http.Client) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://runtime/_ping", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ping: %s", resp.Status)
	}
	return resp.Header, nil
}

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
