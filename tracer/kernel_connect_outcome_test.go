package tracer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// outcomeDelay is how long the fake peer holds each answer: every
// outcome arrives well after connect() returned.
const outcomeDelay = 150 * time.Millisecond

// An outcome case: one connect to the peer, with its own destination port
// so that its events are told from the others'.
type outcomeCase struct {
	name   string
	client string // "go" (net.Dialer), "nonblock" (syscalls, poll, SO_ERROR), "block"
	to     netip.AddrPort
	cancel time.Duration // go: give up (close the socket) after this long

	wantDone  string // connect_done's result and errno; "" for a blocking connect
	wantConn  string // the connect event's result and errno
	minLat    time.Duration
	maxLat    time.Duration
	retrans   bool  // the SYN is sent again: syn_retransmits counts what the peer received, less the first
	clientErr error // what the client itself saw

	th  Thread
	err error
}

// Every outcome of a TCP connect, each truly asynchronous: the peer behind
// a TUN device answers (or does not) outcomeDelay after the SYN. Each is
// made by Go's net.Dialer and by a non-blocking client that polls and
// reads SO_ERROR, over IPv4 and IPv6, all at once: in progress first, then
// connect_done with the result, the errno, the connecting thread, the same
// ports, the latency within the delay's bounds and the SYNs sent again.
func TestKernelConnectOutcomes(t *testing.T) {
	ns := NewNetns(t)
	ns.Sysctl(t, "net.ipv4.tcp_syn_retries", "1") // a dropped SYN times out in 3 s (1 s, then 2 s)
	peer := NewPeer(t, ns, outcomeDelay)
	c := startTracer(t, Options{PID: uint32(os.Getpid()), Events: KindsOf(event.KindConnect)})

	slack := 2 * time.Second // a guest under emulation can stall
	var cases []*outcomeCase
	port := uint16(1000)
	add := func(oc outcomeCase, mode PeerMode, v6 bool) {
		port++
		oc.to = netip.AddrPortFrom(peer.Addr(mode).Addr(), port)
		fam := "ipv4"
		if v6 {
			oc.to = netip.AddrPortFrom(peer.Addr6(mode).Addr(), port)
			fam = "ipv6"
		}
		oc.name = fmt.Sprintf("%s/%s/%s", mode, oc.client, fam)
		cases = append(cases, &oc)
	}
	for _, v6 := range []bool{false, true} {
		for _, client := range []string{"go", "nonblock"} {
			ip := outcomeCase{client: client, wantConn: "in_progress EINPROGRESS"}
			for _, m := range []struct {
				mode     PeerMode
				done     string
				min, max time.Duration
				retrans  bool
				err      error
			}{
				{PeerAccept, "ok", outcomeDelay, outcomeDelay + slack, false, nil},
				// Established, then reset: the connect worked, and is told once.
				{PeerResetAfter, "ok", outcomeDelay, outcomeDelay + slack, false, nil},
				{PeerRefuse, "failed ECONNREFUSED", outcomeDelay, outcomeDelay + slack, false, unix.ECONNREFUSED},
				{PeerHostUnreach, "failed EHOSTUNREACH", outcomeDelay, outcomeDelay + slack, false, unix.EHOSTUNREACH},
				{PeerNetUnreach, "failed ENETUNREACH", outcomeDelay, outcomeDelay + slack, false, unix.ENETUNREACH},
				// tcp_syn_retries 1 is 3 s: one SYN sent again (6.5's
				// tcp_syn_linear_timeouts sends it again each second).
				{PeerDrop, "failed ETIMEDOUT", 3 * time.Second, 3*time.Second + slack, true, unix.ETIMEDOUT},
				{PeerDropFirst, "ok", time.Second + outcomeDelay, time.Second + outcomeDelay + slack, true, nil},
			} {
				oc := ip
				oc.wantDone, oc.minLat, oc.maxLat, oc.retrans, oc.clientErr = m.done, m.min, m.max, m.retrans, m.err
				add(oc, m.mode, v6)
			}
		}
		// Go gives up before the peer answers: it closes the socket.
		add(outcomeCase{client: "go", cancel: 400 * time.Millisecond, wantConn: "in_progress EINPROGRESS",
			// minLat: from its connect to its deadline, which dial sets.
			wantDone: "failed ECANCELED", maxLat: 400*time.Millisecond + slack,
			clientErr: context.DeadlineExceeded}, PeerDrop, v6)
		// A blocking connect carries its own outcome and latency.
		add(outcomeCase{client: "block", wantConn: "ok", minLat: outcomeDelay, maxLat: outcomeDelay + slack}, PeerAccept, v6)
		add(outcomeCase{client: "block", wantConn: "failed ECONNREFUSED", minLat: outcomeDelay, maxLat: outcomeDelay + slack,
			clientErr: unix.ECONNREFUSED}, PeerRefuse, v6)
	}

	var wg sync.WaitGroup
	for _, oc := range cases {
		wg.Add(1)
		ns.GoRun(func() {
			defer wg.Done()
			oc.th = Self()
			oc.err = oc.dial()
		})
	}
	wg.Wait()
	evs := c.stop(t, ns)

	for _, oc := range cases {
		t.Run(oc.name, func(t *testing.T) {
			var ne net.Error
			timedOut := oc.clientErr == context.DeadlineExceeded && errors.As(oc.err, &ne) && ne.Timeout()
			if !timedOut && !errors.Is(oc.err, oc.clientErr) && (oc.clientErr != nil || oc.err != nil) {
				t.Fatalf("the client saw %v, want %v", oc.err, oc.clientErr)
			}
			var mine []event.Event
			for _, ev := range evs {
				if ev.Remote == oc.to {
					mine = append(mine, ev)
				}
			}
			want := []string{"connect " + oc.wantConn}
			if oc.wantDone != "" {
				want = append(want, "connect_done "+oc.wantDone)
			}
			if len(mine) != len(want) {
				for _, ev := range mine {
					t.Log(Brief(&ev))
				}
				t.Fatalf("got %d events to %s, want %d", len(mine), oc.to, len(want))
			}
			for i := range mine {
				ev := &mine[i]
				got := ev.Kind.String() + " " + ev.Result.String()
				if ev.Errno != 0 {
					got += " " + ev.ErrnoName()
				}
				if got != want[i] {
					t.Errorf("event %d: got %s, want %s", i, Brief(ev), want[i])
				}
				CheckTask(t, ev, oc.th)
				if ev.Direction != event.DirOutbound || event.ProtoName(ev.Proto) != "tcp" {
					t.Errorf("event %d: %s", i, Brief(ev))
				}
			}
			last := &mine[len(mine)-1]
			if oc.wantDone != "" {
				if mine[0].Local != last.Local || !mine[0].Local.IsValid() || mine[0].HasLatency {
					t.Errorf("in progress from %s (latency %t), done from %s", AddrString(mine[0].Local), mine[0].HasLatency,
						AddrString(last.Local))
				}
				syns := peer.SYNs(oc.to)
				if !last.HasSynRetransmits || int(last.SynRetransmits) != syns-1 || (last.SynRetransmits > 0) != oc.retrans {
					t.Errorf("syn_retransmits %d (%t), the peer received %d SYNs", last.SynRetransmits, last.HasSynRetransmits, syns)
				}
				if !last.Time.After(mine[0].Time) {
					t.Errorf("connect_done at %v, before its connect at %v", last.Time, mine[0].Time)
				}
			}
			if !last.HasLatency || last.Latency < oc.minLat-5*time.Millisecond || last.Latency > oc.maxLat {
				t.Errorf("latency %v (%t), want %v to %v", last.Latency, last.HasLatency, oc.minLat, oc.maxLat)
			}
		})
	}
}

