// Package gso does in software, for xdpsec's host-mode TUN, the two jobs a
// NIC's offloads do for the kernel: it cuts the TCP/UDP super-packets a TUN
// with IFF_VNET_HDR hands out into wire-sized segments (TSO/USO, outbound,
// before ESP protects each segment), and it coalesces consecutive TCP
// segments of one flow into one super-packet that the kernel accepts in a
// single write (GRO, inbound, after ESP removed the protection). Both are
// described to and by the kernel with the 10-byte virtio_net_hdr
// (include/uapi/linux/virtio_net.h) that precedes every packet on such a
// TUN.
//
// Why: a TUN moves one packet per read(2)/write(2), and that syscall costs
// more than AES-GCM of the packet (see BENCHMARKS.md, "Engine"). With
// vnet_hdr the local TCP stack hands over up to 64 KiB per read, and
// coalesced segments reach it in one write, so the per-packet cost of the
// TUN is paid per super-packet.
//
// The package does no I/O and allocates nothing per packet: a Segmenter and
// a Coalescer are made once per worker and reused. Neither is safe for
// concurrent use.
//
// The same reasoning (and the same kernel interface) is behind
// wireguard-go's tun offload; this is an independent implementation.
package gso

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// HdrLen is the size of the virtio_net_hdr (without the num_buffers field
// of the mergeable-buffers variant): the TUN default (TUNSETVNETHDRSZ).
const HdrLen = 10

// Flags of Hdr.Flags.
const (
	// FlagNeedsCsum: the L4 checksum is partial (the pseudo-header sum is
	// in the checksum field); complete it over CsumStart..end and store it
	// at CsumStart+CsumOffset.
	FlagNeedsCsum = 1
	// FlagDataValid: the checksums were verified.
	FlagDataValid = 2
)

// GSO types of Hdr.GSOType.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO: IP fragmentation; never produced by a TUN without TUN_F_UFO
	GSOTCPv6 = 4
	GSOUDPL4 = 5 // USO: UDP segmentation (Linux 6.2+, TUN_F_USO4/6)
	// GSOECN is or-ed into the type when the TCP super-packet carries CWR.
	GSOECN = 0x80
)

// Errors callers tell apart with errors.Is.
var (
	// ErrMalformed: the header and the packet disagree (the caller drops
	// the packet and counts it).
	ErrMalformed = errors.New("malformed offload packet")
	// ErrShortBuffer: a segment does not fit the buffer handed to Next.
	ErrShortBuffer = errors.New("segment larger than the buffer")
)

// Hdr is a virtio_net_hdr. A TUN uses the host's byte order for its
// fields (legacy virtio, no TUNSETVNETLE/BE).
type Hdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // bytes of headers (L3+L4) of a GSO packet
	GSOSize    uint16 // payload bytes per segment (the MSS for TCP)
	CsumStart  uint16 // offset of the L4 header
	CsumOffset uint16 // offset of the checksum field from CsumStart
}

// Decode reads h from the first HdrLen bytes of b.
func (h *Hdr) Decode(b []byte) error {
	if len(b) < HdrLen {
		return ErrMalformed
	}
	h.Flags, h.GSOType = b[0], b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return nil
}

// Encode writes h into the first HdrLen bytes of b (len(b) >= HdrLen).
func (h Hdr) Encode(b []byte) {
	_ = b[HdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// sum adds b to the ones' complement accumulator acc (not folded).
//
// The bulk runs on little-endian 32-bit words in four independent 64-bit
// accumulators (no carry chain: 2^32 words cannot overflow them), folded
// and byte-swapped once at the end; a ones' complement sum is byte-order
// independent up to that swap (RFC 1071 §2(B)). That is 1.4x the speed of
// a 64-bit add-with-carry chain on big-endian words (64 vs 90 ns for 1400
// bytes here). The tail (< 32 bytes, starting at an even offset) is added
// in big-endian order.
func sum(b []byte, acc uint64) uint64 {
	if len(b) >= 32 {
		var a0, a1, a2, a3 uint64
		for len(b) >= 32 {
			a0 += uint64(binary.LittleEndian.Uint32(b))
			a1 += uint64(binary.LittleEndian.Uint32(b[4:]))
			a2 += uint64(binary.LittleEndian.Uint32(b[8:]))
			a3 += uint64(binary.LittleEndian.Uint32(b[12:]))
			a0 += uint64(binary.LittleEndian.Uint32(b[16:]))
			a1 += uint64(binary.LittleEndian.Uint32(b[20:]))
			a2 += uint64(binary.LittleEndian.Uint32(b[24:]))
			a3 += uint64(binary.LittleEndian.Uint32(b[28:]))
			b = b[32:]
		}
		s, c := bits.Add64(a0, a1, 0)
		s, c = bits.Add64(s, a2, c)
		s, c = bits.Add64(s, a3, c)
		acc += uint64(bits.ReverseBytes16(fold(s + c)))
	}
	var c uint64
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, 0, c)
	acc += c
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

// fold folds a 64-bit accumulator to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// Checksum returns the Internet checksum (RFC 1071) of b: the complement
// of the ones' complement sum. A buffer whose checksum field is correct
// sums to 0xffff, so Checksum returns 0 for it.
func Checksum(b []byte) uint16 { return ^fold(sum(b, 0)) }

// pseudo returns the accumulator of the TCP/UDP pseudo-header of the IP
// packet pkt (version from its first byte) for an L4 length of l4len.
func pseudo(pkt []byte, proto uint8, l4len int) uint64 {
	var acc uint64
	if pkt[0]>>4 == 4 {
		acc = sum(pkt[12:20], 0)
	} else {
		acc = sum(pkt[8:40], 0)
	}
	return acc + uint64(proto) + uint64(l4len)
}

// ipv4HeaderChecksum recomputes the header checksum of the IPv4 header h.
func ipv4HeaderChecksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], Checksum(h))
}
