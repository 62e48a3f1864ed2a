package gso

import (
	"bytes"
	"encoding/binary"
)

const (
	tcpFlagACK = 0x10
	// maxSuper is the largest packet the coalescer builds: the IPv4 total
	// length field (and the kernel's GSO limit without BIG TCP).
	maxSuper = 65535
	// maxSegs bounds the segments of one super-packet (and so the parts of
	// one writev, far below UIO_MAXIOV).
	maxSegs = 64
)

// Coalescer merges, within one batch, consecutive in-order TCP segments of
// one flow into one super-packet with a virtio_net_hdr describing it
// (GSO type TCPv4/TCPv6, GSOSize = the first segment's payload,
// NEEDS_CSUM with the pseudo-header sum in the checksum field), as the
// kernel's GRO would before the packets reach the stack; and consecutive
// same-size UDP datagrams of one flow into one GSO_UDP_L4 packet, which the
// stack delivers as the original datagrams (segmenting it for a socket
// without UDP_GRO). Every other packet passes unchanged behind a zero
// header.
//
// UDP rules: no IPv4 options or fragments, no IPv6 extension headers, a
// non-zero checksum, every datagram's payload the size of the first (a
// shorter one ends the super-packet), same TOS/TTL/DF (IPv6: first word
// and hop limit), checksums verified.
//
// TCP rules (those of tcp_gro_receive, kept strict): only TCP segments with
// payload, ACK set and no flag but PSH; IPv4 without options or
// fragmentation, IPv6 without extension headers; same addresses, ports,
// ACK number, window, TCP options, TOS/traffic class and TTL/hop limit;
// sequence number right after the previous segment; payload no longer than
// the first segment's (a shorter one, or one with PSH, ends the
// super-packet); at most 64 segments and 65535 bytes. Every segment's TCP
// checksum is verified before it is merged, because the merged packet is
// handed to the kernel as checksum-partial and will not be verified again;
// a segment with a bad checksum passes alone so the stack drops it.
//
// Packets are referenced, not copied: the head segment's headers are
// rewritten in place at Flush (lengths, IPv4 header checksum, PSH, the TCP
// checksum field), the other segments contribute their payload as parts of
// the same write. The caller keeps every packet's buffer untouched until
// it has written what Flush returned.
type Coalescer struct {
	items []item
	hdrs  [][HdrLen]byte
	parts []part     // payloads merged into an item, in arrival order
	flat  [][]byte   // backing of the parts of Flush's result
	out   [][][]byte // Flush's result
	zero  [HdrLen]byte
}

// part is the payload of a segment merged into item.
type part struct {
	item int
	b    []byte
}

type item struct {
	pkt   []byte // the head segment
	nmore int    // payload parts after the head
	open  bool   // a TCP segment or UDP datagram that may take more
	udp   bool   // a UDP datagram (merged datagrams: GSO_UDP_L4)
	v4    bool
	l4    int // TCP/UDP header offset, 0 when the packet is neither
	hl    int // IP+TCP header length
	mss   int
	total int
	next  uint32 // sequence number the next segment must carry
	psh   bool
	csum  bool // head's checksum verified
}

// NewCoalescer returns a Coalescer for batches of up to batch packets.
func NewCoalescer(batch int) *Coalescer {
	return &Coalescer{
		items: make([]item, 0, batch),
		hdrs:  make([][HdrLen]byte, batch),
		parts: make([]part, 0, batch),
		flat:  make([][]byte, 0, 2*batch),
		out:   make([][][]byte, 0, batch),
	}
}

// Len returns the packets added since the last Flush.
func (c *Coalescer) Len() int { return len(c.items) + len(c.parts) }

// Add takes a whole IPv4/IPv6 packet. It reports false, taking nothing,
// when the batch is full (Flush first).
func (c *Coalescer) Add(pkt []byte) bool {
	if c.Len() >= cap(c.items) {
		return false
	}
	l4, hl, ok := tcpCandidate(pkt)
	udp := false
	if !ok {
		if l4, hl, ok = udpCandidate(pkt); ok {
			udp = true
		} else {
			l4 = tcpOffset(pkt)
		}
	}
	if l4 > 0 {
		for i := len(c.items) - 1; i >= 0; i-- {
			it := &c.items[i]
			if it.l4 == 0 || it.udp != udp || !sameFlow(it.pkt, it.l4, pkt, l4) {
				continue
			}
			// The newest packet of the flow: merge or start anew, never
			// reorder within a flow.
			if ok && it.open && c.merge(i, pkt, l4, hl) {
				return true
			}
			it.open = false
			break
		}
	}
	it := item{pkt: pkt, open: ok, udp: udp, l4: l4, hl: hl, total: len(pkt)}
	if ok {
		it.v4 = pkt[0]>>4 == 4
		it.mss = len(pkt) - hl
		if !udp {
			it.next = binary.BigEndian.Uint32(pkt[l4+4:]) + uint32(it.mss)
			it.psh = pkt[l4+13]&tcpFlagPSH != 0
			it.open = !it.psh
		}
	}
	c.items = append(c.items, it)
	return true
}

