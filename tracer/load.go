package tracer

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// loadObjects is spec.LoadAndAssign(to, opts) with the programs verified at
// once. The kernel verifies each program on its own, and verifying is most
// of a start (the tracepoint backend's programs: about 40 ms one after
// another here, the connect exit 30 of them), so on more than one CPU a
// backend loads in about the time of its largest program. The maps come
// first, as LoadAndAssign would make them: those to names and those its
// programs use (the backend's own stashes, the knobs in .rodata, the
// globals in .bss), once, so every program shares them; then each program
// of to that want names (by the address of its field) is loaded on a
// goroutine of its own against them; the others stay nil.
func loadObjects(spec *ebpf.CollectionSpec, to any, opts *ebpf.CollectionOptions, want map[**ebpf.Program]bool) (err error) {
	fields := taggedFields(reflect.ValueOf(to).Elem())
	var progs []string
	mapNames := map[string]bool{}
	for name, f := range fields {
		switch f.Type() {
		case reflect.TypeFor[*ebpf.Program]():
			if !want[f.Addr().Interface().(**ebpf.Program)] {
				delete(fields, name)
				continue
			}
			ps, ok := spec.Programs[name]
			if !ok {
				return fmt.Errorf("missing program %q", name)
			}
			progs = append(progs, name)
			for _, ins := range ps.Instructions {
				if ins.IsLoadFromMap() && ins.Reference() != "" {
					mapNames[ins.Reference()] = true
				}
			}
		case reflect.TypeFor[*ebpf.Map]():
			mapNames[name] = true
		}
	}
	slices.Sort(progs)

	// The maps from a spec without the programs, which the loader would
	// scan for kernel symbols, all three backends' (1 ms here).
	mapsOnly := *spec
	mapsOnly.Programs = nil
	made, err := loadNamed[*ebpf.Map](&mapsOnly, slices.Sorted(maps.Keys(mapNames)), opts)
	if err != nil {
		return err
	}
	defer func() {
		for name, m := range made {
			// The programs hold what they use; to keeps what it names.
			if _, kept := fields[name]; !kept || err != nil {
				m.Close()
			}
		}
	}()

	loaded := make([]*ebpf.Program, len(progs))
	errs := make([]error, len(progs))
	withMaps := *opts
	withMaps.MapReplacements = made
	var wg sync.WaitGroup
	for i, name := range progs {
		wg.Go(func() {
			var p map[string]*ebpf.Program
			p, errs[i] = loadNamed[*ebpf.Program](programSpec(spec, name, made), []string{name}, &withMaps)
			loaded[i] = p[name]
		})
	}
	wg.Wait()
	// The first failure, in the programs' order: one line, as a load of
	// them all one after another would have said (the others most often
	// fail the same way).
	if i := slices.IndexFunc(errs, func(e error) bool { return e != nil }); i >= 0 {
		err := errs[i]
		for _, p := range loaded {
			if p != nil {
				p.Close()
			}
		}
		return err
	}
	for i, name := range progs {
		fields[name].Set(reflect.ValueOf(loaded[i]))
	}
	for name, m := range made {
		if f, ok := fields[name]; ok {
			f.Set(reflect.ValueOf(m))
		}
	}
	return nil
}

// programSpec is the part of spec that one program is loaded from, beside
// the others: a copy of the program, which loading rewrites, and the specs
// of the maps made already that stand in for spec's. A copy of all of spec
// (every backend's programs and the object's types, 1 to 3 ms each here)
// for each program cost more than some of the programs take to verify.
func programSpec(spec *ebpf.CollectionSpec, prog string, made map[string]*ebpf.Map) *ebpf.CollectionSpec {
	sub := &ebpf.CollectionSpec{
		Maps:      make(map[string]*ebpf.MapSpec, len(made)),
		Programs:  map[string]*ebpf.ProgramSpec{prog: spec.Programs[prog].Copy()},
		ByteOrder: spec.ByteOrder,
	}
	for name := range made {
		sub.Maps[name] = spec.Maps[name]
	}
	return sub
}

// loadNamed loads the objects of spec called names, all of type T (maps
// or programs), with LoadAndAssign and a struct made for them.
func loadNamed[T *ebpf.Map | *ebpf.Program](spec *ebpf.CollectionSpec, names []string, opts *ebpf.CollectionOptions) (map[string]T, error) {
	sf := make([]reflect.StructField, len(names))
	for i, name := range names {
		sf[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[T](), Tag: reflect.StructTag(`ebpf:"` + name + `"`)}
	}
	v := reflect.New(reflect.StructOf(sf))
	if err := spec.LoadAndAssign(v.Interface(), opts); err != nil {
		return nil, err
	}
	out := make(map[string]T, len(names))
	for i, name := range names {
		out[name] = v.Elem().Field(i).Interface().(T)
	}
	return out, nil
}

// taggedFields are the fields of struct v, embedded structs' included,
// that carry an ebpf:"name" tag, by name.
func taggedFields(v reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Anonymous && f.Kind() == reflect.Struct {
			for name, g := range taggedFields(f) {
				out[name] = g
			}
			continue
		}
		if name := sf.Tag.Get("ebpf"); name != "" {
			out[name] = f
		}
	}
	return out
}
