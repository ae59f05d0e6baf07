package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// sharedMaps are the maps every backend writes to.
type sharedMaps struct {
	Rings      *ebpf.Map `ebpf:"rings"`
	Counters   *ebpf.Map `ebpf:"counters"`
	PortFilter *ebpf.Map `ebpf:"port_filter"`
	// CgroupFilter holds the cgroup ids to trace with their descendants.
	CgroupFilter *ebpf.Map `ebpf:"cgroup_filter"`
	// NetnsFilter holds the network namespaces to trace.
	NetnsFilter *ebpf.Map `ebpf:"netns_filter"`
	Preblocked  *ebpf.Map `ebpf:"preblocked"`
	ChurnNs     *ebpf.Map `ebpf:"churn_ns"`
	ChurnDst    *ebpf.Map `ebpf:"churn_dst"`
	ChurnProc   *ebpf.Map `ebpf:"churn_proc"`
	// Connecting holds the connects in progress until their handshake ends.
	Connecting *ebpf.Map `ebpf:"connecting"`

	// ConnectState sends connect_done when a connect in progress ends; every
	// backend attaches it (a raw tracepoint, 4.17).
	ConnectState *ebpf.Program `ebpf:"connect_state"`
}

// connectStateHook follows connects in progress to their end
// (inet_sock_set_state). Not in churn mode: churn counts allocations.
func connectStateHook(prog **ebpf.Program) hook {
	return hook{event.KindConnectDone, "raw tracepoint inet_sock_set_state", prog, func() (link.Link, error) {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "inet_sock_set_state", Program: *prog})
	}}
}

// hook is one attachment: the event kind it reports, its program (the
// objects' field, filled by the load) and how to attach it. A backend's
// hooks are known before it loads, so only the programs of the events
// asked for are verified.
type hook struct {
	kind   event.Kind
	name   string // for messages: "tracepoint syscalls/sys_exit_bind"
	prog   **ebpf.Program
	attach func() (link.Link, error)
}

// wanted tells whether a run that asked for events attaches h; connects
// are followed to their end unless only counted (churn).
func (h *hook) wanted(events KindSet, churn bool) bool {
	return events.Has(h.kind) && !(h.kind == event.KindConnectDone && churn)
}

// wantedProgs are the programs of the hooks a run attaches, and, where the
// backend has one (fexit, kretprobe) and accepts are asked for, the one for
// accepts already waiting when it attached (attachPreblocked).
func wantedProgs(hooks []hook, events KindSet, churn bool, preblocked **ebpf.Program) map[**ebpf.Program]bool {
	want := map[**ebpf.Program]bool{}
	for i := range hooks {
		if hooks[i].wanted(events, churn) {
			want[hooks[i].prog] = true
		}
	}
	if preblocked != nil && events.Has(event.KindAccept) {
		want[preblocked] = true
	}
	return want
}

// loaded is a backend whose programs the kernel has verified, not yet attached.
type loaded struct {
	maps  *sharedMaps
	hooks []hook
	close func() error

	// preblocked reports the accepts that were already waiting when an
	// fexit or kretprobe backend attached (nil for the tracepoint backend,
	// which sees them anyway).
	preblocked *ebpf.Program
}

// tracepointObjects is what the tracepoint backend loads: kernel 5.8+ (the
// ring buffer; syscall tracepoints are 4.14). The entries of bind, listen
// and accept are attached only where bpf_task_pt_regs (5.15) is missing.
type tracepointObjects struct {
	sharedMaps
	ExitBind     *ebpf.Program `ebpf:"tp_exit_bind"`
	ExitListen   *ebpf.Program `ebpf:"tp_exit_listen"`
	EnterConnect *ebpf.Program `ebpf:"tp_enter_connect"`
	ExitConnect  *ebpf.Program `ebpf:"tp_exit_connect"`
	ExitAccept   *ebpf.Program `ebpf:"tp_exit_accept"`
	EnterBind    *ebpf.Program `ebpf:"tp_enter_bind"`
	EnterListen  *ebpf.Program `ebpf:"tp_enter_listen"`
	EnterAccept  *ebpf.Program `ebpf:"tp_enter_accept"`
}

func tp(kind event.Kind, name string, prog **ebpf.Program) hook {
	return hook{kind, "tracepoint syscalls/" + name, prog, func() (link.Link, error) {
		return link.Tracepoint("syscalls", name, *prog, nil)
	}}
}

