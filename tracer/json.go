package tracer

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer/event"
)

// timeLayout is RFC 3339 with all nine digits of nanoseconds, so that
// times sort as text and line up.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// AppendJSON appends ev as one JSON object and a newline. Field names are
// the stable event contract (see README); fields the backend could not know
// are left out. It allocates nothing once buf has grown.
func AppendJSON(buf []byte, ev *event.Event) []byte {
	buf = append(buf, `{"time":"`...)
	buf = ev.Time.UTC().AppendFormat(buf, timeLayout)
	buf = append(buf, `","event":"`...)
	buf = append(buf, ev.Kind.String()...)
	buf = append(buf, `","result":"`...)
	buf = append(buf, ev.Result.String()...)
	buf = append(buf, '"')
	if ev.Errno != 0 {
		buf = appendStr(buf, "errno", ev.ErrnoName())
		buf = appendStr(buf, "reason", ev.Reason)
	}
	buf = appendUint(buf, "pid", uint64(ev.PID))
	buf = appendUint(buf, "tid", uint64(ev.TID))
	buf = appendUint(buf, "ppid", uint64(ev.PPID))
	buf = appendUint(buf, "uid", uint64(ev.UID))
	if ev.User != "" {
		buf = appendStr(buf, "user", ev.User)
	}
	buf = appendText(buf, "comm", ev.Comm)
	if ev.Exe != "" {
		buf = appendText(buf, "exe", ev.Exe)
	}
	buf = appendBool(buf, "exe_deleted", ev.ExeDeleted)
	if ev.Cgroup != "" {
		buf = appendText(buf, "cgroup", ev.Cgroup)
	}
	buf = appendUint(buf, "cgroup_id", ev.CgroupID)
	if ev.HasNet {
		buf = appendUint(buf, "netns", uint64(ev.Netns))
	}
	if p := event.ProtoName(ev.Proto); p != "" {
		buf = appendStr(buf, "proto", p)
	}
	if f := ev.AddrFamily(); f != "" {
		buf = appendStr(buf, "family", f)
	}
	buf = appendAddrPort(buf, "local_addr", "local_port", ev.Local)
	buf = appendAddrPort(buf, "remote_addr", "remote_port", ev.Remote)
	if ev.Inode != 0 {
		buf = appendUint(buf, "inode", uint64(ev.Inode))
	}
	if ev.Local.IsValid() {
		buf = appendBool(buf, "ephemeral", ev.Ephemeral)
	}
	if ev.PortClass != event.ClassNone {
		buf = appendStr(buf, "port_class", ev.PortClass.String())
		if ev.HasNet {
			buf = appendBool(buf, "privileged", ev.Privileged)
		}
	}
	if ev.Direction != event.DirNone {
		buf = appendStr(buf, "direction", ev.Direction.String())
	}
	buf = appendStr(buf, "backend", ev.Backend.String())
	return append(buf, "}\n"...)
}

// AppendLostJSON appends the line that reports dropped events.
func AppendLostJSON(buf []byte, n uint64) []byte {
	buf = append(buf, `{"event":"lost","count":`...)
	buf = strconv.AppendUint(buf, n, 10)
	return append(buf, "}\n"...)
}

func appendKey(buf []byte, key string) []byte {
	buf = append(buf, ",\""...)
	buf = append(buf, key...)
	return append(buf, "\":"...)
}

func appendUint(buf []byte, key string, v uint64) []byte {
	return strconv.AppendUint(appendKey(buf, key), v, 10)
}

func appendBool(buf []byte, key string, v bool) []byte {
	return strconv.AppendBool(appendKey(buf, key), v)
}

func appendStr(buf []byte, key, v string) []byte {
	return appendJSONString(appendKey(buf, key), v)
}

// appendText writes a string that a process or the file system chose (a
// command name, a path): JSON cannot carry bytes that are not UTF-8, so
// such a string is written with U+FFFD for them, and its exact bytes
// follow in hex as KEY_hex.
func appendText(buf []byte, key, v string) []byte {
	buf = appendStr(buf, key, v)
	if utf8.ValidString(v) {
		return buf
	}
	buf = appendKey(buf, key+"_hex")
	buf = append(buf, '"')
	buf = hex.AppendEncode(buf, []byte(v))
	return append(buf, '"')
}

// appendAddrPort writes an address as the traffic has it: the IPv4
// address of an IPv4-mapped one (a dual-stack socket's IPv4 peer).
func appendAddrPort(buf []byte, addrKey, portKey string, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return buf
	}
	buf = appendKey(buf, addrKey)
	buf = append(buf, '"')
	buf = ap.Addr().Unmap().AppendTo(buf)
	buf = append(buf, '"')
	return appendUint(buf, portKey, uint64(ap.Port()))
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s, escaping what JSON requires, and, so that
// JSON read on a terminal cannot act on it either, DEL, the C1 controls
// and the bidirectional controls (as \uXXXX: the string decodes to the
// same text). Invalid UTF-8 becomes U+FFFD (a comm is whatever bytes a
// process chose; appendText keeps them).
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20 || c == 0x7f:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, `\ufffd`...)
		case r < 0xa0 || isBidiControl(r):
			buf = append(buf, '\\', 'u', hexDigits[r>>12], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}
