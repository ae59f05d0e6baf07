package tracer

import (
	"strconv"
)

// AppendLostJSON appends the line that reports dropped events.
func AppendLostJSON(buf []byte, n uint64) []byte {
	buf = append(buf, `{"event":"lost","count":`...)
	buf = strconv.AppendUint(buf, n, 10)
	return append(buf, "}\n"...)
}
