package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A Peer is a fake network behind a TUN device in a test's namespace: the
// test process answers the TCP SYNs sent into it as each address's mode
// says, a set delay after each SYN arrives. It gives the connect tests
// outcomes that are truly asynchronous and take a known time, on kernels
// without netem or dummy links, and with no external tool.
//
// Layout: the TUN device holds 198.18.0.1/24 and 2001:db8::1/64 (the
// benchmarking and documentation ranges, so nothing leaves the namespace);
// mode m answers every port of 198.18.0.1m and 2001:db8::1m (198.18.0.11 and
// 2001:db8::11 accept, ...). Other addresses behind the device get no answer,
// and ICMP errors come from the router 198.18.0.254 or 2001:db8::fe.
// A namespace holds one Peer.
type Peer struct {
	t     *testing.T
	delay time.Duration
	tun   *os.File
	name  string
	isn   uint32
	modes map[netip.Addr]PeerMode
	seen  map[synKey]bool        // PeerDropFirst's first SYNs; the reader's alone
	syns  map[netip.AddrPort]int // SYNs received, by destination (guarded by mu)
	done  chan struct{}          // closed when the reader returns

	mu     sync.Mutex // guards closed and timers, and orders the writes
	closed bool
	timers map[*time.Timer]struct{}
	sends  sync.WaitGroup // replies waiting or being sent
}

type PeerMode int

const (
	PeerAccept      PeerMode = iota + 1 // SYN-ACK: the connect succeeds
	PeerRefuse                          // RST+ACK: ECONNREFUSED
	PeerDrop                            // nothing: the SYN is retransmitted until ETIMEDOUT
	PeerHostUnreach                     // ICMP host unreachable (ICMPv6 address unreachable): EHOSTUNREACH
	PeerNetUnreach                      // ICMP net unreachable (ICMPv6 no route): ENETUNREACH
	PeerResetAfter                      // SYN-ACK, then a RST a delay later: established, then ECONNRESET
	PeerDropFirst                       // the first SYN of each connect dropped, its retransmission answered: success after the SYN's RTO (1 s)
)

var peerModes = map[PeerMode]string{
	PeerAccept: "accept", PeerRefuse: "refuse", PeerDrop: "drop", PeerHostUnreach: "host-unreach",
	PeerNetUnreach: "net-unreach", PeerResetAfter: "reset-after", PeerDropFirst: "drop-first",
}

func (m PeerMode) String() string { return peerModes[m] }

// PeerPort is the port Addr and Addr6 give; every port gets the same answer.
const PeerPort = 80

var (
	peerNet4    = netip.MustParsePrefix("198.18.0.1/24")
	peerNet6    = netip.MustParsePrefix("2001:db8::1/64")
	peerRouter4 = netip.MustParseAddr("198.18.0.254")
	peerRouter6 = netip.MustParseAddr("2001:db8::fe")
)

// Addr is the IPv4 address that gets mode's treatment.
func (p *Peer) Addr(mode PeerMode) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + mode)}), PeerPort)
}

// Addr6 is the IPv6 address that gets mode's treatment.
func (p *Peer) Addr6(mode PeerMode) netip.AddrPort {
	a := peerNet6.Addr().As16()
	a[15] = byte(0x10 + mode)
	return netip.AddrPortFrom(netip.AddrFrom16(a), PeerPort)
}

// SYNs is how many SYNs the peer received for dst: a connect's first and
// those the kernel sent again.
func (p *Peer) SYNs(dst netip.AddrPort) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syns[dst]
}

// Name is the TUN device's name in the namespace.
func (p *Peer) Name() string { return p.name }

