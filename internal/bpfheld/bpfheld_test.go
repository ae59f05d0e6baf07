package bpfheld

import (
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fdinfos []string
		want    Objects
	}{
		{"a map", []string{"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t2\nmap_id:\t42\nfrozen:\t0\n"},
			Objects{Maps: []uint32{42}}},
		{"a program", []string{"pos:\t0\nprog_type:\t5\nprog_tag:\tabcdef\nprog_id:\t7\nrun_time_ns:\t0\n"},
			Objects{Progs: []uint32{7}}},
		{"a link names its program", []string{"link_type:\tperf\nlink_id:\t9\nprog_tag:\tabcdef\nprog_id:\t7\n"},
			Objects{Progs: []uint32{7}, Links: []uint32{9}}},
		{"each id once, in order", []string{"prog_id:\t8\n", "link_id:\t3\nprog_id:\t7\n", "prog_id:\t7\n", "map_id:\t2\n", "map_id:\t1\n"},
			Objects{Progs: []uint32{7, 8}, Maps: []uint32{1, 2}, Links: []uint32{3}}},
		{"not BPF", []string{"pos:\t0\nflags:\t02\nmnt_id:\t24\nino:\t7\n", "eventfd-count:\t0\n"}, Objects{}},
		{"ids that do not parse", []string{"prog_id:\t\nmap_id:\t-1\nlink_id:\t4294967296\nprog_id\n"}, Objects{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o Objects
			for _, s := range tc.fdinfos {
				o.add(s)
			}
			if !slices.Equal(o.Progs, tc.want.Progs) || !slices.Equal(o.Maps, tc.want.Maps) || !slices.Equal(o.Links, tc.want.Links) {
				t.Errorf("got %+v, want %+v", o, tc.want)
			}
		})
	}
}

// A map this process makes is among what it holds, and gone once closed.
func TestOfMap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a BPF map")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Info()
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	id, _ := info.ID()
	before, err := Of(os.Getpid())
	if err != nil || !slices.Contains(before.Maps, uint32(id)) || before.Files == 0 {
		t.Errorf("with map %d open: %+v, %v", id, before, err)
	}
	m.Close()
	after, err := Of(os.Getpid())
	if err != nil || slices.Contains(after.Maps, uint32(id)) || after.Files != before.Files-1 {
		t.Errorf("with map %d closed: %+v, %v; before %+v", id, after, err, before)
	}
	if _, err := Of(-1); err == nil {
		t.Error("Of(-1) did not fail")
	}
}
