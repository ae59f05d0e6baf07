package tracer

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Starting a tracer fast: what every backend needs, read at once, and how
// long each step took, which -v says.

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

// prelude reads what every backend needs, at once rather than one after
// another (about 10 ms each here): the kernel's BTF, porttrace's object, the
// helpers the kernel has, and, when fentry may be tried, whether the kernel
// loads tracing programs at all (fentryAvailable keeps the answer, so start
// asks again for free). The kernel's BTF is read into a cache that every
// load shares: CO-RE and fexit's attach targets alike find it there, where
// a load of its own would read it again. The rings are made as soon as the
// object is read: putting them in place waits for an RCU grace period
// (fillArray), which passes beside the rest.
func prelude(fentry bool, ringSize uint32) (cache *btf.Cache, spec *ebpf.CollectionSpec, rings *ringSet, have helpers, err error) {
	var kernelErr, specErr, ringsErr, haveErr error
	var kernel *btf.Spec
	cache, spec = kept.get()
	if cache == nil {
		cache = btf.NewCache()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// The first lookup by name indexes every type (5 ms here): done
		// here, beside the rest, rather than in the first backend's start.
		if kernel, kernelErr = cache.Kernel(); kernelErr == nil {
			listenFunc(kernel)
		}
	})
	wg.Go(func() {
		if spec == nil {
			spec, specErr = loadPorttrace()
		}
		if specErr == nil {
			rings, ringsErr = makeRings(spec.Maps["rings"], ringSize)
		}
	})
	wg.Go(func() { have, haveErr = probeHelpers() })
	if fentry {
		wg.Go(func() { _ = fentryAvailable(cache) })
	}
	wg.Wait()
	switch {
	case kernelErr != nil:
		err = fmt.Errorf("reading kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): %w", kernelErr)
	case specErr != nil:
		err = fmt.Errorf("reading the embedded BPF object: %w", specErr)
	case ringsErr != nil:
		err = ringsErr
	case haveErr != nil:
		err = haveErr
	}
	if err != nil {
		if rings != nil {
			rings.close()
		}
		return nil, nil, nil, have, err
	}
	have.fromKernel(kernel)
	kept.put(cache, spec)
	return cache, spec, rings, have, nil
}

// kept, once its keep is set (the tests do), holds what prelude read for
// every later New in the process: the kernel's BTF, decoded and indexed,
// and the parsed object, which start copies before it writes to it. A
// process that starts one tracer, as porttrace does, keeps neither: it
// would hold some 10 MB for nothing. The kernel tests start over a hundred
// tracers a backend, and in the kernel matrix's emulated guests reading
// both again is about a second of each start.
var kept startCache

type startCache struct {
	sync.Mutex
	keep  bool
	cache *btf.Cache
	spec  *ebpf.CollectionSpec
}

func (k *startCache) get() (*btf.Cache, *ebpf.CollectionSpec) {
	k.Lock()
	defer k.Unlock()
	return k.cache, k.spec
}

func (k *startCache) put(cache *btf.Cache, spec *ebpf.CollectionSpec) {
	k.Lock()
	defer k.Unlock()
	if k.keep {
		k.cache, k.spec = cache, spec
	}
}
