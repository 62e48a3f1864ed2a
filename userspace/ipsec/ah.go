package ipsec

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrAHRoutingHeader is the error for a packet to protect with AH whose
// IPv6 Routing header is of a type other than 0 and 2 (RFC 8754 SRH, RFC
// 6554 RPL, ...) with Segments Left not 0: AH's ICV covers the header as
// it will be at the final destination (RFC 4302 §3.3.3.1.2), which the
// sender can predict only for the layouts of RFC 2460 §4.4 and RFC 6275
// §6.4.
var ErrAHRoutingHeader = errors.New("routing header type not supported for AH: its form at the final destination is unpredictable")

// ahEncrypt inserts AH (RFC 4302) into the packet b[off:off+n] and returns
// the new bounds; Encrypt checked room and parsed the packet into in.
func (sa *SA) ahEncrypt(s *scratch, b []byte, off, n int, in *inner, seq uint64) (int, int) {
	var start, ah int
	var nh uint8
	total := n + sa.ahLen
	if sa.p.Mode == ModeTunnel {
		hl := sa.outerHeaderLen()
		start = off - sa.ahLen - hl
		ah = start + hl
		total += hl
		nh = protoIPIP
		if in.v6 {
			nh = protoIPv6
		}
		sa.writeOuter(b[start:], total, innerTOS(b[off:]), seq)
	} else {
		start = off - sa.ahLen
		copy(b[start:], b[off:off+in.l3Len])
		ah = start + in.l3Len
		nh = in.proto
		b[start+in.protoOff] = protoAH
		setIPLength(b[start:], total)
	}
	b[ah], b[ah+1], b[ah+2], b[ah+3] = nh, byte(sa.ahLen/4-2), 0, 0
	binary.BigEndian.PutUint32(b[ah+4:], sa.p.SPI)
	binary.BigEndian.PutUint32(b[ah+8:], uint32(seq))
	clear(b[ah+12 : ah+sa.ahLen]) // ICV and its alignment padding
	p := b[start : start+total]
	if sa.ahICV(s, p, ah-start, sa.ahLen, seq) {
		copy(b[ah+12:], s.sum[:sa.icvLen])
	}
	return start, total
}

// ahDecrypt verifies and removes AH from the packet at frame[off:], parsed
// into o, filling r.
func (sa *SA) ahDecrypt(sc *Scratch, frame []byte, off int, o *Outer, r *Result, bs *batchState) {
	ah, end := off+o.Off, off+o.Len
	ahLen := (int(frame[ah+1]) + 2) * 4
	align := 4
	if o.Version == 6 {
		align = 8
	}
	if ahLen < 12+sa.icvLen || ahLen%align != 0 || ah+ahLen > end {
		r.Verdict = VerdictMalformed
		return
	}
	seq, err := sa.check(bs, o.Seq)
	if err != nil {
		replayVerdict(err, seq, r)
		return
	}
	var s *scratch
	if bs != nil {
		s = bs.s
	} else if s = sa.scratchFor(sc); s == nil {
		s = sa.getScratch()
		defer sa.putScratch(s)
	}
	ok := sa.ahICV(s, frame[off:end], o.Off, ahLen, seq) &&
		subtle.ConstantTimeCompare(s.sum[:sa.icvLen], frame[ah+12:ah+12+sa.icvLen]) == 1
	r.Seq = seq
	if !ok {
		r.Verdict = VerdictBadICV
		return
	}
	if err := sa.accept(bs, seq); err != nil {
		replayVerdict(err, seq, r)
		return
	}
	sa.decapsulate(frame, off, o, ah+ahLen, end, frame[ah], r, bs)
}

