package flagcheck

import (
	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// Scope is what narrows a trace to workloads, the same for the stream and
// churn: --cgroup, --netns, --container, --pod, --k8s-namespace, and
// --runtime-socket, which names containers.
type Scope struct {
	// CgroupPaths are --cgroup's, resolved by Validate into Cgroups.
	CgroupPaths []string
	Cgroups     []uint64
	// Netns is --netns: namespace files, or all (the default).
	Netns []string
	// Workloads are --container, --pod and --k8s-namespace.
	Workloads workload.Selector
	// RuntimeSockets name the container runtime APIs to ask for names
	// (--runtime-socket; default workload.DefaultSockets).
	RuntimeSockets []string
}

// AddFlags registers the scope's flags on fs.
func (s *Scope) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&s.CgroupPaths, "cgroup", s.CgroupPaths, CgroupHelp)
	fs.Var((*NetnsList)(&s.Netns), "netns", NetnsScopeHelp)
	fs.StringArrayVar(&s.Workloads.Containers, "container", nil, ContainerHelp)
	fs.StringArrayVar(&s.Workloads.Pods, "pod", nil, PodHelp)
	fs.StringArrayVar(&s.Workloads.Namespaces, "k8s-namespace", nil, K8sNamespaceHelp)
	fs.StringArrayVar(&s.RuntimeSockets, "runtime-socket", s.RuntimeSockets, RuntimeSocketHelp)
}

// KernelCgroups are the cgroups to hand the kernel's filter
// (tracer.Options.Cgroups): none, no filter; with workloads asked for, a
// set even if empty, so that nothing is traced until a workload is found.
func (s *Scope) KernelCgroups() []uint64 {
	if s.Workloads.Empty() {
		return s.Cgroups
	}
	return append([]uint64{}, s.Cgroups...)
}

// Validate checks the scope's flags and resolves --cgroup into ids.
func (s *Scope) Validate() error {
	var err error
	if s.Cgroups, err = Cgroups(s.CgroupPaths); err != nil {
		return err
	}
	if err := Workloads(s.Workloads.Containers, s.Workloads.Pods, s.Workloads.Namespaces); err != nil {
		return err
	}
	return Netns(s.Netns)
}
