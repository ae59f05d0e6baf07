package churn

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// The kernel never removes a churn key, so on a node where processes and
// namespaces come and go the maps would fill and new ones go uncounted.
// After each report, the keys of processes that have exited and of
// namespaces that no longer exist, quiet that interval, are deleted from
// the kernel's maps (Retire) and what they counted is kept here, so that
// every total the user sees (the summary, a workload's row and counter)
// goes on from where it was.

// retired is what the keys deleted from the kernel's maps had counted.
type retired struct {
	allocs uint64
	fails  map[string]uint64
	// workloads are the retired processes of live namespaces by
	// container; those of a namespace retired go with it, as do its
	// series.
	workloads map[retiredCgroup]*WorkloadReport
}

type retiredCgroup struct {
	netns    uint32
	cgroupID uint64
}

// quietProc is a process key whose counts did not change in the last
// interval, with the container it was reported in.
type quietProc struct {
	key   tracer.ProcKey
	id    workload.Identity
	names workload.Names
}

// Forget deletes keys from the kernel's churn maps and returns what they
// had counted last (tracer.Tracer.ForgetChurn).
type Forget func(procs []tracer.ProcKey, netns []uint32) (*tracer.ChurnTotals, error)

// delta is what a counter grew by from p to c; a key counted from zero
// again (deleted, then made anew by a new process) grew by all of c.
func delta(c, p uint64) uint64 {
	if c < p {
		return c
	}
	return c - p
}

// noteQuiet remembers, of the interval that ends with cur, the keys that
// did not change: those Retire may look at.
func (s *State) noteQuiet(r *Report, cur *tracer.ChurnTotals) {
	s.quietProcs, s.quietNetns = s.quietProcs[:0], s.quietNetns[:0]
	for i := range r.Netns {
		nr := &r.Netns[i]
		for _, p := range nr.Procs {
			k := tracer.ProcKey{PID: p.PID, Netns: nr.Netns, Comm: p.Comm, CgroupID: p.CgroupID}
			if prev, ok := s.prev.Procs[k]; ok && prev == cur.Procs[k] {
				s.quietProcs = append(s.quietProcs, quietProc{k, p.Workload, p.Names})
			}
		}
	}
	for ns, n := range cur.Netns {
		p := s.prev.Netns[ns]
		if ns != s.host && p != nil && p.TotalAllocs() == n.TotalAllocs() && p.TotalFails() == n.TotalFails() {
			s.quietNetns = append(s.quietNetns, ns)
		}
	}
}

// Retire deletes from the kernel's maps, through forget, the keys of the
// quiet processes that have exited (or whose pid now names another
// process) and of the quiet namespaces that nothing holds any more,
// looking at most every scanEvery, and keeps what they counted.
func (s *State) Retire(forget Forget) error {
	now := s.prev.Time
	if len(s.quietProcs)+len(s.quietNetns) == 0 || (!s.retiredAt.IsZero() && now.Sub(s.retiredAt) < scanEvery) {
		return nil
	}
	s.retiredAt = now
	var procs []tracer.ProcKey
	who := map[tracer.ProcKey]quietProc{}
	for _, q := range s.quietProcs {
		if !s.procAlive(q.key) {
			procs = append(procs, q.key)
			who[q.key] = q
		}
	}
	var gone []uint32
	if len(s.quietNetns) > 0 {
		gone = s.unheld(s.quietNetns)
	}
	if len(procs)+len(gone) == 0 {
		return nil
	}
	last, err := forget(procs, gone)
	if err != nil {
		return fmt.Errorf("retiring churn keys: %w", err)
	}
	s.fold(last, gone, who)
	return nil
}

// fold keeps what the retired keys counted and forgets everything kept
// of them, so userspace holds nothing of what is gone either: a key made
// again later is new.
func (s *State) fold(last *tracer.ChurnTotals, gone []uint32, who map[tracer.ProcKey]quietProc) {
	goneNs := map[uint32]bool{}
	for _, ns := range gone {
		goneNs[ns] = true
		delete(s.prev.Netns, ns)
		delete(s.history, ns)
		delete(s.atRisk, ns)
		for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
			delete(s.nsGrowth, usageKey{ns, proto})
		}
	}
	for _, n := range last.Netns {
		s.retired.allocs += n.TotalAllocs()
		for errno, v := range n.Fails {
			s.retired.fails[errno] += v
		}
	}
	for k := range s.prev.Dests {
		if goneNs[k.Netns] {
			delete(s.prev.Dests, k)
		}
	}
	for k := range s.growth {
		if goneNs[k.Netns] {
			delete(s.growth, k)
		}
	}
	for k := range s.retired.workloads {
		if goneNs[k.netns] {
			delete(s.retired.workloads, k)
		}
	}
	for k, c := range last.Procs {
		delete(s.prev.Procs, k)
		q, ok := who[k]
		if goneNs[k.Netns] || !ok || !q.id.Known() {
			continue
		}
		rk := retiredCgroup{k.Netns, k.CgroupID}
		w := s.retired.workloads[rk]
		if w == nil {
			w = &WorkloadReport{Workload: q.id, Names: q.names}
			s.retired.workloads[rk] = w
		}
		w.Allocs += c.Allocs
		w.Fails += c.Fails
	}
	for k := range s.prev.Procs {
		if goneNs[k.Netns] {
			delete(s.prev.Procs, k)
		}
	}
}

// retiredRows are the retired processes of namespace ns as rows for the
// workload sums: their totals, no rate.
func (s *State) retiredRows(ns uint32) []ProcReport {
	var rows []ProcReport
	for k, w := range s.retired.workloads {
		if k.netns == ns {
			rows = append(rows, ProcReport{CgroupID: k.cgroupID, Workload: w.Workload, Names: w.Names, Allocs: w.Allocs, Fails: w.Fails})
		}
	}
	return rows
}

// procAlive reports whether the process of k still runs: its pid names a
// process one of whose threads has k's comm (a thread may name itself).
// One that cannot be read is taken to be alive.
func procAlive(k tracer.ProcKey) bool {
	dir := "/proc/" + strconv.FormatUint(uint64(k.PID), 10)
	b, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ESRCH)
	}
	if strings.TrimSuffix(string(b), "\n") == k.Comm {
		return true
	}
	tasks, _ := filepath.Glob(dir + "/task/[0-9]*/comm")
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil && strings.TrimSuffix(string(b), "\n") == k.Comm {
			return true
		}
	}
	return false
}
