package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// versionArgs make the installed binary print "porttrace VERSION".
var versionArgs = []string{"version"}

// What each package installs, and nothing else.
var packaged = []string{
	"/usr/bin/porttrace",
	"/usr/lib/systemd/system/porttrace-churn.service",
	"/usr/lib/systemd/system/porttrace.service",
	"/usr/share/doc/porttrace/README.md",
}

// TestRelease runs `make release` and checks what it made: SHA256SUMS
// against the files, the archives' and the packages' contents and
// metadata, the binary in each (its architecture and how it was built,
// one and the same binary in the three); then installs the amd64 .deb,
// traces a bind with the installed binary and removes the package. It
// installs a package on this machine, so it runs only when asked:
// `make test-release` (root).
func TestRelease(t *testing.T) {
	if os.Getenv("PORTTRACE_RELEASE_TEST") == "" {
		t.Skip("installs the .deb on this machine: make test-release runs it (root)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: installs the .deb with dpkg and traces with it (make test-release runs it as root)")
	}
	for _, tool := range []string{"make", "dpkg", "dpkg-deb", "rpm", "rpm2cpio", "cpio", "sha256sum", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install rpm for rpm and rpm2cpio; .ci/run installs them)", tool)
		}
	}

	start := time.Now()
	mk := exec.Command("make", "--no-print-directory", "release")
	mk.Dir = ".."
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release took %s", time.Since(start).Round(100*time.Millisecond))

	dist := filepath.Join("..", "dist")
	version, pkgver := versions(t, dist)
	files := map[string]string{} // arch and kind -> file in dist
	for _, arch := range []string{"amd64", "arm64"} {
		rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
		files[arch+" tar.gz"] = "porttrace_" + version + "_linux_" + arch + ".tar.gz"
		files[arch+" deb"] = "porttrace_" + pkgver + "-1_" + arch + ".deb"
		files[arch+" rpm"] = "porttrace-" + pkgver + "-1." + rpmArch + ".rpm"
	}
	checkSums(t, dist, files)

	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			bin := checkArchive(t, filepath.Join(dist, files[arch+" tar.gz"]), version, arch)
			checkBinary(t, bin, arch, version)
			want := fileSum(t, bin)
			for _, kind := range []string{"deb", "rpm"} {
				pkg := filepath.Join(dist, files[arch+" "+kind])
				root := checkPackage(t, kind, pkg, arch, version, pkgver)
				if got := fileSum(t, filepath.Join(root, "usr/bin/porttrace")); got != want {
					t.Errorf("%s: /usr/bin/porttrace is not the archive's binary (sha256 %s, want %s)", pkg, got, want)
				}
				checkUnits(t, root)
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Run("install", func(t *testing.T) {
		installAndTrace(t, filepath.Join(dist, files["amd64 deb"]), version)
	})
}

// versions reads VERSION from the archive's name (what `make release`
// was given) and checks the package version pkgversion.sh makes of it.
func versions(t *testing.T, dist string) (version, pkgver string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dist, "porttrace_*_linux_amd64.tar.gz"))
	if len(m) != 1 {
		t.Fatalf("dist/ has %d porttrace_*_linux_amd64.tar.gz, want 1: %v", len(m), m)
	}
	version = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m[0]), "porttrace_"), "_linux_amd64.tar.gz")
	pkgver = pkgVersion(t, version)
	if pkgver[0] < '0' || pkgver[0] > '9' {
		t.Fatalf("package version %q of %q does not start with a digit", pkgver, version)
	}
	return version, pkgver
}

// checkSums checks that dist/ holds the release files and SHA256SUMS
// alone, and that SHA256SUMS names each file once with its sum, as
// `sha256sum -c` reads it.
func checkSums(t *testing.T, dist string, files map[string]string) {
	t.Helper()
	var want []string
	for _, f := range files {
		want = append(want, f)
	}
	slices.Sort(want)
	all := slices.Sorted(slices.Values(append(slices.Clone(want), "SHA256SUMS")))
	if got := dirNames(t, dist); !slices.Equal(got, all) {
		t.Fatalf("dist/ holds %q, want %q", got, all)
	}

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for line := range strings.Lines(string(sums)) {
		sum, name, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: %q is not \"SUM  NAME\"", line)
		}
		named = append(named, name)
		if got := fileSum(t, filepath.Join(dist, name)); got != sum {
			t.Errorf("SHA256SUMS: %s has %s, the file %s", name, sum, got)
		}
	}
	if slices.Sort(named); !slices.Equal(named, want) {
		t.Errorf("SHA256SUMS names %q, want %q", named, want)
	}
	check := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check SHA256SUMS: %v\n%s", err, out)
	}
}

