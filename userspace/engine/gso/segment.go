package gso

import "encoding/binary"

const (
	protoTCP = 6
	protoUDP = 17

	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// Segmenter cuts one packet read from a vnet_hdr TUN into the packets a
// NIC would have sent: for a TCP (TSO) or UDP (USO) super-packet, one
// segment per GSOSize bytes of payload, each with its own IP length, IPv4
// ID and header checksum, TCP sequence number and flags (FIN and PSH only
// on the last segment, CWR only on the first) and a complete L4 checksum;
// for any other packet, the packet itself, with its checksum completed when
// the header says it is partial.
//
// Use: Reset with the packet (after the header) and its header, then Next
// until it returns 0. The packet is only read; segments are written into
// the caller's buffers, so the packet's buffer may be reused once the last
// segment is out.
type Segmenter struct {
	pkt   []byte
	h     Hdr
	gso   bool
	v4    bool
	proto uint8
	l4    int // start of the L4 header
	hl    int // headers copied into every segment
	mss   int // payload per segment
	off   int // next payload byte of pkt
	i     int // segments produced
	seq   uint32
	id    uint16
	done  bool
}

// Reset prepares s for pkt, described by h. It returns ErrMalformed when
// the header does not fit the packet (s then produces nothing).
func (s *Segmenter) Reset(pkt []byte, h Hdr) error {
	*s = Segmenter{pkt: pkt, h: h, done: true}
	if len(pkt) < 20 {
		return ErrMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		s.v4 = true
		if ihl := int(pkt[0]&0xf) * 4; ihl < 20 || len(pkt) < ihl {
			return ErrMalformed
		}
	case 6:
		if len(pkt) < 40 {
			return ErrMalformed
		}
	default:
		return ErrMalformed
	}
	cs := int(h.CsumStart)
	switch h.GSOType &^ GSOECN {
	case GSONone:
		if h.Flags&FlagNeedsCsum != 0 && (cs < 20 || cs+int(h.CsumOffset)+2 > len(pkt)) {
			return ErrMalformed
		}
		s.done = false
		return nil
	case GSOTCPv4, GSOTCPv6:
		if (h.GSOType&^GSOECN == GSOTCPv4) != s.v4 || cs+20 > len(pkt) {
			return ErrMalformed
		}
		thl := int(pkt[cs+12]>>4) * 4
		if thl < 20 || cs+thl > len(pkt) {
			return ErrMalformed
		}
		s.proto, s.hl = protoTCP, cs+thl
		s.seq = binary.BigEndian.Uint32(pkt[cs+4:])
	case GSOUDPL4:
		if cs+8 > len(pkt) {
			return ErrMalformed
		}
		s.proto, s.hl = protoUDP, cs+8
	default:
		return ErrMalformed
	}
	if h.GSOSize == 0 || (s.v4 && cs < int(pkt[0]&0xf)*4) || (!s.v4 && cs < 40) {
		return ErrMalformed
	}
	if s.v4 {
		s.id = binary.BigEndian.Uint16(pkt[4:])
	}
	s.gso, s.l4, s.mss, s.off, s.done = true, cs, int(h.GSOSize), s.hl, false
	return nil
}

// Next writes the next segment into dst and returns its length, or 0 when
// every segment is out. A segment larger than dst gives ErrShortBuffer and
// ends the packet.
func (s *Segmenter) Next(dst []byte) (int, error) {
	if s.done {
		return 0, nil
	}
	if !s.gso {
		s.done = true
		n := copy(dst, s.pkt)
		if n < len(s.pkt) {
			return 0, ErrShortBuffer
		}
		if s.h.Flags&FlagNeedsCsum != 0 {
			cs, at := int(s.h.CsumStart), int(s.h.CsumStart+s.h.CsumOffset)
			// The field holds the pseudo-header sum: summing over it
			// includes it, exactly as skb_checksum_help does.
			c := ^fold(sum(dst[cs:n], 0))
			if c == 0 && s.isUDPAt(cs, at) {
				c = 0xffff // RFC 768: 0 means "no checksum"
			}
			binary.BigEndian.PutUint16(dst[at:], c)
		}
		return n, nil
	}
	pay := min(s.mss, len(s.pkt)-s.off)
	last := s.off+pay >= len(s.pkt)
	n := s.hl + pay
	if n > len(dst) {
		s.done = true
		return 0, ErrShortBuffer
	}
	copy(dst, s.pkt[:s.hl])
	copy(dst[s.hl:], s.pkt[s.off:s.off+pay])
	if s.v4 {
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
		binary.BigEndian.PutUint16(dst[4:], s.id+uint16(s.i))
		ipv4HeaderChecksum(dst[:int(dst[0]&0xf)*4])
	} else {
		binary.BigEndian.PutUint16(dst[4:], uint16(n-40))
	}
	l4 := dst[s.l4:n]
	var at int
	if s.proto == protoTCP {
		binary.BigEndian.PutUint32(l4[4:], s.seq+uint32(s.off-s.hl))
		if !last {
			l4[13] &^= tcpFlagFIN | tcpFlagPSH
		}
		if s.i > 0 {
			l4[13] &^= tcpFlagCWR
		}
		at = 16
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		at = 6
	}
	l4[at], l4[at+1] = 0, 0
	c := ^fold(sum(l4, pseudo(dst, s.proto, len(l4))))
	if c == 0 && s.proto == protoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
	s.off += pay
	s.i++
	s.done = last
	return n, nil
}

// isUDPAt reports whether the partial checksum at offset at is a UDP one
// (the field 6 bytes into a UDP header after an IP header without
// extensions), where a computed 0 must be sent as 0xffff.
func (s *Segmenter) isUDPAt(cs, at int) bool {
	if at-cs != 6 {
		return false
	}
	if s.pkt[0]>>4 == 4 {
		return s.pkt[9] == protoUDP
	}
	return s.pkt[6] == protoUDP
}
