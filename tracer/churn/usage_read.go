package churn

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/netns"
	"github.com/porttrace/porttrace/tracer/internal/sockdiag"
)

// ReadUsage reads the ephemeral range and the sockets holding it in the
// network namespace open at nsFd, through sock_diag netlink.
func ReadUsage(nsFd int) (*PortUsage, error) {
	var u *PortUsage
	err := netns.Do(nsFd, func() (err error) {
		u, err = readUsageHere()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, netns.AdminHint(err))
	}
	return u, nil
}

func readUsageHere() (*PortUsage, error) {
	u := newPortUsage()
	rng, err := netns.LocalPortRange()
	if err != nil {
		return nil, err
	}
	u.Range = rng
	lo, hi := rng[0], rng[1]
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); err == nil {
		var reserved tracer.PortSet
		if s := strings.TrimSpace(string(b)); s != "" {
			if err := reserved.Set(s); err != nil {
				return nil, fmt.Errorf("ip_local_reserved_ports: %w", err)
			}
		}
		for p := int(lo); p <= int(hi); p++ {
			if reserved.Has(uint16(p)) {
				u.Reserved++
			}
		}
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []uint16{event.ProtoTCP, event.ProtoUDP} {
			list, err := sockdiag.Dump(family, proto, sockdiag.AllStates)
			if err != nil {
				return nil, err
			}
			for i := range list {
				u.add(&list[i], proto)
			}
		}
	}
	return u, nil
}
