package proc

import (
	"bytes"
	"math"
	"strconv"
	"time"
)

// The parsers of the /proc files porttrace reads, pure so that they can
// be tested on any bytes: the kernel writes these files, but a process
// names itself (stat's COMM holds what it chose, spaces and parentheses
// too), and a file read as its process exits may be cut short. A file
// that does not say a fact leaves it unknown, never zero: a uid of 0 is
// root.

// userHZ is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// architecture Linux runs on.
const userHZ = 100

// parseStat reads the parent's pid and the start time (clock ticks after
// boot) from /proc/PID/stat: "PID (COMM) STATE PPID ... STARTTIME ...",
// STARTTIME the 22nd field. COMM may hold anything but a NUL, so the
// fields are counted from the last ')'.
func parseStat(b []byte) (ppid uint32, startTicks uint64, ok bool) {
	l, r := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if l < 0 || r < l {
		return 0, 0, false
	}
	// fields[0] is STATE, the 3rd field.
	fields := bytes.Fields(b[r+1:])
	if len(fields) < 22-2 {
		return 0, 0, false
	}
	p, err := strconv.ParseUint(string(fields[4-3]), 10, 32)
	if err != nil {
		return 0, 0, false
	}
	start, err := strconv.ParseUint(string(fields[22-3]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return uint32(p), start, true
}

// parseStatusUID reads the effective user id from /proc/PID/status's
// "Uid:\tREAL\tEFFECTIVE\tSAVED\tFS" line; false without such a line, all
// four ids in it.
func parseStatusUID(b []byte) (uint32, bool) {
	for line := range bytes.Lines(b) {
		rest, found := bytes.CutPrefix(line, []byte("Uid:"))
		if !found {
			continue
		}
		ids := bytes.Fields(rest)
		if len(ids) != 4 {
			return 0, false
		}
		var uid uint64
		for i, id := range ids {
			n, err := strconv.ParseUint(string(id), 10, 32)
			if err != nil {
				return 0, false
			}
			if i == 1 {
				uid = n
			}
		}
		return uint32(uid), true
	}
	return 0, false
}

// parseBootTime reads btime, the boot time in seconds since the epoch,
// from /proc/stat.
func parseBootTime(b []byte) (int64, bool) {
	for line := range bytes.Lines(b) {
		if rest, found := bytes.CutPrefix(line, []byte("btime ")); found {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 63)
			return int64(n), err == nil
		}
	}
	return 0, false
}

// startTime is when a process started, startTicks after a boot at
// bootSec; false when that is past what a time can say.
func startTime(bootSec int64, startTicks uint64) (time.Time, bool) {
	sec := startTicks / userHZ
	if bootSec < 0 || sec > uint64(math.MaxInt64-bootSec) {
		return time.Time{}, false
	}
	return time.Unix(bootSec+int64(sec), int64(startTicks%userHZ)*int64(time.Second/userHZ)), true
}
