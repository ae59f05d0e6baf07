package tracer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// CgroupID is the cgroup v2 id of the open cgroup directory f.
func CgroupID(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Scoped to a cgroup, the kernel keeps the calls of its tasks and of
// those below it, a cgroup made after the tracer started included, and
// drops the rest; a cgroup added while tracing counts from then on.
func TestKernelCgroupScope(t *testing.T) {
	ns := NewNetns(t)
	base := fmt.Sprintf("/porttrace-scope-%d-%d", os.Getpid(), time.Now().UnixNano())
	scoped, _ := MakeCgroup(t, base+"/scoped")
	other, _ := MakeCgroup(t, base+"/other")
	c := startTracer(t, Options{Events: KindsOf(event.KindBind), Cgroups: []uint64{CgroupID(t, scoped)}})
	child, _ := MakeCgroup(t, base+"/scoped/later") // made after the tracer started
	bindIn := func(cg *os.File, port int) uint32 {
		cmd := HelperCmd(HelperExe(t), 0, "udp", fmt.Sprintf("127.0.0.1:%d", port))
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
		h := RunHelper(t, ns, cmd)
		if _, errno := h.Bind(t); errno != "" {
			t.Fatal(errno)
		}
		h.Stdin.Close()
		_ = h.Cmd.Wait()
		return uint32(h.Cmd.Process.Pid)
	}
	want := map[uint16]bool{}
	bindIn(scoped, 31350)
	want[31350] = true
	bindIn(child, 31351)
	want[31351] = true
	bindIn(other, 31352) // not scoped yet
	ns.Run(t, func() {   // this process, outside both
		fd := NewSocket(t, UDP4)
		defer unix.Close(fd)
		if err := unix.Bind(fd, Sockaddr(netip.MustParseAddrPort("127.0.0.1:31353"))); err != nil {
			t.Fatal(err)
		}
	})
	if err := c.tr.AddCgroup(CgroupID(t, other)); err != nil {
		t.Fatal(err)
	}
	bindIn(other, 31354)
	want[31354] = true
	got := map[uint16]bool{}
	for _, ev := range c.stop(t, ns) {
		got[ev.Local.Port()] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("ports bound: got %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}

// --cgroup takes a cgroup as events print it or as its path under the
// cgroup v2 mount, and says which it could not find.
func TestKernelCgroupByPath(t *testing.T) {
	rel := fmt.Sprintf("/porttrace-path-%d-%d/svc", os.Getpid(), time.Now().UnixNano())
	cg, root := MakeCgroup(t, rel)
	want := CgroupID(t, cg)
	for _, p := range []string{rel, root + rel, rel + "/"} {
		if id, err := proc.CgroupByPath(p); err != nil || id != want {
			t.Errorf("CgroupByPath(%q) = %d, %v; want %d", p, id, err, want)
		}
	}
	for _, p := range []string{rel + "-gone", "/proc/self", root + "/../.."} {
		if id, err := proc.CgroupByPath(p); err == nil {
			t.Errorf("CgroupByPath(%q) = %d, want an error", p, id)
		}
	}
}