// NewPeer makes the TUN device in ns, with the addresses and routes of the
// layout above, and serves it until the test ends. Every reply is sent
// delay after the packet it answers arrived (PeerResetAfter's RST a delay
// after its SYN-ACK). A delay past the SYN's RTO (1 s) has the client
// retransmit, and each SYN is answered.
func NewPeer(t *testing.T, ns *NS, delay time.Duration) *Peer {
	t.Helper()
	p := &Peer{
		t: t, delay: delay, isn: rand.Uint32(),
		modes:  map[netip.Addr]PeerMode{},
		seen:   map[synKey]bool{},
		syns:   map[netip.AddrPort]int{},
		done:   make(chan struct{}),
		timers: map[*time.Timer]struct{}{},
	}
	for m := range peerModes {
		p.modes[p.Addr(m).Addr()] = m
		p.modes[p.Addr6(m).Addr()] = m
	}
	var err error
	// The device belongs to the namespace of the thread that opens it.
	ns.Run(t, func() { p.tun, p.name, err = openTun() })
	if err != nil {
		t.Fatalf("peer: %v", err)
	}
	t.Cleanup(p.stop)
	go p.read()
	return p
}

func openTun() (*os.File, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", err
	}
	name, err := setupTun(fd)
	if err == nil {
		// Non-blocking, so the runtime's poller reads it and Close wakes
		// the reader.
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), name, nil
}

func setupTun(fd int) (string, error) {
	ifr, err := unix.NewIfreq("peer%d")
	if err != nil {
		return "", err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return "", &os.SyscallError{Syscall: "TUNSETIFF", Err: err}
	}
	name := ifr.Name()
	link, err := netlink.LinkByName(name)
	if err != nil {
		return "", err
	}
	for _, a := range []struct {
		net   netip.Prefix
		flags int
	}{
		{peerNet4, 0},
		{peerNet6, unix.IFA_F_NODAD}, // usable at once, not after DAD's second
	} {
		ipnet := &net.IPNet{IP: a.net.Addr().AsSlice(), Mask: net.CIDRMask(a.net.Bits(), a.net.Addr().BitLen())}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipnet, Flags: a.flags}); err != nil {
			return "", fmt.Errorf("adding %s to %s: %w", a.net, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("setting %s up: %w", name, err)
	}
	return name, nil
}

// stop ends the peer: no reply is sent after it, and no goroutine of the
// peer outlives it. Closing the device deletes it.
func (p *Peer) stop() {
	p.mu.Lock()
	p.closed = true
	for tm := range p.timers {
		if tm.Stop() {
			p.sends.Done()
		}
	}
	p.mu.Unlock()
	p.tun.Close()
	<-p.done
	p.sends.Wait()
}

func (p *Peer) read() {
	defer close(p.done)
	buf := make([]byte, 65536)
	for {
		n, err := p.tun.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.t.Errorf("peer: reading %s: %v", p.name, err)
			}
			return
		}
		if pk, ok := parsePacket(buf[:n]); ok {
			p.answer(pk)
		}
	}
}

// packet is an IPv4 or IPv6 packet carrying TCP, as read from the device.
type packet struct {
	raw      []byte // the whole packet, for ICMP to quote
	src, dst netip.Addr
	tcp      []byte // the TCP header and payload
}

func parsePacket(b []byte) (packet, bool) {
	pk := packet{raw: append([]byte(nil), b...)}
	b = pk.raw
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if b[9] != unix.IPPROTO_TCP || ihl < 20 || total > len(b) || total < ihl+20 {
			return pk, false
		}
		pk.src = netip.AddrFrom4([4]byte(b[12:16]))
		pk.dst = netip.AddrFrom4([4]byte(b[16:20]))
		pk.tcp = b[ihl:total]
	case len(b) >= 40 && b[0]>>4 == 6:
		// The kernel's SYNs carry no extension headers.
		total := 40 + int(binary.BigEndian.Uint16(b[4:]))
		if b[6] != unix.IPPROTO_TCP || total > len(b) || total < 60 {
			return pk, false
		}
		pk.src = netip.AddrFrom16([16]byte(b[8:24]))
		pk.dst = netip.AddrFrom16([16]byte(b[24:40]))
		pk.tcp = b[40:total]
	default:
		return pk, false
	}
	return pk, int(pk.tcp[12]>>4)*4 >= 20 && int(pk.tcp[12]>>4)*4 <= len(pk.tcp)
}

