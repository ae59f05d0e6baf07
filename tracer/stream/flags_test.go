package stream

import (
	"os/user"
	"strconv"
	"testing"

	"github.com/porttrace/porttrace/tracer/internal/flagtest"
)

func TestCountFlag(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "1", want: 1},
		{in: "18446744073709551615", want: 18446744073709551615},
		{in: "0", wantErr: "want 1 or more events, at most 18446744073709551615"},
		{in: "99999999999999999999", wantErr: "want 1 or more events"},
		{in: "-1", wantErr: "want 1 or more events"},
		{in: "ten", wantErr: "want 1 or more events"},
		{in: "", wantErr: "want 1 or more events"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var n countFlag
			err := n.Set(tc.in)
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && uint64(n) != tc.want {
				t.Errorf("count %d, want %d", n, tc.want)
			}
		})
	}
}

func TestBufferFlag(t *testing.T) {
	const want = "want a power of two from 4K to 1G, e.g. 64M"
	for _, tc := range []struct {
		in      string
		want    uint32
		wantErr string
	}{
		{in: "64M", want: 64 << 20},
		{in: "1g", want: 1 << 30},
		{in: "4K", want: 4096},
		{in: "16777216", want: 16 << 20},
		{in: "2G", wantErr: want},
		{in: "3M", wantErr: want},
		{in: "1K", wantErr: want},
		{in: "0", wantErr: want},
		{in: "M", wantErr: want},
		{in: "-64M", wantErr: want},
		{in: "64MB", wantErr: want},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var b bufferFlag
			err := b.Set(tc.in)
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && uint32(b) != tc.want {
				t.Errorf("buffer %d, want %d", b, tc.want)
			}
		})
	}
}

// The default, none, shows as nothing: the help says what it is.
func TestBufferFlagString(t *testing.T) {
	for b, want := range map[bufferFlag]string{0: "", 4096: "4096", 64 << 20: "67108864"} {
		if got := b.String(); got != want {
			t.Errorf("%d: %q, want %q", uint32(b), got, want)
		}
	}
}

func TestSampleFlag(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint32
		wantErr string
	}{
		{in: "1", want: 1},
		{in: "100", want: 100},
		{in: "4294967295", want: 4294967295},
		{in: "0", wantErr: "want 1 (every event) or more, at most 4294967295"},
		{in: "4294967296", wantErr: "want 1 (every event) or more"},
		{in: "-3", wantErr: "want 1 (every event) or more"},
		{in: "half", wantErr: "want 1 (every event) or more"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var n sampleFlag
			err := n.Set(tc.in)
			flagtest.CheckErr(t, err, tc.wantErr)
			if err == nil && uint32(n) != tc.want {
				t.Errorf("sample %d, want %d", n, tc.want)
			}
		})
	}
}

func TestUserFlag(t *testing.T) {
	const rangeErr = "want a user name or an id from 0 to 4294967294"
	for _, tc := range []struct {
		in         string
		setErr     string
		want       int64
		resolveErr string
	}{
		{in: "0", want: 0},
		{in: "1000", want: 1000},
		{in: "4294967294", want: 4294967294},
		{in: "root", want: 0},
		{in: "4294967295", setErr: rangeErr + ` (4294967295 is the kernel's "no user")`},
		{in: "99999999999999999999", setErr: rangeErr},
		{in: "-1", setErr: rangeErr},
		{in: "+5", setErr: rangeErr},
		{in: "", setErr: rangeErr},
		{in: "no-such-user-here", resolveErr: `invalid --uid "no-such-user-here": no such user; ` + rangeErr},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var u userFlag
			err := u.Set(tc.in)
			flagtest.CheckErr(t, err, tc.setErr)
			if err != nil {
				return
			}
			uid, err := u.resolve()
			flagtest.CheckErr(t, err, tc.resolveErr)
			if err == nil && uid != tc.want {
				t.Errorf("uid %d, want %d", uid, tc.want)
			}
		})
	}
}

// --uid takes a name as the tools that list processes do.
func TestUIDNameFlag(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	want, _ := strconv.ParseInt(u.Uid, 10, 64)
	c := DefaultConfig()
	if err := flagtest.Parse(t, c.AddFlags, []string{"--uid", "nobody"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UID != want {
		t.Errorf("--uid nobody: %d, want %d", c.UID, want)
	}
}
