package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What the stream keeps up with: throughput, the catch rate against ss
// polling, and memory.

// summary runs porttrace with args while load runs, stops it and returns
// what its exit summary says: events written and events lost.
func summary(bin string, args []string, load func() error) (events, lost uint64, elapsed time.Duration, err error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), " with the ") {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, 0, 0, fmt.Errorf("porttrace did not start: %s", sc.Text())
	}
	start := time.Now()
	lerr := load()
	elapsed = time.Since(start)
	cmd.Process.Signal(syscall.SIGINT)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	cmd.Wait()
	if lerr != nil {
		return 0, 0, 0, lerr
	}
	// "porttrace: N events (...), D denied, F failed, L lost"
	if _, err := fmt.Sscanf(last, "porttrace: %d events", &events); err != nil {
		return 0, 0, 0, fmt.Errorf("summary %q: %v", last, err)
	}
	f := strings.Fields(last)
	if _, err := fmt.Sscanf(f[len(f)-2], "%d", &lost); err != nil {
		return 0, 0, 0, fmt.Errorf("summary %q: %v", last, err)
	}
	return events, lost, elapsed, nil
}

// throughput drives binds from two threads as fast as they go and reports
// the rate porttrace delivered and what it lost, with the default 8 MiB
// ring buffer.
func throughput(bin string) error {
	const perThread = 150000
	events, lost, elapsed, err := summary(bin, []string{"-o", "json", "-e", "bind"}, func() error {
		errc := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func() { errc <- udpLoop(perThread) }()
		}
		return errors.Join(<-errc, <-errc)
	})
	if err != nil {
		return err
	}
	generated := uint64(2 * perThread)
	fmt.Printf("throughput: %d binds from 2 threads in %s (%.0f/s); porttrace -o json wrote %d (%.0f/s), lost %d (counted and reported)\n",
		generated, elapsed.Round(time.Millisecond), float64(generated)/elapsed.Seconds(), events, float64(events)/elapsed.Seconds(), lost)
	return nil
}

// catchRate makes 1,000 connections that live about 10 ms each, while ss
// -tanp is polled every second and porttrace runs, and counts how many each
// saw.
func catchRate(bin string) error {
	if _, err := exec.LookPath("ss"); err != nil {
		fmt.Println("catch rate: ss not installed, skipped")
		return nil
	}
	const n = 1000
	ln, sa, err := shortLivedServer()
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	port := sa.(*unix.SockaddrInet4).Port
	cmd := exec.Command(bin, "-o", "json", "-e", "connect", "-p", fmt.Sprint(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	if sc := bufio.NewScanner(stderr); !sc.Scan() {
		return errors.New("porttrace did not start")
	}
	// Client ports are reused from one short connection to the next, so
	// porttrace's connects are counted as events, not as distinct ports.
	traced := 0
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			// A connect a signal interrupted (the Go runtime's own) is
			// in progress, then done: caught all the same.
			if l := sc.Text(); strings.Contains(l, `"event":"connect","result":"ok"`) ||
				strings.Contains(l, `"event":"connect","result":"in_progress"`) {
				traced++
			}
		}
	}()
	stopPoll := make(chan struct{})
	polledc := pollSS(port, stopPoll)
	for i := 0; i < n; i++ {
		if err := shortConnection(sa); err != nil {
			return err
		}
	}
	close(stopPoll)
	polled := <-polledc
	cmd.Process.Signal(syscall.SIGINT)
	<-readDone
	cmd.Wait()
	fmt.Printf("catch rate, %d connections of ~10 ms: porttrace %d (%.1f%%), ss -tanp polled every second %d (%.1f%%)\n",
		n, traced, 100*float64(traced)/n, polled, 100*float64(polled)/n)
	return nil
}

// shortLivedServer listens on a loopback port the kernel picks and closes
// each connection it accepts 15 ms later.
func shortLivedServer() (int, unix.Sockaddr, error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = unix.Listen(ln, 1024)
	}
	if err != nil {
		unix.Close(ln)
		return -1, nil, err
	}
	sa, _ := unix.Getsockname(ln)
	go func() {
		for {
			fd, _, err := unix.Accept(ln)
			if err != nil {
				return
			}
			go func() { time.Sleep(15 * time.Millisecond); unix.Close(fd) }()
		}
	}()
	return ln, sa, nil
}

// shortConnection connects to sa, lives 10 ms and resets.
func shortConnection(sa unix.Sockaddr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return err
	}
	time.Sleep(10 * time.Millisecond)
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	return unix.Close(fd)
}

// pollSS runs ss -tanp every second, as an operator polling would, until
// stop is closed, then sends how many client ports it saw to port.
func pollSS(port int, stop chan struct{}) <-chan int {
	res := make(chan int, 1)
	go func() {
		polled := map[string]bool{}
		for {
			o, _ := exec.Command("ss", "-Htanp", fmt.Sprintf("dport = :%d", port)).Output()
			for _, line := range strings.Split(string(o), "\n") {
				if f := strings.Fields(line); len(f) >= 4 {
					polled[f[3][strings.LastIndex(f[3], ":")+1:]] = true
				}
			}
			select {
			case <-stop:
				res <- len(polled)
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return res
}

// memory streams a million events through porttrace -o json and reads its
// peak and final resident memory.
func memory(bin string, millions float64) error {
	n := int(millions * 1e6)
	cmd := exec.Command(bin, "-o", "json", "-e", "bind", "--pid", fmt.Sprint(os.Getpid()))
	cmd.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() {
		return errors.New("porttrace did not start")
	}
	if err := udpLoop(n); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	cmd.Process.Signal(syscall.SIGINT)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	cmd.Wait()
	if err != nil {
		return err
	}
	var hwm, rss string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwm = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	fmt.Printf("memory after %d events (%s): peak RSS %s, RSS %s\n", n, strings.TrimPrefix(last, "porttrace: "), hwm, rss)
	return nil
}
