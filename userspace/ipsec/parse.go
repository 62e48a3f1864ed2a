package ipsec

import "net/netip"

// NATTPort is the UDP port of ESP-in-UDP and IKE after NAT detection (RFC 3948).
const NATTPort = 4500

// IKEPort is IKE's UDP port (RFC 7296).
const IKEPort = 500

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
// (0 means NATTPort); UDP to IKEPort is IKE. It returns VerdictOK with o
// filled for an IPsec packet, and otherwise VerdictNotIPsec, VerdictIKE,
// VerdictNATKeepalive, VerdictFragment or VerdictMalformed. It never panics
// and never allocates.
func ParseOuter(pkt []byte, encapPort uint16, o *Outer) Verdict {
	return VerdictMalformed // not yet
}