func loadTracepoint(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, have helpers, events KindSet, churn bool) (*loaded, error) {
	var o tracepointObjects
	// Exits before entries: an exit without its entry is skipped, never misreported.
	hooks := []hook{
		tp(event.KindBind, "sys_exit_bind", &o.ExitBind),
		tp(event.KindListen, "sys_exit_listen", &o.ExitListen),
		tp(event.KindConnect, "sys_exit_connect", &o.ExitConnect),
		tp(event.KindConnect, "sys_enter_connect", &o.EnterConnect),
		tp(event.KindAccept, "sys_exit_accept", &o.ExitAccept),
		tp(event.KindAccept, "sys_exit_accept4", &o.ExitAccept),
		connectStateHook(&o.ConnectState),
	}
	if !have.TaskPtRegs {
		hooks = append(hooks,
			tp(event.KindBind, "sys_enter_bind", &o.EnterBind),
			tp(event.KindListen, "sys_enter_listen", &o.EnterListen),
			tp(event.KindAccept, "sys_enter_accept", &o.EnterAccept),
			tp(event.KindAccept, "sys_enter_accept4", &o.EnterAccept))
	}
	if err := loadObjects(spec, &o, opts, wantedProgs(hooks, events, churn, nil)); err != nil {
		return nil, err
	}
	return &loaded{
		maps:  &o.sharedMaps,
		hooks: hooks,
		close: func() error {
			return closeAll(&o.sharedMaps, o.ExitBind, o.ExitListen, o.EnterConnect, o.ExitConnect, o.ExitAccept,
				o.EnterBind, o.EnterListen, o.EnterAccept)
		},
	}, nil
}

// fentryObjects is what the fentry backend loads: kernel 5.5+ with a BPF
// trampoline on the architecture (x86-64 5.5, arm64 6.0), and the
// prototypes its fexit programs were written for (checkFexitParams).
type fentryObjects struct {
	sharedMaps
	Bind4      *ebpf.Program `ebpf:"fexit_inet_bind"`
	Bind6      *ebpf.Program `ebpf:"fexit_inet6_bind"`
	TCPEntry   *ebpf.Program `ebpf:"fentry_inet_stream_connect"`
	TFOEntry   *ebpf.Program `ebpf:"fentry_fastopen_connect"`
	DgramEntry *ebpf.Program `ebpf:"fentry_inet_dgram_connect"`
	TCP        *ebpf.Program `ebpf:"fexit_inet_stream_connect"`
	TFO        *ebpf.Program `ebpf:"fexit_fastopen_connect"`
	Dgram      *ebpf.Program `ebpf:"fexit_inet_dgram_connect"`
	Accept     *ebpf.Program `ebpf:"fexit_inet_csk_accept"`
	Listen     *ebpf.Program `ebpf:"fexit_listen"`

	PreblockedAccept *ebpf.Program `ebpf:"tp_exit_accept"`
}

func tracingEntry(kind event.Kind, fn string, prog **ebpf.Program) hook {
	h := tracing(kind, fn, prog)
	h.name = "fentry " + fn
	return h
}

func tracing(kind event.Kind, fn string, prog **ebpf.Program) hook {
	return hook{kind, "fexit " + fn, prog, func() (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: *prog})
	}}
}

func loadFentry(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, listenFn string, events KindSet, churn bool) (*loaded, error) {
	spec.Programs[porttraceProgFexitListen].AttachTo = listenFn
	// inet_csk_accept's fexit program is written once for each prototype
	// (four parameters before 6.10, two since): the one for this kernel's.
	if n, err := funcParams(opts.Programs.KernelTypes, "inet_csk_accept"); err == nil && n == 4 {
		spec.Programs[porttraceProgFexitInetCskAccept] = spec.Programs[porttraceProgFexitInetCskAcceptOld]
	}
	var o fentryObjects
	hooks := []hook{
		tracing(event.KindBind, "__inet_bind", &o.Bind4),
		tracing(event.KindBind, "__inet6_bind", &o.Bind6),
		tracing(event.KindListen, listenFn, &o.Listen),
		tracing(event.KindConnect, "inet_stream_connect", &o.TCP),
		tracing(event.KindConnect, "__inet_stream_connect", &o.TFO),
		tracing(event.KindConnect, "inet_dgram_connect", &o.Dgram),
		// Entries after exits: an exit without its entry is skipped, never misreported.
		tracingEntry(event.KindConnect, "inet_stream_connect", &o.TCPEntry),
		tracingEntry(event.KindConnect, "__inet_stream_connect", &o.TFOEntry),
		tracingEntry(event.KindConnect, "inet_dgram_connect", &o.DgramEntry),
		tracing(event.KindAccept, "inet_csk_accept", &o.Accept),
		connectStateHook(&o.ConnectState),
	}
	if err := loadObjects(spec, &o, opts, wantedProgs(hooks, events, churn, &o.PreblockedAccept)); err != nil {
		return nil, err
	}
	return &loaded{
		maps:  &o.sharedMaps,
		hooks: hooks,
		close: func() error {
			return closeAll(&o.sharedMaps, o.Bind4, o.Bind6, o.TCP, o.TFO, o.Dgram, o.TCPEntry, o.TFOEntry, o.DgramEntry,
				o.Accept, o.Listen, o.PreblockedAccept)
		},
		preblocked: o.PreblockedAccept,
	}, nil
}

