package probe

import (
	"os"
	"testing"
)

func TestKernelA(t *testing.T) {
	t.Log("a says")
	if os.Getenv("A_PASS") == "" {
		t.Error("A fails")
	}
}

func TestKernelParent(t *testing.T) {
	t.Run("one", func(t *testing.T) { t.Skip("io_uring unavailable here") })
	t.Run("two", func(t *testing.T) { t.Log("two output"); t.Skip("io_uring unavailable here") })
	t.Log("parent own line")
	if os.Getenv("PARENT_FAIL") != "" {
		t.Error("parent fails on its own")
	}
}

func TestKernelSub(t *testing.T) {
	t.Run("x", func(t *testing.T) {
		t.Log("x line 1")
		if os.Getenv("X_PASS") == "" {
			t.Error("x fails")
		}
	})
	t.Run("y", func(t *testing.T) { t.Log("y passes") })
	t.Log("sub parent line after its subtests")
}

func TestKernelB(t *testing.T) {
	t.Log("before panic")
	if os.Getenv("B_PANIC") != "" {
		panic("boom")
	}
}

func TestKernelC(t *testing.T) { t.Log("c") }

// These tests, compiled alone with go test -c, wrote testdata/*.jsonl for
// verdict_test.go; the line numbers in those files are this file's.
