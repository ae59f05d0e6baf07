package textout

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// AppendJSONString escapes what JSON requires and what a terminal would
// act on, and nothing else; what it writes decodes to the text.
func TestAppendJSONString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"nginx", `"nginx"`},
		{`say "hi"`, `"say \"hi\""`},
		{`C:\dir`, `"C:\\dir"`},
		{`\`, `"\\"`},
		{"tab\tnl\n", `"tab\u0009nl\u000a"`},
		{"\x00\x1f", `"\u0000\u001f"`},
		{" ~", `" ~"`},               // the printable ASCII ends
		{"\x7f", `"\u007f"`},         // DEL alone
		{"a\x7fb", `"a\u007fb"`},     // DEL inside
		{"\u0080", `"\u0080"`},       // the first C1 control
		{"\u009b31m", `"\u009b31m"`}, // the 8-bit CSI
		{"\u009f", `"\u009f"`},       // the last C1 control
		{"\u00a0é", "\"\u00a0é\""},   // past the C1 controls: kept
		{"日本", `"日本"`},
		{"evil\u202egpj", `"evil\u202egpj"`},
		{"\u2066x\u2069", `"\u2066x\u2069"`},
		{"\u061c\u200e\u200f", `"\u061c\u200e\u200f"`},
		{"\u202a\u202e", `"\u202a\u202e"`},
		{"\u2029\u202f\u2065\u206a", "\"\u2029\u202f\u2065\u206a\""}, // next to the bidi controls: kept
		{"raw\xffend", `"raw\ufffdend"`},
		{"\x80", `"\ufffd"`},              // the first byte past ASCII, alone
		{"\xc3", `"\ufffd"`},              // a cut rune
		{"\xe6\x97\xa5\xff", `"日\ufffd"`}, // a valid rune, then a bad byte
	} {
		got := string(AppendJSONString(nil, tc.in))
		if got != tc.want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", tc.in, got, tc.want)
			continue
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s does not decode: %v", got, err)
		}
	}
}

// The field writers write ,"key":value after what is there.
func TestAppendFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"uint", AppendUint([]byte("{"), "port", 443), `{,"port":443`},
		{"bool", AppendBool(nil, "v6only", true), `,"v6only":true`},
		{"false", AppendBool(nil, "v6only", false), `,"v6only":false`},
		{"str", AppendStr(nil, "comm", `a"b`), `,"comm":"a\"b"`},
		{"float", AppendFloat(nil, "rate", 2.345), `,"rate":2.35`},
		{"strings", AppendStrings(nil, "notes", []string{"a", `b\`, "c"}), `,"notes":["a","b\\","c"]`},
		{"one string", AppendStrings(nil, "notes", []string{"a"}), `,"notes":["a"]`},
		{"no strings", AppendStrings(nil, "notes", nil), `,"notes":[]`},
		{"text", AppendText(nil, "comm", "nginx"), `,"comm":"nginx"`},
		{"text not UTF-8", AppendText(nil, "exe", "/opt/\xffx"), `,"exe":"/opt/\ufffdx","exe_hex":"2f6f70742fff78"`},
		{"addr", AppendAddrPort(nil, "local_addr", "local_port", netip.MustParseAddrPort("[::1]:80")), `,"local_addr":"::1","local_port":80`},
		{"mapped", AppendAddrPort(nil, "remote_addr", "remote_port", netip.MustParseAddrPort("[::ffff:10.0.0.1]:5432")),
			`,"remote_addr":"10.0.0.1","remote_port":5432`},
		{"no addr", AppendAddrPort([]byte("x"), "remote_addr", "remote_port", netip.AddrPort{}), `x`},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}