// kprobeObjects is what the kprobe backend loads: CONFIG_KPROBES, kernel 5.8+.
type kprobeObjects struct {
	sharedMaps
	Bind4     *ebpf.Program `ebpf:"kp_inet_bind"`
	Bind4Ret  *ebpf.Program `ebpf:"krp_inet_bind"`
	Bind6     *ebpf.Program `ebpf:"kp_inet6_bind"`
	Bind6Ret  *ebpf.Program `ebpf:"krp_inet6_bind"`
	TCP       *ebpf.Program `ebpf:"kp_inet_stream_connect"`
	TCPRet    *ebpf.Program `ebpf:"krp_inet_stream_connect"`
	TFO       *ebpf.Program `ebpf:"kp_fastopen_connect"`
	TFORet    *ebpf.Program `ebpf:"krp_fastopen_connect"`
	Dgram     *ebpf.Program `ebpf:"kp_inet_dgram_connect"`
	DgramRet  *ebpf.Program `ebpf:"krp_inet_dgram_connect"`
	Accept    *ebpf.Program `ebpf:"kp_inet_csk_accept"`
	AcceptRet *ebpf.Program `ebpf:"krp_inet_csk_accept"`
	Listen    *ebpf.Program `ebpf:"kp_listen"`
	ListenRet *ebpf.Program `ebpf:"krp_listen"`

	PreblockedAccept *ebpf.Program `ebpf:"tp_exit_accept"`
}

func kprobe(kind event.Kind, fn string, prog **ebpf.Program, ret bool) hook {
	name := "kprobe "
	if ret {
		name = "kretprobe "
	}
	return hook{kind, name + fn, prog, func() (link.Link, error) {
		if ret {
			return link.Kretprobe(fn, *prog, &link.KprobeOptions{RetprobeMaxActive: retprobeMaxActive, TraceFSPrefix: "porttrace"})
		}
		return link.Kprobe(fn, *prog, nil)
	}}
}

// retprobeMaxActive is how many calls of a function a kretprobe follows at
// once: the most the kernel allows (KRETPROBE_MAXACTIVE_MAX). By default
// it follows one per CPU (two, at least ten, where the kernel is
// preemptible), and each thread sleeping in a blocking connect holds one,
// so a burst of connects on a non-preemptible kernel (Debian 11's 5.10)
// lost most of their returns without a word. Setting it takes the tracefs
// interface (kprobe_events), whose events are named porttrace_*.
const retprobeMaxActive = 4096

func loadKprobe(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, listenFn string, events KindSet, churn bool) (*loaded, error) {
	var o kprobeObjects
	hooks := []hook{
		// Return probes first: an entry stash without its return probe would linger.
		kprobe(event.KindBind, "__inet_bind", &o.Bind4Ret, true),
		kprobe(event.KindBind, "__inet_bind", &o.Bind4, false),
		kprobe(event.KindBind, "__inet6_bind", &o.Bind6Ret, true),
		kprobe(event.KindBind, "__inet6_bind", &o.Bind6, false),
		kprobe(event.KindListen, listenFn, &o.ListenRet, true),
		kprobe(event.KindListen, listenFn, &o.Listen, false),
		kprobe(event.KindConnect, "inet_stream_connect", &o.TCPRet, true),
		kprobe(event.KindConnect, "inet_stream_connect", &o.TCP, false),
		kprobe(event.KindConnect, "__inet_stream_connect", &o.TFORet, true),
		kprobe(event.KindConnect, "__inet_stream_connect", &o.TFO, false),
		kprobe(event.KindConnect, "inet_dgram_connect", &o.DgramRet, true),
		kprobe(event.KindConnect, "inet_dgram_connect", &o.Dgram, false),
		kprobe(event.KindAccept, "inet_csk_accept", &o.AcceptRet, true),
		kprobe(event.KindAccept, "inet_csk_accept", &o.Accept, false),
		connectStateHook(&o.ConnectState),
	}
	if err := loadObjects(spec, &o, opts, wantedProgs(hooks, events, churn, &o.PreblockedAccept)); err != nil {
		return nil, err
	}
	return &loaded{
		maps:  &o.sharedMaps,
		hooks: hooks,
		close: func() error {
			return closeAll(&o.sharedMaps, o.Bind4, o.Bind4Ret, o.Bind6, o.Bind6Ret, o.TCP, o.TCPRet,
				o.TFO, o.TFORet, o.Dgram, o.DgramRet, o.Accept, o.AcceptRet, o.Listen, o.ListenRet, o.PreblockedAccept)
		},
		preblocked: o.PreblockedAccept,
	}, nil
}

