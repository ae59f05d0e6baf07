package workload

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criAPI is the Kubernetes CRI API's RuntimeService, as containerd (its
// cri plugin) and CRI-O serve it to the kubelet.
type criAPI struct {
	conn *grpc.ClientConn
	c    cri.RuntimeServiceClient
	name string // the runtime's name, as its Version answer gives it
}

// dialCRI returns the CRI API at socket, if it answers Version.
func dialCRI(ctx context.Context, socket string) (runtimeAPI, error) {
	conn, err := grpc.NewClient("passthrough:///runtime",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return nil, err
	}
	c := cri.NewRuntimeServiceClient(conn)
	v, err := c.Version(ctx, &cri.VersionRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("CRI version: %s", status.Convert(err).Message())
	}
	return &criAPI{conn: conn, c: c, name: v.RuntimeName}, nil
}

func (a *criAPI) kind() string { return "the CRI API (" + a.name + ")" }

// runtime is the runtime's name as Identity.Runtime has it: containerd
// and CRI-O say "containerd" and "cri-o".
func (a *criAPI) runtime() string { return a.name }

func (a *criAPI) close() { a.conn.Close() }

// inspect asks for container id's status. The kubelet puts the pod's name
// and namespace in the container's labels, and the container's name in
// its pod in its metadata.
func (a *criAPI) inspect(ctx context.Context, id string) (Names, error) {
	resp, err := a.c.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	if status.Code(err) == codes.NotFound {
		return Names{}, errNoSuchContainer
	}
	if err != nil {
		return Names{}, fmt.Errorf("container status %s: %s", id, status.Convert(err).Message())
	}
	return criNames(resp.GetStatus()), nil
}

// criNames is a container's names from its CRI status.
func criNames(s *cri.ContainerStatus) Names {
	n := Names{Container: s.GetMetadata().GetName(), Image: s.GetImage().GetImage()}
	if n.Image == "" {
		n.Image = s.GetImageRef()
	}
	if pod := s.GetLabels()["io.kubernetes.pod.name"]; pod != "" {
		n.Pod, n.Namespace = pod, s.GetLabels()["io.kubernetes.pod.namespace"]
	}
	return n
}
