package ipsec

import (
	"encoding/binary"
	"net/netip"
)

// NATTPort is the UDP port of ESP-in-UDP and IKE after NAT detection (RFC 3948).
const NATTPort = 4500

// IKEPort is IKE's UDP port (RFC 7296).
const IKEPort = 500

// IP protocol numbers used on the data path.
const (
	protoHopByHop = 0
	protoIPIP     = 4
	protoTCP      = 6
	protoUDP      = 17
	protoIPv6     = 41
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoNone     = 59
	protoDestOpts = 60
)

// maxExtHeaders bounds the IPv6 extension-header walk.
const maxExtHeaders = 8

// Outer is what ParseOuter learns from an outer packet. Offsets are from the
// start of the packet given to ParseOuter.
type Outer struct {
	// Version is 4 or 6.
	Version uint8
	Src     netip.Addr
	Dst     netip.Addr
	// Proto is ESP or AH (ESP also when UDP-encapsulated).
	Proto Proto
	SPI   uint32
	// Seq is the low 32 bits of the sequence number as sent.
	Seq uint32
	// Len is the IP packet's length per its header (the packet given may
	// carry link padding after it).
	Len int
	// L3Len is the length of the IP header with IPv4 options or the IPv6
	// extension headers that precede ESP/AH/UDP.
	L3Len int
	// ProtoOff is the offset of the byte that announces ESP/AH/UDP: the
	// IPv4 protocol field or the Next Header of the last IPv6 header before.
	ProtoOff int
	// UDP says ESP is UDP-encapsulated; SrcPort/DstPort are its ports.
	UDP              bool
	SrcPort, DstPort uint16
	// Off is the offset of the ESP or AH header.
	Off int
}

// ParseOuter parses the IP packet pkt up to and including its ESP, AH or
// ESP-in-UDP header. encapPort is the UDP destination port that carries ESP
// (0 means NATTPort); UDP to IKEPort, or to encapPort with the non-ESP
// marker, is IKE. It returns VerdictOK with o filled for an IPsec packet, and
// otherwise VerdictNotIPsec, VerdictIKE, VerdictNATKeepalive,
// VerdictFragment or VerdictMalformed (o then holds what was learnt). It
// never panics and never allocates.
func ParseOuter(pkt []byte, encapPort uint16, o *Outer) Verdict {
	*o = Outer{}
	if encapPort == 0 {
		encapPort = NATTPort
	}
	if len(pkt) < 1 {
		return VerdictMalformed
	}
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return VerdictMalformed
		}
		ihl := int(pkt[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < 20 || tot < ihl || tot > len(pkt) {
			return VerdictMalformed
		}
		o.Version, o.Len, o.L3Len, o.ProtoOff = 4, tot, ihl, 9
		o.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		o.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or offset
			return VerdictFragment
		}
		proto = pkt[9]
	case 6:
		if len(pkt) < 40 {
			return VerdictMalformed
		}
		tot := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if tot > len(pkt) {
			return VerdictMalformed // includes jumbograms (payload length 0 + HBH option)
		}
		o.Version, o.Len, o.ProtoOff = 6, tot, 6
		o.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		o.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		proto = pkt[6]
		off := 40
		for i := 0; ; i++ {
			if proto != protoHopByHop && proto != protoRouting && proto != protoDestOpts && proto != protoFragment {
				break
			}
			if i == maxExtHeaders || off+8 > tot {
				return VerdictMalformed
			}
			hl := (int(pkt[off+1]) + 1) * 8
			if proto == protoFragment {
				hl = 8
				if binary.BigEndian.Uint16(pkt[off+2:])&0xfff9 != 0 { // offset or M
					return VerdictFragment
				}
			}
			if off+hl > tot {
				return VerdictMalformed
			}
			o.ProtoOff = off
			proto = pkt[off]
			off += hl
		}
		o.L3Len = off
	default:
		return VerdictMalformed
	}
	b := pkt[o.L3Len:o.Len]
	switch proto {
	case protoESP:
		if len(b) < 8 {
			return VerdictMalformed
		}
		o.Proto, o.Off = ProtoESP, o.L3Len
	case protoAH:
		if len(b) < 12 || (int(b[1])+2)*4 > len(b) || (int(b[1])+2)*4 < 12 {
			return VerdictMalformed
		}
		o.Proto, o.Off = ProtoAH, o.L3Len
		o.SPI = binary.BigEndian.Uint32(b[4:])
		o.Seq = binary.BigEndian.Uint32(b[8:])
		return VerdictOK
	case protoUDP:
		if len(b) < 8 {
			return VerdictMalformed
		}
		o.SrcPort = binary.BigEndian.Uint16(b[0:])
		o.DstPort = binary.BigEndian.Uint16(b[2:])
		if ul := int(binary.BigEndian.Uint16(b[4:])); ul < 8 || ul > len(b) {
			return VerdictMalformed
		} else {
			b = b[8:ul]
		}
		switch {
		case o.DstPort == IKEPort:
			return VerdictIKE
		case o.DstPort != encapPort:
			return VerdictNotIPsec
		case len(b) == 1 && b[0] == 0xff:
			return VerdictNATKeepalive
		case len(b) <= 8 || binary.BigEndian.Uint32(b) == 0:
			// The kernel's rule (xfrm4_udp_encap_rcv): ESP only when longer
			// than an ESP header with a non-zero first word; everything
			// else goes to the IKE socket, as the XDP program passes it.
			return VerdictIKE
		}
		o.UDP, o.Proto, o.Off = true, ProtoESP, o.L3Len+8
		o.Len = o.Off + len(b) // trust the UDP length for ESP's end
	default:
		return VerdictNotIPsec
	}
	o.SPI = binary.BigEndian.Uint32(pkt[o.Off:])
	o.Seq = binary.BigEndian.Uint32(pkt[o.Off+4:])
	if o.SPI == 0 {
		return VerdictMalformed
	}
	return VerdictOK
}

