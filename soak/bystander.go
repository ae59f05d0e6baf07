package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Bystanders are processes outside every tracer's scope (the soak's own
// cgroup and network namespace) that hold many sockets open for a while,
// as a busy proxy or database on the same node does. Nothing they hold
// is what the tracers were asked about, so no tracer's memory may follow
// it: ports --watch once described every socket of every process at each
// look (its RSS rose by 40 MiB while 90,000 sockets were held elsewhere),
// and churn listed every fd of the machine at once to tell whether a
// namespace was still held.

// bystanderHold is how long a burst holds its sockets: several of
// ports --watch's one-second looks.
const bystanderHold = 5 * time.Second

// bystanderTally is what the bursts held.
type bystanderTally struct {
	Bursts, Files, Procs int
}

// runBystander is the bystander role: n open files, UDP sockets never
// bound (no tracer sees an event of them), one in ten a socket of its own
// and the rest duplicates, so that a burst weighs on the fd tables more
// than on the kernel's memory; a line on stdout once they are open, held
// until stdin closes.
func runBystander() error {
	n, err := strconv.Atoi(os.Getenv("PORTTRACE_SOAK_FILES"))
	if err != nil {
		return fmt.Errorf("bystander: %w", err)
	}
	fds := make([]int, 0, n)
	for len(fds) < n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		for i := 1; err == nil && i < 10 && len(fds)+i < n; i++ {
			fds = append(fds, fd)
			fd, err = unix.FcntlInt(uintptr(fds[len(fds)-1]), unix.F_DUPFD_CLOEXEC, 0)
		}
		if err != nil {
			return fmt.Errorf("bystander: file %d of %d: %w", len(fds)+1, n, err)
		}
		fds = append(fds, fd)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// perBystander is how many files one bystander may open: its file
// limit (the soft one, which Go raises to the hard one at start) less a
// margin for what else it has open.
func perBystander() (int, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if n := int(min(lim.Cur, 1<<20)) - 64; n > 0 {
		return n, nil
	}
	return 0, errors.New("the file limit leaves no room for a bystander's sockets")
}

// holdBystanders runs a burst of total files every period, the first
// half a period after first: as many bystander processes as the file
// limit needs, each started, held bystanderHold once all are open, then
// ended.
func holdBystanders(ctx context.Context, total int, first, period time.Duration, t *bystanderTally) error {
	if total <= 0 {
		return nil
	}
	per, err := perBystander()
	if err != nil {
		return err
	}
	wait := first + period/2
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		began := time.Now()
		procs, err := burst(total, per)
		t.Bursts++
		t.Files += total
		t.Procs = max(t.Procs, procs)
		if err != nil {
			return err
		}
		wait = max(0, period-time.Since(began))
	}
}

// burst holds total files in bystanders of at most per each for
// bystanderHold and returns how many processes held them.
func burst(total, per int) (int, error) {
	var stdins []io.Closer
	var cmds []*exec.Cmd
	defer func() {
		for _, in := range stdins {
			in.Close()
		}
		for _, c := range cmds {
			c.Wait()
		}
	}()
	for left := total; left > 0; left -= per {
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), roleEnv+"=bystander", "PORTTRACE_SOAK_FILES="+strconv.Itoa(min(left, per)))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return len(cmds), err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return len(cmds), err
		}
		if err := cmd.Start(); err != nil {
			return len(cmds), fmt.Errorf("starting a bystander: %w", err)
		}
		stdins, cmds = append(stdins, in), append(cmds, cmd)
		if sc := bufio.NewScanner(out); !sc.Scan() || sc.Text() != "ready" {
			return len(cmds), errors.New("a bystander did not open its sockets")
		}
	}
	time.Sleep(bystanderHold)
	return len(cmds), nil
}
