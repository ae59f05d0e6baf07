package textout

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

// OutputError says a failed write the one way every command does, and
// keeps the errno for errors.Is.
func TestOutputError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // "": nil
		is   error
	}{
		{"nil", nil, "", nil},
		{"stalled", ErrStalled, ErrStalled.Error(), ErrStalled},
		{"os.File's", &fs.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.ENOSPC}, "writing output: no space left on device", syscall.ENOSPC},
		{"wrapped", fmt.Errorf("flushing: %w", &fs.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}), "writing output: broken pipe", syscall.EPIPE},
		{"bare errno", syscall.EIO, "writing output: input/output error", syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := OutputError(tc.err)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("OutputError(nil) = %v", got)
				}
				return
			}
			if got == nil || got.Error() != tc.want {
				t.Errorf("OutputError(%v) = %v, want %q", tc.err, got, tc.want)
			}
			if !errors.Is(got, tc.is) {
				t.Errorf("OutputError(%v) is not %v", tc.err, tc.is)
			}
		})
	}
}
