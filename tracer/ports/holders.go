package ports

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/proc"
	"github.com/porttrace/porttrace/tracer/internal/workload"
	"github.com/porttrace/porttrace/tracer/textout"
)

// holderIndex maps socket inodes to the processes holding them, and says
// how much of the process table porttrace could read: a socket nobody
// holds is only an orphan if no holder could have been hidden.
type holderIndex struct {
	bySocket   map[uint32][]Holder
	unreadable int  // processes whose fds porttrace may not read
	pidnsChild bool // porttrace sees only the processes of its own pid namespace
}

// socketHolders reads /proc/PID/fd of every process for the holders of
// the sockets want names, and describes those processes alone. With no
// socket wanted it reads nothing.
func socketHolders(want map[uint32]bool) (*holderIndex, error) {
	hi := &holderIndex{bySocket: map[uint32][]Holder{}}
	if len(want) == 0 {
		return hi, nil
	}
	socks, err := proc.SocketOwners(nil, func(inode uint32) bool { return want[inode] })
	if err != nil {
		return nil, err
	}
	hi.unreadable, hi.pidnsChild = socks.Unreadable, InChildPidns()
	en := proc.NewEnricher()
	described := map[int]*Holder{}
	for inode, fds := range socks.ByInode {
		for _, f := range fds {
			h := described[f.PID]
			if h == nil {
				h = describe(f.PID, en)
				described[f.PID] = h
			}
			hh := *h
			hh.FD = f.FD
			hi.bySocket[inode] = append(hi.bySocket[inode], hh)
		}
	}
	return hi, nil
}

// InChildPidns reports whether the /proc porttrace reads is that of a pid
// namespace below the initial one (porttrace in a container): processes
// outside it, which may hold sockets of a network namespace it shares,
// are not in it.
func InChildPidns() bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return false
	}
	self, err := procfs.Self()
	if err != nil {
		return false
	}
	status, err := self.NewStatus()
	if err != nil {
		return false
	}
	return procPidnsChild(st.Ino, len(status.NSpids))
}

// procPidInitIno is the inode of the initial pid namespace
// (PROC_PID_INIT_INO, include/linux/proc_ns.h; fixed since Linux 3.8).
const procPidInitIno = 0xEFFFFFFC

// procPidnsChild decides inChildPidns from the inode of porttrace's pid
// namespace and the number of pids NSpid in /proc/self/status gives it.
// NSpid counts the levels from the namespace of that /proc down to
// porttrace's own, so it is one entry both on the host and in a container
// with its own /proc: only the first is the whole process table. More
// entries mean a /proc from above, as a container given the host's has.
func procPidnsChild(pidnsIno uint64, nspids int) bool {
	return pidnsIno != procPidInitIno && nspids == 1
}

// orphanNote is why a socket no process holds deserves a look, worded by
// what porttrace could see: only with the whole process table in view is
// it sure no live process holds it.
func (hi *holderIndex) orphanNote() string {
	switch {
	case hi.pidnsChild:
		return "no process visible in this pid namespace holds it"
	case hi.unreadable > 0:
		return fmt.Sprintf("no process porttrace may read holds it (%d %s unreadable)",
			hi.unreadable, textout.Plural(hi.unreadable, "process", "processes"))
	}
	return "no live process holds it"
}

// describe is a holder as /proc tells of it; a user id porttrace could not
// read leaves the user unnamed rather than root.
func describe(pid int, en *proc.Enricher) *Holder {
	f := proc.ReadFacts("/proc", uint32(pid), proc.FactsAll)
	h := &Holder{PID: uint32(pid), PPID: f.PPID, UID: f.UID, Comm: f.Comm, Exe: f.Exe, ExeDeleted: f.ExeDeleted,
		Cgroup: f.Cgroup, Workload: en.Workload(f.Cgroup), Start: f.Start}
	if f.HasUID {
		h.User = en.User(h.UID)
	}
	return h
}

// nameHolders fills in the names of the containers the holders are in,
// from the runtime's API: a snapshot waits for them, at most namesWait
// in all, and shows ids where they did not come.
func nameHolders(socks []Socket, r *workload.Resolver) {
	if !r.Active() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), namesWait)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	names := map[string]workload.Names{}
	for i := range socks {
		for _, h := range socks[i].Holders {
			w := h.Workload
			id := w.ContainerID
			if _, ok := names[id]; id == "" || ok {
				continue
			}
			names[id] = workload.Names{}
			wg.Go(func() {
				n, _ := r.WaitOf(ctx, w)
				mu.Lock()
				names[id] = n
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for i := range socks {
		for j := range socks[i].Holders {
			h := &socks[i].Holders[j]
			h.Names = names[h.Workload.ContainerID]
		}
	}
}

// namesWait bounds how long a snapshot waits for container names.
const namesWait = 2 * time.Second

// anyContainer reports whether a holder of any socket is in a container.
func anyContainer(socks []Socket) bool {
	for i := range socks {
		for _, h := range socks[i].Holders {
			if h.Workload.ContainerID != "" {
				return true
			}
		}
	}
	return false
}
