package textout

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"unicode/utf8"
)

func AppendStrings(buf []byte, key string, vs []string) []byte {
	buf = append(AppendKey(buf, key), '[')
	for i, v := range vs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendJSONString(buf, v)
	}
	return append(buf, ']')
}

// TimeLayout is RFC 3339 with all nine digits of nanoseconds, so that
// times sort as text and line up.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

func AppendKey(buf []byte, key string) []byte {
	buf = append(buf, ",\""...)
	buf = append(buf, key...)
	return append(buf, "\":"...)
}

func AppendUint(buf []byte, key string, v uint64) []byte {
	return strconv.AppendUint(AppendKey(buf, key), v, 10)
}

func AppendBool(buf []byte, key string, v bool) []byte {
	return strconv.AppendBool(AppendKey(buf, key), v)
}

func AppendStr(buf []byte, key, v string) []byte {
	return AppendJSONString(AppendKey(buf, key), v)
}

// AppendText writes a string that a process or the file system chose (a
// command name, a path): JSON cannot carry bytes that are not UTF-8, so
// such a string is written with U+FFFD for them, and its exact bytes
// follow in hex as KEY_hex.
func AppendText(buf []byte, key, v string) []byte {
	buf = AppendStr(buf, key, v)
	if utf8.ValidString(v) {
		return buf
	}
	buf = AppendKey(buf, key+"_hex")
	buf = append(buf, '"')
	buf = hex.AppendEncode(buf, []byte(v))
	return append(buf, '"')
}

// AppendAddrPort writes an address as the traffic has it: the IPv4
// address of an IPv4-mapped one (a dual-stack socket's IPv4 peer).
func AppendAddrPort(buf []byte, addrKey, portKey string, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return buf
	}
	buf = AppendKey(buf, addrKey)
	buf = append(buf, '"')
	buf = ap.Addr().Unmap().AppendTo(buf)
	buf = append(buf, '"')
	return AppendUint(buf, portKey, uint64(ap.Port()))
}

const hexDigits = "0123456789abcdef"

// AppendJSONString quotes s, escaping what JSON requires, and, so that
// JSON read on a terminal cannot act on it either, DEL, the C1 controls
// and the bidirectional controls (as \uXXXX: the string decodes to the
// same text). Invalid UTF-8 becomes U+FFFD (a comm is whatever bytes a
// process chose; appendText keeps them).
func AppendJSONString(buf []byte, s string) []byte {
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
		case r < 0xa0 || IsBidiControl(r):
			buf = append(buf, '\\', 'u', hexDigits[r>>12], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}

func AppendFloat(buf []byte, key string, v float64) []byte {
	return strconv.AppendFloat(AppendKey(buf, key), v, 'f', 2, 64)
}
