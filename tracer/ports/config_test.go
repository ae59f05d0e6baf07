package ports

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

// Each --netns file is checked before anything runs: a missing one, or one
// that is no network namespace, is a usage error.
func TestNetnsFileFlag(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		netns   []string
		wantErr string
	}{
		{netns: nil},
		{netns: []string{"all"}},
		{netns: []string{"/proc/self/ns/net"}},
		{netns: []string{filepath.Join(dir, "missing")}, wantErr: `invalid --netns "` + dir + `/missing": no such file or directory`},
		{netns: []string{"/etc/passwd"}, wantErr: `invalid --netns "/etc/passwd": not a network namespace file (want /run/netns/NAME or /proc/PID/ns/net)`},
		{netns: []string{dir}, wantErr: "not a network namespace file"},
		{netns: []string{fifo}, wantErr: "not a network namespace file"},
		{netns: []string{"/proc/self/ns/user"}, wantErr: "not a network namespace file (a user namespace)"},
		{netns: []string{"/proc/self/ns/net", "all"}, wantErr: "invalid --netns: all is every namespace already"},
		{netns: []string{""}, wantErr: "invalid --netns: empty namespace path"},
	} {
		t.Run(strings.Join(tc.netns, ","), func(t *testing.T) {
			p := DefaultConfig()
			p.Netns = tc.netns
			flagtest.CheckErr(t, p.Validate(), tc.wantErr)
			w := DefaultWhoConfig()
			w.Netns = tc.netns
			flagtest.CheckErr(t, w.Validate(), tc.wantErr)
		})
	}
}

func TestPortsConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		check   func(*Config) bool
		wantErr string
	}{
		{args: nil, check: func(c *Config) bool { return c.Interval == time.Second && c.Duration == 0 && !c.Verbose }},
		{args: []string{"-w", "-i", "2s", "-d", "1m", "--backend", "kprobe", "-v"}, check: func(c *Config) bool {
			return c.Interval == 2*time.Second && c.Duration == time.Minute && c.Backend == event.BackendKprobe && c.Verbose
		}},
		{args: []string{"--netns", "all"}, check: func(c *Config) bool { return len(c.Netns) == 1 && c.Netns[0] == "all" }},
		{args: []string{"-o", "wide"}, check: func(c *Config) bool { return slices.Equal(c.Columns, wideLayout) }},
		{args: []string{"-o", "columns=local,STATE,pid"}, check: func(c *Config) bool { return strings.Join(c.Columns, ",") == "local,state,pid" }},
		{args: []string{"-o", "columns=local,nope"}, wantErr: `invalid --output "columns=local,nope": no column "nope": want some of netns,proto,`},
		{args: []string{"-o", "columns=pid,pid"}, wantErr: `column "pid" named twice`},
		{args: []string{"-o", "xml"}, wantErr: `invalid --output "xml": want table, wide, json or columns=NAME,...`},
		{args: []string{"-i", "2s"}, wantErr: "--interval needs --watch"},
		{args: []string{"-i", "1s"}, wantErr: "--interval needs --watch"},
		{args: []string{"--backend", "kprobe"}, wantErr: "--backend needs --watch"},
		{args: []string{"-d", "5s"}, wantErr: "--duration needs --watch"},
		{args: []string{"-d", "0"}, wantErr: "--duration needs --watch"},
		{args: []string{"-w", "-d", "-1s"}, wantErr: "invalid --duration -1s: want 0 (until stopped) or more"},
		{args: []string{"--netns", ""}, wantErr: "empty namespace path"},
		{args: []string{"--netns", "all,/proc/self/ns/net"}, wantErr: "all is every namespace already"},
		{args: []string{"--netns", "/etc/passwd"}, wantErr: "not a network namespace file"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := DefaultConfig()
			err := flagtest.Parse(t, c.AddFlags, tc.args)
			if err == nil {
				err = c.Validate()
			}
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && !tc.check(&c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

// A config built in code, without AddFlags, has no flags to ask about.
func TestPortsConfigWithoutFlags(t *testing.T) {
	c := DefaultConfig()
	c.Interval = 2 * time.Second
	c.backend = "kprobe"
	flagtest.CheckErr(t, c.Validate(), "")
	c.Duration = time.Second
	flagtest.CheckErr(t, c.Validate(), "--duration needs --watch")
	c.Watch = true
	flagtest.CheckErr(t, c.Validate(), "")
}

func TestWhoConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"--wait", "--timeout", "0"}},
		{args: []string{"--wait", "-d", "5m"}},
		{args: []string{"-d", "5m"}, wantErr: "--duration needs --wait"},
		{args: []string{"--wait", "--duration", "-1s"}, wantErr: "invalid --duration -1s: want 0 (no limit) or more"},
		{args: []string{"--wait", "--backend", "kprobe", "-v"}},
		{args: []string{"--netns", "/proc/self/ns/net"}},
		{args: []string{"--wait", "--timeout", "-1s"}, wantErr: "invalid --timeout -1s: want 0 (no limit) or more"},
		{args: []string{"--backend", "kprobe"}, wantErr: "--backend needs --wait"},
		{args: []string{"--netns", "/x\x1b[2Jy"}, wantErr: "control character"},
		{args: []string{"--netns", "/nonexistent"}, wantErr: `invalid --netns "/nonexistent": no such file or directory`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := DefaultWhoConfig()
			err := flagtest.Parse(t, c.AddFlags, tc.args)
			if err == nil {
				err = c.Validate()
			}
			flagtest.CheckErr(t, err, tc.wantErr)
		})
	}
}

// Every message about a port wants the same range, whatever was wrong.
func TestWhoTargetRange(t *testing.T) {
	for _, in := range []string{"0", "0/tcp", "99999", "65536/udp", "http", "-1"} {
		var c WhoConfig
		flagtest.CheckErr(t, c.ParseTarget(in), "want a port from 1 to 65535")
	}
}
