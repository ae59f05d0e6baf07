package workload

import "testing"

const (
	cid  = "9f3a6c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	uid  = "6d0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	uidU = "6d0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b"
)

func TestFromCgroup(t *testing.T) {
	for _, c := range []struct {
		name, path string
		want       Identity
	}{
		{"systemd driver, burstable, containerd",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			Identity{Containerd, cid, uid}},
		{"systemd driver, besteffort, CRI-O",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + cid + ".scope",
			Identity{CRIO, cid, uid}},
		{"systemd driver, guaranteed (no qos level), docker through cri-dockerd",
			"/kubepods.slice/kubepods-pod" + uidU + ".slice/docker-" + cid + ".scope",
			Identity{Docker, cid, uid}},
		{"systemd driver, the pod's own cgroup",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice",
			Identity{PodUID: uid}},
		{"systemd driver, CRI-O's monitor beside the container",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope",
			Identity{PodUID: uid}},
		{"cgroupfs driver, burstable: the runtime is not in the path",
			"/kubepods/burstable/pod" + uid + "/" + cid,
			Identity{"", cid, uid}},
		{"cgroupfs driver, guaranteed",
			"/kubepods/pod" + uid + "/" + cid,
			Identity{"", cid, uid}},
		{"cgroupfs driver, CRI-O",
			"/kubepods/besteffort/pod" + uid + "/crio-" + cid,
			Identity{CRIO, cid, uid}},
		{"docker, systemd driver", "/system.slice/docker-" + cid + ".scope", Identity{Docker, cid, ""}},
		{"docker, cgroupfs driver", "/docker/" + cid, Identity{Docker, cid, ""}},
		{"podman, systemd", "/machine.slice/libpod-" + cid + ".scope", Identity{Podman, cid, ""}},
		{"podman, systemd, a cgroup made inside the container", "/machine.slice/libpod-" + cid + ".scope/container", Identity{Podman, cid, ""}},
		{"podman, cgroupfs", "/libpod_parent/libpod-" + cid, Identity{Podman, cid, ""}},
		{"podman, rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + cid + ".scope", Identity{Podman, cid, ""}},
		{"podman's monitor", "/machine.slice/libpod-conmon-" + cid + ".scope", Identity{}},
		{"containerd outside Kubernetes", "/system.slice/cri-containerd-" + cid + ".scope", Identity{Containerd, cid, ""}},
		{"a plain service", "/system.slice/ssh.service", Identity{}},
		{"the root", "/", Identity{}},
		{"empty", "", Identity{}},
		{"a pod-like name outside kubepods", "/system.slice/kubepods-pod" + uidU + ".slice", Identity{}},
		{"a short id is no container id", "/docker/9f3a6c1e2b4d", Identity{}},
		{"upper-case hex is no container id", "/system.slice/docker-9F3A6C1E2B4D5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8.scope", Identity{}},
		{"a bare id under anything else", "/system.slice/" + cid, Identity{}},
		{"a malformed pod uid", "/kubepods/burstable/pod6d0c1a2b/" + cid, Identity{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := FromCgroup(c.path); got != c.want {
				t.Errorf("FromCgroup(%q)\n got %+v\nwant %+v", c.path, got, c.want)
			}
		})
	}
}

func TestShortID(t *testing.T) {
	if got := (Identity{ContainerID: cid}).ShortID(); got != cid[:12] {
		t.Errorf("got %q", got)
	}
	if got := (Identity{}).ShortID(); got != "" {
		t.Errorf("no id: got %q", got)
	}
}

func TestSelectorMatches(t *testing.T) {
	inPod := Identity{Containerd, cid, uid}
	plain := Identity{Podman, cid, ""}
	named := Names{Container: "api", Pod: "checkout-7d9f", Namespace: "shop"}
	for _, c := range []struct {
		name string
		sel  Selector
		id   Identity
		n    Names
		want bool
	}{
		{"container by full id", Selector{Containers: []string{cid}}, plain, Names{}, true},
		{"container by short id", Selector{Containers: []string{cid[:12]}}, plain, Names{}, true},
		{"container by another id", Selector{Containers: []string{"0123456789ab"}}, plain, Names{}, false},
		{"container by name", Selector{Containers: []string{"api"}}, inPod, named, true},
		{"container by another name", Selector{Containers: []string{"web"}}, inPod, named, false},
		{"a name that looks like hex is also a name", Selector{Containers: []string{"cafe"}}, plain, Names{Container: "cafe"}, true},
		{"pod by uid", Selector{Pods: []string{uid}}, inPod, Names{}, true},
		{"pod by name", Selector{Pods: []string{"checkout-7d9f"}}, inPod, named, true},
		{"pod, for a container in none", Selector{Pods: []string{uid}}, plain, Names{}, false},
		{"namespace", Selector{Namespaces: []string{"shop"}}, inPod, named, true},
		{"another namespace", Selector{Namespaces: []string{"kube-system"}}, inPod, named, false},
		{"namespace without names", Selector{Namespaces: []string{"shop"}}, inPod, Names{}, false},
		{"pod and container, both match", Selector{Pods: []string{"checkout-7d9f"}, Containers: []string{"api"}}, inPod, named, true},
		{"pod and container, one does not", Selector{Pods: []string{"checkout-7d9f"}, Containers: []string{"web"}}, inPod, named, false},
		{"either of two containers", Selector{Containers: []string{"web", "api"}}, inPod, named, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.sel.matches(c.id, c.n); got != c.want {
				t.Errorf("got %t, want %t", got, c.want)
			}
		})
	}
}

func TestSelectorNeedsNames(t *testing.T) {
	for _, c := range []struct {
		sel  Selector
		want bool
	}{
		{Selector{Containers: []string{cid[:12]}}, false},
		{Selector{Pods: []string{uid}}, false},
		{Selector{Containers: []string{"api"}}, true},
		{Selector{Pods: []string{"checkout-7d9f"}}, true},
		{Selector{Namespaces: []string{"shop"}}, true},
	} {
		if got := c.sel.NeedsNames(); got != c.want {
			t.Errorf("%+v: got %t, want %t", c.sel, got, c.want)
		}
	}
}

func TestPodDir(t *testing.T) {
	for path, want := range map[string]string{
		"/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope": "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice",
		"/sys/fs/cgroup/kubepods/besteffort/pod" + uid + "/" + cid:                                                                         "/sys/fs/cgroup/kubepods/besteffort/pod" + uid,
		"/sys/fs/cgroup/machine.slice/libpod-" + cid + ".scope":                                                                            "/sys/fs/cgroup/machine.slice/libpod-" + cid + ".scope",
	} {
		if got := podDir(path); got != want {
			t.Errorf("podDir(%s)\n got %s\nwant %s", path, got, want)
		}
	}
}
