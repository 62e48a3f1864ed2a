// Package pmtu builds the ICMP errors that keep path MTU discovery working
// through the tunnel: an inner packet that would exceed the link MTU once
// encapsulated is answered with an ICMPv4 "fragmentation needed" (RFC 792,
// RFC 1191) or an ICMPv6 "packet too big" (RFC 4443 §3.2), addressed back
// to the local sender and written into the TUN, instead of being dropped
// in silence. The local stack then records a route MTU exception and its
// sockets send smaller packets.
//
// The builders write into a caller buffer and allocate nothing; they are
// safe for concurrent use (no shared state).
//
// They refuse, with ErrNoReport, the packets RFC 1812 §4.3.2.7 and RFC 4443
// §2.4 forbid answering: ICMP errors, non-first IPv4 fragments, IPv4
// packets to multicast or broadcast, and packets whose source cannot take
// a reply (unspecified, multicast, broadcast). An IPv4 packet without DF
// gets ErrFragmentable: the sender allowed fragmentation, so the engine
// fragments the outer packet (RFC 4301 §8.1) rather than report.
package pmtu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
)

// Sizes fixed by the RFCs.
const (
	// MinMTU4 is the smallest MTU an IPv4 link may have (RFC 791).
	MinMTU4 = 68
	// MinMTU6 is the smallest MTU an IPv6 link may have (RFC 8200 §5).
	MinMTU6 = 1280
	// MaxLen4 is the longest ICMPv4 error built: RFC 1812 §4.3.2.3 quotes
	// as much of the packet as fits in 576 bytes (at least the IP header
	// and 8 bytes, RFC 792).
	MaxLen4 = 576
	// MaxLen6 is the longest ICMPv6 error built: as much of the packet as
	// fits in the minimum IPv6 MTU (RFC 4443 §2.4 (c)).
	MaxLen6 = MinMTU6
	// TTL is the TTL / hop limit of the errors built.
	TTL = 64
)

// Errors callers tell apart with errors.Is. Every returned error wraps one.
var (
	// ErrMalformed: inner is not a well-formed IPv4/IPv6 header.
	ErrMalformed = errors.New("malformed inner packet")
	// ErrNoReport: the RFCs forbid an ICMP error for this packet; drop it
	// and count it.
	ErrNoReport = errors.New("no ICMP error allowed for this packet")
	// ErrFragmentable: IPv4 without DF; fragment instead of reporting.
	ErrFragmentable = errors.New("IPv4 packet without DF may be fragmented")
	// ErrFits: the packet is not longer than the MTU given.
	ErrFits = errors.New("packet fits the MTU")
	// ErrBadMTU: the MTU is below the protocol's minimum (68 for IPv4, 1280
	// for IPv6: below that the tunnel must fragment the outer packet).
	ErrBadMTU = errors.New("MTU below the protocol minimum")
	// ErrShortBuffer: dst cannot hold the error (MaxLen4 / MaxLen6 always
	// suffice).
	ErrShortBuffer = errors.New("destination buffer too short")
)

// TooBig builds into dst the ICMP error for inner (an IPv4 or IPv6 packet
// the local stack sent) that does not fit mtu, the largest inner packet
// the tunnel carries, and returns its length. from is the error's source
// address; pass the zero Addr to use inner's destination, which is routed
// through the TUN and so passes the stack's reverse-path check (a local
// address would be dropped as a martian).
func TooBig(dst, inner []byte, mtu int, from netip.Addr) (int, error) {
	if len(inner) == 0 {
		return 0, fmt.Errorf("empty packet: %w", ErrMalformed)
	}
	switch inner[0] >> 4 {
	case 4:
		return FragNeeded4(dst, inner, mtu, from)
	case 6:
		return PacketTooBig6(dst, inner, mtu, from)
	}
	return 0, fmt.Errorf("IP version %d: %w", inner[0]>>4, ErrMalformed)
}

