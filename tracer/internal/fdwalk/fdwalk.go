// Package fdwalk walks the fd tables of /proc, a few hundred entries at a
// time: what a walk holds in memory does not follow how many files the
// machine's processes have open, which on a busy node is hundreds of
// thousands. ports and clash look through it for who holds a socket, churn
// and the netns watches for who holds a namespace open.
package fdwalk

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// batch is how many directory entries a walk reads at once.
const batch = 256

// FD is one open file of a process: the target of its /proc link, such
// as "socket:[123]" or "net:[4026531840]".
type FD struct {
	PID, Num int
	Target   string
}

// Path is the fd's link under /proc, which opens the file itself.
func (f FD) Path() string {
	return "/proc/" + strconv.Itoa(f.PID) + "/fd/" + strconv.Itoa(f.Num)
}

// Inode reads the inode out of a link to an inode of kind that has no
// path (a socket, a namespace): "KIND:[INODE]", as /proc/PID/fd/N and
// /proc/PID/ns/net give it.
func Inode(link, kind string) (uint32, bool) {
	rest, ok := strings.CutPrefix(link, kind+":[")
	if !ok {
		return 0, false
	}
	inode, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(inode), true
}

// Walk calls fn with each fd of each process keep accepts (nil: every
// process), in the order /proc lists them, until fn returns false. A
// process or fd that goes during the walk is passed over. It returns how
// many processes' fds porttrace could not read (no CAP_SYS_PTRACE over
// them, or another user's without CAP_DAC_READ_SEARCH): a socket or
// namespace no fd was seen to hold may be held by one of them.
func Walk(keep func(pid int) bool, fn func(FD) bool) (unreadable int, err error) {
	procDir, err := os.Open("/proc")
	if err != nil {
		return 0, err
	}
	defer procDir.Close()
	for {
		names, err := procDir.Readdirnames(batch)
		for _, name := range names {
			pid, perr := strconv.Atoi(name)
			if perr != nil || (keep != nil && !keep(pid)) {
				continue
			}
			denied, more := walkProcess(pid, fn)
			if denied {
				unreadable++
			}
			if !more {
				return unreadable, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return unreadable, nil
		}
		if err != nil {
			return unreadable, err
		}
	}
}

// walkProcess calls fn with each fd of process pid. denied says that its
// fds, or their links, were closed to porttrace; more is false once fn
// asked to stop.
func walkProcess(pid int, fn func(FD) bool) (denied, more bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	d, err := os.Open(dir)
	if err != nil {
		return errors.Is(err, fs.ErrPermission), true // else gone, or a kernel thread's
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(batch)
		for _, name := range names {
			num, perr := strconv.Atoi(name)
			if perr != nil {
				continue
			}
			target, lerr := os.Readlink(dir + name)
			if errors.Is(lerr, fs.ErrPermission) {
				// The fd list may be readable where its links are not
				// (a process porttrace may not ptrace).
				return true, true
			}
			if lerr != nil {
				continue // closed since the listing
			}
			if !fn(FD{PID: pid, Num: num, Target: target}) {
				return false, false
			}
		}
		if err != nil {
			return errors.Is(err, fs.ErrPermission), true
		}
	}
}
