package netns

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LocalPortRange reads net.ipv4.ip_local_port_range of the calling thread's
// network namespace: the ephemeral range.
func LocalPortRange() ([2]uint16, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return [2]uint16{}, err
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		lo, err1 := strconv.ParseUint(f[0], 10, 16)
		hi, err2 := strconv.ParseUint(f[1], 10, 16)
		if err1 == nil && err2 == nil {
			return [2]uint16{uint16(lo), uint16(hi)}, nil
		}
	}
	return [2]uint16{}, fmt.Errorf("ip_local_port_range: %q", b)
}

// UnprivilegedPortStart reads net.ipv4.ip_unprivileged_port_start of the
// calling thread's network namespace: ports below it need
// CAP_NET_BIND_SERVICE.
func UnprivilegedPortStart() (uint32, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 0, err
	}
	u, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("ip_unprivileged_port_start: %q", b)
	}
	return uint32(u), nil
}