// inner describes a packet handed to Encrypt.
type inner struct {
	v6       bool
	frag     bool // an IP fragment: IPv4 MF or offset, IPv6 Fragment header with M or offset
	l3Len    int  // header bytes that stay in front in transport mode
	protoOff int  // byte holding the protocol of what follows l3Len
	proto    uint8
}

// parseInner reads the IP packet p that Encrypt is asked to protect. Its
// length must equal the header's total length. A fragment is a valid
// inner packet (in.frag): tunnel mode carries it as it is and the far end
// delivers it for reassembly (RFC 4301 §7); transport mode refuses it
// (checkOut, RFC 4303 §3.1.1). An IPv6 atomic fragment (Fragment header
// with offset 0 and M clear, RFC 6946) is a whole packet: transport mode
// inserts ESP/AH after its Fragment header, where RFC 4303 §3.1.1 puts it.
// For a fragment the IPv6 walk stops at the Fragment header (l3Len and
// proto describe it; nothing uses them, as only tunnel mode goes on).
func parseInner(p []byte, in *inner) bool {
	if len(p) < 1 {
		return false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return false
		}
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || ihl > len(p) || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			return false
		}
		*in = inner{l3Len: ihl, protoOff: 9, proto: p[9], frag: binary.BigEndian.Uint16(p[6:])&0x3fff != 0}
		return true
	case 6:
		if len(p) < 40 || 40+int(binary.BigEndian.Uint16(p[4:])) != len(p) {
			return false
		}
		*in = inner{v6: true, l3Len: 40, protoOff: 6, proto: p[6]}
		// ESP/AH go after hop-by-hop, routing and fragment headers (and a
		// destination options header that precedes a routing header),
		// RFC 4303 §3.1.1.
		for i := 0; i < maxExtHeaders; i++ {
			switch in.proto {
			case protoHopByHop, protoRouting, protoDestOpts, protoFragment:
			default:
				return true
			}
			off := in.l3Len
			if off+8 > len(p) {
				return false
			}
			hl := (int(p[off+1]) + 1) * 8
			if in.proto == protoFragment {
				hl = 8                                              // its second byte is reserved, not a length
				if binary.BigEndian.Uint16(p[off+2:])&0xfff9 != 0 { // offset or M
					in.frag = true
					return true
				}
			}
			if off+hl > len(p) {
				return false
			}
			if in.proto == protoDestOpts && p[off] != protoRouting {
				return true // end-to-end options travel inside ESP
			}
			in.protoOff, in.proto, in.l3Len = off, p[off], off+hl
		}
		return false
	}
	return false
}

// setIPLength rewrites the length field(s) of the IP header at h for a
// packet of total bytes, and the IPv4 header checksum.
func setIPLength(h []byte, total int) {
	if h[0]>>4 == 4 {
		binary.BigEndian.PutUint16(h[2:], uint16(total))
		ipv4Checksum(h[:int(h[0]&0x0f)*4])
		return
	}
	binary.BigEndian.PutUint16(h[4:], uint16(total-40))
}

func ipv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sum16(h, 0)))
}

func sum16(b []byte, s uint64) uint64 {
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func addrFrom4(b [4]byte) netip.Addr { return netip.AddrFrom4(b) }
