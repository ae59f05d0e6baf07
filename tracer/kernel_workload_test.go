package tracer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
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
	"github.com/porttrace/porttrace/tracer/internal/workload"
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
		pids[BindIn(t, ns, cg, "tcp", fmt.Sprintf("127.0.0.1:%d", 31340+i))] = l
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
		if w := ev.Workload; ev.Cgroup != l.Path || w.Runtime != l.Runtime || w.ContainerID != l.ContainerID || w.PodUID != l.UID {
			t.Errorf("%s: cgroup %q runtime %q container %q pod %q\nwant %q %q %q %q", l.Name,
				ev.Cgroup, ev.Workload.Runtime, ev.Workload.ContainerID, ev.Workload.PodUID, l.Path, l.Runtime, l.ContainerID, l.UID)
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
	bindIn := func(cg *os.File, port int) { BindIn(t, ns, cg, "udp", fmt.Sprintf("127.0.0.1:%d", port)) }
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
	if err := c.tr.SetCgroup(CgroupID(t, other), true); err != nil {
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

// --pod and --container scope the kernel to workloads found by their
// cgroups: a pod's containers, one that starts later included, and a
// container that starts after porttrace, once its cgroup is seen.
func TestKernelWorkloadScope(t *testing.T) {
	random := func() (cid, uid, uidU string) {
		l := WorkloadLayouts(t)[0]
		return l.ContainerID, l.UID, strings.ReplaceAll(l.UID, "-", "_")
	}
	podPath := func(uidU, cid string) string {
		return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope"
	}
	bindIn := func(ns *NS, cg *os.File, port int) { BindIn(t, ns, cg, "udp", fmt.Sprintf("127.0.0.1:%d", port)) }
	ports := func(c *collector, ns *NS) []uint16 {
		var got []uint16
		for _, ev := range c.stop(t, ns) {
			got = append(got, ev.Local.Port())
		}
		slices.Sort(got)
		return got
	}
	t.Run("pod", func(t *testing.T) {
		ns := NewNetns(t)
		c1, uid1, uidU1 := random()
		c2, _, uidU2 := random()
		c3, _, _ := random()
		first, _ := MakeCgroup(t, podPath(uidU1, c1))
		other, _ := MakeCgroup(t, podPath(uidU2, c2))
		c := startTracer(t, Options{Events: KindsOf(event.KindBind), Cgroups: []uint64{}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stderr strings.Builder
		w, err := ScopeWorkloads(ctx, c.tr, workload.Selector{Pods: []string{uid1}}, nil, "porttrace", &stderr)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		later, _ := MakeCgroup(t, podPath(uidU1, c3)) // the pod's next container
		bindIn(ns, first, 31370)
		bindIn(ns, other, 31371)
		bindIn(ns, later, 31372)
		if got := ports(c, ns); !slices.Equal(got, []uint16{31370, 31372}) {
			t.Errorf("ports bound in scope: %v, want the pod's, 31370 and 31372", got)
		}
		if stderr.Len() != 0 {
			t.Errorf("stderr: %q", stderr.String())
		}
	})
	t.Run("container-started-later", func(t *testing.T) {
		ns := NewNetns(t)
		cid, _, _ := random()
		other, _, _ := random()
		c := startTracer(t, Options{Events: KindsOf(event.KindBind), Cgroups: []uint64{}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stderr strings.Builder
		w, err := ScopeWorkloads(ctx, c.tr, workload.Selector{Containers: []string{cid[:12]}}, nil, "porttrace", &stderr)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if !strings.Contains(stderr.String(), "nothing running matches --container "+cid[:12]+" yet") {
			t.Errorf("stderr: %q", stderr.String())
		}
		mine, _ := MakeCgroup(t, "/system.slice/docker-"+cid+".scope")
		theirs, _ := MakeCgroup(t, "/system.slice/docker-"+other+".scope")
		// In scope once a scan has seen its cgroup: the kernel's filter says when.
		var in uint8
		for deadline := time.Now().Add(10 * time.Second); c.tr.l.maps.CgroupFilter.Lookup(CgroupID(t, mine), &in) != nil; {
			if time.Now().After(deadline) {
				t.Fatal("the container's cgroup was not in scope 10s after it was made")
			}
			time.Sleep(workload.ScanEvery / 5)
		}
		bindIn(ns, mine, 31373)
		bindIn(ns, theirs, 31374)
		if got := ports(c, ns); !slices.Equal(got, []uint16{31373}) {
			t.Errorf("ports bound in scope: %v, want the container's, 31373", got)
		}
	})
}

// With JudgeUnknown, a container that starts after porttrace loses no
// call to the time between scans: the kernel sends the calls of a cgroup
// it has no verdict on, the watcher judges them, and from then on the
// kernel decides.
func TestKernelWorkloadJudgedAtFirstCall(t *testing.T) {
	ns := NewNetns(t)
	cid := WorkloadLayouts(t)[0].ContainerID
	other := WorkloadLayouts(t)[0].ContainerID
	c := startTracer(t, Options{Events: KindsOf(event.KindBind), Cgroups: []uint64{}, JudgeUnknown: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := ScopeWorkloads(ctx, c.tr, workload.Selector{Containers: []string{cid[:12]}}, nil, "porttrace", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	mine, root := MakeCgroup(t, "/machine.slice/libpod-"+cid+".scope")
	theirs, _ := MakeCgroup(t, "/machine.slice/libpod-"+other+".scope")
	for i, cg := range []*os.File{mine, theirs, mine} { // at once: no scan has run
		BindIn(t, ns, cg, "udp", fmt.Sprintf("127.0.0.1:%d", 31380+i))
	}
	en := proc.NewEnricherAt(t.TempDir(), root)
	var kept []uint16
	for _, ev := range c.stop(t, ns) {
		en.Enrich(&ev)
		if w.Judge(ctx, ev.CgroupID, ev.Cgroup) {
			kept = append(kept, ev.Local.Port())
		}
	}
	if !slices.Equal(kept, []uint16{31380, 31382}) {
		t.Errorf("kept the binds of ports %v, want the container's: 31380 and 31382", kept)
	}
	for cg, want := range map[*os.File]uint8{mine: cgroupIn, theirs: cgroupOut} {
		var got uint8
		if err := c.tr.l.maps.CgroupFilter.Lookup(CgroupID(t, cg), &got); err != nil || got != want {
			t.Errorf("the kernel's verdict on %s: %d %v, want %d", cg.Name(), got, err, want)
		}
	}
}
