package workload

import (
	"slices"
	"strings"
	"testing"
)

// FuzzFromCgroup feeds FromCgroup any path. What it names it finds in the
// path: a container id of 64 hex digits in it, after the prefix of the
// runtime it names; a pod UID in it (with underscores, as the systemd
// driver writes it, or dashes), only under kubepods; and the CONTAINER
// cell of any identity is one line.
func FuzzFromCgroup(f *testing.F) {
	for _, p := range []string{
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"/kubepods.slice/kubepods-pod" + uidU + ".slice/docker-" + cid + ".scope",
		"/kubepods/burstable/pod" + uid + "/" + cid,
		"/kubepods/besteffort/pod" + uid + "/crio-" + cid,
		"/docker/" + cid,
		"/machine.slice/libpod-" + cid + ".scope/container",
		"/libpod_parent/libpod-" + cid,
		"/machine.slice/libpod-conmon-" + cid + ".scope",
		"/system.slice/ssh.service", "/", "", "//kubepods//pod" + uid + "//" + cid + "//",
	} {
		f.Add(p)
	}
	prefixes := map[string][]string{}
	for _, s := range scopes {
		prefixes[s.runtime] = append(prefixes[s.runtime], s.prefix)
	}
	prefixes[Docker] = append(prefixes[Docker], "docker/")
	f.Fuzz(func(t *testing.T, p string) {
		id := FromCgroup(p)
		if id.ContainerID != "" && (!isContainerID(id.ContainerID) || !strings.Contains(p, id.ContainerID)) {
			t.Fatalf("%q: container id %q is not one in the path", p, id.ContainerID)
		}
		if id.PodUID != "" {
			under := strings.ReplaceAll(id.PodUID, "-", "_")
			if !isUID(id.PodUID) || !strings.Contains(p, id.PodUID) && !strings.Contains(p, under) {
				t.Fatalf("%q: pod uid %q is not one in the path", p, id.PodUID)
			}
			if first, _, _ := strings.Cut(strings.Trim(p, "/"), "/"); first != "kubepods" && first != "kubepods.slice" {
				t.Fatalf("%q: a pod uid %q outside kubepods", p, id.PodUID)
			}
		}
		if id.Runtime != "" {
			if id.ContainerID == "" {
				t.Fatalf("%q: runtime %q without a container", p, id.Runtime)
			}
			named := slices.ContainsFunc(prefixes[id.Runtime], func(prefix string) bool { return strings.Contains(p, prefix+id.ContainerID) })
			if !named {
				t.Fatalf("%q: runtime %q did not name container %s", p, id.Runtime, id.ContainerID)
			}
		}
		if cell := Cell(id, Names{}); cell == "" || strings.ContainsAny(cell, "\n\r") {
			t.Fatalf("%q: cell %q", p, cell)
		}
	})
}
