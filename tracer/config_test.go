package tracer

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

func TestPortSet(t *testing.T) {
	for _, tc := range []struct {
		in      string
		in2     string // a second --port flag
		has     []uint16
		hasNot  []uint16
		wantErr string
	}{
		{in: "25,80,8000-8100", has: []uint16{25, 80, 8000, 8050, 8100}, hasNot: []uint16{0, 24, 81, 7999, 8101}},
		{in: "0", has: []uint16{0}, hasNot: []uint16{1}},
		{in: "65535", has: []uint16{65535}, hasNot: []uint16{65534}},
		{in: " 22 , 443 ", has: []uint16{22, 443}},
		{in: "22", in2: "53", has: []uint16{22, 53}, hasNot: []uint16{23}},
		{in: "65536", wantErr: `invalid port "65536": want a port from 1 to 65535`},
		{in: "http", wantErr: `invalid port "http"`},
		{in: "-5", wantErr: `invalid port range "-5": want FIRST-LAST`},
		{in: "80-", wantErr: `invalid port range "80-"`},
		{in: "90-80", wantErr: "runs backwards"},
		{in: "80,", wantErr: `an empty item in port list "80,"`},
		{in: "1-2-3", wantErr: `invalid port "2-3"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var p PortSet
			err := p.Set(tc.in)
			if err == nil && tc.in2 != "" {
				err = p.Set(tc.in2)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, port := range tc.has {
				if !p.Has(port) {
					t.Errorf("missing %d", port)
				}
			}
			for _, port := range tc.hasNot {
				if p.Has(port) {
					t.Errorf("has %d", port)
				}
			}
		})
	}
}

// Every reason a backend was refused goes on the one line an error gets,
// and errors.Is still finds each.
func TestJoinErrorsOneLine(t *testing.T) {
	for _, tc := range []struct {
		errs []error
		want string
	}{
		{nil, ""},
		{[]error{nil, nil}, ""},
		{[]error{fmt.Errorf("fentry: %w", unix.EPERM)}, "fentry: operation not permitted"},
		{[]error{fmt.Errorf("fentry: %w", unix.EPERM), nil, fmt.Errorf("tracepoint: opening tracefs: %w", unix.EACCES)},
			"fentry: operation not permitted; tracepoint: opening tracefs: permission denied"},
	} {
		err := JoinErrors(tc.errs...)
		if got := fmt.Sprint(err); (err == nil) != (tc.want == "") || (err != nil && got != tc.want) {
			t.Errorf("joinErrors(%v) = %q, want %q", tc.errs, got, tc.want)
		}
		for _, e := range tc.errs {
			if e != nil && !errors.Is(err, errors.Unwrap(e)) {
				t.Errorf("errors.Is(%v, %v) = false", err, errors.Unwrap(e))
			}
		}
	}
}

// The startup line names the backends refused before the chosen one; why
// each was refused (a line of kernel errors) only with -v.
func TestTracerDescribe(t *testing.T) {
	tr := &Tracer{backend: event.BackendTracepoint, refused: []event.Backend{event.BackendFentry, event.BackendKprobe},
		notes: []string{"fentry refused: the kernel refused to load its programs (EPERM ...)", "kprobe refused: kernel has no kprobe PMU"}}
	if got, want := tr.Describe(false), "the tracepoint backend (fentry and kprobe refused by this kernel; -v says why)"; got != want {
		t.Errorf("short: %q, want %q", got, want)
	}
	long := tr.Describe(true)
	for _, n := range tr.notes {
		if !strings.Contains(long, n) {
			t.Errorf("-v: %q lacks %q", long, n)
		}
	}
	if got := (&Tracer{backend: event.BackendFentry}).Describe(false); got != "the fentry backend" {
		t.Errorf("nothing refused: %q", got)
	}
}

// A ring a CPU, neighbours sharing past MaxRings; 8 MiB in all, at least
// 2 MiB a ring.
func TestRingLayout(t *testing.T) {
	for _, tc := range []struct {
		ncpu, rings, perRing int
		size                 uint32
	}{
		{1, 1, 1, 8 << 20}, {2, 2, 1, 4 << 20}, {3, 3, 1, 2 << 20}, {4, 4, 1, 2 << 20}, {16, 16, 1, 2 << 20},
		{64, 64, 1, 2 << 20}, {65, 33, 2, 2 << 20}, {96, 48, 2, 2 << 20}, {128, 64, 2, 2 << 20}, {129, 43, 3, 2 << 20}, {4096, 64, 64, 2 << 20},
	} {
		rings, perRing := ringLayout(tc.ncpu)
		if rings != tc.rings || perRing != tc.perRing {
			t.Errorf("%d CPUs: %d rings of %d CPUs, want %d of %d", tc.ncpu, rings, perRing, tc.rings, tc.perRing)
		}
		if (rings-1)*perRing >= tc.ncpu || rings*perRing < tc.ncpu {
			t.Errorf("%d CPUs: %d rings of %d CPUs leave a ring empty or a CPU out", tc.ncpu, rings, perRing)
		}
		if got := DefaultRingBufferSize(tc.ncpu); got != tc.size {
			t.Errorf("%d CPUs: %d bytes a ring, want %d", tc.ncpu, got, tc.size)
		}
	}
}
