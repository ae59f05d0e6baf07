// Package schema holds the JSON Schemas of what porttrace writes with
// -o json (*.schema.json, described in README.md). They are embedded so
// that the tests which check porttrace's output against them run where
// the source tree is not, as the kernel tests do in the QEMU matrix.
package schema

import "embed"

// FS holds every *.schema.json of this directory.
//
//go:embed *.schema.json
var FS embed.FS
