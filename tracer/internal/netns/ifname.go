package netns

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// IfNames names network interfaces by index within a namespace known by
// inode (a bind's SO_BINDTODEVICE), each looked up once: the index is the
// namespace's own, so it is asked inside it. Safe for concurrent use; a
// lookup holds the others up, which only binds to a device ask for.
type IfNames struct {
	mu     sync.Mutex
	finder *Finder
	names  map[ifKey]string // "" for one not found
}

type ifKey struct {
	netns   uint32
	ifindex int32
}

// maxIfNames bounds the cache; past it, it starts over.
const maxIfNames = 4096

func NewIfNames() *IfNames { return &IfNames{finder: NewFinder(), names: map[ifKey]string{}} }

// Name is the name of interface ifindex in namespace netns, or "" where it
// could not be found (gone, or a namespace porttrace cannot enter).
func (n *IfNames) Name(netns uint32, ifindex int32) string {
	k := ifKey{netns, ifindex}
	n.mu.Lock()
	defer n.mu.Unlock()
	if name, ok := n.names[k]; ok {
		return name
	}
	var name string
	if fd, err := n.finder.Open(netns); err == nil {
		_ = Do(fd, func() error {
			if ifi, err := net.InterfaceByIndex(int(ifindex)); err == nil {
				name = ifi.Name
			}
			return nil
		})
		unix.Close(fd)
	}
	if len(n.names) >= maxIfNames {
		clear(n.names)
	}
	n.names[k] = name
	return name
}