// FragNeeded4 builds an ICMPv4 destination unreachable, code 4
// (fragmentation needed and DF set) with the next-hop MTU field of RFC
// 1191, into dst, and returns its length (at most MaxLen4).
func FragNeeded4(dst, inner []byte, mtu int, from netip.Addr) (int, error) {
	if len(inner) < 20 || inner[0]>>4 != 4 {
		return 0, fmt.Errorf("IPv4 header of %d bytes: %w", len(inner), ErrMalformed)
	}
	ihl := int(inner[0]&15) * 4
	total := int(binary.BigEndian.Uint16(inner[2:]))
	if ihl < 20 || len(inner) < ihl || total < ihl {
		return 0, fmt.Errorf("IPv4 header length %d, total length %d, %d bytes: %w", ihl, total, len(inner), ErrMalformed)
	}
	if mtu < MinMTU4 || mtu > 0xffff {
		return 0, fmt.Errorf("IPv4 next-hop MTU %d: %w", mtu, ErrBadMTU)
	}
	if total <= mtu {
		return 0, fmt.Errorf("IPv4 packet of %d bytes, MTU %d: %w", total, mtu, ErrFits)
	}
	fragField := binary.BigEndian.Uint16(inner[6:])
	if fragField&0x1fff != 0 {
		return 0, fmt.Errorf("non-first IPv4 fragment: %w", ErrNoReport)
	}
	src := netip.AddrFrom4([4]byte(inner[12:16]))
	dstAddr := netip.AddrFrom4([4]byte(inner[16:20]))
	if dstAddr.IsMulticast() || dstAddr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return 0, fmt.Errorf("IPv4 packet to %s: %w", dstAddr, ErrNoReport)
	}
	if !replyable4(src) {
		return 0, fmt.Errorf("IPv4 packet from %s: %w", src, ErrNoReport)
	}
	if inner[9] == 1 && len(inner) > ihl && icmp4Error(inner[ihl]) {
		return 0, fmt.Errorf("ICMP error type %d: %w", inner[ihl], ErrNoReport)
	}
	if fragField&0x4000 == 0 {
		return 0, ErrFragmentable
	}
	if !from.IsValid() {
		from = dstAddr
	}
	if !from.Is4() {
		return 0, fmt.Errorf("source %s for an ICMPv4 error: %w", from, ErrMalformed)
	}
	quote := min(len(inner), total, MaxLen4-28)
	n := 28 + quote
	if len(dst) < n {
		return 0, fmt.Errorf("%d bytes for a %d-byte ICMPv4 error: %w", len(dst), n, ErrShortBuffer)
	}
	h := dst[:20]
	h[0], h[1] = 0x45, 0xc0 // precedence "internetwork control", as RFC 1812 §4.3.2.5 says
	binary.BigEndian.PutUint16(h[2:], uint16(n))
	binary.BigEndian.PutUint32(h[4:], 0) // ID 0, no flags: the error is never fragmented
	h[8], h[9] = TTL, 1
	h[10], h[11] = 0, 0
	f := from.As4()
	copy(h[12:16], f[:])
	copy(h[16:20], inner[12:16])
	binary.BigEndian.PutUint16(h[10:], ^fold(sum(h, 0)))
	m := dst[20:n]
	m[0], m[1] = 3, 4
	m[2], m[3], m[4], m[5] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(m[6:], uint16(mtu))
	copy(m[8:], inner[:quote])
	binary.BigEndian.PutUint16(m[2:], ^fold(sum(m, 0)))
	return n, nil
}

