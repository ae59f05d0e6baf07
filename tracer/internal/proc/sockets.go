package proc

import (
	"fmt"
	"os"
	"strconv"

	"github.com/porttrace/porttrace/tracer/internal/fdwalk"
)

// SocketFD is one fd of a process that refers to a socket.
type SocketFD struct {
	PID int
	FD  int
}

// Sockets is what a walk of /proc/PID/fd found: the fds that refer to
// each socket, by inode, in the order of the walk (processes by pid, then
// fds by number), and how many processes porttrace could not read. A
// socket nobody was seen to hold is only an orphan if no holder could
// have been hidden.
type Sockets struct {
	ByInode    map[uint32][]SocketFD
	Unreadable int
}

// SocketOwners walks the fd tables (fdwalk) of every process keep
// accepts (nil: every process) for the fds of the sockets want accepts
// (nil: every socket): what ports (who holds each socket) and clash (who
// holds a port a bind wanted) ask of them. A process that exits during
// the walk is simply left out. Passing want keeps what the walk returns
// to the sockets asked about, however many other sockets the machine's
// processes hold.
func SocketOwners(keep func(pid int) bool, want func(inode uint32) bool) (Sockets, error) {
	s := Sockets{ByInode: map[uint32][]SocketFD{}}
	unreadable, err := fdwalk.Walk(keep, func(f fdwalk.FD) bool {
		if inode, ok := fdwalk.Inode(f.Target, "socket"); ok && (want == nil || want(inode)) {
			s.ByInode[inode] = append(s.ByInode[inode], SocketFD{PID: f.PID, FD: f.Num})
		}
		return true
	})
	if err != nil {
		return Sockets{}, fmt.Errorf("listing processes: %w", err)
	}
	s.Unreadable = unreadable
	return s, nil
}

// NetnsOf is the inode of the network namespace process pid lives in (its
// main thread's), from one readlink of /proc/PID/ns/net: cheap enough to
// pass over the processes of other namespaces before reading their fds.
func NetnsOf(pid int) (uint32, error) {
	link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		return 0, err
	}
	inode, ok := fdwalk.Inode(link, "net")
	if !ok {
		return 0, fmt.Errorf("/proc/%d/ns/net links to %q", pid, link)
	}
	return inode, nil
}
