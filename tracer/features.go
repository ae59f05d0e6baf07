package tracer

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// helpers are the BPF helpers that porttrace's programs use where the
// kernel has them and do without where it does not (bpf/common.h: the
// have_* knobs). They are found with cilium/ebpf's probes, which load a
// program that calls the helper, never from the kernel's version: a
// distribution's kernel may have backported one, or left one out.
type helpers struct {
	// TaskBTF: bpf_get_current_task_btf (5.11), for direct loads through
	// the task; without it, bpf_get_current_task and CO-RE reads.
	TaskBTF bool
	// TaskPtRegs: bpf_task_pt_regs (5.15), with which the tracepoint
	// backend reads a syscall's arguments at its exit; without it, it
	// pairs each sys_exit with its sys_enter by thread.
	TaskPtRegs bool
	// AncestorCgroup: bpf_get_current_ancestor_cgroup_id in tracing
	// programs (not in 5.10's), for scoping to cgroups; without it, a
	// cgroup's ancestors are read through the task with CO-RE.
	AncestorCgroup bool
	// RdonlyCast: the kfunc bpf_rdonly_cast (6.2), with which the programs
	// load through the socket, its file and its namespace directly; without
	// it, a CO-RE read (a helper call) a field. Found in the kernel's BTF,
	// where the loader looks for kfuncs.
	RdonlyCast bool
	// TaskStorage: bpf_task_storage_get in tracepoint programs (5.12;
	// kprobe programs have it with them, fentry's from 5.11), where every
	// backend keeps what a hook's entry saw for its exit (with TaskBTF,
	// for the task it names); without it, LRU hashes by thread id.
	TaskStorage bool
}

// taskStorage tells whether the backends keep calls in flight in task
// storage (bpf/common.h: task_slot).
func (h helpers) taskStorage() bool { return h.TaskStorage && h.TaskBTF }

// forceHelpers, when set, edits what probeHelpers found: the tests turn
// helpers off to run the older kernels' paths on a newer kernel too.
var forceHelpers func(*helpers)

// probeHelpers asks the kernel which of the helpers it has.
func probeHelpers() (helpers, error) {
	var h helpers
	for _, p := range []struct {
		fn   asm.BuiltinFunc
		name string
		has  *bool
	}{
		{asm.FnGetCurrentTaskBtf, "bpf_get_current_task_btf", &h.TaskBTF},
		{asm.FnTaskPtRegs, "bpf_task_pt_regs", &h.TaskPtRegs},
		{asm.FnGetCurrentAncestorCgroupId, "bpf_get_current_ancestor_cgroup_id", &h.AncestorCgroup},
		{asm.FnTaskStorageGet, "bpf_task_storage_get", &h.TaskStorage},
	} {
		switch err := features.HaveProgramHelper(ebpf.TracePoint, p.fn); {
		case err == nil:
			*p.has = true
		case errors.Is(err, ebpf.ErrNotSupported):
		default:
			return h, fmt.Errorf("probing for %s: %w", p.name, err)
		}
	}
	return h, nil
}

// missing says which helpers the kernel lacks and what the backend does
// instead (tracepoint: whether it is the tracepoint backend; scoped:
// whether the trace is scoped to cgroups), for Describe; empty when the
// kernel has every helper.
func (h helpers) missing(tracepoint, scoped bool) []string {
	var notes []string
	if !h.TaskBTF {
		notes = append(notes, "no bpf_get_current_task_btf (5.11): the task is read with CO-RE reads")
	}
	if !h.RdonlyCast {
		notes = append(notes, "no bpf_rdonly_cast (6.2): sockets are read with CO-RE reads")
	}
	if !h.AncestorCgroup && scoped {
		notes = append(notes, "no bpf_get_current_ancestor_cgroup_id in tracing programs: cgroups' ancestors are read with CO-RE reads")
	}
	if !h.TaskPtRegs && tracepoint {
		notes = append(notes, "no bpf_task_pt_regs (5.15): each sys_exit is paired with its sys_enter by thread")
	}
	if !h.taskStorage() {
		notes = append(notes, "no bpf_task_storage_get in tracepoint programs (5.12): what a hook's entry saw is kept for its exit in a hash by thread id")
	}
	return notes
}

// fromKernel adds what the kernel's BTF tells: the kfuncs, which the
// loader looks for there too.
func (h *helpers) fromKernel(kernel *btf.Spec) {
	var fn *btf.Func
	h.RdonlyCast = kernel.TypeByName("bpf_rdonly_cast", &fn) == nil
}

// fexitParams is how many parameters the fentry backend's fexit programs
// take each function to have: the return value is read as the argument
// after the last (bpf/fentry.bpf.c), so a kernel whose prototype differs
// would hand them an argument instead. inet_csk_accept lost two in 6.10
// (struct proto_accept_arg); it has a program for each (loadFentry).
var fexitParams = map[string][]int{
	"__inet_bind":           {4},
	"__inet6_bind":          {4},
	"inet_stream_connect":   {4},
	"__inet_stream_connect": {5},
	"inet_dgram_connect":    {4},
	"inet_csk_accept":       {2, 4},
	"inet_listen":           {2},
	"__inet_listen_sk":      {2},
}

// checkFexitParams refuses the fentry backend where a traced function's
// prototype in the kernel's BTF is not the one its program was written
// for, saying which.
func checkFexitParams(kernel *btf.Spec, listenFn string) error {
	for _, fn := range []string{"__inet_bind", "__inet6_bind", "inet_stream_connect", "__inet_stream_connect",
		"inet_dgram_connect", "inet_csk_accept", listenFn} {
		n, err := funcParams(kernel, fn)
		if err != nil {
			return err
		}
		want := fexitParams[fn]
		if !slices.Contains(want, n) {
			return fmt.Errorf("kernel function %s takes %d parameters, its fexit program reads the return value after %v: %w",
				fn, n, want, ebpf.ErrNotSupported)
		}
	}
	return nil
}

// funcParams is how many parameters kernel function fn takes, from the
// kernel's BTF.
func funcParams(kernel *btf.Spec, fn string) (int, error) {
	var f *btf.Func
	if err := kernel.TypeByName(fn, &f); err != nil {
		return 0, fmt.Errorf("kernel function %s: %w", fn, err)
	}
	proto, ok := f.Type.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("kernel function %s has no prototype in BTF", fn)
	}
	return len(proto.Params), nil
}

// anyContextAlloc tells whether the kernel's BPF hash maps allocate their
// elements with bpf_mem_alloc (6.1), safe from any context: a map without
// preallocation may then be written from kprobe and tracepoint programs.
// Found by the type in the kernel's BTF, not by the version.
func anyContextAlloc(kernel *btf.Spec) bool {
	var s *btf.Struct
	return kernel != nil && kernel.TypeByName("bpf_mem_alloc", &s) == nil
}
