package neigh

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// neighSocket sends the two neighbour requests the netlink library has no
// call for: RTM_GETNEIGH for one entry (not a dump), and RTM_NEWNEIGH with
// NTF_USE and exactly the nlmsg flags the caller chooses (the library's
// NeighAdd/NeighSet/NeighAppend always add NLM_F_CREATE). It has its own
// socket in the resolver's namespace; only the resolver goroutine uses it.
type neighSocket struct {
	sockets map[int]*nl.SocketHandle
}

func openNeighSocket(ns netns.NsHandle) (*neighSocket, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("neigh: open netlink socket for neighbour requests: %w", err)
	}
	return &neighSocket{sockets: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}}, nil
}

func (s *neighSocket) close() { s.sockets[unix.NETLINK_ROUTE].Close() }

func (s *neighSocket) request(typ, flags, link int, addr netip.Addr, ndmFlags uint8) *nl.NetlinkRequest {
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{Len: unix.SizeofNlMsghdr, Type: uint16(typ), Flags: unix.NLM_F_REQUEST | uint16(flags)},
		Sockets:  s.sockets,
	}
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(link), Flags: ndmFlags})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, addr.AsSlice()))
	return req
}

// get returns the kernel's entry for addr on link (`ip neigh get`), or an
// error wrapping unix.ENOENT when there is none.
func (s *neighSocket) get(link int, addr netip.Addr) (*netlink.Neigh, error) {
	// No NLM_F_ACK: the answer is one RTM_NEWNEIGH or an error, and an
	// extra ACK would be left on the socket for the next request.
	msgs, err := s.request(unix.RTM_GETNEIGH, 0, link, addr, 0).Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if err != nil {
		return nil, fmt.Errorf("neigh: get neighbour %s on link %d: %w", addr, link, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("neigh: get neighbour %s on link %d: no answer: %w", addr, link, unix.ENOENT)
	}
	n, err := netlink.NeighDeserialize(msgs[0])
	if err != nil {
		return nil, fmt.Errorf("neigh: get neighbour %s on link %d: %w", addr, link, err)
	}
	return n, nil
}

// use sends RTM_NEWNEIGH with NTF_USE for addr on link and the given nlmsg
// flags (0, or NLM_F_CREATE|NLM_F_EXCL) and waits for the kernel's
// answer: with NLM_F_EXCL an existing entry gives unix.EEXIST and is left
// untouched; without NLM_F_CREATE a missing one gives unix.ENOENT.
func (s *neighSocket) use(link int, addr netip.Addr, flags int) error {
	_, err := s.request(unix.RTM_NEWNEIGH, flags|unix.NLM_F_ACK, link, addr, netlink.NTF_USE).Execute(unix.NETLINK_ROUTE, 0)
	if err != nil {
		return fmt.Errorf("neigh: NTF_USE for %s on link %d: %w", addr, link, err)
	}
	return nil
}
