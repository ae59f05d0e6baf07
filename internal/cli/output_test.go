package cli

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// watchReader tells a pipe whose reader closed it at once, with no write
// to find out; it leaves a file alone, and stops when told.
func TestWatchReader(t *testing.T) {
	for _, tc := range []struct {
		name     string
		open     func(t *testing.T) (out *os.File, leave func())
		wantGone bool
	}{
		{"pipe, reader leaves", func(t *testing.T) (*os.File, func()) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			return w, func() { r.Close() }
		}, true},
		{"pipe, reader stays", func(t *testing.T) (*os.File, func()) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			return w, func() {}
		}, false},
		{"file", func(t *testing.T) (*os.File, func()) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f, func() {}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, leave := tc.open(t)
			gone := make(chan struct{})
			stop := watchReader(out, func() { close(gone) })
			leave()
			select {
			case <-gone:
				if !tc.wantGone {
					t.Error("told the reader was gone; it is not")
				}
			case <-time.After(300 * time.Millisecond):
				if tc.wantGone {
					t.Error("not told within 300ms that the reader was gone")
				}
			}
			stopped := make(chan struct{})
			go func() { stop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(time.Second):
				t.Fatal("the watch did not stop within 1s")
			}
		})
	}
}
