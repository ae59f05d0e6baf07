package main

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The loops of the load, each on a thread of its own inside its
// namespace. Every bind, listen, connect and accept is counted through
// tally.call; an outcome other than the one a loop is there to make ends
// the soak, since the accounting would no longer say what was meant.

var loopback = [4]byte{127, 0, 0, 1}

func tcpSocket() (int, error) {
	return unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

// listener binds a TCP socket to 127.0.0.1:port (0: an ephemeral port,
// counted as an allocation in ns) and listens.
func listener(t *tally, ns string, port int) (int, unix.Sockaddr, error) {
	fd, err := tcpSocket()
	if err != nil {
		return -1, nil, err
	}
	if err := t.call("bind", unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback, Port: port})); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind: %w", err)
	}
	if port == 0 {
		t.Allocs[ns]++
	}
	if err := t.call("listen", unix.Listen(fd, 128)); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	return fd, sa, err
}

// closeReset closes fd with a reset, leaving no TIME_WAIT behind to hold
// a port.
func closeReset(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// connectAccept connects a new socket to ln at sa (an ephemeral port,
// counted in ns) and accepts it. It returns both ends, or the connect's
// error with nothing left open.
func connectAccept(t *tally, ns string, ln int, sa unix.Sockaddr) (c, a int, err error) {
	if c, err = tcpSocket(); err != nil {
		return -1, -1, err
	}
	if err := t.call("connect", unix.Connect(c, sa)); err != nil {
		unix.Close(c)
		return -1, -1, err
	}
	t.Allocs[ns]++
	a, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if t.call("accept", err) != nil {
		closeReset(c)
		return -1, -1, fmt.Errorf("accept: %w", err)
	}
	return c, a, nil
}

// tcpLoop connects to a listener of its own and accepts, rate a second.
func tcpLoop(ctx context.Context, t *tally, ns string, rate float64) error {
	ln, sa, err := listener(t, ns, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	return paced(ctx, rate, func() error {
		c, a, err := connectAccept(t, ns, ln, sa)
		if err != nil {
			return fmt.Errorf("tcp loop: %w", err)
		}
		closeReset(c)
		unix.Close(a)
		return nil
	})
}

// udpLoop binds UDP sockets to 127.0.0.1:0.
func udpLoop(ctx context.Context, t *tally, ns string, rate float64) error {
	return paced(ctx, rate, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := t.call("bind", unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback})); err != nil {
			return fmt.Errorf("udp loop: bind: %w", err)
		}
		t.Allocs[ns]++
		return nil
	})
}

// inUseLoop binds to the port a listener of its own holds: EADDRINUSE.
func inUseLoop(ctx context.Context, t *tally, ns string, rate float64) error {
	ln, sa, err := listener(t, ns, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	return paced(ctx, rate, func() error {
		fd, err := tcpSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := t.call("bind", unix.Bind(fd, sa)); !errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("in-use loop: bind to a held port: %v, want EADDRINUSE", err)
		}
		return nil
	})
}

// deniedLoop drops this thread to uid nobody, which also drops its
// capabilities, and binds below the namespace's
// ip_unprivileged_port_start: EACCES. The thread never returns to the
// runtime (inNetns).
func deniedLoop(ctx context.Context, t *tally, ns string, rate float64) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, nobody, nobody, nobody); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, nobody, nobody, nobody); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return paced(ctx, rate, func() error {
		fd, err := tcpSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := t.call("bind", unix.Bind(fd, &unix.SockaddrInet4{Port: deniedPort})); !errors.Is(err, unix.EACCES) {
			return fmt.Errorf("denied loop: bind to %d as uid %d: %v, want EACCES", deniedPort, nobody, err)
		}
		return nil
	})
}

// exhaustLoop fills the namespace's ten ephemeral ports with connections
// to a listener until a connect fails with EADDRNOTAVAIL, then resets
// them all, rate cycles a second.
func exhaustLoop(ctx context.Context, t *tally, ns string, rate float64) error {
	ln, sa, err := listener(t, ns, 9000)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	return paced(ctx, rate, func() error {
		var open []int
		defer func() {
			for _, fd := range open {
				closeReset(fd)
			}
		}()
		for {
			c, a, err := connectAccept(t, ns, ln, sa)
			if errors.Is(err, unix.EADDRNOTAVAIL) {
				t.Fails[ns]++
				break
			}
			if err != nil {
				return fmt.Errorf("exhaust loop: %w", err)
			}
			open = append(open, c, a)
		}
		if got, want := len(open)/2, exhaustHigh-exhaustLow+1; got != want {
			return fmt.Errorf("exhaust loop: the range held %d connections, want %d", got, want)
		}
		t.Cycles++
		return nil
	})
}