// checkArchive checks that the archive holds porttrace_VERSION_linux_ARCH/
// with the binary, README.md and LICENSE where the repository has one,
// and returns the binary, unpacked.
func checkArchive(t *testing.T, path, version, arch string) string {
	t.Helper()
	dir := "porttrace_" + version + "_linux_" + arch + "/"
	want := []string{dir, dir + "README.md", dir + "porttrace"}
	if _, err := os.Stat("../LICENSE"); err == nil {
		want = append(want, dir+"LICENSE")
	}
	slices.Sort(want)

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	bin := filepath.Join(t.TempDir(), "porttrace")
	var got []string
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		got = append(got, h.Name)
		t.Logf("%s: %s %s %d", filepath.Base(path), h.FileInfo().Mode(), h.Name, h.Size)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s is owned by %d:%d, want root", path, h.Name, h.Uid, h.Gid)
		}
		if h.Name == dir+"porttrace" {
			if h.Typeflag != tar.TypeReg || h.Mode&0o777 != 0o755 {
				t.Errorf("%s: %s is type %c mode %o, want a file, 755", path, h.Name, h.Typeflag, h.Mode)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bin, b, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
	return bin
}

// checkBinary checks, with `go version -m`, that the binary is built as
// `make build` builds it: for linux/ARCH, static, -trimpath; and that it
// holds VERSION, which -X main.version wrote (-trimpath leaves -ldflags
// out of the build information).
func checkBinary(t *testing.T, bin, arch, version string) {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	info := string(out)
	for _, want := range []string{
		"\tpath\tgithub.com/porttrace/porttrace/cmd/porttrace\n",
		"\tbuild\tGOOS=linux\n",
		"\tbuild\tGOARCH=" + arch + "\n",
		"\tbuild\tCGO_ENABLED=0\n",
		"\tbuild\t-trimpath=true\n",
	} {
		if !strings.Contains(info, want) {
			t.Errorf("go version -m %s has no %q:\n%s", bin, strings.TrimSpace(want), info)
		}
	}
	if b, err := os.ReadFile(bin); err != nil || !bytes.Contains(b, []byte(version)) {
		t.Errorf("%s does not hold its version %q (%v)", bin, version, err)
	}
}

// checkPackage lists the package (dpkg-deb -c, rpm -qlp), checks its
// files, metadata, dependencies (none) and scripts (none), and returns a
// directory it was unpacked into.
func checkPackage(t *testing.T, kind, pkg, arch, version, pkgver string) string {
	t.Helper()
	root := t.TempDir()
	var files []string
	switch kind {
	case "deb":
		out := run(t, "dpkg-deb", "-c", pkg)
		t.Logf("dpkg-deb -c %s:\n%s", filepath.Base(pkg), out)
		for line := range strings.Lines(out) {
			fields := strings.Fields(line)
			if name := fields[len(fields)-1]; !strings.HasSuffix(name, "/") {
				files = append(files, strings.TrimPrefix(name, "."))
			}
		}
		fields := run(t, "dpkg-deb", "--showformat", "${Package}|${Version}|${Architecture}|${Depends}${Pre-Depends}${Recommends}|${Description}", "--show", pkg)
		want := "porttrace|" + pkgver + "-1|" + arch + "||"
		if !strings.HasPrefix(fields, want) {
			t.Errorf("%s: package, version, architecture, dependencies %q, want %q", pkg, fields, want)
		}
		checkDescription(t, pkg, fields)
		ctrl := t.TempDir()
		run(t, "dpkg-deb", "--control", pkg, ctrl)
		if names := dirNames(t, ctrl); !slices.Equal(names, []string{"control", "md5sums"}) {
			t.Errorf("%s: control files %q, want control and md5sums alone: no scripts, installing enables or starts nothing", pkg, names)
		}
		run(t, "dpkg-deb", "-x", pkg, root)
	case "rpm":
		out := run(t, "rpm", "-qlp", pkg)
		t.Logf("rpm -qlp %s:\n%s", filepath.Base(pkg), out)
		files = strings.Fields(out)
		rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
		fields := run(t, "rpm", "-qp", "--queryformat", "%{NAME}|%{VERSION}-%{RELEASE}|%{ARCH}|%{LICENSE}|%{DESCRIPTION}", pkg)
		want := "porttrace|" + pkgver + "-1|" + rpmArch + "|"
		if !strings.HasPrefix(fields, want) {
			t.Errorf("%s: name, version, architecture %q, want %q", pkg, fields, want)
		}
		checkDescription(t, pkg, fields)
		for req := range strings.Lines(run(t, "rpm", "-qpR", pkg)) {
			if !strings.HasPrefix(req, "rpmlib(") {
				t.Errorf("%s requires %s: the binary is static, it needs nothing", pkg, strings.TrimSpace(req))
			}
		}
		if s := run(t, "rpm", "-qp", "--scripts", pkg); strings.TrimSpace(s) != "" {
			t.Errorf("%s has scripts: installing must enable or start nothing:\n%s", pkg, s)
		}
		abs, err := filepath.Abs(pkg)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", `rpm2cpio "$1" | cpio -idm --quiet --no-absolute-filenames`, "sh", abs)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("rpm2cpio %s | cpio: %v\n%s", pkg, err, out)
		}
	}
	if slices.Sort(files); !slices.Equal(files, packaged) {
		t.Errorf("%s holds %q, want %q", pkg, files, packaged)
	}
	checkBinary(t, filepath.Join(root, "usr/bin/porttrace"), arch, version)
	return root
}