// ahICV computes AH's ICV over the packet p whose AH header of ahLen bytes
// is at p[ahOff:], into s.sum: the IP header with mutable fields zeroed, AH
// with the ICV zeroed, the payload, then the ESN high word. p is restored
// before it returns. It reports false for headers it cannot normalise
// (malformed options or routing header, a routing header whose final form
// is unpredictable (see routingCheck), or longer than maxSavedHeader).
func (sa *SA) ahICV(s *scratch, p []byte, ahOff, ahLen int, seq uint64) bool {
	hdr := p[:ahOff+ahLen]
	if len(hdr) > maxSavedHeader {
		return false
	}
	copy(s.save[:], hdr)
	ok := zeroMutable(p[:ahOff])
	if ok {
		clear(p[ahOff+12 : ahOff+ahLen])
		sa.mac(s, p, seq)
	}
	copy(hdr, s.save[:len(hdr)])
	return ok
}

// zeroMutable zeroes the fields of the IP header h (with IPv4 options or
// IPv6 extension headers, up to AH) that may change in transit, RFC 4302
// §3.3.3.1 and Appendix A, and puts a type 0 or 2 IPv6 Routing header and
// the destination address in the form they have at the final destination
// (routingFinal). It reports false, h partly rewritten, for headers it
// cannot normalise.
func zeroMutable(h []byte) bool {
	if h[0]>>4 == 4 {
		ihl := int(h[0]&0xf) * 4
		h[1] = 0            // DSCP, ECN
		h[6], h[7] = 0, 0   // flags, fragment offset
		h[8] = 0            // TTL
		h[10], h[11] = 0, 0 // checksum
		for i := 20; i < ihl; {
			switch h[i] {
			case 0: // end of option list
				return true
			case 1: // no operation
				i++
				continue
			}
			if i+1 >= ihl {
				return false
			}
			l := int(h[i+1])
			if l < 2 || i+l > ihl {
				return false
			}
			switch h[i] {
			case 130, 133, 134, 148, 149:
				// Security, extended security, commercial security (CIPSO),
				// router alert, SDMDD: immutable.
			case 131, 137:
				// Loose/strict source route: mutable but predictable, the
				// destination is the final hop; the option itself zeroed.
				if l >= 7 {
					copy(h[16:20], h[i+l-4:i+l])
				}
				clear(h[i : i+l])
			default:
				clear(h[i : i+l])
			}
			i += l
		}
		return true
	}
	h[0] &= 0xf0 // traffic class (high nibble kept: version)
	h[1], h[2], h[3] = 0, 0, 0
	h[7] = 0 // hop limit
	nh := h[6]
	for off := 40; off < len(h); {
		if off+2 > len(h) {
			return false
		}
		hl := (int(h[off+1]) + 1) * 8
		if nh == protoFragment {
			hl = 8
		}
		if off+hl > len(h) {
			return false
		}
		if nh == protoRouting && !routingFinal(h, off, hl) {
			return false
		}
		if nh == protoHopByHop || nh == protoDestOpts {
			// Options whose type has the "may change en route" bit: data zeroed.
			for i := off + 2; i < off+hl; {
				if h[i] == 0 { // Pad1
					i++
					continue
				}
				if i+2 > off+hl || i+2+int(h[i+1]) > off+hl {
					return false
				}
				l := int(h[i+1])
				if h[i]&0x20 != 0 {
					clear(h[i+2 : i+2+l])
				}
				i += 2 + l
			}
		}
		nh = h[off]
		off += hl
	}
	return true
}

// Routing header types whose address list AH can predict: RFC 2460 §4.4
// type 0 (deprecated by RFC 5095, but the layout is the reference one) and
// RFC 6275 §6.4 type 2 (Mobile IPv6, exactly one address).
const (
	routingType0 = 0
	routingType2 = 2
)

// routingProblem is routingCheck's answer.
type routingProblem uint8

const (
	routingOK routingProblem = iota
	// routingMalformed: Hdr Ext Len odd (not a whole number of addresses)
	// for type 0, not 2 for type 2, or Segments Left above the number of
	// addresses.
	routingMalformed
	// routingUnpredictable: a type AH does not know with Segments Left not
	// 0.
	routingUnpredictable
)