func (pk packet) sport() uint16 { return binary.BigEndian.Uint16(pk.tcp[0:]) }
func (pk packet) dport() uint16 { return binary.BigEndian.Uint16(pk.tcp[2:]) }
func (pk packet) seq() uint32   { return binary.BigEndian.Uint32(pk.tcp[4:]) }
func (pk packet) ack() uint32   { return binary.BigEndian.Uint32(pk.tcp[8:]) }
func (pk packet) flags() byte   { return pk.tcp[13] }
func (pk packet) payload() int  { return len(pk.tcp) - int(pk.tcp[12]>>4)*4 }

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// synKey is one connect: its 4-tuple and its SYN's sequence number, which
// the retransmissions repeat.
type synKey struct {
	src, dst netip.AddrPort
	seq      uint32
}

func (p *Peer) answer(pk packet) {
	mode := p.modes[pk.dst]
	if mode == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	flags := pk.flags()
	if flags&(tcpSYN|tcpACK) == tcpSYN {
		p.syns[netip.AddrPortFrom(pk.dst, pk.dport())]++
		synAck := pk.tcpReply(p.isn, pk.seq()+1, tcpSYN|tcpACK)
		switch mode {
		case PeerAccept:
			p.after(p.delay, synAck, nil)
		case PeerRefuse:
			p.after(p.delay, pk.tcpReply(0, pk.seq()+1, tcpRST|tcpACK), nil)
		case PeerHostUnreach, PeerNetUnreach:
			p.after(p.delay, pk.unreach(mode), nil)
		case PeerResetAfter:
			p.after(p.delay, synAck, pk.tcpReply(p.isn+1, 0, tcpRST))
		case PeerDropFirst:
			k := synKey{netip.AddrPortFrom(pk.src, pk.sport()), netip.AddrPortFrom(pk.dst, pk.dport()), pk.seq()}
			if p.seen[k] {
				p.after(p.delay, synAck, nil)
			}
			p.seen[k] = true
		}
		return
	}
	if mode == PeerAccept || mode == PeerResetAfter || mode == PeerDropFirst {
		// An established connection: data is acknowledged, and a FIN
		// answered with a RST, so the closed socket does not linger
		// retransmitting it.
		switch {
		case flags&(tcpSYN|tcpRST) != 0:
		case flags&tcpFIN != 0:
			p.after(p.delay, pk.tcpReply(pk.ack(), 0, tcpRST), nil)
		case pk.payload() > 0:
			p.after(p.delay, pk.tcpReply(pk.ack(), pk.seq()+uint32(pk.payload()), tcpACK), nil)
		}
	}
}

// after sends reply delay from now, and then, if next is not nil, next
// another delay later. The caller holds p.mu, which the timer's function
// takes too: the timer is in p.timers before it can run.
func (p *Peer) after(delay time.Duration, reply, next []byte) {
	if p.closed {
		return
	}
	p.sends.Add(1)
	var tm *time.Timer
	tm = time.AfterFunc(delay, func() {
		defer p.sends.Done()
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return
		}
		delete(p.timers, tm)
		if _, err := p.tun.Write(reply); err != nil {
			p.t.Errorf("peer: writing to %s: %v", p.name, err)
		}
		if next != nil {
			p.after(p.delay, next, nil)
		}
	})
	p.timers[tm] = struct{}{}
}

// tcpReply is a TCP segment from pk's destination back to its source. A
// SYN-ACK offers an MSS of 1460 and nothing else.
func (pk packet) tcpReply(seq, ack uint32, flags byte) []byte {
	hlen := 20
	if flags&tcpSYN != 0 {
		hlen = 24
	}
	h := make([]byte, hlen)
	binary.BigEndian.PutUint16(h[0:], pk.dport())
	binary.BigEndian.PutUint16(h[2:], pk.sport())
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12] = byte(hlen/4) << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65535) // window
	if hlen == 24 {
		copy(h[20:], []byte{2, 4, 1460 >> 8, 1460 & 0xff})
	}
	return ipPacket(pk.dst, pk.src, unix.IPPROTO_TCP, h)
}

