package tracer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// What stops a tracer before or while it loads, said as an operator can
// act on it: privileges, file descriptors, a kernel that refuses.

// errRefused is EPERM from the kernel to root: lockdown or a policy.
var errRefused = fmt.Errorf("the kernel refused to load its programs (EPERM as root: lockdown, or a kernel that forbids this program type): %w", ebpf.ErrNotSupported)

// explain adds what to do to the errors an operator can fix. A process
// that passed checkPrivileges without being root has CAP_BPF and
// CAP_PERFMON; what still stops it is a file only root may read, such as
// the tracepoint ids under tracefs.
func explain(err error) error {
	if (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && os.Geteuid() != 0 {
		return fmt.Errorf("permission denied: run porttrace as root (CAP_BPF and CAP_PERFMON are not enough where tracefs is root's alone): %w", err)
	}
	return err
}

// joinedErrors is errors.Join on one line: every error porttrace prints
// is a single line.
type joinedErrors []error

func (j joinedErrors) Error() string {
	s := make([]string, len(j))
	for i, err := range j {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (j joinedErrors) Unwrap() []error { return j }

// JoinErrors joins the non-nil errors, or returns nil when there are none.
func JoinErrors(errs ...error) error {
	var j joinedErrors
	for _, err := range errs {
		if err != nil {
			j = append(j, err)
		}
	}
	if len(j) == 0 {
		return nil
	}
	return j
}

// Capability numbers (linux/capability.h); CAP_BPF and CAP_PERFMON split
// out of CAP_SYS_ADMIN in 5.8.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// checkPrivileges fails early, with what to do, when the process cannot
// load BPF programs at all.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return errors.New("permission denied: run porttrace as root (without root it needs CAP_BPF, CAP_PERFMON and read access to tracefs)")
}

// fdsNeeded is how many free file descriptors loading and attaching a
// backend takes, with room to spare: each map, program and link is one,
// and so are the ring reader's epoll and the feature probes. Short of
// them, the kernel's EMFILE surfaces deep in a probe or a load, worded as
// a missing kernel feature.
const fdsNeeded = 48

// checkFreeFDs fails early, saying so, when RLIMIT_NOFILE leaves fewer
// than fdsNeeded descriptors free (Go raises the soft limit to the hard
// one at start; a hard limit set low stays).
func checkFreeFDs(extra int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	open, need := uint64(len(entries)), uint64(fdsNeeded+extra)
	if lim.Cur >= open+need {
		return nil
	}
	return fmt.Errorf("too many open files: porttrace needs about %d free file descriptors and has %d (RLIMIT_NOFILE %d, %d open); raise the limit (ulimit -n)",
		need, lim.Cur-min(lim.Cur, open), lim.Cur, open)
}

// ensureTracefs mounts tracefs where it is missing: the syscall
// tracepoints and kprobe_events live there. Mounting takes CAP_SYS_ADMIN;
// without it the error says what to do, for New to put first should no
// backend work (fentry needs no tracefs, so one may).
func ensureTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and porttrace could not mount it at /sys/kernel/tracing (%w): mount it (mount -t tracefs nodev /sys/kernel/tracing) or give porttrace CAP_SYS_ADMIN", err)
	}
	return nil
}
