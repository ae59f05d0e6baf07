package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/textout"
)

// Watching a namespace for its end without holding it. A trace scoped to
// namespaces by inode (the stream, churn) holds none of them open, so a
// namespace deleted (ip netns delete) and left by its last process is
// destroyed, and the trace would go on watching nothing. The kernel says
// when: each namespace that has an id (an nsid, as `ip netns set NAME
// auto` gives) in porttrace's own is announced as RTM_DELNSID to the
// RTNLGRP_NSID group there as it is destroyed (Linux 4.0+). An nsid holds
// no reference, so assigning one keeps nothing alive.

// Gone watches the network namespaces at paths and calls gone with each
// path, once, as the kernel destroys its namespace (within a second or
// so of its last reference: the kernel cleans up on a workqueue). The namespaces are open
// only while this sets up. Stop ends the watch. An error (no nsid could be
// had: CAP_NET_ADMIN is needed to assign one) leaves nothing watched.
func Gone(paths []string, gone func(path string)) (stop func(), err error) {
	sock, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("watching namespaces: %w", err)
	}
	// A netlink socket takes no shutdown: the reader wakes twice a second
	// to see whether the watch has stopped.
	tv := unix.NsecToTimeval((500 * time.Millisecond).Nanoseconds())
	if err = unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err == nil {
		err = unix.Bind(sock, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	if err == nil {
		err = unix.SetsockoptInt(sock, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.RTNLGRP_NSID)
	}
	if err != nil {
		unix.Close(sock)
		return nil, fmt.Errorf("watching namespaces: %w", err)
	}
	// Subscribed first, each namespace held open until it has its id: no
	// end falls between the two.
	ids := map[int32][]string{} // two paths may name one namespace
	self := Self()
	for _, p := range paths {
		// porttrace's own namespace cannot go while porttrace is in it,
		// and its nsid in itself would only clutter `ip netns list-id`.
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && uint32(st.Ino) == self {
			continue
		}
		id, err := nsid(p)
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (giving it an nsid, to hear of its end, needs CAP_NET_ADMIN)", err)
		}
		if err != nil {
			unix.Close(sock)
			return nil, fmt.Errorf("watching netns %s: %w", p, err)
		}
		ids[id] = append(ids[id], p)
	}
	var once sync.Once
	done := make(chan struct{})
	stop = func() { once.Do(func() { close(done) }) }
	go func() {
		defer unix.Close(sock)
		buf := make([]byte, 1<<16)
		for len(ids) > 0 {
			n, _, err := unix.Recvfrom(sock, buf, 0)
			select {
			case <-done:
				return
			default:
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			if err != nil || n == 0 {
				return
			}
			for _, id := range deletedIDs(buf[:n]) {
				for _, p := range ids[id] {
					gone(p)
				}
				delete(ids, id)
			}
		}
	}()
	return stop, nil
}

// nsid is the id porttrace's namespace has for the one at path, given one
// where it has none.
func nsid(path string) (int32, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	id, err := netlink.GetNetNsIdByFd(fd)
	if err == nil && id < 0 {
		// -1 asks the kernel for any free id; EEXIST: another gave one.
		if err = netlink.SetNetNsIdByFd(fd, -1); err == nil || errors.Is(err, unix.EEXIST) {
			id, err = netlink.GetNetNsIdByFd(fd)
		}
	}
	if err == nil && id < 0 {
		err = errors.New("no namespace id assigned")
	}
	return int32(id), err
}

// deletedIDs are the nsids of the RTM_DELNSID messages in b: after the
// netlink header, a struct rtgenmsg (4 bytes aligned), then attributes,
// NETNSA_NSID among them.
func deletedIDs(b []byte) []int32 {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil
	}
	var ids []int32
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_DELNSID || len(m.Data) < 4 {
			continue
		}
		for a := m.Data[4:]; len(a) >= unix.SizeofRtAttr; {
			l := int(binary.NativeEndian.Uint16(a[0:2]))
			typ := binary.NativeEndian.Uint16(a[2:4])
			if l < unix.SizeofRtAttr || l > len(a) {
				break
			}
			if typ == unix.NETNSA_NSID && l >= unix.SizeofRtAttr+4 {
				ids = append(ids, int32(binary.NativeEndian.Uint32(a[4:8])))
			}
			a = a[min(len(a), (l+3)&^3):]
		}
	}
	return ids
}

// UntilGone is ctx, ended once every namespace at paths is gone; each is
// said on w as it goes, as command cmd's line, the last with ": stopping".
// Paths of none ("all", or no --netns) watch nothing. Where the namespaces
// cannot be watched (see Gone), that is said and ctx runs on.
func UntilGone(ctx context.Context, paths []string, w io.Writer, cmd string) (context.Context, func()) {
	if len(paths) == 0 || (len(paths) == 1 && paths[0] == "all") {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	left := len(paths)
	stop, err := Gone(paths, func(path string) {
		mu.Lock()
		left--
		last := left == 0
		mu.Unlock()
		end := ""
		if last {
			end = ": stopping"
		}
		fmt.Fprintf(w, "%s: network namespace %s is gone%s\n", cmd, textout.Printable(path), end)
		if last {
			cancel()
		}
	})
	if err != nil {
		// Said, since the trace would then go on after its namespaces
		// are gone, watching nothing.
		fmt.Fprintf(w, "%s: it will not see --netns namespaces end: %s\n", cmd, textout.Printable(err.Error()))
		return ctx, cancel
	}
	return ctx, func() { stop(); cancel() }
}
