package event

import "strings"

// SockOpts are the socket options that decide whether two binds of one
// address and port clash, as the kernel held them at the bind.
type SockOpts uint8

// The options, each a bit; decode maps bpf/porttrace.h's enum sock_opt to
// them.
const (
	OptReuseAddr   SockOpts = 1 << iota // SO_REUSEADDR
	OptReusePort                        // SO_REUSEPORT
	OptFreebind                         // IP_FREEBIND
	OptTransparent                      // IP_TRANSPARENT
	OptBindNoPort                       // IP_BIND_ADDRESS_NO_PORT
	OptV6Only                           // IPV6_V6ONLY
)

var sockOptNames = []struct {
	opt  SockOpts
	name string
}{
	{OptReuseAddr, "reuseaddr"},
	{OptReusePort, "reuseport"},
	{OptFreebind, "freebind"},
	{OptTransparent, "transparent"},
	{OptBindNoPort, "bind_address_no_port"},
	{OptV6Only, "v6only"},
}

// Names are the options set, as JSON's sock_opts lists them.
func (o SockOpts) Names() []string {
	names := []string{}
	for _, n := range sockOptNames {
		if o&n.opt != 0 {
			names = append(names, n.name)
		}
	}
	return names
}

func (o SockOpts) String() string { return strings.Join(o.Names(), ",") }

// appendJSON writes the options set as a JSON array of names, allocating
// nothing (the stream writes one per bind).
func (o SockOpts) appendJSON(buf []byte) []byte {
	buf = append(buf, '[')
	first := true
	for _, n := range sockOptNames {
		if o&n.opt == 0 {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, '"')
		buf = append(buf, n.name...)
		buf = append(buf, '"')
	}
	return append(buf, ']')
}
