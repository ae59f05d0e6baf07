// Package bpfheld tells which BPF programs, maps and links a process
// holds open, from /proc/PID/fdinfo (Linux 4.10+ for programs' ids, 5.8+
// for links). It is how the kernel tests, the fault tests and the soak
// tell that porttrace leaves nothing in the kernel and holds no more over
// time: the ids of one process, whatever else runs on the machine.
package bpfheld

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Objects are the distinct ids a process holds, each list in ascending
// order, and how many files it has open in all. A program attached
// through a link is listed among the programs even when only the link's
// fd names it.
type Objects struct {
	Progs, Maps, Links []uint32
	Files              int
}

// Of reads the fdinfo of every fd of process pid. An fd closed between
// the listing and its read is passed over.
func Of(pid int) (Objects, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo/", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Objects{}, err
	}
	var o Objects
	o.Files = len(ents)
	for _, e := range ents {
		b, err := os.ReadFile(dir + e.Name())
		if err != nil {
			continue
		}
		o.add(string(b))
	}
	return o, nil
}

// add takes the ids one fd's fdinfo names.
func (o *Objects) add(fdinfo string) {
	for line := range strings.Lines(fdinfo) {
		key, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var list *[]uint32
		switch key {
		case "prog_id":
			list = &o.Progs
		case "map_id":
			list = &o.Maps
		case "link_id":
			list = &o.Links
		default:
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			continue
		}
		if i, found := slices.BinarySearch(*list, uint32(id)); !found {
			*list = slices.Insert(*list, i, uint32(id))
		}
	}
}
