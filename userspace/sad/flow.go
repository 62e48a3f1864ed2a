package sad

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrNotIP is returned by FlowOf for bytes that do not start with a whole
// IPv4 or IPv6 header.
var ErrNotIP = errors.New("not a whole IPv4 or IPv6 header")

// Flow is what a Selector looks at in a cleartext packet: the addresses,
// the upper-layer protocol and its ports, as the kernel's xfrm selector
// sees them.
type Flow struct {
	Src, Dst netip.Addr
	// Proto is the upper-layer protocol: IPv4's protocol field, or for
	// IPv6 the Next Header after the hop-by-hop, routing, destination
	// options and fragment headers.
	Proto uint8
	// SrcPort and DstPort are the TCP, UDP, UDP-Lite, SCTP or DCCP ports;
	// for ICMP and ICMPv6 the type and the code, as the kernel's selector
	// takes them. They are 0 for other protocols, and when Opaque.
	SrcPort, DstPort uint16
	// Opaque says the ports (type and code) cannot be known: a non-initial
	// fragment, an initial fragment (or a packet) cut before the 4 bytes
	// of ports (2 of type and code), or an IPv6 header chain cut short.
	// RFC 4301 §4.4.1.1 and §7 call this OPAQUE: such a flow matches only
	// selectors whose port (type/code) selectors are ANY (SPD.LookupFlow,
	// Selector.MatchFlow), never one with specific ports, whatever its
	// value, 0 included.
	Opaque bool
	// Version is 4 or 6.
	Version uint8
	// DF says the packet may not be fragmented on its way: the IPv4 DF bit,
	// always true for IPv6 (routers never fragment it).
	DF bool
}

// MatchFlow reports whether f falls under the selector: Match on its
// fields, and for an Opaque flow only if both port selectors are ANY
// (RFC 4301 §7).
func (s *Selector) MatchFlow(f *Flow) bool {
	if f.Opaque && s.SrcPortMask|s.DstPortMask != 0 {
		return false
	}
	return s.Match(f.Src, f.Dst, f.Proto, f.SrcPort, f.DstPort)
}

// LookupFlow is Lookup for the flow f, the way to look up a packet: an
// Opaque flow (a non-initial fragment, or one too short to hold its ports)
// is matched only by policies whose port (type/code) selectors are ANY, as
// RFC 4301 §7 asks; the policies with specific ports are passed over and
// the first later match decides, or none (nil: the caller's default).
// Like Lookup it takes no lock and allocates nothing.
func (d *SPD) LookupFlow(dir Dir, f *Flow) *Policy {
	if f.Opaque {
		return d.lookupOpaque(dir, f.Src, f.Dst, f.Proto)
	}
	return d.Lookup(dir, f.Src, f.Dst, f.Proto, f.SrcPort, f.DstPort)
}

// Upper-layer protocols whose first four bytes are two ports.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoDCCP   = 33
	protoICMPv6 = 58
	protoSCTP   = 132
	protoUDPLt  = 136
)

// FlowOf reads the selector fields of pkt, an IPv4 or IPv6 packet (the
// inner packet the local stack sent, or the decrypted one). It returns
// ErrNotIP (no allocation) when pkt is not a whole IP header. At most eight
// IPv6 extension headers are walked; a chain cut short yields the last
// Next Header read and Opaque. An initial fragment that holds the ports is
// read like a whole packet; a non-initial one yields its protocol and
// Opaque (RFC 4301 §7). It never panics and never allocates.
func FlowOf(pkt []byte) (Flow, error) {
	var f Flow
	if len(pkt) < 1 {
		return f, ErrNotIP
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return f, ErrNotIP
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl {
			return f, ErrNotIP
		}
		f.Version = 4
		f.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		f.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		f.Proto = pkt[9]
		f.DF = pkt[6]&0x40 != 0
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 { // first fragment or whole
			l4 = pkt[ihl:]
		} else {
			f.Opaque = true
			return f, nil
		}
	case 6:
		if len(pkt) < 40 {
			return f, ErrNotIP
		}
		f.Version, f.DF = 6, true
		f.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		nh, off := pkt[6], 40
	walk:
		for range 8 {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(pkt) < off+2 {
					f.Proto, f.Opaque = nh, true
					return f, nil
				}
				nh, off = pkt[off], off+(int(pkt[off+1])+1)*8
			case 44: // fragment
				if len(pkt) < off+8 {
					f.Proto, f.Opaque = nh, true
					return f, nil
				}
				first := binary.BigEndian.Uint16(pkt[off+2:off+4])&0xfff8 == 0
				nh, off = pkt[off], off+8
				if !first {
					f.Proto, f.Opaque = nh, true
					return f, nil
				}
			default:
				break walk
			}
		}
		f.Proto = nh
		if nh == 0 || nh == 43 || nh == 60 || nh == 44 {
			f.Opaque = true // eight headers, and still no upper layer
		}
		if off <= len(pkt) {
			l4 = pkt[off:]
		}
	default:
		return f, ErrNotIP
	}
	switch f.Proto {
	case protoTCP, protoUDP, protoSCTP, protoUDPLt, protoDCCP:
		if len(l4) >= 4 {
			f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			f.DstPort = binary.BigEndian.Uint16(l4[2:4])
		} else {
			f.Opaque = true
		}
	case protoICMP, protoICMPv6:
		if len(l4) >= 2 {
			f.SrcPort, f.DstPort = uint16(l4[0]), uint16(l4[1])
		} else {
			f.Opaque = true
		}
	}
	return f, nil
}
