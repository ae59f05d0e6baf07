package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"
)

// scale is make bench-scale: K loops at once, one thread each, for K = 1,
// 2, 4, ... up to the number of CPUs, of UDP bind(0) and of TCP
// connect+accept, each with no tracer, with porttrace streaming JSON to
// /dev/null and with porttrace churn, in one run. For each: the events
// offered a second (what the loops made), those the stream delivered and
// those it lost (from its own summary: every event is one or the other),
// and the wall time against no tracer. With a baseline binary, its stream
// is measured beside porttrace's, case for case.
func scale(bin, baseline string, udpN, tcpN int) error {
	bins := []struct{ name, path string }{{"porttrace", bin}}
	if baseline != "" {
		bins = append(bins, struct{ name, path string }{"baseline", baseline})
	}
	fmt.Println("K loops at once, one thread each; offered: events the loops made a second; delivered and lost: the stream's own count")
	for _, w := range []struct {
		name      string
		perLoop   int
		perIter   int // events one iteration makes: a bind; a connect and an accept
		loop      func(int) error
		eventsArg string
	}{
		{"UDP bind(0)", udpN, 1, udpLoop, "bind"},
		{"TCP connect+accept", tcpN, 2, tcpLoop, "connect,accept"},
	} {
		fmt.Printf("\n%s, %d iterations a loop:\n", w.name, w.perLoop)
		fmt.Printf("  %-3s %-26s %10s %12s %12s %10s %8s\n", "K", "case", "wall", "offered/s", "delivered", "lost", "ratio")
		for k := 1; ; k *= 2 {
			k = min(k, nprocs())
			run := func() error { return loops(k, w.perLoop, w.loop) }
			base, err := wall(run)
			if err != nil {
				return err
			}
			offered := float64(k*w.perLoop*w.perIter) / base.Seconds()
			fmt.Printf("  %-3d %-26s %10s %12.0f %12s %10s %8s\n", k, "no tracer", base.Round(time.Millisecond), offered, "", "", "1.00x")

			for _, b := range bins {
				events, lost, took, err := summary(b.path, []string{"-o", "json", "-e", w.eventsArg, "--pid", fmt.Sprint(os.Getpid())}, run)
				if err != nil {
					return err
				}
				fmt.Printf("  %-3d %-26s %10s %12.0f %12d %10d %7.2fx\n", k, b.name+" -o json", took.Round(time.Millisecond),
					float64(events+lost)/took.Seconds(), events, lost, took.Seconds()/base.Seconds())
			}

			took, err := underChurn(bin, run)
			if err != nil {
				return err
			}
			fmt.Printf("  %-3d %-26s %10s %12.0f %12s %10s %7.2fx\n", k, "porttrace churn", took.Round(time.Millisecond),
				float64(k*w.perLoop*w.perIter)/took.Seconds(), "", "", took.Seconds()/base.Seconds())
			if k == nprocs() {
				break
			}
		}
	}
	return nil
}

// loops runs k copies of loop at once, each on a thread of its own.
func loops(k, n int, loop func(int) error) error {
	errc := make(chan error, k)
	for range k {
		go func() {
			runtime.LockOSThread()
			errc <- loop(n)
		}()
	}
	var errs []error
	for range k {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

func wall(run func() error) (time.Duration, error) {
	start := time.Now()
	err := run()
	return time.Since(start), err
}

// underChurn times run while porttrace churn counts.
func underChurn(bin string, run func() error) (time.Duration, error) {
	stop, err := startCmd(exec.Command(bin, "churn", "-o", "json", "-i", "1h"), " with the ", false)
	if err != nil {
		return 0, err
	}
	took, err := wall(run)
	return took, errors.Join(err, stop())
}
