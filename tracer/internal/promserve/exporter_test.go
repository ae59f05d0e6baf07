package promserve

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/promtest"
)

// serveExporter serves the test collector as porttrace serves its own,
// and stops it when the test ends.
func serveExporter(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	m, err := Serve(cfg, testCollector(), t.Output())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// get fetches url over plain HTTP: its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// /metrics carries, beside the collector, porttrace_build_info with the
// version and backend given, and the Go and process collectors; / is a
// landing page that links /metrics and names the version, every other
// path is 404; and promtool finds nothing to say of the scrape.
func TestExporterPages(t *testing.T) {
	m := serveExporter(t, Config{Version: "1.2.3-test", Backend: "fentry"})
	if !strings.HasPrefix(m.URL(), "http://127.0.0.1:") || !strings.HasSuffix(m.URL(), "/metrics") {
		t.Errorf("URL() = %s, want http://127.0.0.1:PORT/metrics", m.URL())
	}
	base := "http://" + m.Addr()
	info := regexp.MustCompile(`(?m)^porttrace_build_info\{backend="fentry",goversion="` + regexp.QuoteMeta(runtime.Version()) +
		`",revision="[0-9a-f]*",version="1\.2\.3-test"\} 1$`)
	for _, tc := range []struct {
		path   string
		status int
		want   []*regexp.Regexp
	}{
		{"/metrics", 200, []*regexp.Regexp{info,
			regexp.MustCompile(`(?m)^porttrace_test_total 3$`),
			regexp.MustCompile(`(?m)^go_goroutines \d+$`),
			regexp.MustCompile(`(?m)^process_open_fds \d+$`),
			regexp.MustCompile(`(?m)^promhttp_metric_handler_requests_total\{code="200"\} \d+$`)}},
		{"/", 200, []*regexp.Regexp{
			regexp.MustCompile(`<a href="metrics">`),
			regexp.MustCompile(`Version 1\.2\.3-test, fentry backend`)}},
		{"/index.html", 404, nil},
		{"/metrics/x", 404, nil},
		{"/debug/pprof/", 404, nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			status, body := get(t, base+tc.path)
			if status != tc.status {
				t.Fatalf("status %d, want %d:\n%s", status, tc.status, body)
			}
			for _, re := range tc.want {
				if !re.MatchString(body) {
					t.Errorf("no match for %s in:\n%s", re, body)
				}
			}
			if tc.path == "/metrics" {
				promtest.CheckMetrics(t, []byte(body))
			}
		})
	}
}

// The landing page escapes what it shows: a version is whatever the build
// was given.
func TestLandingEscapes(t *testing.T) {
	m := serveExporter(t, Config{Version: `<script>alert(1)</script>`})
	_, body := get(t, "http://"+m.Addr()+"/")
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("version not escaped:\n%s", body)
	}
	_, metrics := get(t, m.URL())
	if !strings.Contains(metrics, `,version="<script>alert(1)</script>"} 1`) {
		t.Errorf("porttrace_build_info lacks the version:\n%s", metrics)
	}
}

// With a web configuration of TLS and basic auth, the server speaks TLS
// only (and says https in its URL), and answers 401 to a client without
// the password or with a wrong one, on every path.
func TestWebConfigTLSBasicAuth(t *testing.T) {
	web := promtest.NewWeb(t)
	m := serveExporter(t, Config{WebConfig: web.Path, Version: "1.2.3-test"})
	if want := "https://" + m.Addr() + "/metrics"; m.URL() != want {
		t.Errorf("URL() = %s, want %s", m.URL(), want)
	}
	base := "https://" + m.Addr()
	for _, tc := range []struct {
		name     string
		path     string
		password string // "": none sent
		status   int
		want     string
	}{
		{"metrics with the password", "/metrics", web.Password, 200, "porttrace_build_info{"},
		{"landing page with the password", "/", web.Password, 200, "Version 1.2.3-test"},
		{"no password", "/metrics", "", 401, ""},
		{"wrong password", "/metrics", "wrong", 401, ""},
		{"landing page without", "/", "", 401, ""},
		{"unknown path with the password", "/x", web.Password, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := *web
			w.Password = tc.password
			status, body := w.Get(t, base+tc.path, tc.password != "")
			if status != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("status %d, want %d with %q:\n%s", status, tc.status, tc.want, body)
			}
		})
	}
	// Plain HTTP gets no metrics.
	if status, body := get(t, "http://"+m.Addr()+"/metrics"); status == 200 || strings.Contains(body, "porttrace_") {
		t.Errorf("plain HTTP answered %d:\n%s", status, body)
	}
}

// A web configuration that cannot serve is refused before anything
// starts, on one line that names the flag and the file.
func TestCheckWebConfig(t *testing.T) {
	dir := t.TempDir()
	web := promtest.NewWeb(t)
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	missing := filepath.Join(dir, "missing.yml")
	for _, tc := range []struct {
		name, path, metrics string
		want                string // "": accepted
	}{
		{"none", "", "", ""},
		{"tls and basic auth", web.Path, ":9471", ""},
		{"basic auth alone", write("auth.yml", "basic_auth_users:\n  u: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n"), ":9471", ""},
		{"without --metrics", web.Path, "", "--web.config.file needs --metrics"},
		{"missing file", missing, ":9471", fmt.Sprintf("invalid --web.config.file %q: open %s: no such file or directory", missing, missing)},
		{"unknown field", write("typo.yml", "tls_server_config:\n  cert_fil: x.pem\n"), ":9471", "field cert_fil not found"},
		{"not YAML", write("garbage.yml", "{{{\n"), ":9471", "invalid --web.config.file"},
		{"missing certificate", write("nocert.yml", "tls_server_config:\n  cert_file: none.pem\n  key_file: none.key\n"), ":9471", "failed to read cert_file"},
		{"key without certificate", write("nokey.yml", "tls_server_config:\n  key_file: none.key\n"), ":9471", "missing one of cert or cert_file"},
		{"password not hashed", write("plain.yml", "basic_auth_users:\n  u: secret\n"), ":9471", "invalid --web.config.file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckWebConfig(tc.path, tc.metrics)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one with %q", err, tc.want)
			case err != nil && strings.ContainsAny(err.Error(), "\n\r"):
				t.Errorf("error on more than one line: %q", err)
			}
		})
	}
	// Serve refuses the same, before it listens.
	if _, err := Serve(Config{Addr: "127.0.0.1:0", WebConfig: missing}, testCollector(), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "invalid --web.config.file") {
		t.Errorf("Serve with a missing web configuration: %v", err)
	}
}