func (c *Coalescer) merge(idx int, pkt []byte, l4, hl int) bool {
	it := &c.items[idx]
	if it.udp {
		return c.mergeUDP(idx, pkt, l4, hl)
	}
	pay := len(pkt) - hl
	h := it.pkt
	if hl-l4 != it.hl-it.l4 || pay > it.mss || it.total+pay > maxSuper || it.nmore+1 >= maxSegs ||
		binary.BigEndian.Uint32(pkt[l4+4:]) != it.next ||
		!bytes.Equal(pkt[l4+8:l4+12], h[it.l4+8:it.l4+12]) || // ACK
		!bytes.Equal(pkt[l4+14:l4+16], h[it.l4+14:it.l4+16]) || // window
		!bytes.Equal(pkt[l4+20:hl], h[it.l4+20:it.hl]) { // options
		return false
	}
	if !sameIPFields(it.v4, h, pkt) {
		return false
	}
	if !tcpChecksumOK(pkt, l4) {
		return false
	}
	if !it.csum {
		if !tcpChecksumOK(h, it.l4) {
			it.open = false
			return false
		}
		it.csum = true
	}
	c.parts = append(c.parts, part{item: idx, b: pkt[hl:]})
	it.nmore++
	it.total += pay
	it.next += uint32(pay)
	if pkt[l4+13]&tcpFlagPSH != 0 {
		it.psh = true
		it.open = false
	}
	if pay < it.mss {
		it.open = false
	}
	return true
}

// mergeUDP appends a datagram of the flow to item idx: the same size as
// the head's payload (a shorter one is the last), same IP fields, both
// checksums verified.
func (c *Coalescer) mergeUDP(idx int, pkt []byte, l4, hl int) bool {
	it := &c.items[idx]
	pay := len(pkt) - hl
	h := it.pkt
	if pay > it.mss || pay == 0 || it.total+pay > maxSuper || it.nmore+1 >= maxSegs || !sameIPFields(it.v4, h, pkt) ||
		!udpChecksumOK(pkt, l4) {
		return false
	}
	if !it.csum {
		if !udpChecksumOK(h, it.l4) {
			it.open = false
			return false
		}
		it.csum = true
	}
	c.parts = append(c.parts, part{item: idx, b: pkt[hl:]})
	it.nmore++
	it.total += pay
	if pay < it.mss {
		it.open = false
	}
	return true
}

// sameIPFields compares what a merged packet keeps of its head only:
// IPv4 TOS, TTL and DF; IPv6 traffic class, flow label and hop limit.
func sameIPFields(v4 bool, a, b []byte) bool {
	if v4 {
		return a[1] == b[1] && a[8] == b[8] && (a[6]^b[6])&0x40 == 0
	}
	return binary.BigEndian.Uint32(a) == binary.BigEndian.Uint32(b) && a[7] == b[7]
}

// Flush finishes the batch: it returns one packet per element, each as the
// parts of one write (the virtio_net_hdr first, then the bytes), in the
// order their first segment was added, and resets the Coalescer. The
// result is valid until the next Add.
func (c *Coalescer) Flush() [][][]byte {
	c.out = c.out[:0]
	// Each output packet's parts are carved from one backing array of
	// 2 per item (header, head) + 1 per merged payload <= 2*batch.
	flat := c.flat[:0]
	for i := range c.items {
		it := &c.items[i]
		start := len(flat)
		if it.nmore == 0 {
			flat = append(flat, c.zero[:], it.pkt)
			c.out = append(c.out, flat[start:len(flat):len(flat)])
			continue
		}
		h := it.pkt
		if it.v4 {
			binary.BigEndian.PutUint16(h[2:], uint16(it.total))
			ipv4HeaderChecksum(h[:it.l4])
		} else {
			binary.BigEndian.PutUint16(h[4:], uint16(it.total-40))
		}
		// Checksum-partial: the field holds the folded pseudo-header sum,
		// the kernel finishes (and segments) from there.
		if it.udp {
			binary.BigEndian.PutUint16(h[it.l4+4:], uint16(it.total-it.l4))
			binary.BigEndian.PutUint16(h[it.l4+6:], fold(pseudo(h, protoUDP, it.total-it.l4)))
			Hdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, HdrLen: uint16(it.hl), GSOSize: uint16(it.mss),
				CsumStart: uint16(it.l4), CsumOffset: 6}.Encode(c.hdrs[i][:])
		} else {
			if it.psh {
				h[it.l4+13] |= tcpFlagPSH
			}
			binary.BigEndian.PutUint16(h[it.l4+16:], fold(pseudo(h, protoTCP, it.total-it.l4)))
			gt := uint8(GSOTCPv6)
			if it.v4 {
				gt = GSOTCPv4
			}
			Hdr{Flags: FlagNeedsCsum, GSOType: gt, HdrLen: uint16(it.hl), GSOSize: uint16(it.mss),
				CsumStart: uint16(it.l4), CsumOffset: 16}.Encode(c.hdrs[i][:])
		}
		flat = append(flat, c.hdrs[i][:], h)
		for _, p := range c.parts {
			if p.item == i {
				flat = append(flat, p.b)
			}
		}
		c.out = append(c.out, flat[start:len(flat):len(flat)])
	}
	c.flat = flat
	c.items = c.items[:0]
	c.parts = c.parts[:0]
	return c.out
}

