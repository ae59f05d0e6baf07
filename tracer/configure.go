package tracer

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// What a run sizes and sets in the object before it is loaded: the ring
// buffer, the maps, the knobs.

// configure sets the knobs of spec before load (bpf/common.h: the const
// volatile globals) and sizes the rings.
func configure(spec *ebpf.CollectionSpec, b event.Backend, o Options, listenOnSk bool, have helpers, anyContext bool) error {
	var specs porttraceSpecs
	if err := spec.Assign(&specs); err != nil {
		return fmt.Errorf("reading the object's specs: %w", err)
	}
	size, perRing := sizeRings(specs.Rings, o.RingBufferSize)
	specs.Connecting.MaxEntries = DefaultMaxConnecting
	if !anyContext {
		// Allocating a map element in a kprobe, tracepoint or raw
		// tracepoint program is unsafe there: the verifier warns (WARN_ONCE,
		// which taints the kernel) and PREEMPT_RT refuses it.
		specs.Connecting.Flags &^= unix.BPF_F_NO_PREALLOC
		specs.Connecting.MaxEntries = oldKernelMaxConnecting
	}
	if o.MaxConnecting != 0 {
		specs.Connecting.MaxEntries = o.MaxConnecting
	}
	if o.Churn || !o.Events.Has(event.KindConnect) {
		specs.Connecting.MaxEntries = 1 // no connect is followed: no memory for it
	}
	// Maps this run never fills get one element: a preallocated map costs
	// its memory and the time to set it up at every start (the cgroup
	// filter's 65,536 elements, the per-CPU churn maps on every CPU).
	for _, m := range []struct {
		spec   *ebpf.MapSpec
		unused bool
	}{
		{specs.CgroupFilter, o.Cgroups == nil},
		{specs.NetnsFilter, o.Netns == nil},
		{specs.ChurnNs, !o.Churn},
		{specs.ChurnDst, !o.Churn},
		{specs.ChurnProc, !o.Churn},
		{specs.Preblocked, b == event.BackendTracepoint},
	} {
		if m.unused {
			m.spec.MaxEntries = 1
		}
	}
	// What a hook's entry saw waits for its exit in the thread's task
	// storage, or, on a kernel without it for these programs, in the
	// backend's hashes by thread. What is not used gets one element; task
	// storage is a map type 5.10 cannot make, so there it stands in as a
	// hash the programs never reach.
	for _, m := range []struct {
		task   *ebpf.MapSpec
		hashes []*ebpf.MapSpec
	}{
		{specs.InflightTask, []*ebpf.MapSpec{specs.Inflight}},
		{specs.TaskPortBefore, []*ebpf.MapSpec{specs.PortBefore}},
		{specs.TaskKinflight, []*ebpf.MapSpec{specs.Kinflight, specs.Kaccept}},
	} {
		if !have.taskStorage() {
			m.task.Type, m.task.Flags, m.task.MaxEntries = ebpf.Hash, 0, 1
			continue
		}
		for _, h := range m.hashes {
			h.MaxEntries = 1
		}
	}
	if o.Churn && o.churnEntries != 0 {
		specs.ChurnNs.MaxEntries, specs.ChurnDst.MaxEntries, specs.ChurnProc.MaxEntries = o.churnEntries, o.churnEntries, o.churnEntries
	}
	uid := uint32(0xffffffff)
	if o.FilterUID {
		uid = o.UID
	}
	vs := &specs.porttraceVariableSpecs
	for _, k := range []struct {
		v   *ebpf.VariableSpec
		val any
	}{
		{vs.TargetPid, o.PID},
		{vs.TargetUid, uid},
		{vs.FilterPorts, o.Ports != nil && !o.Ports.Empty()},
		{vs.FilterCgroups, o.Cgroups != nil},
		{vs.JudgeUnknown, o.Cgroups != nil && o.JudgeUnknown},
		{vs.FilterNetns, o.Netns != nil},
		{vs.ListenOnSk, listenOnSk},
		{vs.HaveTaskBtf, have.TaskBTF},
		{vs.HaveTaskPtRegs, have.TaskPtRegs},
		{vs.HaveAncestorCgroup, have.AncestorCgroup},
		{vs.HaveRdonlyCast, have.RdonlyCast},
		{vs.HaveTaskStorage, have.taskStorage()},
		// The tracepoint program's accept reports preblocked threads for fexit/kretprobe.
		{vs.AcceptBackend, uint8(b)},
		{vs.ChurnMode, o.Churn},
		{vs.SampleEvery, o.Sample},
		{vs.CpusPerRing, uint32(perRing)},
		// Wake the reader per batch of 1,024 events, or per quarter of a small ring.
		{vs.WakeupBytes, min(uint64(1024*unsafe.Sizeof(porttraceEvent{})), uint64(size/4))},
		{vs.WakeupNs, uint64(WakeupAfter)},
	} {
		if err := k.v.Set(k.val); err != nil {
			return fmt.Errorf("setting %s: %w", k.v.Name, err)
		}
	}
	return nil
}
