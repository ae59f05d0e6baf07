package packaging

import (
	"os/exec"
	"strings"
	"testing"
)

// The package version of each kind of git describe, and the order deb
// and rpm must put them in: a later build sorts after an earlier one.
func TestPkgVersion(t *testing.T) {
	cases := []struct{ describe, want string }{
		{"dev", "0.0.0~dev"},
		{"abc1234", "0.0.0~gabc1234"},
		{"abc1234-dirty", "0.0.0~gabc1234+dirty"},
		{"1234567", "0.0.0~g1234567"}, // a hash of digits alone is no release
		{"v0.9.0", "0.9.0"},
		{"v1.2.3-rc.1", "1.2.3~rc.1"},
		{"v1.2.3-rc.1-2-gdef5678", "1.2.3~rc.1+2.gdef5678"},
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.2.3-10-g0123abc", "1.2.3+10.g0123abc"},
		{"1.3", "1.3"},
		{"nightly_2026", "0.0.0~nightly.2026"},
	}
	for _, c := range cases {
		if got := pkgVersion(t, c.describe); got != c.want {
			t.Errorf("pkgversion.sh %s = %s, want %s", c.describe, got, c.want)
		}
	}

	// Ascending, as both package managers must order them.
	order := []string{"0.0.0~dev", "0.0.0~gabc1234", "0.9.0", "1.2.3~rc.1", "1.2.3~rc.1+2.gdef5678", "1.2.3", "1.2.3+4.gabc1234", "1.2.3+10.g0123abc", "1.3"}
	if _, err := exec.LookPath("dpkg"); err == nil {
		for i := 1; i < len(order); i++ {
			if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
				t.Errorf("dpkg: %s does not sort before %s", order[i-1], order[i])
			}
		}
	}
	if _, err := exec.LookPath("rpm"); err == nil {
		for i := 1; i < len(order); i++ {
			out, err := exec.Command("rpm", "--eval", "%{lua: print(rpm.vercmp('"+order[i-1]+"', '"+order[i]+"'))}").Output()
			if err != nil || strings.TrimSpace(string(out)) != "-1" {
				t.Errorf("rpm: %s does not sort before %s (vercmp %q, %v)", order[i-1], order[i], out, err)
			}
		}
	}
}

func pkgVersion(t *testing.T, describe string) string {
	t.Helper()
	out, err := exec.Command("bash", "pkgversion.sh", describe).Output()
	if err != nil {
		t.Fatalf("pkgversion.sh %s: %v", describe, err)
	}
	return strings.TrimSpace(string(out))
}
