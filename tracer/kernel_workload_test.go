package tracer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/proc"
)

// WorkloadLayout is a cgroup layout of a container runtime or the kubelet,
// made with fresh ids: the path, and the fields porttrace must read from it.
type WorkloadLayout struct {
	Name, Path                string
	Runtime, ContainerID, UID string
}

// WorkloadLayouts are the layouts the README's table names, each with ids
// of its own, so that a test never meets a real container's cgroup.
func WorkloadLayouts(t *testing.T) []WorkloadLayout {
	t.Helper()
	random := func(n int) string {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(b)
	}
	cid := random(32)
	u := random(16)
	uid := fmt.Sprintf("%s-%s-%s-%s-%s", u[:8], u[8:12], u[12:16], u[16:20], u[20:])
	uidU := strings.ReplaceAll(uid, "-", "_")
	return []WorkloadLayout{
		{"kubelet systemd burstable containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", "containerd", cid, uid},
		{"kubelet systemd guaranteed cri-o", "/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + cid + ".scope", "cri-o", cid, uid},
		{"kubelet cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + cid, "", cid, uid},
		{"kubelet cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid, "", cid, uid},
		{"docker systemd", "/system.slice/docker-" + cid + ".scope", "docker", cid, ""},
		{"docker cgroupfs", "/docker/" + cid, "docker", cid, ""},
		{"podman systemd", "/machine.slice/libpod-" + cid + ".scope", "podman", cid, ""},
		{"podman cgroupfs", "/libpod_parent/libpod-" + cid, "podman", cid, ""},
	}
}

// A process in a container's cgroup, made as each runtime makes it, is
// named by its runtime, container id and pod: the fields come from the
// cgroup id in the kernel's event, so they hold after the process exits.
func TestKernelWorkloadFromCgroup(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{Events: KindsOf(event.KindBind)})
	layouts := WorkloadLayouts(t)
	pids := map[uint32]WorkloadLayout{}
	var root string
	for i, l := range layouts {
		var cg *os.File
		cg, root = MakeCgroup(t, l.Path)
		cmd := HelperCmd(HelperExe(t), 0, "tcp", fmt.Sprintf("127.0.0.1:%d", 31340+i))
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
		h := RunHelper(t, ns, cmd)
		if _, errno := h.Bind(t); errno != "" {
			t.Fatal(errno)
		}
		h.Stdin.Close()
		_ = h.Cmd.Wait()
		pids[uint32(h.Cmd.Process.Pid)] = l
	}
	en := proc.NewEnricherAt(t.TempDir(), root)
	seen := map[string]bool{}
	for _, ev := range c.stop(t, ns) {
		l, ok := pids[ev.PID]
		if !ok {
			continue
		}
		seen[l.Name] = true
		en.Enrich(&ev)
		if ev.Cgroup != l.Path || ev.ContainerRuntime != l.Runtime || ev.ContainerID != l.ContainerID || ev.PodUID != l.UID {
			t.Errorf("%s: cgroup %q runtime %q container %q pod %q\nwant %q %q %q %q", l.Name,
				ev.Cgroup, ev.ContainerRuntime, ev.ContainerID, ev.PodUID, l.Path, l.Runtime, l.ContainerID, l.UID)
		}
	}
	for _, l := range layouts {
		if !seen[l.Name] {
			t.Errorf("%s: no bind event", l.Name)
		}
	}
}
