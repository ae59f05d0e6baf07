package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// ErrStopped is returned by Read once Stop has been called and every event
// already in the ring buffer has been read.
var ErrStopped = errors.New("tracer stopped")

// ReadEvery is how often the stream writes out what it holds while events
// keep coming.
const ReadEvery = 25 * time.Millisecond

// WakeupAfter bounds how long an event waits in its ring: a program wakes
// the reader for an event unless it did less than WakeupAfter ago (or
// enough have gathered to wake it), and the reader looks again WakeupAfter
// after it last found the ring busy. A ring idle longer sleeps until its
// next event wakes it, so an idle porttrace makes no wakeups of its own.
const WakeupAfter = 5 * time.Millisecond

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

	// RingBufferSize is the size of each CPU's ring buffer in bytes, a
	// power of two and a multiple of the page size; 0 means
	// DefaultRingBufferSize for this machine's CPUs.
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

	// churnEntries, when not 0, sizes each churn map to it: tests fill a
	// small map in a moment (export_test.go).
	churnEntries uint32
}

// Tracer is a loaded and attached backend and the reader of its ring buffer.
type Tracer struct {
	backend    event.Backend
	notes      []string        // why each backend tried before it was refused
	refused    []event.Backend // those backends
	without    []string        // the helpers the kernel lacks, and what the backend does instead
	l          *loaded
	links      []link.Link
	r          *readers
	bootOffset time.Duration
	stopOnce   sync.Once
	phases     []Phase       // how long each step of New took
	waited     time.Duration // Read's time waiting for events (Waited)
}

// New loads and attaches the chosen backend, or with BackendAuto the first
// that works. The reasons others were refused are in Notes.
func New(o Options) (*Tracer, error) {
	t := &Tracer{}
	since := time.Now()
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := checkFreeFDs(o.ExtraFDs); err != nil {
		return nil, err
	}
	tracefsErr := ensureTracefs()
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// to the memory cgroup, and RemoveMemlock then leaves the limit alone.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK, which this kernel (before 5.11) charges BPF memory to: %w: raise it (ulimit -l unlimited, LimitMEMLOCK=infinity) or give porttrace CAP_SYS_RESOURCE", err)
	}
	t.mark("checks", &since)
	// No collection while starting: the kernel's BTF and the object,
	// decoded at once on two goroutines, would set off several (5 ms of
	// a start here), each finding most of what it marks still in use.
	// The collection after the start (below) frees them.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	order := []event.Backend{event.BackendFentry, event.BackendKprobe, event.BackendTracepoint}
	if o.Backend != event.BackendAuto {
		order = []event.Backend{o.Backend}
	}
	cache, spec, rings, have, err := prelude(slices.Contains(order, event.BackendFentry), o.RingBufferSize)
	if err != nil {
		return nil, err
	}
	defer rings.close()
	t.mark("kernel BTF, object, probes", &since)
	if forceHelpers != nil {
		forceHelpers(&have)
	}
	now, boot := time.Now(), monotonicBoot()
	t.bootOffset = time.Duration(now.UnixNano() - boot)
	var errs []error
	for _, b := range order {
		err := t.start(b, o, spec, rings, cache, have, &since)
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
			return nil, JoinErrors(tracefsErr, explain(errs[0]))
		}
		return nil, JoinErrors(tracefsErr, fmt.Errorf("no usable backend: %w", explain(JoinErrors(errs...))))
	}
	// The kernel's BTF (its file mapped, its types decoded: 10 MB here) and
	// the object's specs are garbage now: let them go soon rather than at
	// the first collection, some megabytes of events later, and beside the
	// first events rather than before them.
	go debug.FreeOSMemory()
	return t, nil
}

func (t *Tracer) start(b event.Backend, o Options, spec *ebpf.CollectionSpec, rings *ringSet, cache *btf.Cache, have helpers, since *time.Time) (err error) {
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
		if err := fentryAvailable(cache); err != nil {
			return err
		}
		if err := checkFexitParams(kernel, listenFn); err != nil {
			return err
		}
	}
	spec = knobsCopy(spec)
	if err := configure(spec, b, o, onSock, have, anyContextAlloc(kernel)); err != nil {
		return err
	}
	t.mark(b.String()+" checks", since)
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}, Cache: cache,
		MapReplacements: map[string]*ebpf.Map{"rings": rings.outer}}
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
	// The rings are in place before the first event.
	rgs, err := rings.open()
	if err != nil {
		return err
	}
	if err := t.attach(l, o.Events, o.Churn); err != nil {
		for _, rg := range rgs {
			rg.close()
		}
		return err
	}
	t.mark(b.String()+" attach", since)
	t.l = l
	t.startReaders(rgs, rings.shared)
	return nil
}

// knobsCopy is spec with its own copy of what configure writes to: the
// maps' specs and the knobs. Each backend tried starts from one, and so
// does each tracer started from kept. The programs and the object's BTF
// are shared, read only: loadObjects copies each program it loads, and a
// copy of all three backends' programs and of the BTF was 4 to 5 ms of a
// start here.
func knobsCopy(spec *ebpf.CollectionSpec) *ebpf.CollectionSpec {
	c := (&ebpf.CollectionSpec{Maps: spec.Maps, Variables: spec.Variables, ByteOrder: spec.ByteOrder}).Copy()
	c.Programs, c.Types = spec.Programs, spec.Types
	return c
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
	return JoinErrors(t.r.close(), t.l.close())
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
