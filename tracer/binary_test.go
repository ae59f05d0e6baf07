package tracer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// PorttraceBinary builds cmd/porttrace once per test binary; TestMain
// removes it.
func PorttraceBinary(t *testing.T) string {
	t.Helper()
	NeedRoot(t)
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "porttrace-fault-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "porttrace")
		out, err := exec.Command("go", "build", "-o", binaryPath, "../cmd/porttrace").CombinedOutput()
		if err != nil {
			binaryErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}
