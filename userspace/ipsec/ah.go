package ipsec

import (
	"crypto/subtle"
	"encoding/binary"
)

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
// (malformed options, or longer than maxSavedHeader).
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
// §3.3.3.1 and Appendix A, as Linux's ah4/ah6 do.
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
