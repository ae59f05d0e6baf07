package netns

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// The main thread stays the main goroutine's: a test's thread that
	// entered another namespace must end with its goroutine, which the
	// main thread cannot.
	runtime.LockOSThread()
	os.Exit(m.Run())
}

// Gone tells of a namespace as the kernel destroys it, and not before:
// held open by the test, it lives, and Gone (which holds nothing) says
// nothing; let go, it is destroyed and Gone names its path, once. Two
// paths of one namespace are each named.
func TestGone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creating a network namespace, assigning it an nsid")
	}
	fd := newNetnsFd(t)
	held := true
	defer func() {
		if held {
			unix.Close(fd)
		}
	}()
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	gone := make(chan string, 4)
	stop, err := Gone([]string{path, path}, func(p string) { gone <- p })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case p := <-gone:
		t.Fatalf("%s said gone while held open", p)
	case <-time.After(500 * time.Millisecond):
	}
	unix.Close(fd)
	held = false
	for range 2 {
		select {
		case p := <-gone:
			if p != path {
				t.Errorf("gone: %s, want %s", p, path)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not said gone within 10s of its last reference")
		}
	}
	select {
	case p := <-gone:
		t.Errorf("%s said gone again", p)
	case <-time.After(200 * time.Millisecond):
	}
}

// A namespace porttrace holds is orphaned once nothing else keeps it:
// while another fd holds it, it is not; closed, it is.
func TestHeldOrphaned(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creating a network namespace")
	}
	fd := newNetnsFd(t)
	held, err := Hold([]string{fmt.Sprintf("/proc/self/fd/%d", fd)})
	if err != nil || len(held) != 1 {
		t.Fatalf("hold: %v %v", held, err)
	}
	defer held[0].Close()
	if held[0].Orphaned() {
		t.Error("orphaned while another fd holds it")
	}
	unix.Close(fd)
	if !held[0].Orphaned() {
		t.Error("not orphaned with only its own fd left")
	}
}

// newNetnsFd makes a network namespace and returns a file descriptor that
// alone holds it: the thread that made it dies with its goroutine.
func newNetnsFd(t *testing.T) int {
	t.Helper()
	fdc := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fdc <- -1
			return
		}
		fd, _ := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		fdc <- fd
	}()
	fd := <-fdc
	if fd < 0 {
		t.Fatal("creating a network namespace")
	}
	return fd
}
