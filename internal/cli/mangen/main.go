// Command mangen writes porttrace's man pages, one a command, from the
// same command tree the binary runs (make man).
package main

import (
	"fmt"
	"os"

	"github.com/porttrace/porttrace/internal/cli"
)

func main() {
	dir := "man"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := cli.WriteMan(dir, cli.Version(os.Getenv("VERSION"))); err != nil {
		fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
		os.Exit(1)
	}
}