// unreach is the ICMP destination unreachable a router sends for pk,
// quoting as much of pk as fits in the minimum MTU (RFC 1812 4.3.2.3,
// RFC 4443 2.4): the kernel finds the socket from the quoted headers.
func (pk packet) unreach(mode PeerMode) []byte {
	if pk.src.Is4() {
		code := byte(1) // host unreachable
		if mode == PeerNetUnreach {
			code = 0
		}
		quote := pk.raw[:min(len(pk.raw), 576-20-8)]
		m := append([]byte{3, code, 0, 0, 0, 0, 0, 0}, quote...)
		binary.BigEndian.PutUint16(m[2:], checksum(0, m))
		return ipPacket(peerRouter4, pk.src, unix.IPPROTO_ICMP, m)
	}
	code := byte(3) // address unreachable
	if mode == PeerNetUnreach {
		code = 0 // no route to destination
	}
	quote := pk.raw[:min(len(pk.raw), 1280-40-8)]
	m := append([]byte{1, code, 0, 0, 0, 0, 0, 0}, quote...)
	return ipPacket(peerRouter6, pk.src, unix.IPPROTO_ICMPV6, m)
}

// ipPacket wraps an upper-layer message in an IP header, and fills in the
// TCP or ICMPv6 checksum, which covers the pseudo-header.
func ipPacket(src, dst netip.Addr, proto byte, msg []byte) []byte {
	var hdr, pseudo []byte
	if src.Is4() {
		hdr = make([]byte, 20)
		hdr[0] = 0x45
		binary.BigEndian.PutUint16(hdr[2:], uint16(20+len(msg)))
		binary.BigEndian.PutUint16(hdr[6:], 0x4000) // DF
		hdr[8] = 64                                 // TTL
		hdr[9] = proto
		copy(hdr[12:], src.AsSlice())
		copy(hdr[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(hdr[10:], checksum(0, hdr))
		pseudo = append(append(src.AsSlice(), dst.AsSlice()...), 0, proto, byte(len(msg)>>8), byte(len(msg)))
	} else {
		hdr = make([]byte, 40)
		hdr[0] = 0x60
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(msg)))
		hdr[6] = proto
		hdr[7] = 64 // hop limit
		copy(hdr[8:], src.AsSlice())
		copy(hdr[24:], dst.AsSlice())
		pseudo = append(append(src.AsSlice(), dst.AsSlice()...), 0, 0, byte(len(msg)>>8), byte(len(msg)), 0, 0, 0, proto)
	}
	switch proto {
	case unix.IPPROTO_TCP:
		binary.BigEndian.PutUint16(msg[16:], checksum(sum(0, pseudo), msg))
	case unix.IPPROTO_ICMPV6:
		binary.BigEndian.PutUint16(msg[2:], checksum(sum(0, pseudo), msg))
	}
	return append(hdr, msg...)
}

