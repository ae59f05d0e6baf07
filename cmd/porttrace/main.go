// Command porttrace reports, as they happen, the binds, listens, connects
// and accepts of every process, with the port each asked for or was given
// and why a call failed. The commands are in internal/cli.
package main

import (
	"os"
	"runtime"

	"github.com/porttrace/porttrace/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=..."; a
// build without it reports what the Go toolchain recorded (cli.Version).
var version = "dev"

// init keeps the main thread for the main goroutine. porttrace enters
// other network namespaces on threads it locks and lets die (netns.Do);
// Go cannot end the main thread, and would keep one that entered a
// namespace for good, and /proc/self/ns/net, which porttrace reads as its
// own namespace, is the main thread's. The main goroutine only waits:
// the work runs on another, as a goroutine locked to a thread wakes only
// by a hand-off from the thread that readies it (two context switches),
// each time the stream's loop waits for events.
func init() { runtime.LockOSThread() }

func main() {
	code := make(chan int)
	go func() { code <- run(os.Args[1:]) }()
	os.Exit(<-code)
}

func run(args []string) int { return cli.Run(args, version, os.Stdout, os.Stderr) }