// checkDescription checks that the package's long description is the
// README's first paragraph.
func checkDescription(t *testing.T, pkg, fields string) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "\n\n")
	first, _, _ := strings.Cut(rest, "\n\n")
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if !strings.Contains(norm(fields), norm(first)) {
		t.Errorf("%s: the description does not hold the README's first paragraph %q:\n%s", pkg, first, fields)
	}
}

// checkUnits checks that each unit of deploy/systemd is packaged where
// systemd looks for it, running the packaged binary.
func checkUnits(t *testing.T, root string) {
	t.Helper()
	units, _ := filepath.Glob("../deploy/systemd/*.service")
	if len(units) == 0 {
		t.Fatal("no units in deploy/systemd")
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", filepath.Base(u)))
		if err != nil {
			t.Errorf("%s is not packaged: %v", u, err)
			continue
		}
		if !strings.Contains(string(b), "\nExecStart=/usr/bin/porttrace ") || strings.Contains(string(b), "/usr/local/bin") {
			t.Errorf("packaged %s does not run /usr/bin/porttrace:\n%s", filepath.Base(u), b)
		}
	}
}

// installAndTrace installs the .deb, runs the installed binary's version,
// traces a UDP bind on 127.0.0.1 with it, removes the package and checks
// that the binary went with it.
func installAndTrace(t *testing.T, deb, version string) {
	const bin = "/usr/bin/porttrace"
	if _, err := os.Stat(bin); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is there already (%v): not installing over it", bin, err)
	}
	run(t, "dpkg", "-i", deb)
	t.Cleanup(func() {
		if exec.Command("dpkg-query", "-W", "porttrace").Run() == nil {
			exec.Command("dpkg", "--purge", "porttrace").Run()
		}
	})

	if out := run(t, bin, versionArgs...); out != "porttrace "+version+"\n" {
		t.Errorf("%s %s printed %q, want %q", bin, strings.Join(versionArgs, " "), out, "porttrace "+version+"\n")
	}
	// Installed, not enabled: no unit is wanted by any target.
	if m, _ := filepath.Glob("/etc/systemd/system/*.wants/porttrace*"); len(m) > 0 {
		t.Errorf("installing enabled %q", m)
	}

	traceBind(t, bin)

	run(t, "dpkg", "-r", "porttrace")
	for _, f := range packaged {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dpkg -r porttrace left %s (%v)", f, err)
		}
	}
}

// traceBind runs the installed binary as a stream of JSON, binds a UDP
// port on 127.0.0.1 once it traces and checks that the bind came out,
// made by this process.
func traceBind(t *testing.T, bin string) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close() // the port traced: bound again below, once porttrace traces

	var stdout bytes.Buffer
	stderr := &watch{text: "tracing with the", seen: make(chan struct{})}
	cmd := exec.Command(bin, "-o", "json", "-e", "bind", "--udp", "-p", strconv.Itoa(port), "--pid", strconv.Itoa(os.Getpid()), "-n", "1", "-d", "30s")
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-stderr.seen:
	case err := <-done:
		t.Fatalf("%s exited before tracing: %v\n%s", bin, err, stderr)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s never said it was tracing:\n%s", bin, stderr)
	}

	c, err = net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	defer c.Close()
	// -n 1: porttrace stops after the bind; -d 30s if it never comes.
	if err := <-done; err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", bin, err, &stdout, stderr)
	}

	var ev struct {
		Event     string `json:"event"`
		Result    string `json:"result"`
		Pid       int    `json:"pid"`
		Proto     string `json:"proto"`
		LocalAddr string `json:"local_addr"`
		LocalPort int    `json:"local_port"`
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s wrote %q: %v", bin, sc.Text(), err)
		}
		if ev.Event == "bind" && ev.Pid == os.Getpid() && ev.LocalPort == port {
			if ev.Result != "ok" || ev.Proto != "udp" || ev.LocalAddr != "127.0.0.1" {
				t.Errorf("bind event %s", sc.Text())
			}
			t.Logf("traced: %s", sc.Text())
			return
		}
	}
	t.Errorf("%s reported no bind of 127.0.0.1:%d by pid %d\nstdout:\n%s\nstderr:\n%s", bin, port, os.Getpid(), &stdout, stderr)
}

// watch is a command's stderr that closes seen once text appears in it.
type watch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	text string
	seen chan struct{}
}

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.text != "" && strings.Contains(w.buf.String(), w.text) {
		close(w.seen)
		w.text = ""
	}
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// run runs a command and returns its stdout, failing the test when it
// fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, &stderr)
	}
	return string(out)
}

// dirNames lists a directory's names, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