// loadBackend loads the programs of backend b that the events asked for
// need, not yet attached.
func loadBackend(b event.Backend, spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, listenFn string, have helpers,
	events KindSet, churn bool) (*loaded, error) {
	switch b {
	case event.BackendTracepoint:
		return loadTracepoint(spec, opts, have, events, churn)
	case event.BackendFentry:
		return loadFentry(spec, opts, listenFn, events, churn)
	case event.BackendKprobe:
		return loadKprobe(spec, opts, listenFn, events, churn)
	}
	return nil, fmt.Errorf("unknown backend %d", b)
}

func closeAll(m *sharedMaps, progs ...*ebpf.Program) error {
	var errs []error
	for _, p := range append(progs, m.ConnectState) {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, mp := range []*ebpf.Map{m.Rings, m.Counters, m.PortFilter, m.CgroupFilter, m.NetnsFilter, m.Preblocked, m.ChurnNs, m.ChurnDst, m.ChurnProc, m.Connecting} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return JoinErrors(errs...)
}

// listenFunc is the kernel function every listen() passes through:
// __inet_listen_sk where it exists (MPTCP's listen calls it directly, 6.12
// has it, 6.1 does not), inet_listen before.
func listenFunc(kernel *btf.Spec) (fn string, onSock bool) {
	var f *btf.Func
	if kernel != nil && kernel.TypeByName("__inet_listen_sk", &f) == nil {
		return "__inet_listen_sk", true
	}
	return "inet_listen", false
}

// fentryAvailable tells whether the kernel loads tracing (fentry/fexit)
// programs at all, with a two-instruction probe: a kernel that refuses them
// (EPERM under lockdown or by policy, or no BPF trampoline) is found out
// before porttrace's maps are created and its programs verified for nothing.
// Asked once a process (an EPERM is not kept by cilium/ebpf). The probe
// finds its attach target in cache, the kernel's BTF that every load
// shares: cilium/ebpf's own probe (features.HaveProgramType) decodes all
// of it again, 13 ms of CPU here beside the prelude's own decode.
func fentryAvailable(cache *btf.Cache) error {
	fentryOnce.Do(func() { fentryErr = probeFentry(cache) })
	return fentryErr
}

var (
	fentryOnce sync.Once
	fentryErr  error
)

func probeFentry(cache *btf.Cache) error {
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe": {
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFEntry,
		AttachTo:     "inet_bind",
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
	}}}
	var objs struct {
		Probe *ebpf.Program `ebpf:"probe"`
	}
	err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogDisabled: true}, Cache: cache})
	switch {
	case err == nil:
		return objs.Probe.Close()
	case errors.Is(err, unix.EPERM) && os.Geteuid() == 0:
		return errRefused
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.E2BIG):
		// An unknown program type, or attributes past what the kernel
		// knows: before 5.5.
		return fmt.Errorf("tracing programs (5.5): %w", ebpf.ErrNotSupported)
	}
	return err
}

// kprobesAvailable tells why kprobes cannot attach, before anything is loaded.
func kprobesAvailable() error {
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe/type"); err == nil {
		return nil
	}
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(dir + "/kprobe_events"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("kernel has no kprobe PMU and no kprobe_events (CONFIG_KPROBES off?): %w", ebpf.ErrNotSupported)
}

// removeStaleKprobes deletes the kretprobe events that a porttrace killed
// before it could remove its own (SIGKILL, a crash) left in tracefs: the
// kernel refuses (EBUSY) to delete those that a running porttrace uses, so
// only the dead ones go.
func removeStaleKprobes() {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(dir + "/kprobe_events")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			// "r4096:porttrace_0123456789abcdef/__inet_bind __inet_bind"
			_, rest, _ := strings.Cut(line, ":")
			name, _, _ := strings.Cut(rest, " ")
			if !strings.HasPrefix(name, "porttrace_") {
				continue
			}
			f, err := os.OpenFile(dir+"/kprobe_events", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return
			}
			_, _ = f.WriteString("-:" + name) // EBUSY: still in use
			f.Close()
		}
		return
	}
}

// blockedInAccept lists the threads sleeping in accept(2) or accept4(2)
// right now, from /proc/PID/task/TID/syscall (first field: the syscall
// number, while the thread is blocked in one).
func blockedInAccept() []uint32 {
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/syscall")
	var tids []uint32
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		nr, _, _ := strings.Cut(string(b), " ")
		if nr != accept && nr != accept4 {
			continue
		}
		tid, err := strconv.ParseUint(filepath.Base(filepath.Dir(path)), 10, 32)
		if err == nil {
			tids = append(tids, uint32(tid))
		}
	}
	return tids
}

var (
	accept  = strconv.Itoa(unix.SYS_ACCEPT)
	accept4 = strconv.Itoa(unix.SYS_ACCEPT4)
)
