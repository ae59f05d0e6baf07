package tracer

import (
	"testing"

	"github.com/porttrace/porttrace/tracer/event"
)

// The kernel tests keep what the first start read (TestMain sets
// kept.keep): a later start reads neither the kernel's BTF nor the object
// again, and one with keep unset keeps nothing, as porttrace's own.
func TestKernelStartKeepsWhatItRead(t *testing.T) {
	NeedRoot(t)
	o := Options{Backend: Backend(t), Events: KindsOf(event.KindBind)}
	newTracer(t, o).Close()
	cache, spec := kept.get()
	if cache == nil || spec == nil {
		t.Fatalf("after a start: cache %v, object %v; want both kept", cache, spec)
	}
	newTracer(t, o).Close()
	if c, s := kept.get(); c != cache || s != spec {
		t.Errorf("a second start read the kernel's BTF or the object again")
	}

	kept.Lock()
	kept.keep, kept.cache, kept.spec = false, nil, nil
	kept.Unlock()
	defer func() {
		kept.Lock()
		kept.keep = true
		kept.Unlock()
	}()
	newTracer(t, o).Close()
	if c, s := kept.get(); c != nil || s != nil {
		t.Errorf("with keep unset, a start kept its cache (%v) or object (%v)", c, s)
	}
}