// dial makes the case's connect on the calling thread.
func (oc *outcomeCase) dial() error {
	switch oc.client {
	case "go":
		ctx := context.Background()
		if oc.cancel > 0 {
			var stop context.CancelFunc
			ctx, stop = context.WithTimeout(ctx, oc.cancel)
			defer stop()
		}
		// Control runs just before connect(2): a case that gives up
		// can have waited no less than from there to its deadline,
		// which starts earlier, while the dialer still resolves.
		var connectAt time.Time
		d := net.Dialer{Control: func(string, string, syscall.RawConn) error {
			connectAt = time.Now()
			return nil
		}}
		conn, err := d.DialContext(ctx, "tcp", oc.to.String())
		if deadline, ok := ctx.Deadline(); ok && !connectAt.IsZero() {
			oc.minLat = deadline.Sub(connectAt)
		}
		if err != nil {
			return err
		}
		defer conn.Close()
		return exercise(conn)
	case "nonblock", "block":
		family := unix.AF_INET
		if oc.to.Addr().Is6() {
			family = unix.AF_INET6
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if oc.client == "block" {
			return unix.Connect(fd, Sockaddr(oc.to))
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		if err := unix.Connect(fd, Sockaddr(oc.to)); err != unix.EINPROGRESS {
			return fmt.Errorf("non-blocking connect returned %v, want EINPROGRESS", err)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		for {
			if _, err := unix.Poll(fds, 10_000); err != unix.EINTR {
				break
			}
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return syscall.Errno(soErr)
		}
		return nil
	}
	return fmt.Errorf("unknown client %q", oc.client)
}

// exercise reads from a connection the peer accepted: the reset-after peer
// resets it (ECONNRESET), the others send nothing, and the read times out.
func exercise(conn net.Conn) error {
	_ = conn.SetReadDeadline(time.Now().Add(2 * outcomeDelay))
	_, err := conn.Read(make([]byte, 1))
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// The map of connects in progress is bounded and leaks nothing: 100,000
// connects to a black hole at once (from several processes: each may open
// 20,000 files here), more than the kernel follows. Those it follows end
// as ECANCELED when their processes exit; the rest are counted, not
// dropped silently; and the map is empty again. A guest of the kernel
// matrix (one emulated CPU, 1 GiB) makes 5,000 against a bound of 4,096.
func TestKernelConnectsInFlightBounded(t *testing.T) {
	const perHelper = 16_000
	total, bound := 100_000, uint32(DefaultMaxConnecting)
	if os.Getenv("PORTTRACE_GUEST") != "" {
		total, bound = 5_000, 4096
	}
	ns := NewNetns(t)
	ns.Sysctl(t, "net.ipv4.ip_local_port_range", "1024 65535")
	hole := NewPeer(t, ns, 0).Addr(PeerDrop)
	c := startTracer(t, Options{Netns: []uint32{ns.Inode}, Events: KindsOf(event.KindConnect), RingBufferSize: 64 << 20,
		MaxConnecting: bound})

	var helpers []*Helper
	for i, left := 0, total; left > 0; i, left = i+1, left-perHelper {
		// One destination port each: the local ports run out per destination.
		to := netip.AddrPortFrom(hole.Addr(), uint16(2000+i))
		h := RunHelper(t, ns, HelperCmd(HelperExe(t), 0, "tcp", "", "PORTTRACE_HELPER=blackhole",
			"PT_CONNECT="+to.String(), fmt.Sprintf("PT_COUNT=%d", min(left, perHelper))))
		helpers = append(helpers, h)
	}
	started := 0
	for _, h := range helpers {
		n, errno := h.Bind(t) // "ok N": N connects in progress
		if errno != "" {
			t.Fatalf("helper: %s", errno)
		}
		started += int(n)
	}
	if started != total {
		t.Fatalf("%d connects in progress, want %d", started, total)
	}
	if n, err := c.tr.ConnectsInFlight(); err != nil || n != int(bound) {
		t.Errorf("%d connects in the map (%v), want it full: %d", n, err, bound)
	}
	for _, h := range helpers {
		h.Stdin.Close()
	}
	for _, h := range helpers {
		_ = h.Cmd.Wait()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.tr.ConnectsInFlight()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connects still in the map after every socket closed", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	unfollowed, err := c.tr.Unfollowed()
	if err != nil {
		t.Fatal(err)
	}
	evs := c.stop(t, ns)
	counts := map[string]int{}
	for _, ev := range evs {
		counts[ev.Kind.String()+" "+ev.Result.String()+" "+ev.ErrnoName()]++
	}
	want := map[string]int{
		"connect in_progress EINPROGRESS": total,
		"connect_done failed ECANCELED":   int(bound),
	}
	if fmt.Sprint(counts) != fmt.Sprint(want) || unfollowed != uint64(total)-uint64(bound) {
		t.Errorf("got %v and %d unfollowed, want %v and %d", counts, unfollowed, want, uint64(total)-uint64(bound))
	}
}
