package netns

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/internal/fdwalk"
)

// Unheld returns those of inodes that nothing keeps alive any more: no
// process or thread lives in them, no mount (/run/netns or any other nsfs
// bind mount) names them and no process holds them open. Such a namespace
// is gone, or going, and counts nothing again. The cheapest places are
// looked at first, and the walk stops once every one is found.
func Unheld(inodes []uint32) []uint32 {
	left := map[uint32]bool{}
	for _, ino := range inodes {
		left[ino] = true
	}
	found := func(p string) {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			delete(left, uint32(st.Ino))
		}
	}
	for _, look := range []func(func(string)){
		globbed("/run/netns/*"),
		nsfsMounts,
		globbed("/proc/[0-9]*/ns/net"),
		globbed("/proc/[0-9]*/task/[0-9]*/ns/net"),
		heldOpen(left),
	} {
		if len(left) == 0 {
			break
		}
		look(found)
	}
	var gone []uint32
	for _, ino := range inodes {
		if left[ino] {
			gone = append(gone, ino)
		}
	}
	return gone
}

func globbed(pattern string) func(func(string)) {
	return func(found func(string)) {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			found(p)
		}
	}
}

// nsfsMounts are the namespaces bound to a path anywhere (ip netns,
// CNI plugins, container runtimes each choose their own directory).
func nsfsMounts(found func(string)) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mount-id parent major:minor root mount-point options ... - fstype ...
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "nsfs" && len(fields) > 4 {
				found(unescapeMount(fields[4]))
			}
		}
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// heldOpen finds the namespaces of left that some process holds by an fd
// alone (one made and kept open before any process enters it).
func heldOpen(left map[uint32]bool) func(func(string)) {
	return func(found func(string)) {
		_, _ = fdwalk.Walk(nil, func(f fdwalk.FD) bool {
			if ino, ok := fdwalk.Inode(f.Target, "net"); ok && left[ino] {
				delete(left, ino)
			}
			return len(left) > 0
		})
	}
}
