package tracer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/porttrace/porttrace/tracer/event"
	"github.com/porttrace/porttrace/tracer/internal/flagcheck"
)

// PortSet is a set of ports, set from a list such as "25,80,8000-8100".
type PortSet struct {
	bits [65536 / 64]uint64
	spec []string
}

// Set adds the ports of a comma-separated list of ports and ranges.
func (p *PortSet) Set(s string) error {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return fmt.Errorf("an empty item in port list %q: want PORT or FIRST-LAST, comma-separated", s)
		}
		lo, hi, isRange := strings.Cut(item, "-")
		if isRange && (lo == "" || hi == "") {
			return fmt.Errorf("invalid port range %q: want FIRST-LAST, each a port from 1 to 65535", item)
		}
		first, err := ParsePort(lo)
		if err != nil {
			return err
		}
		last := first
		if isRange {
			if last, err = ParsePort(hi); err != nil {
				return err
			}
			if last < first {
				return fmt.Errorf("port range %q runs backwards", item)
			}
		}
		for port := int(first); port <= int(last); port++ {
			p.bits[port/64] |= 1 << (port % 64)
		}
		p.spec = append(p.spec, item)
	}
	return nil
}

// ParsePort reads a port number, saying the range when it is not one.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: %s", s, flagcheck.PortRange)
	}
	return uint16(n), nil
}

// Item is the item of the list that set port, for a message.
func (p *PortSet) Item(port uint16) string {
	for _, item := range p.spec {
		lo, hi, isRange := strings.Cut(item, "-")
		first, _ := ParsePort(lo)
		last := first
		if isRange {
			last, _ = ParsePort(hi)
		}
		if first <= port && port <= last {
			return item
		}
	}
	return strconv.Itoa(int(port))
}

// Has reports whether port is in the set.
func (p *PortSet) Has(port uint16) bool { return p.bits[port/64]&(1<<(port%64)) != 0 }

// Empty reports whether no port was set.
func (p *PortSet) Empty() bool { return len(p.spec) == 0 }

func (p *PortSet) String() string { return strings.Join(p.spec, ",") }

// Type is what --help shows as the value's kind.
func (p *PortSet) Type() string { return "ports" }

// KindSet is a set of event kinds, set from a list such as "bind,connect".
type KindSet struct {
	set  uint8
	user bool // Set has been called: replace the default instead of adding
}

// AllKinds is every event kind.
func AllKinds() KindSet {
	var k KindSet
	for _, kind := range []event.Kind{event.KindBind, event.KindListen, event.KindConnect, event.KindAccept} {
		k.set |= 1 << kind
	}
	return k
}

// Set replaces the default with the kinds in a comma-separated list.
func (k *KindSet) Set(s string) error {
	if !k.user {
		k.set, k.user = 0, true
	}
	for _, name := range strings.Split(s, ",") {
		kind, err := event.ParseKind(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		if k.Has(kind) {
			return fmt.Errorf("event %q named twice", kind)
		}
		k.set |= 1 << kind
	}
	return nil
}

// Has reports whether kind is in the set.
// A connect_done comes with the connects.
func (k *KindSet) Has(kind event.Kind) bool {
	if kind == event.KindConnectDone {
		kind = event.KindConnect
	}
	return kind < 8 && k.set&(1<<kind) != 0
}

// Empty reports whether no kind is set.
func (k *KindSet) Empty() bool { return k.set == 0 }

func (k *KindSet) String() string {
	var names []string
	for kind := event.KindBind; kind <= event.KindAccept; kind++ {
		if k.Has(kind) {
			names = append(names, kind.String())
		}
	}
	return strings.Join(names, ",")
}

// Type is what --help shows as the value's kind.
func (k *KindSet) Type() string { return "events" }

func KindsOf(kinds ...event.Kind) KindSet {
	var s KindSet
	for _, k := range kinds {
		s.set |= 1 << k
	}
	return s
}