func replyable4(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// icmp4Error reports whether an ICMPv4 type is an error message (RFC 792,
// RFC 1812 §4.3.2.7 "ICMP error message"): unreachable, source quench,
// redirect, time exceeded, parameter problem.
func icmp4Error(typ byte) bool {
	switch typ {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// PacketTooBig6 builds an ICMPv6 packet too big (type 2, code 0) with the
// MTU, quoting as much of inner as fits in 1280 bytes, into dst, and
// returns its length (at most MaxLen6).
func PacketTooBig6(dst, inner []byte, mtu int, from netip.Addr) (int, error) {
	if len(inner) < 40 || inner[0]>>4 != 6 {
		return 0, fmt.Errorf("IPv6 header of %d bytes: %w", len(inner), ErrMalformed)
	}
	plen := int(binary.BigEndian.Uint16(inner[4:]))
	if plen == 0 && len(inner) > 40 {
		return 0, fmt.Errorf("IPv6 jumbogram: %w", ErrMalformed)
	}
	total := 40 + plen
	if mtu < MinMTU6 || mtu > 0xffff {
		return 0, fmt.Errorf("IPv6 MTU %d: %w", mtu, ErrBadMTU)
	}
	if total <= mtu {
		return 0, fmt.Errorf("IPv6 packet of %d bytes, MTU %d: %w", total, mtu, ErrFits)
	}
	src := netip.AddrFrom16([16]byte(inner[8:24]))
	if src.IsUnspecified() || src.IsMulticast() {
		return 0, fmt.Errorf("IPv6 packet from %s: %w", src, ErrNoReport)
	}
	// A packet too big may answer a multicast destination (RFC 4443 §2.4
	// (e.2)), but never an ICMPv6 error.
	avail := min(len(inner), total)
	if typ, ok := icmp6Type(inner[:avail]); ok && typ < 128 {
		return 0, fmt.Errorf("ICMPv6 error type %d: %w", typ, ErrNoReport)
	}
	if !from.IsValid() {
		from = netip.AddrFrom16([16]byte(inner[24:40]))
		if from.IsMulticast() {
			return 0, fmt.Errorf("IPv6 packet to %s needs an explicit source: %w", from, ErrNoReport)
		}
	}
	if !from.Is6() || from.Is4In6() {
		return 0, fmt.Errorf("source %s for an ICMPv6 error: %w", from, ErrMalformed)
	}
	quote := min(avail, MaxLen6-48)
	n := 48 + quote
	if len(dst) < n {
		return 0, fmt.Errorf("%d bytes for a %d-byte ICMPv6 error: %w", len(dst), n, ErrShortBuffer)
	}
	h := dst[:40]
	binary.BigEndian.PutUint32(h[0:], 6<<28)
	binary.BigEndian.PutUint16(h[4:], uint16(n-40))
	h[6], h[7] = 58, TTL
	f := from.As16()
	copy(h[8:24], f[:])
	copy(h[24:40], inner[8:24])
	m := dst[40:n]
	m[0], m[1], m[2], m[3] = 2, 0, 0, 0
	binary.BigEndian.PutUint32(m[4:], uint32(mtu))
	copy(m[8:], inner[:quote])
	pseudo := sum(h[8:40], 0) + uint32(n-40) + 58
	binary.BigEndian.PutUint16(m[2:], ^fold(sum(m, pseudo)))
	return n, nil
}

// icmp6Type walks the extension headers of an IPv6 packet and returns the
// ICMPv6 type when the upper layer is ICMPv6 and visible (not behind a
// non-first fragment or an unknown header).
func icmp6Type(p []byte) (byte, bool) {
	next, off := p[6], 40
	for i := 0; i < 8; i++ { // bounded: a chain longer than 8 is not followed
		switch next {
		case 58:
			if len(p) <= off {
				return 0, false
			}
			return p[off], true
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(p) < off+2 {
				return 0, false
			}
			next, off = p[off], off+8+int(p[off+1])*8
		case 44: // fragment
			if len(p) < off+8 || binary.BigEndian.Uint16(p[off+2:])&0xfff8 != 0 {
				return 0, false
			}
			next, off = p[off], off+8
		case 51: // AH: length in 4-byte units, minus 2
			if len(p) < off+2 {
				return 0, false
			}
			next, off = p[off], off+(int(p[off+1])+2)*4
		default:
			return 0, false
		}
	}
	return 0, false
}

// sum adds b as big-endian 16-bit words to acc in one's complement (RFC
// 1071), eight bytes at a time: a 64-bit one's complement sum folds down
// to the same 16-bit sum. The result is partly folded; fold finishes.
func sum(b []byte, acc uint32) uint32 {
	s, carry := uint64(acc), uint64(0)
	for len(b) >= 8 {
		s, carry = bits.Add64(s, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	s, carry = bits.Add64(s, carry, 0)
	s += carry // s wrapped to 0 at most, so this cannot carry again
	s = s&0xffffffff + s>>32
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	return uint32(s)
}

func fold(acc uint32) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}