// routingCheck judges the Routing header rh (its Hdr Ext Len already
// checked against the packet) without writing to it.
func routingCheck(rh []byte) routingProblem {
	typ, sl := rh[2], int(rh[3])
	if typ != routingType0 && typ != routingType2 {
		// With nothing left to visit, no node on the way changes it: any
		// type is immutable as it is.
		if sl == 0 {
			return routingOK
		}
		return routingUnpredictable
	}
	if rh[1]%2 != 0 || (typ == routingType2 && rh[1] != 2) || sl > int(rh[1])/2 {
		return routingMalformed
	}
	return routingOK
}

// routingFinal rewrites the type 0 or 2 Routing header at h[off:off+hl]
// and the destination address in the IPv6 header h to the form they have
// when the packet reaches its final destination, which is what AH's ICV
// covers (RFC 4302 §3.3.3.1.2: mutable but predictable). It reports false
// where routingCheck finds a problem.
//
// Derivation, RFC 2460 §4.4 (RFC 6275 §6.4 processes type 2 the same way
// with n = 1): the header holds n = Hdr Ext Len / 2 addresses A[1..n].
// Each node the packet is addressed to while Segments Left (SL) is not 0
// computes i = n - SL + 1, swaps the IPv6 destination with A[i] and
// decrements SL. A packet sent with destination D0 and SL = n thus visits
// D0, A[1], ..., A[n]; the j-th swap happens at the node it was
// addressed to, A[j-1] (D0 for j = 1), which it writes into slot j while
// making A[j] the destination: after j swaps the list is D0, A[1..j-1],
// A[j+1..n]. Hence, with k = n - SL segments already processed and current
// destination D:
//   - slots 1..k hold the nodes left so far and never change again;
//   - the remaining hops are D, then the addresses slots k+1..n hold now;
//     each node writes itself into the next slot as it forwards, so at the
//     end slot k+1 holds D and slots k+2..n hold what slots k+1..n-1 hold
//     now;
//   - the final destination is what slot n holds now, the last address,
//     and SL is 0.
//
// With SL = 0 nothing moves. The Type and the Reserved field are
// immutable; Hdr Ext Len never changes.
func routingFinal(h []byte, off, hl int) bool {
	rh := h[off : off+hl]
	if routingCheck(rh) != routingOK {
		return false
	}
	typ, sl := rh[2], int(rh[3])
	if sl == 0 || (typ != routingType0 && typ != routingType2) {
		return true
	}
	n := int(rh[1]) / 2
	k := n - sl
	slot := func(j int) []byte { return rh[8+16*(j-1) : 8+16*j] } // A[j], 1-based
	var final [16]byte
	copy(final[:], slot(n))
	// A[k+1..n-1] move up one slot (copy is a memmove), D into slot k+1.
	copy(rh[8+16*(k+1):8+16*n], rh[8+16*k:8+16*(n-1)])
	copy(slot(k+1), h[24:40])
	copy(h[24:40], final[:])
	rh[3] = 0
	return true
}

// ahCheckOut returns the error Encrypt owes the caller for a packet p
// (parsed by parseInner into in) whose AH ICV cannot be computed because
// of its IPv6 Routing header: ErrAHRoutingHeader for a type whose final
// form is unpredictable, ErrBadPacket for a malformed one. Only transport
// mode covers the packet's own header; in tunnel mode it is payload.
func (sa *SA) ahCheckOut(p []byte, in *inner) error {
	if sa.p.Proto != ProtoAH || sa.p.Mode != ModeTransport || !in.v6 {
		return nil
	}
	nh := p[6]
	for off := 40; off < in.l3Len; {
		hl := (int(p[off+1]) + 1) * 8
		if nh == protoFragment {
			hl = 8
		}
		if nh == protoRouting {
			switch routingCheck(p[off : off+hl]) {
			case routingUnpredictable:
				return fmt.Errorf("encrypt: routing header type %d with segments left %d: %w",
					p[off+2], p[off+3], ErrAHRoutingHeader)
			case routingMalformed:
				return fmt.Errorf("encrypt: malformed type %d routing header (hdr ext len %d, segments left %d): %w",
					p[off+2], p[off+1], p[off+3], ErrBadPacket)
			}
		}
		nh = p[off]
		off += hl
	}
	return nil
}
