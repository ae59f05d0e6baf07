package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// ErrStopped is returned by Read once Stop has been called and every event
// already in the ring buffer has been read.
var ErrStopped = errors.New("tracer stopped")

// DefaultRingBufferSize is the ring buffer for ncpu CPUs: 8 MiB (about
// 58,000 events, seconds of a connection storm on a small machine), or
// 1 MiB a CPU on a larger one, rounded up to a power of two and at most
// MaxRingBufferSize: every CPU writes into it, and a node with more cores
// makes a storm faster.
func DefaultRingBufferSize(ncpu int) uint32 {
	size := uint32(8 << 20)
	for int(size) < ncpu<<20 && size < MaxRingBufferSize {
		size <<= 1
	}
	return size
}

// MaxRingBufferSize bounds --buffer: the kernel takes up to 2 GiB less a
// page, and porttrace keeps it sane for a machine it watches.
const MaxRingBufferSize = 1 << 30

// ReadEvery bounds how long an event can wait in the ring buffer when too
// few have gathered to wake the reader.
const ReadEvery = 25 * time.Millisecond

// Options select what the kernel side reports. Filters here run in the
// kernel, before an event costs ring-buffer space.
type Options struct {
	Backend event.Backend // BackendAuto tries fentry, kprobe, tracepoint in turn
	Events  KindSet       // only these are attached
	PID     uint32        // 0: all
	// FilterUID keeps only the events of user UID (root's too: 0 is a
	// user like any other here).
	FilterUID bool
	UID       uint32
	Ports     *PortSet
	// Cgroups keeps only the tasks in these cgroups (cgroup v2 ids: the
	// directories' inode numbers) or below them; SetCgroup adds more.
	// Kernels without bpf_get_current_ancestor_cgroup_id in tracing
	// programs (5.10) walk the cgroup's parents with CO-RE instead.
	Cgroups []uint64
	// JudgeUnknown, with Cgroups, also sends the calls of cgroups that
	// have no verdict yet, for the caller to judge (SetCgroup).
	JudgeUnknown bool
	// Netns keeps only the sockets in these network namespaces (inode
	// numbers); nil: every namespace.
	Netns []uint32

	// Churn counts ephemeral port allocations in kernel maps (see
	// ChurnSampler) instead of sending events.
	Churn bool

	// RingBufferSize in bytes, a power of two and a multiple of the page
	// size; 0 means DefaultRingBufferSize for this machine's CPUs.
	RingBufferSize uint32

	// MaxConnecting bounds the connects in progress followed at once; 0
	// means DefaultMaxConnecting.
	MaxConnecting uint32

	// Sample sends one event in Sample of those that pass the filters, on
	// each CPU, and counts the others (SampledOut); 0 or 1: every event.
	Sample uint32

	// ExtraFDs are file descriptors the caller will need besides the
	// tracer's (a /metrics server): New checks that they are free too.
	ExtraFDs int
}

// Tracer is a loaded and attached backend and the reader of its ring buffer.
type Tracer struct {
	backend    event.Backend
	notes      []string        // why each backend tried before it was refused
	refused    []event.Backend // those backends
	without    []string        // the helpers the kernel lacks, and what the backend does instead
	l          *loaded
	links      []link.Link
	rd         *ringbuf.Reader
	rec        ringbuf.Record
	bootOffset time.Duration
	stopOnce   sync.Once
	comms      *interner
	phases     []Phase       // how long each step of New took
	waited     time.Duration // Read's time waiting for events (Waited)
}

// Phase is one step of starting a tracer and how long it took, for -v:
// where a slow start goes.
type Phase struct {
	Name string
	Took time.Duration
}

// describePhases: "31 ms (kernel BTF 12 ms, tracepoint load 15 ms, ...)".
func (t *Tracer) describePhases() string {
	var total time.Duration
	parts := make([]string, len(t.phases))
	for i, p := range t.phases {
		total += p.Took
		parts[i] = fmt.Sprintf("%s %s", p.Name, p.Took.Round(100*time.Microsecond))
	}
	return fmt.Sprintf("%s (%s)", total.Round(100*time.Microsecond), strings.Join(parts, ", "))
}

// Phases says how long each step of New took.
func (t *Tracer) Phases() []Phase { return t.phases }

// mark ends the phase begun at *since.
func (t *Tracer) mark(name string, since *time.Time) {
	now := time.Now()
	t.phases = append(t.phases, Phase{name, now.Sub(*since)})
	*since = now
}