// sum adds b to the one's-complement sum s (RFC 1071).
func sum(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// checksum is the Internet checksum of b, starting from the partial sum s.
func checksum(s uint32, b []byte) uint16 {
	s = sum(s, b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// TestPeerOutcomes dials every mode of a Peer, over IPv4 and IPv6, all at
// once, and checks each connect's error and how long it took.
func TestPeerOutcomes(t *testing.T) {
	NeedRoot(t)
	ns := NewNetns(t)
	// One retransmission, a second after the SYN: a dropped SYN times out
	// two seconds later.
	ns.Sysctl(t, "net.ipv4.tcp_syn_retries", "1")
	const delay = 200 * time.Millisecond
	const slack = 500 * time.Millisecond
	p := NewPeer(t, ns, delay)

	type result struct {
		dial, total  time.Duration // the connect; the connect and a read
		err, readErr error
	}
	type dialCase struct {
		mode PeerMode
		addr netip.AddrPort
		res  result
	}
	var cases []*dialCase
	for m := PeerAccept; m <= PeerDropFirst; m++ {
		cases = append(cases, &dialCase{mode: m, addr: p.Addr(m)}, &dialCase{mode: m, addr: p.Addr6(m)})
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		// Go's dialer makes its socket on the locked calling thread, in
		// the namespace.
		ns.GoRun(func() {
			defer wg.Done()
			start := time.Now()
			conn, err := (&net.Dialer{}).Dial("tcp", c.addr.String())
			c.res = result{dial: time.Since(start), err: err}
			if err != nil {
				return
			}
			defer conn.Close()
			if c.mode == PeerResetAfter {
				_, c.res.readErr = conn.Read(make([]byte, 1))
				c.res.total = time.Since(start)
			} else if _, err := conn.Write([]byte("ping")); err != nil {
				c.res.readErr = err
			}
		})
	}
	wg.Wait()

	wantErr := map[PeerMode]error{
		PeerRefuse:      unix.ECONNREFUSED,
		PeerDrop:        unix.ETIMEDOUT,
		PeerHostUnreach: unix.EHOSTUNREACH,
		PeerNetUnreach:  unix.ENETUNREACH,
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.mode, c.addr), func(t *testing.T) {
			r := c.res
			t.Logf("dial: %v after %v", r.err, r.dial.Round(time.Millisecond))
			if want := wantErr[c.mode]; want == nil && r.err != nil || want != nil && !errors.Is(r.err, want) {
				t.Errorf("dial error %v, want %v", r.err, want)
			}
			lo, hi := delay, delay+slack
			switch c.mode {
			case PeerDrop:
				lo, hi = 2800*time.Millisecond, 3*time.Second+slack
			case PeerDropFirst:
				lo, hi = time.Second+delay, time.Second+delay+slack
			}
			if r.dial < lo || r.dial > hi {
				t.Errorf("dial took %v, want %v to %v", r.dial, lo, hi)
			}
			switch {
			case c.mode == PeerResetAfter:
				t.Logf("read: %v after %v", r.readErr, r.total.Round(time.Millisecond))
				if !errors.Is(r.readErr, unix.ECONNRESET) {
					t.Errorf("read error %v, want ECONNRESET", r.readErr)
				}
				if r.total < 2*delay || r.total > 2*delay+slack {
					t.Errorf("reset after %v, want %v to %v", r.total, 2*delay, 2*delay+slack)
				}
			case r.readErr != nil:
				t.Errorf("write: %v", r.readErr)
			}
		})
	}
}

// TestPeerStops checks that a Peer ends with its test: the reader returns,
// the device is gone, and a reply still waiting is never sent.
func TestPeerStops(t *testing.T) {
	NeedRoot(t)
	ns := NewNetns(t)
	var p *Peer
	t.Run("serve", func(t *testing.T) {
		p = NewPeer(t, ns, time.Hour)
		ns.GoRun(func() {
			// Answered in an hour: still pending when the test ends.
			conn, err := net.DialTimeout("tcp", p.Addr(PeerAccept).String(), 100*time.Millisecond)
			if err == nil {
				conn.Close()
			}
		})
		deadline := time.Now().Add(5 * time.Second)
		for {
			p.mu.Lock()
			pending := len(p.timers)
			p.mu.Unlock()
			if pending > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the SYN never reached the peer")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	select {
	case <-p.done:
	default:
		t.Error("reader still running after its test")
	}
	if len(p.timers) != 1 || !p.closed {
		t.Errorf("closed=%t timers=%d, want the pending reply stopped", p.closed, len(p.timers))
	}
	ns.Run(t, func() {
		if _, err := netlink.LinkByName(p.Name()); err == nil {
			t.Errorf("%s still exists", p.Name())
		}
	})
}
