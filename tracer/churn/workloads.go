package churn

import (
	"cmp"
	"slices"

	"github.com/porttrace/porttrace/tracer/internal/workload"
)

// byWorkload adds up the processes by the container (or pod) they called
// from, busiest first.
func byWorkload(procs []ProcReport) []WorkloadReport {
	return addUp(procs, func(p ProcReport) (workload.Identity, workload.Names) { return p.Workload, p.Names })
}

// byPod adds up the containers by pod, busiest first.
func byPod(ws []WorkloadReport) []WorkloadReport {
	rows := make([]ProcReport, 0, len(ws))
	for _, w := range ws {
		if w.Workload.PodUID == "" {
			continue
		}
		rows = append(rows, ProcReport{AllocsPerSec: w.AllocsPerSec, FailsPerSec: w.FailsPerSec, Allocs: w.Allocs, Fails: w.Fails,
			Workload: workload.Identity{PodUID: w.Workload.PodUID}, Names: workload.Names{Pod: w.Names.Pod, Namespace: w.Names.Namespace}})
	}
	return addUp(rows, func(p ProcReport) (workload.Identity, workload.Names) { return p.Workload, p.Names })
}

// addUp sums rows by the workload key gives each, leaving out those in
// none, busiest first.
func addUp(rows []ProcReport, key func(ProcReport) (workload.Identity, workload.Names)) []WorkloadReport {
	byID := map[workload.Identity]int{}
	var out []WorkloadReport
	for _, p := range rows {
		id, names := key(p)
		if !id.Known() {
			continue
		}
		i, ok := byID[id]
		if !ok {
			i = len(out)
			byID[id] = i
			out = append(out, WorkloadReport{Workload: id})
		}
		w := &out[i]
		if w.Names == (workload.Names{}) {
			w.Names = names
		}
		w.AllocsPerSec += p.AllocsPerSec
		w.FailsPerSec += p.FailsPerSec
		w.Allocs += p.Allocs
		w.Fails += p.Fails
	}
	slices.SortFunc(out, func(a, b WorkloadReport) int {
		return cmp.Or(cmp.Compare(b.AllocsPerSec+b.FailsPerSec, a.AllocsPerSec+a.FailsPerSec),
			cmp.Compare(b.Allocs+b.Fails, a.Allocs+a.Fails), cmp.Compare(a.Workload.ContainerID, b.Workload.ContainerID),
			cmp.Compare(a.Workload.PodUID, b.Workload.PodUID))
	})
	return out
}
