package clash

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// sockOpts reads the options of the socket inode that process pid holds
// at fd: whether two binds clash turns on SO_REUSEADDR and SO_REUSEPORT,
// which sock_diag does not report, so they are asked of the socket
// itself. pidfd_getfd(2) (Linux 5.6+; it needs the ptrace access root
// has) gives porttrace a duplicate of the holder's fd; only getsockopt is
// called on it, which changes nothing the holder sees, and it is closed
// at once. errGone says the process has exited; any other failure (an
// older kernel, no ptrace access, the fd closed or reused since the walk
// of /proc) leaves the options unread.
func sockOpts(pid, fd int, inode uint32, family uint8) (opts event.SockOpts, boundIf string, err error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, "", fmt.Errorf("pidfd_open %d: %w", pid, gone(err))
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return 0, "", fmt.Errorf("pidfd_getfd %d fd %d: %w", pid, fd, gone(err))
	}
	defer unix.Close(dup)
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		return 0, "", fmt.Errorf("fstat of pid %d fd %d: %w", pid, fd, err)
	}
	if uint32(st.Ino) != inode {
		return 0, "", fmt.Errorf("pid %d fd %d is no longer socket %d", pid, fd, inode)
	}
	for _, o := range optsFor(family) {
		v, err := unix.GetsockoptInt(dup, o.level, o.name)
		if err != nil {
			return 0, "", fmt.Errorf("getsockopt %s: %w", o.opt, err)
		}
		if v != 0 {
			opts |= o.opt
		}
	}
	boundIf, err = unix.GetsockoptString(dup, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	if err != nil {
		return 0, "", fmt.Errorf("getsockopt SO_BINDTODEVICE: %w", err)
	}
	return opts, boundIf, nil
}

// sockOpt is where one of the options lives for a socket of one family.
type sockOpt struct {
	opt         event.SockOpts
	level, name int
}

// optsFor lists the options read of a socket of family: an IPv6 socket
// has FREEBIND and TRANSPARENT of its own (the same flags underneath), and
// V6ONLY.
func optsFor(family uint8) []sockOpt {
	level, freebind, transparent := unix.IPPROTO_IP, unix.IP_FREEBIND, unix.IP_TRANSPARENT
	if family == unix.AF_INET6 {
		level, freebind, transparent = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, unix.IPV6_TRANSPARENT
	}
	opts := []sockOpt{
		{event.OptReuseAddr, unix.SOL_SOCKET, unix.SO_REUSEADDR},
		{event.OptReusePort, unix.SOL_SOCKET, unix.SO_REUSEPORT},
		{event.OptFreebind, level, freebind},
		{event.OptTransparent, level, transparent},
		{event.OptBindNoPort, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT},
	}
	if family == unix.AF_INET6 {
		opts = append(opts, sockOpt{event.OptV6Only, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY})
	}
	return opts
}

// errGone is a holder whose process exited after the walk of /proc.
var errGone = errors.New("process gone")

// gone turns ESRCH, which pidfd_open and pidfd_getfd say of a process
// that has exited, into errGone.
func gone(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: %w", errGone, err)
	}
	return err
}
