// Package workload names the container and the Kubernetes pod behind a
// cgroup v2 path, from the layouts that container runtimes and the
// kubelet create: the runtime, the container's full id and the pod's UID.
// Nothing is guessed: a field the path does not say is left empty.
package workload

import (
	"strings"

	"github.com/porttrace/porttrace/tracer/textout"
)

// Identity is what a cgroup path says about the workload in it.
type Identity struct {
	Runtime     string // "containerd", "cri-o", "docker", "podman"; empty when the path does not say
	ContainerID string // the runtime's full id (64 hex digits)
	PodUID      string // the Kubernetes pod's UID, with dashes
}

// Known reports whether the path named any workload.
func (id Identity) Known() bool { return id.ContainerID != "" || id.PodUID != "" }

// ShortID is the container id as runtimes print it: 12 hex digits.
func (id Identity) ShortID() string { return id.ContainerID[:min(12, len(id.ContainerID))] }

// Runtime names, as the JSON field container_runtime writes them.
const (
	Containerd = "containerd"
	CRIO       = "cri-o"
	Docker     = "docker"
	Podman     = "podman"
)

// scopes are the container cgroups systemd's cgroup driver names
// "PREFIX<id>.scope", and that cgroupfs drivers name "PREFIX<id>", by
// runtime. A runtime's monitor (conmon) has its own scope beside the
// container's, "libpod-conmon-<id>.scope" or "crio-conmon-<id>.scope": it
// is not the container, and its id does not parse as one.
var scopes = []struct {
	prefix, runtime string
}{
	{"cri-containerd-", Containerd},
	{"crio-", CRIO},
	{"docker-", Docker},
	{"libpod-", Podman},
}

// FromCgroup reads the identity of the workload in cgroup v2 path p
// ("/kubepods.slice/.../cri-containerd-<id>.scope"). The layouts:
//
//	kubelet, systemd driver  /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/<runtime>-<id>.scope
//	                         (the guaranteed class: /kubepods.slice/kubepods-pod<uid>.slice/...)
//	kubelet, cgroupfs driver /kubepods/<qos>/pod<uid>/<id> (guaranteed: /kubepods/pod<uid>/<id>; CRI-O: .../crio-<id>)
//	docker                   /system.slice/docker-<id>.scope, /docker/<id>
//	podman                   /machine.slice/libpod-<id>.scope, /libpod_parent/libpod-<id>,
//	                         rootless: /user.slice/user-<uid>.slice/user@<uid>.service/user.slice/libpod-<id>.scope
//	CRI-O                    crio-<id>.scope
//	containerd               cri-containerd-<id>.scope
//
// A process may sit below its container's cgroup (a container that runs
// systemd, or makes cgroups of its own): the nearest container cgroup
// above it counts.
func FromCgroup(p string) Identity {
	var id Identity
	parts := strings.Split(strings.Trim(p, "/"), "/")
	inKubepods := len(parts) > 0 && (parts[0] == "kubepods" || parts[0] == "kubepods.slice")
	for i, part := range parts {
		if inKubepods && id.PodUID == "" {
			if uid, ok := podUID(part); ok {
				id.PodUID = uid
				continue
			}
		}
		if rt, cid, ok := containerScope(part); ok {
			id.Runtime, id.ContainerID = rt, cid
			continue
		}
		// cgroupfs layouts name a container cgroup by its bare id: the
		// kubelet's under the pod, docker's under /docker.
		if isContainerID(part) && i > 0 && (id.PodUID != "" && strings.HasPrefix(parts[i-1], "pod") || parts[i-1] == "docker" && i == 1) {
			// The runtime is docker's under /docker; under a pod the
			// path does not say it, whatever a cgroup above named.
			id.Runtime, id.ContainerID = "", part
			if parts[i-1] == "docker" {
				id.Runtime = Docker
			}
		}
	}
	return id
}

// containerScope parses "<prefix><id>.scope" (systemd driver) or
// "<prefix><id>" (cgroupfs driver).
func containerScope(part string) (runtime, id string, ok bool) {
	for _, s := range scopes {
		rest, found := strings.CutPrefix(part, s.prefix)
		if !found {
			continue
		}
		rest = strings.TrimSuffix(rest, ".scope")
		if isContainerID(rest) {
			return s.runtime, rest, true
		}
	}
	return "", "", false
}

// podUID parses the pod's cgroup: "kubepods-<qos>-pod<uid>.slice" or
// "kubepods-pod<uid>.slice" (systemd driver, dashes of the uid written as
// underscores) or "pod<uid>" (cgroupfs driver).
func podUID(part string) (string, bool) {
	if s, ok := strings.CutSuffix(part, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if !strings.HasPrefix(s, "kubepods-") || i < 0 {
			return "", false
		}
		uid := strings.ReplaceAll(s[i+len("-pod"):], "_", "-")
		return uid, isUID(uid)
	}
	uid, ok := strings.CutPrefix(part, "pod")
	return uid, ok && isUID(uid)
}

// isContainerID: 64 lowercase hex digits, the ids of containerd, CRI-O,
// docker and podman alike.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isUID: a UUID as Kubernetes writes pod UIDs, 8-4-4-4-12 hex digits.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// Cell is a table's CONTAINER cell: "pod/container" by name
// where the runtime named them, else the container's short id, with
// "pod/" and the pod UID's first 8 digits before it when it is in a pod;
// "-" for none.
func Cell(w Identity, n Names) string {
	switch {
	case n.Pod != "" && n.Container != "":
		return n.Pod + "/" + n.Container
	case n.Container != "":
		return n.Container
	case n.Pod != "" && w.ContainerID == "":
		return n.Pod
	case w.ContainerID != "" && w.PodUID != "":
		return "pod/" + w.PodUID[:8] + "/" + w.ShortID()
	case w.ContainerID != "":
		return w.ShortID()
	case w.PodUID != "":
		return "pod/" + w.PodUID[:8]
	}
	return "-"
}

// AppendJSON appends the fields of the workload a cgroup names,
// and the names its runtime gave, those known only, as events write them
// (each field after a comma: not the first of an object).
func AppendJSON(buf []byte, w Identity, n Names) []byte {
	if w.Runtime != "" {
		buf = textout.AppendStr(buf, "container_runtime", w.Runtime)
	}
	if w.ContainerID != "" {
		buf = textout.AppendStr(buf, "container_id", w.ContainerID)
	}
	if w.PodUID != "" {
		buf = textout.AppendStr(buf, "pod_uid", w.PodUID)
	}
	if n.Container != "" {
		buf = textout.AppendText(buf, "container", n.Container)
	}
	if n.Pod != "" {
		buf = textout.AppendText(buf, "pod", n.Pod)
		buf = textout.AppendText(buf, "k8s_namespace", n.Namespace)
	}
	if n.Image != "" {
		buf = textout.AppendText(buf, "image", n.Image)
	}
	return buf
}