// tcpCandidate reports whether pkt may be merged (see Coalescer) and where
// its TCP header starts and its headers end.
func tcpCandidate(pkt []byte) (l4, hl int, ok bool) {
	if len(pkt) < 40 {
		return 0, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if pkt[0] != 0x45 || pkt[9] != protoTCP || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 ||
			int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return 0, 0, false
		}
		l4 = 20
	case 6:
		if len(pkt) < 60 || pkt[6] != protoTCP || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return 0, 0, false
		}
		l4 = 40
	default:
		return 0, 0, false
	}
	thl := int(pkt[l4+12]>>4) * 4
	hl = l4 + thl
	if thl < 20 || hl >= len(pkt) || pkt[l4+13]&^tcpFlagPSH != tcpFlagACK {
		return 0, 0, false
	}
	return l4, hl, true
}

func sameFlow(a []byte, al4 int, b []byte, bl4 int) bool {
	if a[0]>>4 != b[0]>>4 {
		return false
	}
	if a[0]>>4 == 4 {
		if !bytes.Equal(a[12:20], b[12:20]) {
			return false
		}
	} else if !bytes.Equal(a[8:40], b[8:40]) {
		return false
	}
	return bytes.Equal(a[al4:al4+4], b[bl4:bl4+4])
}

func tcpChecksumOK(pkt []byte, l4 int) bool {
	return fold(sum(pkt[l4:], pseudo(pkt, protoTCP, len(pkt)-l4))) == 0xffff
}

// tcpOffset returns the TCP header offset of an IPv4 (unfragmented) or
// IPv6 (no extension header) TCP packet with a whole TCP header, else 0.
func tcpOffset(pkt []byte) int {
	switch {
	case len(pkt) >= 40 && pkt[0]>>4 == 4 && pkt[9] == protoTCP && binary.BigEndian.Uint16(pkt[6:])&0x1fff == 0:
		if l4 := int(pkt[0]&0xf) * 4; l4 >= 20 && l4+20 <= len(pkt) {
			return l4
		}
	case len(pkt) >= 60 && pkt[0]>>4 == 6 && pkt[6] == protoTCP:
		return 40
	}
	return 0
}

// udpCandidate reports whether pkt is a UDP datagram that may be merged:
// IPv4 without options or fragmentation, or IPv6 without extension
// headers, lengths consistent, a payload, and a checksum (an IPv4 datagram
// sent without one passes alone).
func udpCandidate(pkt []byte) (l4, hl int, ok bool) {
	switch {
	case len(pkt) >= 29 && pkt[0] == 0x45 && pkt[9] == protoUDP && binary.BigEndian.Uint16(pkt[6:])&0x3fff == 0 &&
		int(binary.BigEndian.Uint16(pkt[2:])) == len(pkt):
		l4 = 20
	case len(pkt) >= 49 && pkt[0]>>4 == 6 && pkt[6] == protoUDP && int(binary.BigEndian.Uint16(pkt[4:]))+40 == len(pkt):
		l4 = 40
	default:
		return 0, 0, false
	}
	if int(binary.BigEndian.Uint16(pkt[l4+4:])) != len(pkt)-l4 || binary.BigEndian.Uint16(pkt[l4+6:]) == 0 {
		return 0, 0, false
	}
	return l4, l4 + 8, true
}

func udpChecksumOK(pkt []byte, l4 int) bool {
	return fold(sum(pkt[l4:], pseudo(pkt, protoUDP, len(pkt)-l4))) == 0xffff
}