// New loads and attaches the chosen backend, or with BackendAuto the first
// that works. The reasons others were refused are in Notes.
func New(o Options) (*Tracer, error) {
	t := &Tracer{comms: newInterner()}
	since := time.Now()
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := checkFreeFDs(o.ExtraFDs); err != nil {
		return nil, err
	}
	ensureTracefs()
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}
	t.mark("checks", &since)
	order := []event.Backend{event.BackendFentry, event.BackendKprobe, event.BackendTracepoint}
	if o.Backend != event.BackendAuto {
		order = []event.Backend{o.Backend}
	}
	cache, spec, have, err := prelude(slices.Contains(order, event.BackendFentry))
	if err != nil {
		return nil, err
	}
	t.mark("kernel BTF, object, probes", &since)
	if forceHelpers != nil {
		forceHelpers(&have)
	}
	var errs []error
	for _, b := range order {
		err := t.start(b, o, spec.Copy(), cache, have, &since)
		if err == nil {
			t.backend = b
			t.without = have.missing(b == event.BackendTracepoint, o.Cgroups != nil)
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
		t.notes = append(t.notes, fmt.Sprintf("%s refused: %v", b, err))
		t.refused = append(t.refused, b)
	}
	if t.l == nil {
		if err := JoinErrors(errs...); errors.Is(err, unix.EMFILE) {
			return nil, fmt.Errorf("too many open files while loading (RLIMIT_NOFILE): raise the limit (ulimit -n): %w", err)
		}
		if len(order) == 1 {
			return nil, explain(errs[0])
		}
		return nil, fmt.Errorf("no usable backend: %w", explain(JoinErrors(errs...)))
	}
	now, boot := time.Now(), monotonicBoot()
	t.bootOffset = time.Duration(now.UnixNano() - boot)
	// The kernel's BTF (its file mapped, its types decoded: 10 MB here) and
	// the object's specs are garbage now: let them go soon rather than at
	// the first collection, some megabytes of events later, and beside the
	// first events rather than before them.
	go debug.FreeOSMemory()
	return t, nil
}

// prelude reads what every backend needs, at once rather than one after
// another (about 10 ms each here): the kernel's BTF, porttrace's object, the
// helpers the kernel has, and, when fentry may be tried, whether the kernel
// loads tracing programs at all (cilium/ebpf keeps the answer, so start
// asks again for free). The kernel's BTF is read into a cache that every
// load shares: CO-RE and fexit's attach targets alike find it there, where
// a load of its own would read it again.
func prelude(fentry bool) (cache *btf.Cache, spec *ebpf.CollectionSpec, have helpers, err error) {
	var kernelErr, specErr, haveErr error
	cache = btf.NewCache()
	var wg sync.WaitGroup
	wg.Go(func() {
		// The first lookup by name indexes every type (5 ms here): done
		// here, beside the rest, rather than in the first backend's start.
		var kernel *btf.Spec
		if kernel, kernelErr = cache.Kernel(); kernelErr == nil {
			listenFunc(kernel)
		}
	})
	wg.Go(func() { spec, specErr = loadPorttrace() })
	wg.Go(func() { have, haveErr = probeHelpers() })
	if fentry {
		wg.Go(func() { _ = fentryAvailable() })
	}
	wg.Wait()
	switch {
	case kernelErr != nil:
		return nil, nil, have, fmt.Errorf("reading kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): %w", kernelErr)
	case specErr != nil:
		return nil, nil, have, fmt.Errorf("reading the embedded BPF object: %w", specErr)
	}
	return cache, spec, have, haveErr
}

func (t *Tracer) start(b event.Backend, o Options, spec *ebpf.CollectionSpec, cache *btf.Cache, have helpers, since *time.Time) (err error) {
	kernel, err := cache.Kernel()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			t.mark(b.String()+" refused", since)
		} else {
			t.mark(b.String()+" ring", since)
		}
	}()
	listenFn, onSock := listenFunc(kernel)
	switch b {
	case event.BackendKprobe:
		if err := kprobesAvailable(); err != nil {
			return err
		}
		removeStaleKprobes()
	case event.BackendFentry:
		if err := fentryAvailable(); err != nil {
			return err
		}
		if err := checkFexitParams(kernel, listenFn); err != nil {
			return err
		}
	}
	if err := configure(spec, b, o, onSock, have, anyContextAlloc(kernel)); err != nil {
		return err
	}
	t.mark(b.String()+" checks", since)
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}, Cache: cache}
	l, err := loadBackend(b, spec, opts, listenFn, have, o.Events, o.Churn)
	t.mark(b.String()+" load", since)
	if errors.Is(err, unix.EPERM) && os.Geteuid() == 0 {
		return errRefused
	}
	if err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	defer func() {
		if err != nil {
			t.detach()
			l.close()
		}
	}()
	if o.Ports != nil && !o.Ports.Empty() {
		if err := l.maps.PortFilter.Put(uint32(0), &porttracePortBitmap{Bits: o.Ports.bits}); err != nil {
			return fmt.Errorf("setting the port filter: %w", err)
		}
	}
	for _, ino := range o.Netns {
		if err := l.maps.NetnsFilter.Put(ino, uint8(1)); err != nil {
			return fmt.Errorf("setting the network namespace filter: %w", err)
		}
	}
	for _, id := range o.Cgroups {
		if err := l.maps.CgroupFilter.Put(id, uint8(cgroupIn)); err != nil {
			return fmt.Errorf("setting the cgroup filter: %w", err)
		}
	}
	if err := t.attach(l, o.Events, o.Churn); err != nil {
		return err
	}
	t.mark(b.String()+" attach", since)
	rd, err := ringbuf.NewReader(l.maps.Events)
	if err != nil {
		return fmt.Errorf("opening the ring buffer: %w", err)
	}
	t.l, t.rd = l, rd
	return nil
}

