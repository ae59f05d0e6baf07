package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelCheck finds what the console, at the quiet log level, does not
// show: WARNING, BUG and Oops reports in the kernel log, and taint.
type kernelCheck struct {
	kmsg  int    // /dev/kmsg, read without blocking
	taint uint64 // /proc/sys/kernel/tainted when last checked
}

// newKernelCheck starts watching and returns what the kernel already
// reported while it booted.
func newKernelCheck() (*kernelCheck, []finding) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, []finding{{name: "kernel", why: fmt.Sprintf("opening /dev/kmsg: %v", err)}}
	}
	k := &kernelCheck{kmsg: fd}
	return k, k.check()
}

// check returns the reports logged and the taint flags set since the last
// check, each a failure.
func (k *kernelCheck) check() []finding {
	found := k.warnings()
	if n := len(found); n > maxReports {
		found = append(found[:maxReports], finding{name: "kernel", why: fmt.Sprintf("%d more reports in the kernel log", n-maxReports)})
	}
	taint, err := tainted()
	switch {
	case err != nil:
		found = append(found, finding{name: "kernel", why: err.Error()})
	case taint != k.taint:
		why := "tainted " + taintFlags(taint)
		if k.taint != 0 {
			why += ", was " + taintFlags(k.taint)
		}
		found = append(found, finding{name: "kernel", why: why})
		k.taint = taint
	}
	return found
}

// maxReports is how many kernel log reports a check lists.
const maxReports = 5

// reportPrefixes mark the log lines that fail a run.
var reportPrefixes = []string{"WARNING:", "BUG:", "Oops:", "Oops "}

// warnings reads the kernel log from where the last call stopped and
// returns each report in it with the lines that follow it (the call trace).
func (k *kernelCheck) warnings() []finding {
	var found []finding
	buf := make([]byte, 8192)
	trace := 0 // lines still to add to the last finding
	for {
		n, err := unix.Read(k.kmsg, buf)
		if err == unix.EPIPE {
			continue // records overwritten before they were read: go on with the next
		}
		if err != nil || n <= 0 {
			if err != unix.EAGAIN {
				found = append(found, finding{name: "kernel", why: fmt.Sprintf("reading /dev/kmsg: %v", err)})
			}
			return found
		}
		msg := kmsgText(buf[:n])
		if trace > 0 {
			f := &found[len(found)-1]
			f.lines = append(f.lines, msg)
			trace--
		}
		for _, p := range reportPrefixes {
			if strings.Contains(msg, p) {
				found = append(found, finding{name: "kernel", why: msg})
				trace = keep
				break
			}
		}
	}
}

// kmsgText returns the message of one /dev/kmsg record,
// "PRIO,SEQ,USEC,FLAGS;MESSAGE\n" followed by " KEY=VALUE" lines.
func kmsgText(rec []byte) string {
	s := string(rec)
	if _, after, ok := strings.Cut(s, ";"); ok {
		s = after
	}
	s, _, _ = strings.Cut(s, "\n")
	return strings.ReplaceAll(s, `\x0a`, " ")
}

func tainted() (uint64, error) {
	b, err := os.ReadFile("/proc/sys/kernel/tainted")
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// taintFlags writes taint as its number and letters, as in the kernel's
// Documentation/admin-guide/tainted-kernels.rst.
func taintFlags(taint uint64) string {
	const letters = "PFSRMBUDAWCIOELKXTNJ"
	var set []byte
	for i := range len(letters) {
		if taint&(1<<i) != 0 {
			set = append(set, letters[i])
		}
	}
	return fmt.Sprintf("%d (%s)", taint, set)
}
