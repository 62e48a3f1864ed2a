package engine

import (
	"encoding/binary"
	"net/netip"
)

// flow is what a policy selector looks at in an inner (cleartext) packet.
// The ipsec package parses outer packets only; the SPD needs the upper-layer
// protocol and ports of the packets the local stack sends, so this is the one
// place the engine reads an IP header itself.
type flow struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16 // ICMP/ICMPv6: type and code, as the kernel's selector
	version      uint8
}

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoSCTP   = 132
	protoUDPLt  = 136
	protoICMPv6 = 58
	protoDCCP   = 33
)

// parseFlow reads pkt's addresses, protocol and ports. It returns false for
// a packet that is not a whole IPv4 or IPv6 header. Non-first fragments and
// packets whose transport header is cut short have ports 0. It never
// allocates.
func parseFlow(pkt []byte, f *flow) bool {
	if len(pkt) < 1 {
		return false
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl {
			return false
		}
		f.version = 4
		f.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		f.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		f.proto = pkt[9]
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 { // first fragment or whole
			l4 = pkt[ihl:]
		}
	case 6:
		if len(pkt) < 40 {
			return false
		}
		f.version = 6
		f.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		f.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		nh, off := pkt[6], 40
		// Walk a bounded number of extension headers to the upper layer,
		// as the kernel's selector does.
		for i := 0; i < 8; i++ {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(pkt) < off+2 {
					f.proto = nh
					return true
				}
				nh, off = pkt[off], off+(int(pkt[off+1])+1)*8
				continue
			case 44: // fragment
				if len(pkt) < off+8 {
					f.proto = nh
					return true
				}
				first := binary.BigEndian.Uint16(pkt[off+2:off+4])&0xfff8 == 0
				nh, off = pkt[off], off+8
				if !first {
					f.proto = nh
					f.sport, f.dport = 0, 0
					return true
				}
				continue
			}
			break
		}
		f.proto = nh
		if off <= len(pkt) {
			l4 = pkt[off:]
		}
	default:
		return false
	}
	f.sport, f.dport = 0, 0
	switch f.proto {
	case protoTCP, protoUDP, protoSCTP, protoUDPLt, protoDCCP:
		if len(l4) >= 4 {
			f.sport = binary.BigEndian.Uint16(l4[0:2])
			f.dport = binary.BigEndian.Uint16(l4[2:4])
		}
	case protoICMP, protoICMPv6:
		if len(l4) >= 2 {
			f.sport, f.dport = uint16(l4[0]), uint16(l4[1])
		}
	}
	return true
}

// dfClear reports whether pkt is IPv4 without the Don't Fragment bit.
func dfClear(pkt []byte) bool {
	return len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[6]&0x40 == 0
}
