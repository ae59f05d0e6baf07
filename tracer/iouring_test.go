package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// A minimal io_uring, one operation at a time, enough to make bind,
// listen, connect and accept without their syscalls.

const (
	opAccept  = 13
	opConnect = 16
	opBind    = 56 // 6.11+
	opListen  = 57 // 6.11+
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SqEntries, CqEntries, Flags, SqThreadCPU, SqThreadIdle, Features, WqFd uint32
	Resv                                                                   [3]uint32
	SqOff                                                                  sqringOffsets
	CqOff                                                                  cqringOffsets
}

type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // addr2
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32
	Addr3       uint64
	Pad         uint64
}

type cqe struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type uring struct {
	fd        int
	ring      []byte
	sqes      []byte
	p         uringParams
	keepAlive []any
}

func newURing(t *testing.T) *uring {
	t.Helper()
	u := &uring{}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&u.p)), 0)
	if errno != 0 {
		t.Skipf("io_uring unavailable here (io_uring_setup: %v)", errno)
	}
	u.fd = int(fd)
	size := max(u.p.SqOff.Array+u.p.SqEntries*4, u.p.CqOff.Cqes+u.p.CqEntries*uint32(unsafe.Sizeof(cqe{})))
	var err error
	// IORING_FEAT_SINGLE_MMAP (5.4+): one mapping holds both rings.
	if u.ring, err = unix.Mmap(u.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		t.Fatal(err)
	}
	if u.sqes, err = unix.Mmap(u.fd, 0x10000000, int(u.p.SqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Munmap(u.ring)
		unix.Munmap(u.sqes)
		unix.Close(u.fd)
	})
	return u
}

func (u *uring) u32(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&u.ring[off])) }

// do submits one operation and waits for its completion, returning its
// result as an error (nil for res >= 0) and res.
func (u *uring) do(e sqe) (int32, error) {
	tail := atomic.LoadUint32(u.u32(u.p.SqOff.Tail))
	idx := tail & *u.u32(u.p.SqOff.RingMask)
	*(*sqe)(unsafe.Pointer(&u.sqes[idx*64])) = e
	*(*uint32)(unsafe.Pointer(&u.ring[u.p.SqOff.Array+idx*4])) = idx
	atomic.StoreUint32(u.u32(u.p.SqOff.Tail), tail+1)
	const enterGetEvents = 1
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), 1, 1, enterGetEvents, 0, 0); errno != 0 {
		return 0, errno
	}
	head := atomic.LoadUint32(u.u32(u.p.CqOff.Head))
	c := *(*cqe)(unsafe.Pointer(&u.ring[u.p.CqOff.Cqes+(head&*u.u32(u.p.CqOff.RingMask))*16]))
	atomic.StoreUint32(u.u32(u.p.CqOff.Head), head+1)
	if c.Res < 0 {
		return c.Res, unix.Errno(-c.Res)
	}
	return c.Res, nil
}

func rawSockaddr4(ap netip.AddrPort) *unix.RawSockaddrInet4 {
	sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	return sa
}

// io_uring makes bind and listen (6.11+), connect and accept (5.5+)
// without the syscalls the tracepoint backend hooks. The fentry and kprobe
// backends hook the kernel functions underneath and see all of them; the
// tracepoint backend sees none: its documented blind spot. Where io_uring
// cannot bind or listen, those two are made by syscalls instead and the
// test says so.
func TestKernelIOUring(t *testing.T) {
	ns := NewNetns(t)
	c := startTracer(t, Options{PID: uint32(os.Getpid())})
	service := netip.MustParseAddrPort("127.0.0.1:7070")
	ringBindListen := true
	var client uint16
	ns.Run(t, func() {
		u := newURing(t)
		ln := NewSocket(t, TCP4)
		defer unix.Close(ln)
		sa := rawSockaddr4(service)
		_, err := u.do(sqe{Opcode: opBind, Fd: int32(ln), Addr: uint64(uintptr(unsafe.Pointer(sa))), Off: unix.SizeofSockaddrInet4})
		switch {
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
			if kernelAtLeast(t, 6, 11) {
				t.Fatalf("io_uring bind on a 6.11+ kernel: %v", err)
			}
			t.Logf("io_uring cannot bind here (IORING_OP_BIND: %v; needs 6.11): bind and listen by syscall", err)
			ringBindListen = false
			if err := unix.Bind(ln, Sockaddr(service)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(ln, 8); err != nil {
				t.Fatal(err)
			}
		case err != nil:
			t.Fatalf("io_uring bind: %v", err)
		default:
			if _, err := u.do(sqe{Opcode: opListen, Fd: int32(ln), Len: 8}); err != nil {
				t.Fatalf("io_uring listen: %v", err)
			}
		}
		fd := NewSocket(t, TCP4)
		defer unix.Close(fd)
		if _, err := u.do(sqe{Opcode: opConnect, Fd: int32(fd), Addr: uint64(uintptr(unsafe.Pointer(sa))), Off: unix.SizeofSockaddrInet4}); err != nil {
			t.Fatalf("io_uring connect: %v", err)
		}
		client = LocalPort(t, fd)
		nfd, err := u.do(sqe{Opcode: opAccept, Fd: int32(ln)})
		if err != nil {
			t.Fatalf("io_uring accept: %v", err)
		}
		unix.Close(int(nfd))
	})
	var got []string
	for _, ev := range c.stop(t, ns) {
		got = append(got, fmt.Sprintf("%s %s %s", ev.Kind, AddrString(ev.Local), AddrString(ev.Remote)))
	}
	clientAP := netip.AddrPortFrom(service.Addr(), client)
	bindListen := []string{fmt.Sprintf("bind %s -", service), fmt.Sprintf("listen %s -", service)}
	// io_uring connects without blocking: in progress, then connect_done.
	connAcc := []string{fmt.Sprintf("connect %s %s", clientAP, service), fmt.Sprintf("connect_done %s %s", clientAP, service),
		fmt.Sprintf("accept %s %s", service, clientAP)}
	var want []string
	if c.tr.Backend() != event.BackendTracepoint || !ringBindListen {
		want = append(want, bindListen...)
	}
	if c.tr.Backend() != event.BackendTracepoint {
		want = append(want, connAcc...)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s backend saw %q, want %q", c.tr.Backend(), got, want)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var maj, min int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &min); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release[:], err)
	}
	return maj > major || (maj == major && min >= minor)
}
