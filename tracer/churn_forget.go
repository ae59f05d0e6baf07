package tracer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// churnPick selects the churn keys ForgetChurn deletes: every key of the
// namespaces in netns, and the processes in procs.
type churnPick struct {
	netns map[uint32]bool
	procs map[ProcKey]bool
}

// ForgetChurn deletes from the churn maps the keys of processes that have
// exited and of network namespaces that no longer exist (for a namespace,
// its churn_ns and churn_dst keys and the churn_proc keys of its
// processes), so that the maps, whose keys are never removed in the
// kernel, hold only live things and new ones always find room. It returns
// what those keys counted, read just before they were deleted: their
// final counts, where nothing that is gone can count any more. Deleting a
// per-CPU hash key removes the values of every CPU.
func (t *Tracer) ForgetChurn(procs []ProcKey, netns []uint32) (*ChurnTotals, error) {
	m := t.l.maps
	pick := &churnPick{netns: map[uint32]bool{}, procs: map[ProcKey]bool{}}
	for _, ns := range netns {
		pick.netns[ns] = true
	}
	for _, k := range procs {
		pick.procs[k] = true
	}
	last := &ChurnTotals{
		Time:  time.Now(),
		Netns: map[uint32]*NetnsChurn{},
		Dests: map[DestKey]ChurnCounts{},
		Procs: map[ProcKey]ChurnCounts{},
	}
	if len(netns) > 0 {
		nk, err := readChurnNetns(m, last, pick)
		if err != nil {
			return nil, err
		}
		if err := deleteKeys(m.ChurnNs, nk); err != nil {
			return nil, err
		}
		dk, err := readChurnDests(m, last, pick)
		if err != nil {
			return nil, err
		}
		if err := deleteKeys(m.ChurnDst, dk); err != nil {
			return nil, err
		}
	}
	pk, err := readChurnProcs(m, last, pick)
	if err != nil {
		return nil, err
	}
	if err := deleteKeys(m.ChurnProc, pk); err != nil {
		return nil, err
	}
	return last, nil
}

// deleteKeys deletes keys from mp; one already gone is no error.
func deleteKeys[K any](mp *ebpf.Map, keys []K) error {
	for i := range keys {
		if err := mp.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting from %s: %w", mp, err)
		}
	}
	return nil
}
