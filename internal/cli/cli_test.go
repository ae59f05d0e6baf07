package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	if got := Version("v1.4.0"); got != "v1.4.0" {
		t.Errorf("Version(v1.4.0) = %q", got)
	}
	// A test binary has no module version; without ldflags the fallback
	// is dev, or dev and the commit where the toolchain stamped one.
	for _, v := range []string{"", "dev"} {
		if got := Version(v); !regexp.MustCompile(`^dev(-[0-9a-f]{1,12}(-dirty)?)?$`).MatchString(got) {
			t.Errorf("Version(%q) = %q", v, got)
		}
	}
}

// make man writes a page a command, each with the command's examples.
func TestWriteMan(t *testing.T) {
	dir := t.TempDir()
	if err := WriteMan(dir, "v9.9.9"); err != nil {
		t.Fatal(err)
	}
	for page, want := range map[string]string{
		"porttrace.1":       "sudo porttrace -p 10101",
		"porttrace-who.1":   "sudo porttrace who 8080",
		"porttrace-ports.1": "sudo porttrace ports --watch",
		"porttrace-churn.1": "sudo porttrace churn",
	} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Error(err)
			continue
		}
		if s := string(b); !strings.Contains(s, `.SH EXAMPLE`) || !strings.Contains(s, want) || !strings.Contains(s, "porttrace v9.9.9") {
			t.Errorf("%s lacks its examples or version:\n%.400s", page, s)
		}
	}
}