// configure sets the knobs of spec before load (bpf/common.h: the const
// volatile globals) and sizes the ring buffer.
func configure(spec *ebpf.CollectionSpec, b event.Backend, o Options, listenOnSk bool, have helpers, anyContext bool) error {
	var specs porttraceSpecs
	if err := spec.Assign(&specs); err != nil {
		return fmt.Errorf("reading the object's specs: %w", err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		ncpu = runtime.NumCPU()
	}
	size := DefaultRingBufferSize(ncpu)
	if o.RingBufferSize != 0 {
		size = o.RingBufferSize
	}
	specs.Events.MaxEntries = size
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
		// The tracepoint program's accept reports preblocked threads for fexit/kretprobe.
		{vs.AcceptBackend, uint8(b)},
		{vs.ChurnMode, o.Churn},
		{vs.SampleEvery, o.Sample},
		// Wake the reader per batch of 1,024 events, or per quarter of a small ring.
		{vs.WakeupBytes, min(uint64(1024*unsafe.Sizeof(porttraceEvent{})), uint64(size/4))},
	} {
		if err := k.v.Set(k.val); err != nil {
			return fmt.Errorf("setting %s: %w", k.v.Name, err)
		}
	}
	return nil
}

// attach attaches the hooks of the events asked for, and the one for
// accepts already waiting when the backend cannot see them otherwise.
// Connects are followed to their end unless only counted (churn).
func (t *Tracer) attach(l *loaded, events KindSet, churn bool) error {
	for _, h := range l.hooks {
		if !h.wanted(events, churn) {
			continue
		}
		lk, err := h.attach()
		if err != nil {
			return fmt.Errorf("attaching %s: %w", h.name, err)
		}
		t.links = append(t.links, lk)
	}
	if l.preblocked != nil && events.Has(event.KindAccept) {
		return t.attachPreblocked(l)
	}
	return nil
}

// attachPreblocked covers the accept() calls already waiting when the
// fexit/kretprobe hooks attached: those hooks only see calls that start
// later. Run after they are attached, so a call is seen by one or the other.
func (t *Tracer) attachPreblocked(l *loaded) error {
	tids := blockedInAccept()
	if len(tids) == 0 {
		return nil
	}
	for _, tid := range tids {
		if err := l.maps.Preblocked.Put(tid, uint8(1)); err != nil {
			return fmt.Errorf("recording blocked accept of thread %d: %w", tid, err)
		}
	}
	for _, h := range []hook{tp(event.KindAccept, "sys_exit_accept", &l.preblocked), tp(event.KindAccept, "sys_exit_accept4", &l.preblocked)} {
		lk, err := h.attach()
		if err != nil {
			return fmt.Errorf("attaching %s: %w", h.name, err)
		}
		t.links = append(t.links, lk)
	}
	return nil
}

// Verdicts on a cgroup, as bpf/common.h's cgroup_filter holds them.
const (
	cgroupIn  = 1
	cgroupOut = 2
)

// SetCgroup gives the kernel a verdict on cgroup id while tracing: in
// (the cgroup and those below it are traced) or out. The tracer must have
// been started with Options.Cgroups set, empty or not.
func (t *Tracer) SetCgroup(id uint64, in bool) error {
	v := uint8(cgroupOut)
	if in {
		v = cgroupIn
	}
	if err := t.l.maps.CgroupFilter.Put(id, v); err != nil {
		return fmt.Errorf("setting cgroup %d in the filter: %w", id, err)
	}
	return nil
}

// Backend is the backend in use.
func (t *Tracer) Backend() event.Backend { return t.backend }

// Notes says why backends tried before the chosen one were refused.
func (t *Tracer) Notes() []string { return t.notes }

