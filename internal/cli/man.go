package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra/doc"
)

// WriteMan writes a man page for porttrace and each of its commands into
// dir (section 1: porttrace.1, porttrace-who.1, ...), with the help's
// text and examples.
func WriteMan(dir, version string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	root := NewRoot(version, io.Discard, io.Discard)
	root.DisableAutoGenTag = true
	header := &doc.GenManHeader{Title: "PORTTRACE", Section: "1", Source: "porttrace " + version, Manual: "porttrace manual"}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("writing the man pages: %w", err)
	}
	return nil
}
