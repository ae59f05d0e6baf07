package tracer

import (
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
)

// ChurnCounts are allocations and failed allocations of ephemeral ports.
type ChurnCounts struct {
	Allocs uint64
	Fails  uint64
}

// NetnsChurn is what the kernel counted for one network namespace since the
// tracer started: allocations by call and protocol, failures by errno.
type NetnsChurn struct {
	Netns  uint32
	Allocs map[string]uint64 // "connect tcp", "connect udp", "bind tcp", ...
	Fails  map[string]uint64 // "EADDRNOTAVAIL", "EAGAIN", "EADDRINUSE"
}

// TotalAllocs sums Allocs.
func (n *NetnsChurn) TotalAllocs() (s uint64) {
	for _, v := range n.Allocs {
		s += v
	}
	return s
}

// TotalFails sums Fails.
func (n *NetnsChurn) TotalFails() (s uint64) {
	for _, v := range n.Fails {
		s += v
	}
	return s
}

// ProcKey names a process that allocated ports.
type ProcKey struct {
	PID      uint32
	Netns    uint32
	Comm     string
	CgroupID uint64 // the cgroup v2 it called from
}

// DestKey is a destination within a network namespace.
type DestKey struct {
	Netns uint32
	Dest  Dest
}

// ChurnTotals are the kernel's cumulative churn counters at one moment.
type ChurnTotals struct {
	Time     time.Time
	Netns    map[uint32]*NetnsChurn
	Dests    map[DestKey]ChurnCounts
	Procs    map[ProcKey]ChurnCounts
	Overflow uint64 // keys a full churn map could not take
}

// ReadChurn reads the churn maps of a tracer started with Options.Churn.
func (t *Tracer) ReadChurn() (*ChurnTotals, error) {
	m := t.l.maps
	ct := &ChurnTotals{
		Time:  time.Now(),
		Netns: map[uint32]*NetnsChurn{},
		Dests: map[DestKey]ChurnCounts{},
		Procs: map[ProcKey]ChurnCounts{},
	}
	if _, err := readChurnNetns(m, ct, nil); err != nil {
		return nil, err
	}
	if _, err := readChurnDests(m, ct, nil); err != nil {
		return nil, err
	}
	if _, err := readChurnProcs(m, ct, nil); err != nil {
		return nil, err
	}
	var over []uint64
	if err := m.Counters.Lookup(porttraceCounterCNT_CHURN_OVERFLOW, &over); err != nil {
		return nil, fmt.Errorf("reading counters: %w", err)
	}
	for _, v := range over {
		ct.Overflow += v
	}
	return ct, nil
}

// readChurnNetns sums churn_ns over CPUs: allocations by call and
// protocol, failures by errno, per namespace; only those pick takes, and
// their kernel keys, when pick is not nil.
func readChurnNetns(m *sharedMaps, ct *ChurnTotals, pick *churnPick) (keys []porttraceChurnNsKey, err error) {
	var nk porttraceChurnNsKey
	var nv []uint64
	it := m.ChurnNs.Iterate()
	for it.Next(&nk, &nv) {
		if pick != nil {
			if !pick.netns[nk.Netns] {
				continue
			}
			keys = append(keys, nk)
		}
		n := ct.Netns[nk.Netns]
		if n == nil {
			n = &NetnsChurn{Netns: nk.Netns, Allocs: map[string]uint64{}, Fails: map[string]uint64{}}
			ct.Netns[nk.Netns] = n
		}
		var sum uint64
		for _, v := range nv {
			sum += v
		}
		if nk.Err == 0 {
			n.Allocs[event.Kind(nk.Kind).String()+" "+event.ProtoName(nk.Proto)] += sum
		} else {
			n.Fails[unix.ErrnoName(syscall.Errno(nk.Err))] += sum
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading churn_ns: %w", err)
	}
	return keys, nil
}

// readChurnDests sums churn_dst over CPUs. An IPv4 destination reached
// from an IPv6 socket is kept under its IPv4-mapped address: one
// destination, two kernel keys, added up.
func readChurnDests(m *sharedMaps, ct *ChurnTotals, pick *churnPick) (keys []porttraceChurnDstKey, err error) {
	var dk porttraceChurnDstKey
	var cv []porttraceChurnCounts
	it := m.ChurnDst.Iterate()
	for it.Next(&dk, &cv) {
		if pick != nil {
			if !pick.netns[dk.Netns] {
				continue
			}
			keys = append(keys, dk)
		}
		addr := addrFrom(dk.Family, &dk.Daddr).Unmap()
		key := DestKey{dk.Netns, Dest{dk.Proto, netip.AddrPortFrom(addr, dk.Dport)}}
		c := ct.Dests[key]
		c.add(sumCounts(cv))
		ct.Dests[key] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading churn_dst: %w", err)
	}
	return keys, nil
}

// readChurnProcs sums churn_proc over CPUs.
func readChurnProcs(m *sharedMaps, ct *ChurnTotals, pick *churnPick) (keys []porttraceChurnProcKey, err error) {
	var pk porttraceChurnProcKey
	var cv []porttraceChurnCounts
	it := m.ChurnProc.Iterate()
	for it.Next(&pk, &cv) {
		key := ProcKey{pk.Pid, pk.Netns, commString(&pk.Comm), pk.CgroupId}
		if pick != nil {
			if !pick.netns[pk.Netns] && !pick.procs[key] {
				continue
			}
			keys = append(keys, pk)
		}
		c := ct.Procs[key]
		c.add(sumCounts(cv))
		ct.Procs[key] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading churn_proc: %w", err)
	}
	return keys, nil
}

func (c *ChurnCounts) add(o ChurnCounts) {
	c.Allocs += o.Allocs
	c.Fails += o.Fails
}

func sumCounts(per []porttraceChurnCounts) (c ChurnCounts) {
	for _, v := range per {
		c.Allocs += v.Allocs
		c.Fails += v.Fails
	}
	return c
}

// Dest is a destination of outbound connections: the kernel can reuse a
// local port towards different destinations, so the ephemeral range runs
// out per destination.
type Dest struct {
	Proto  uint16
	Remote netip.AddrPort
}

func (d Dest) String() string { return event.ProtoName(d.Proto) + " " + d.Remote.String() }
