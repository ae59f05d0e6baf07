package promserve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// WebConfigHelp is --web.config.file's help, the same for every command
// that serves /metrics.
const WebConfigHelp = "with --metrics: serve with the TLS and basic auth of this exporter-toolkit web configuration file"

// CheckWebConfig is the check of --web.config.file that each command's
// Validate runs: a file that cannot be read or used is a usage error,
// said on one line before anything is attached, as the server would read
// it (certificates and keys loaded, password hashes checked).
func CheckWebConfig(path, metrics string) error {
	if path == "" {
		return nil
	}
	if metrics == "" {
		return errors.New("--web.config.file needs --metrics")
	}
	_, err := readWebConfig(path)
	return err
}

// readWebConfig validates the web configuration at path and reports
// whether it turns TLS on (an empty path: no).
func readWebConfig(path string) (tlsOn bool, err error) {
	if path == "" {
		return false, nil
	}
	if err := web.Validate(path); err != nil {
		return false, fmt.Errorf("invalid --web.config.file %q: %s", path, oneLine(err))
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("invalid --web.config.file %q: %w", path, err)
	}
	var c web.Config
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return false, fmt.Errorf("invalid --web.config.file %q: %s", path, oneLine(err))
	}
	return c.TLSConfig.IsEnabled(), nil
}

// oneLine joins the lines of a multi-line error (YAML's list each
// problem on a line of its own), so that every message stays one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// slogTo is the exporter toolkit's logger: its warnings and errors (a web
// configuration that broke while porttrace runs) go to w, said once;
// its info lines, which say on every start that TLS is on or off, do not.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	}))
}
