package flagcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/netns"
)

// NetnsList is --netns: network namespace files, or all. Set checks how
// the list is written; Netns, after parsing, what the files are.
type NetnsList []string

// Set adds the paths of a comma-separated list.
func (n *NetnsList) Set(s string) error {
	list := append(slices.Clone(*n), strings.Split(s, ",")...)
	if err := checkNetnsList(list); err != nil {
		return err
	}
	*n = list
	return nil
}

func (n *NetnsList) String() string { return strings.Join(*n, ",") }

// Type is what --help shows as the value's kind.
func (n *NetnsList) Type() string { return "paths" }

// checkNetnsList refuses a --netns list no file could answer: an empty
// path (the default, porttrace's own namespace, is had by leaving the flag
// out), a control byte (the path is echoed in messages and on each line
// of a table), or all with anything else.
func checkNetnsList(list []string) error {
	for _, path := range list {
		if path == "" {
			return errors.New("empty namespace path: want PATH,... or all")
		}
		if strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return errors.New("a namespace path with a control character")
		}
	}
	if len(list) > 1 && slices.Contains(list, "all") {
		return errors.New("all is every namespace already: name no other with it")
	}
	return nil
}

// Netns checks --netns before anything runs, so a typo is a usage
// error: every file must exist and be a network namespace. One porttrace
// may not look at (another user's process, without root) is left for the
// run to report.
func Netns(list []string) error {
	if err := checkNetnsList(list); err != nil {
		return fmt.Errorf("invalid --netns: %w", err)
	}
	for _, path := range list {
		if path == "all" {
			continue
		}
		if err := checkNetnsFile(path); err != nil {
			return fmt.Errorf("invalid --netns %q: %w", path, err)
		}
	}
	return nil
}

// checkNetnsFile opens path as setns(2) will, and asks the kernel what it is.
func checkNetnsFile(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil
	}
	if err != nil {
		return pathCause(err)
	}
	if !st.Mode().IsRegular() {
		// A namespace file is a regular one; opening a FIFO would block.
		return fmt.Errorf("%w (want /run/netns/NAME or /proc/PID/ns/net)", netns.ErrNotNamespace)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return netns.Check(fd)
}

// pathCause is err without the operation and path an *fs.PathError adds,
// for a message that names the path already.
func pathCause(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}