// Read blocks for the next event and decodes it into ev. After Stop it
// returns what is left in the ring buffer, then ErrStopped.
func (t *Tracer) Read(ev *event.Event) error {
	for {
		// The kernel wakes the reader only once a batch has gathered
		// (wakeup_flags in bpf/common.h); the deadline picks up the rest.
		now := time.Now()
		empty := t.rd.AvailableBytes() == 0
		t.rd.SetDeadline(now.Add(ReadEvery))
		err := t.rd.ReadInto(&t.rec)
		if empty {
			t.waited += time.Since(now)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
				return ErrStopped
			}
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		if len(t.rec.RawSample) < int(unsafe.Sizeof(porttraceEvent{})) {
			continue
		}
		decode((*porttraceEvent)(unsafe.Pointer(&t.rec.RawSample[0])), t.bootOffset, ev, t.comms)
		return nil
	}
}

// Waited is how long Read has waited, all told, for events to come: the
// time the reader was not the bottleneck.
func (t *Tracer) Waited() time.Duration { return t.waited }

// Pending reports whether more events are waiting in the ring buffer, so a
// writer knows when to flush.
func (t *Tracer) Pending() bool { return t.rd.AvailableBytes() > 0 }

// Lost is how many events the kernel dropped because the ring buffer was full.
func (t *Tracer) Lost() (uint64, error) { return t.counter(porttraceCounterCNT_LOST) }

// SampledOut is how many events Options.Sample left out.
func (t *Tracer) SampledOut() (uint64, error) { return t.counter(porttraceCounterCNT_SAMPLED_OUT) }

// MaxConnecting is how many connects in progress the kernel follows at once.
func (t *Tracer) MaxConnecting() int { return int(t.l.maps.Connecting.MaxEntries()) }

// Unfollowed is how many connects in progress the kernel could not follow
// to their end, because Options.MaxConnecting were already in progress:
// their connect_done is never sent.
func (t *Tracer) Unfollowed() (uint64, error) { return t.counter(porttraceCounterCNT_UNFOLLOWED) }

// DefaultMaxConnecting is how many connects in progress the kernel follows
// at once (bpf/common.h's connecting map) unless Options say otherwise:
// about 13 MB of kernel memory when full, none until used. Kernels whose
// BPF hash maps cannot allocate from any context (before 6.1's
// bpf_mem_alloc) get a map allocated in full at load, and so a smaller
// one, oldKernelMaxConnecting (3 MB).
const (
	DefaultMaxConnecting   = 65536
	oldKernelMaxConnecting = 16384
)

func (t *Tracer) counter(idx porttraceCounter) (uint64, error) {
	var perCPU []uint64
	if err := t.l.maps.Counters.Lookup(idx, &perCPU); err != nil {
		return 0, fmt.Errorf("reading counters: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Stop detaches every hook, so no new event is produced, and makes Read
// return the events still buffered, then ErrStopped. Safe to call from
// another goroutine and more than once.
func (t *Tracer) Stop() {
	t.stopOnce.Do(func() {
		t.detach()
		_ = t.rd.Flush()
	})
}

// detach closes the links in parallel: each tracepoint detach waits for an
// RCU grace period (~60 ms), which one after another adds up to most of a
// second on exit.
func (t *Tracer) detach() {
	var wg sync.WaitGroup
	for _, lk := range t.links {
		wg.Go(func() { _ = lk.Close() })
	}
	wg.Wait()
	t.links = nil
}

// Close stops the tracer and frees everything it loaded.
func (t *Tracer) Close() error {
	t.Stop()
	return JoinErrors(t.rd.Close(), t.l.close())
}

func monotonicBoot() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// String describes the choice and why each backend tried before it was
// refused.
func (t *Tracer) String() string { return t.Describe(true) }

// Describe says which backend was chosen, for the startup line on stderr.
// Why the ones tried before it were refused takes a line of its own
// kernel errors each; unless verbose, they are only named.
func (t *Tracer) Describe(verbose bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "the %s backend", t.backend)
	if verbose {
		for _, n := range append(append([]string{}, t.without...), t.notes...) {
			fmt.Fprintf(&b, "; %s", n)
		}
		return b.String()
	}
	var parts []string
	if len(t.without) > 0 {
		parts = append(parts, "older-kernel mode")
	}
	if len(t.refused) > 0 {
		names := make([]string, len(t.refused))
		for i, r := range t.refused {
			names[i] = r.String()
		}
		parts = append(parts, strings.Join(names, " and ")+" refused by this kernel")
	}
	if len(parts) > 0 {
		fmt.Fprintf(&b, " (%s; -v says why)", strings.Join(parts, "; "))
	}
	return b.String()
}
