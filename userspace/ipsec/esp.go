package ipsec

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"github.com/xdpsec/xdpsec/userspace/replay"
)

// Encrypt protects the IP packet frame[off:off+n] in place and returns the
// bounds of the protected packet. In transport mode the packet's own IP
// header is kept (ESP/AH inserted after it, IPv6 after hop-by-hop and
// routing headers); in tunnel mode the packet becomes the inner packet of a
// new outer header from the SA's Src and Dst (any inner family under any
// outer family). It uses the next outbound sequence number; errors wrap
// ErrSeqOverflow, ErrExpired, ErrNoRoom, ErrBadPacket or ErrFragment (an IP
// fragment offered to a transport-mode SA; tunnel mode carries fragments as
// inner packets, RFC 4301 §7); every check runs
// before the first byte is written, so on error the frame is unchanged.
func (sa *SA) Encrypt(frame []byte, off, n int) (outOff, outN int, err error) {
	return sa.encrypt(nil, frame, off, n)
}

// EncryptWith is Encrypt using the caller's Scratch s instead of the SA's
// pool (see Scratch); s must not be in use by another goroutine.
func (sa *SA) EncryptWith(s *Scratch, frame []byte, off, n int) (outOff, outN int, err error) {
	return sa.encrypt(s, frame, off, n)
}

func (sa *SA) encrypt(sc *Scratch, frame []byte, off, n int) (outOff, outN int, err error) {
	var in inner
	if err := sa.checkOut(frame, off, n, &in); err != nil {
		return 0, 0, err
	}
	if st := sa.refused(); st != 0 {
		return 0, 0, refusal(st)
	}
	seq, err := sa.nextSeq()
	if err != nil {
		return 0, 0, err
	}
	if !sa.count(in.payload(sa.p.Mode, n)) {
		return 0, 0, ErrExpired
	}
	s := sa.scratchFor(sc)
	if s == nil {
		s = sa.getScratch()
		defer sa.putScratch(s)
	}
	outOff, outN = sa.protect(s, frame, off, n, &in, seq)
	return outOff, outN, nil
}

// checkOut runs Encrypt's checks on the packet frame[off:off+n], which
// write nothing, and parses it into in.
func (sa *SA) checkOut(frame []byte, off, n int, in *inner) error {
	if off < 0 || n < 0 || off+n > len(frame) {
		return fmt.Errorf("encrypt: packet [%d:%d] outside a frame of %d bytes: %w", off, off+n, len(frame), ErrNoRoom)
	}
	if !parseInner(frame[off:off+n], in) {
		return fmt.Errorf("encrypt: %w", ErrBadPacket)
	}
	head, tail := sa.Overhead()
	if sa.p.Mode == ModeTransport {
		if in.v6 != sa.outerV6 {
			return fmt.Errorf("encrypt: transport mode SA of the other IP family: %w", ErrBadPacket)
		}
		if in.frag {
			return fmt.Errorf("encrypt: %w", ErrFragment)
		}
		if sa.p.Proto == ProtoESP && in.proto == protoESP {
			return fmt.Errorf("encrypt: packet is ESP already: %w", ErrBadPacket)
		}
		if sa.p.Proto == ProtoAH {
			// Headers the ICV cannot be computed over as the receiver
			// will see them: refused here, before a sequence number is
			// spent on a packet the peer would drop as bad-icv.
			if err := sa.ahCheckOut(frame[off:off+n], in); err != nil {
				return err
			}
		}
	}
	if off < head || off+n+tail > len(frame) {
		return fmt.Errorf("encrypt: need %d bytes of headroom and %d of tailroom, have %d and %d: %w",
			head, tail, off, len(frame)-off-n, ErrNoRoom)
	}
	if n+head+tail > 0xffff {
		return fmt.Errorf("encrypt: %d-byte packet too long once protected: %w", n, ErrBadPacket)
	}
	return nil
}

// payload is what the lifetimes count for the n-byte packet in: all of it
// in tunnel mode, what follows the kept IP header in transport mode.
func (in *inner) payload(m Mode, n int) int {
	if m == ModeTransport {
		return n - in.l3Len
	}
	return n
}

// protect writes the SA's protection with sequence number seq around the
// checked packet frame[off:off+n] (parsed into in).
func (sa *SA) protect(s *scratch, frame []byte, off, n int, in *inner, seq uint64) (int, int) {
	if sa.p.Proto == ProtoAH {
		return sa.ahEncrypt(s, frame, off, n, in, seq)
	}
	return sa.espEncrypt(s, frame, off, n, in, seq)
}

func (sa *SA) espEncrypt(s *scratch, b []byte, off, n int, in *inner, seq uint64) (int, int) {
	add := 8 + sa.ivLen // ESP header and IV
	if sa.udp {
		add += 8
	}
	var start, esp, payLen int
	var nh uint8
	if sa.p.Mode == ModeTunnel {
		hl := sa.outerHeaderLen()
		start = off - add - hl
		esp = start + hl
		payLen = n
		nh = protoIPIP
		if in.v6 {
			nh = protoIPv6
		}
	} else {
		start = off - add
		copy(b[start:], b[off:off+in.l3Len])
		esp = start + in.l3Len
		payLen = n - in.l3Len
		nh = in.proto
	}
	if sa.udp {
		esp += 8
	}
	tos := innerTOS(b[off:])
	end := sa.espSeal(s, b, esp, payLen, nh, seq)
	total := end - start
	if sa.p.Mode == ModeTunnel {
		sa.writeOuter(b[start:], total, tos, seq)
	} else {
		if sa.udp {
			b[start+in.protoOff] = protoUDP
		} else {
			b[start+in.protoOff] = protoESP
		}
		setIPLength(b[start:], total)
	}
	if sa.udp {
		sa.writeUDP(b[start:end], esp-8-start)
	}
	return start, total
}

// outerHeaderLen is the tunnel-mode outer IP header length.
func (sa *SA) outerHeaderLen() int {
	if sa.outerV6 {
		return 40
	}
	return 20
}

// initOuter fills the SA's outer header template.
func (sa *SA) initOuter() {
	ttl := sa.p.TTL
	if ttl == 0 {
		ttl = 64
	}
	proto := uint8(protoESP)
	switch {
	case sa.p.Proto == ProtoAH:
		proto = protoAH
	case sa.udp:
		proto = protoUDP
	}
	h := sa.outer[:]
	if !sa.outerV6 {
		h[0], h[8], h[9] = 0x45, ttl, proto
		s4, d4 := sa.p.Src.As4(), sa.p.Dst.As4()
		copy(h[12:16], s4[:])
		copy(h[16:20], d4[:])
		sa.outerSum = sum16(h[:20], 0)
		return
	}
	h[0], h[6], h[7] = 6<<4, proto, ttl
	s16, d16 := sa.p.Src.As16(), sa.p.Dst.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
}

// innerTOS returns the IPv4 TOS or IPv6 traffic class of the IP packet p.
func innerTOS(p []byte) uint8 {
	if p[0]>>4 == 4 {
		return p[1]
	}
	return uint8(binary.BigEndian.Uint16(p) >> 4)
}

// writeOuter writes the tunnel-mode outer header at h for a packet of total
// bytes from the SA's template, with tos (DSCP and ECN) taken from the
// inner header before it was encrypted (RFC 4301 §5.1.2, RFC 6040 normal
// mode) less what flags noecn and dont-encap-dscp clear (tosMask). The IPv4 checksum is the template's sum plus the fields set here.
func (sa *SA) writeOuter(h []byte, total int, tos uint8, seq uint64) {
	tos &= sa.tosMask
	if !sa.outerV6 {
		h = h[:20]
		copy(h, sa.outer[:20])
		id := uint16(seq) // identification: unique enough per SA
		h[1] = tos
		binary.BigEndian.PutUint16(h[2:], uint16(total))
		binary.BigEndian.PutUint16(h[4:], id)
		binary.BigEndian.PutUint16(h[10:], ^fold(sa.outerSum+uint64(tos)+uint64(total)+uint64(id)))
		return
	}
	h = h[:40]
	copy(h, sa.outer[:])
	binary.BigEndian.PutUint32(h, 6<<28|uint32(tos)<<20)
	binary.BigEndian.PutUint16(h[4:], uint16(total-40))
}

// writeUDP fills the UDP header at p[udp:] of the packet p (IP header at
// p[0]). The checksum is 0 over IPv4 (RFC 3948 §2.1) and computed over IPv6,
// where a zero UDP checksum is not allowed (RFC 8200 §8.1).
func (sa *SA) writeUDP(p []byte, udp int) {
	u := p[udp:]
	binary.BigEndian.PutUint16(u[0:], sa.p.EncapSrcPort)
	binary.BigEndian.PutUint16(u[2:], sa.p.EncapDstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	u[6], u[7] = 0, 0
	if p[0]>>4 == 6 {
		s := sum16(p[8:40], uint64(len(u))+protoUDP)
		c := ^fold(sum16(u, s))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	}
}

// espSeal writes the ESP header at b[esp:], the IV, padding and trailer
// after the plen payload bytes already at b[esp+8+ivLen:], encrypts and
// appends the ICV. It returns the end of the ESP packet.
func (sa *SA) espSeal(s *scratch, b []byte, esp, plen int, nh uint8, seq uint64) int {
	binary.BigEndian.PutUint32(b[esp:], sa.p.SPI)
	binary.BigEndian.PutUint32(b[esp+4:], uint32(seq))
	ivOff := esp + 8
	ct := ivOff + sa.ivLen
	t := ct + plen
	pad := -(plen + 2) & (sa.blk - 1) // blk is a power of two (init)
	copy(b[t:t+pad], padBytes[:pad])
	b[t+pad], b[t+pad+1] = byte(pad), nh
	end := t + pad + 2
	switch sa.suite {
	case suiteAEAD:
		binary.BigEndian.PutUint64(b[ivOff:], seq+sa.ivOffset)
		sa.nonce(s, b[ivOff:])
		sa.aead.Seal(b[ct:ct], s.nonce[:], b[ct:end], sa.aad(s, b[esp:], seq))
		return end + sa.icvLen
	case suiteGMAC:
		binary.BigEndian.PutUint64(b[ivOff:], seq+sa.ivOffset)
		sa.nonce(s, b[ivOff:])
		sa.gmacWithAAD(s, b, esp, end, seq, func(aad []byte) {
			sa.aead.Seal(b[end:end], s.nonce[:], nil, aad)
		})
		return end + sa.icvLen
	case suiteCBC:
		bs := sa.block.BlockSize()
		binary.BigEndian.PutUint64(s.ks[:], seq)
		binary.BigEndian.PutUint32(s.ks[8:], sa.p.SPI)
		binary.BigEndian.PutUint32(s.ks[12:], 0)
		sa.ivBlock.Encrypt(s.ks[:], s.ks[:])
		copy(b[ivOff:ivOff+bs], s.ks[:bs])
		s.enc.(ivSetter).SetIV(b[ivOff : ivOff+bs])
		s.enc.CryptBlocks(b[ct:end], b[ct:end])
	case suiteCTR:
		binary.BigEndian.PutUint64(b[ivOff:], seq+sa.ivOffset)
		sa.ctrXOR(s, b[ivOff:ivOff+8], b[ct:end])
	}
	if s.mac != nil {
		sa.mac(s, b[esp:end], seq)
		copy(b[end:end+sa.icvLen], s.sum[:sa.icvLen])
		end += sa.icvLen
	}
	return end
}

// espOpen verifies and decrypts the ESP packet b[esp:end] in place. It
// returns the end of the plaintext (before the ICV) and whether the ICV
// verified.
func (sa *SA) espOpen(s *scratch, b []byte, esp, end int, seq uint64) (int, bool) {
	ivOff := esp + 8
	ct := ivOff + sa.ivLen
	icv := end - sa.icvLen
	switch sa.suite {
	case suiteAEAD:
		sa.nonce(s, b[ivOff:])
		if sa.gcm8 != nil {
			return icv, sa.open8(s, b, ct, end, sa.aad(s, b[esp:], seq))
		}
		_, err := sa.aead.Open(b[ct:ct], s.nonce[:], b[ct:end], sa.aad(s, b[esp:], seq))
		return icv, err == nil
	case suiteGMAC:
		sa.nonce(s, b[ivOff:])
		var err error
		sa.gmacWithAAD(s, b, esp, icv, seq, func(aad []byte) {
			_, err = sa.aead.Open(b[icv:icv], s.nonce[:], b[icv:end], aad)
		})
		return icv, err == nil
	}
	if s.mac != nil {
		sa.mac(s, b[esp:icv], seq)
		if subtle.ConstantTimeCompare(s.sum[:sa.icvLen], b[icv:end]) != 1 {
			return icv, false
		}
	}
	switch sa.suite {
	case suiteCBC:
		s.dec.(ivSetter).SetIV(b[ivOff : ivOff+sa.ivLen])
		s.dec.CryptBlocks(b[ct:icv], b[ct:icv])
	case suiteCTR:
		sa.ctrXOR(s, b[ivOff:ivOff+8], b[ct:icv])
	}
	return icv, true
}

func (sa *SA) nonce(s *scratch, iv []byte) {
	copy(s.nonce[:4], sa.salt[:])
	copy(s.nonce[4:], iv[:8])
}

// aad is SPI‖seq (8 bytes) or SPI‖seq_hi‖seq_lo (12 bytes, ESN) for RFC
// 4106 / RFC 7634. Without ESN those are the first 8 bytes of the ESP
// header hdr as they are on the wire, so no copy is made.
func (sa *SA) aad(s *scratch, hdr []byte, seq uint64) []byte {
	if !sa.p.ESN {
		return hdr[:8:8]
	}
	binary.BigEndian.PutUint32(s.aad[:], sa.p.SPI)
	binary.BigEndian.PutUint64(s.aad[4:], seq)
	return s.aad[:12]
}

// gmacWithAAD calls f with RFC 4543's AAD: the ESP header, IV and payload
// b[esp:end], with the ESN high word between SPI and seq. For ESN it builds
// the 12-byte prefix in place over the 4 bytes before the ESP header (which
// always exist: the IP header precedes ESP) and restores them.
func (sa *SA) gmacWithAAD(s *scratch, b []byte, esp, end int, seq uint64, f func([]byte)) {
	if !sa.p.ESN {
		f(b[esp:end])
		return
	}
	copy(s.save[:4], b[esp-4:esp])
	binary.BigEndian.PutUint32(b[esp-4:], sa.p.SPI)
	binary.BigEndian.PutUint32(b[esp:], uint32(seq>>32))
	f(b[esp-4 : end])
	binary.BigEndian.PutUint32(b[esp:], sa.p.SPI)
	copy(b[esp-4:esp], s.save[:4])
}

// mac computes the HMAC of data (followed by the ESN high word) into s.sum.
func (sa *SA) mac(s *scratch, data []byte, seq uint64) {
	s.mac.Reset()
	s.mac.Write(data)
	if sa.p.ESN {
		binary.BigEndian.PutUint32(s.aad[:4], uint32(seq>>32))
		s.mac.Write(s.aad[:4])
	}
	s.mac.Sum(s.sum[:0])
}

// ctrXOR applies RFC 3686 AES-CTR: counter block nonce‖IV‖counter, the
// counter starting at 1.
func (sa *SA) ctrXOR(s *scratch, iv, data []byte) {
	copy(s.ivIn[:4], sa.salt[:])
	copy(s.ivIn[4:12], iv)
	for ctr := uint32(1); len(data) > 0; ctr++ {
		binary.BigEndian.PutUint32(s.ivIn[12:], ctr)
		sa.block.Encrypt(s.ks[:], s.ivIn[:])
		n := subtle.XORBytes(data, data, s.ks[:])
		data = data[n:]
	}
}

// Decrypt verifies and removes the SA's protection from the IP packet
// frame[off:off+n] in place: replay check, ICV, replay update, padding
// check, decapsulation. The packet must belong to this SA (a packet with
// another SPI or protocol gets VerdictNoState). On any verdict but OK and
// Dummy the packet's bytes in frame are unspecified afterwards (an AEAD
// clears what it failed to open): keep a copy if you need the original.
func (sa *SA) Decrypt(frame []byte, off, n int) (r Result) {
	sa.decrypt(nil, frame, off, n, &r)
	return r
}

// DecryptWith is Decrypt using the caller's Scratch s instead of the SA's
// pool (see Scratch); s must not be in use by another goroutine.
func (sa *SA) DecryptWith(s *Scratch, frame []byte, off, n int) (r Result) {
	sa.decrypt(s, frame, off, n, &r)
	return r
}

func (sa *SA) decrypt(s *Scratch, frame []byte, off, n int, r *Result) {
	if off < 0 || n < 0 || off+n > len(frame) {
		r.Verdict = VerdictMalformed
		return
	}
	var o Outer
	if v := ParseOuter(frame[off:off+n], sa.p.EncapDstPort, &o); v != VerdictOK {
		r.Verdict = v
		return
	}
	sa.decryptParsed(s, frame, off, &o, r, nil)
}

// DecryptParsed is Decrypt for a caller that already has ParseOuter's
// VerdictOK answer o for the packet at frame[off:], saving the second parse.
func (sa *SA) DecryptParsed(frame []byte, off int, o *Outer) (r Result) {
	sa.decryptParsed(nil, frame, off, o, &r, nil)
	return r
}

// DecryptParsedWith is DecryptParsed using the caller's Scratch s instead
// of the SA's pool (see Scratch).
func (sa *SA) DecryptParsedWith(s *Scratch, frame []byte, off int, o *Outer) (r Result) {
	sa.decryptParsed(s, frame, off, o, &r, nil)
	return r
}

// decryptParsed fills r, which the caller zeroed. Results are written in
// place: Result has too many fields for the compiler to keep in registers,
// and copying it between frames stalls store forwarding (~5 ns a copy).
// With bs (a batch, see DecryptBatch) the caller holds the window's lock
// and the lifetime counts of unlimited SAs go to bs.
func (sa *SA) decryptParsed(sc *Scratch, frame []byte, off int, o *Outer, r *Result, bs *batchState) {
	if o.Proto != sa.p.Proto || o.SPI != sa.p.SPI || o.UDP != sa.udp {
		r.Verdict = VerdictNoState
		return
	}
	if st := sa.refused(); st != 0 {
		r.Verdict = VerdictExpired
		if st&stateDead != 0 {
			r.Verdict = VerdictNoState
		}
		return
	}
	if off < 0 || off+o.Len > len(frame) || o.Off+8 > o.Len {
		r.Verdict = VerdictMalformed
		return
	}
	if sa.p.Proto == ProtoAH {
		sa.ahDecrypt(sc, frame, off, o, r, bs)
		return
	}
	esp, end := off+o.Off, off+o.Len
	ctLen := end - esp - 8 - sa.ivLen - sa.icvLen
	if ctLen < 2 || ctLen&(sa.blk-1) != 0 {
		r.Verdict = VerdictMalformed
		return
	}
	seq, err := sa.check(bs, o.Seq)
	if err != nil {
		replayVerdict(err, seq, r)
		return
	}
	var ptEnd int
	var ok bool
	if bs != nil {
		ptEnd, ok = sa.espOpen(bs.s, frame, esp, end, seq)
	} else if s := sa.scratchFor(sc); s != nil {
		ptEnd, ok = sa.espOpen(s, frame, esp, end, seq)
	} else {
		s = sa.getScratch()
		ptEnd, ok = sa.espOpen(s, frame, esp, end, seq)
		sa.putScratch(s)
	}
	r.Seq = seq
	if !ok {
		r.Verdict = VerdictBadICV
		return
	}
	if err := sa.accept(bs, seq); err != nil {
		replayVerdict(err, seq, r)
		return
	}
	ct := esp + 8 + sa.ivLen
	pad, nh := int(frame[ptEnd-2]), frame[ptEnd-1]
	payEnd := ptEnd - 2 - pad
	if payEnd < ct {
		r.Verdict = VerdictBadPadding
		return
	}
	if !bytes.Equal(frame[payEnd:ptEnd-2], padBytes[:pad]) {
		r.Verdict = VerdictBadPadding
		return
	}
	if nh == protoNone {
		r.Verdict, r.NextHeader = VerdictDummy, nh
		return
	}
	sa.decapsulate(frame, off, o, ct, payEnd, nh, r, bs)
}

// replayVerdict sets r's verdict for the window's error err on seq.
func replayVerdict(err error, seq uint64, r *Result) {
	r.Seq = seq
	if err == replay.ErrZeroSeq {
		r.Verdict = VerdictBadSeq
		return
	}
	r.Verdict = VerdictReplay
}

// decapsulate turns the verified payload frame[pay:payEnd] with next header
// nh into r (r.Seq set): the inner packet (tunnel) or the rebuilt transport
// packet.
func (sa *SA) decapsulate(frame []byte, off int, o *Outer, pay, payEnd int, nh uint8, r *Result, bs *batchState) {
	var rOff, rN, payN int
	if sa.p.Mode == ModeTunnel {
		var want uint8
		switch nh {
		case protoIPIP:
			want = 4
		case protoIPv6:
			want = 6
		default:
			r.Verdict = VerdictMalformed
			return
		}
		n := innerLen(frame[pay:payEnd])
		if n == 0 || frame[pay]>>4 != want {
			r.Verdict = VerdictMalformed
			return
		}
		// Anything after the inner packet is TFC padding (RFC 4303 §2.7).
		rOff, rN, payN = pay, n, n
		if outerECN(frame[off:], o.Version) == ecnCE && !sa.p.NoECN {
			setCE(frame[pay : pay+n])
		}
	} else {
		hl := o.L3Len
		if hl > pay-off {
			r.Verdict = VerdictMalformed
			return
		}
		payN = payEnd - pay
		rOff = pay - hl
		copy(frame[rOff:pay], frame[off:off+hl])
		frame[rOff+o.ProtoOff] = nh
		rN = hl + payN
		setIPLength(frame[rOff:], rN)
		if sa.udp {
			fixL4Checksum(frame[rOff:rOff+rN], hl, nh)
		}
	}
	if !sa.countIn(bs, payN) {
		r.Verdict = VerdictExpired
		return
	}
	r.Verdict, r.NextHeader = VerdictOK, nh
	r.Off, r.N, r.PayloadOff, r.PayloadN = rOff, rN, pay, payN
}

// padBytes is RFC 4303 §2.4's default padding, 1, 2, 3, ..., for every pad
// length an 8-bit Pad Length field can announce: one copy or compare per
// packet instead of a byte loop.
var padBytes = func() (p [255]byte) {
	for i := range p {
		p[i] = byte(i + 1)
	}
	return p
}()

// innerLen returns the length of the IP packet at the start of p per its
// header (a tunnel's inner packet; fragments are fine here), or 0 if the
// header does not fit p.
func innerLen(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return 0
		}
		n, ihl := int(binary.BigEndian.Uint16(p[2:])), int(p[0]&0xf)*4
		if ihl >= 20 && n >= ihl && n <= len(p) {
			return n
		}
	case 6:
		if len(p) < 40 {
			return 0
		}
		if n := 40 + int(binary.BigEndian.Uint16(p[4:])); n <= len(p) {
			return n
		}
	}
	return 0
}

// fixL4Checksum recomputes the TCP or UDP checksum of the transport-mode
// packet p (IP header of hl bytes, then the segment of protocol nh) over
// the addresses p now carries. A UDP-encapsulated transport-mode packet
// crossed a NAT that rewrote the outer addresses, which are the packet's
// own, while the checksum inside ESP still covers the sender's (RFC 3948
// §3.1.2): the kernel would drop every such segment. The segment is
// authenticated, so recomputing loses nothing (Linux marks these packets
// CHECKSUM_UNNECESSARY instead). A UDP checksum of 0 (none) is left as is.
func fixL4Checksum(p []byte, hl int, nh uint8) {
	seg := p[hl:]
	var at int
	switch {
	case nh == protoTCP && len(seg) >= 20:
		at = 16
	case nh == protoUDP && len(seg) >= 8:
		if seg[6] == 0 && seg[7] == 0 {
			return
		}
		at = 6
	default:
		return
	}
	var s uint64
	if p[0]>>4 == 4 {
		s = sum16(p[12:20], uint64(nh)+uint64(len(seg)))
	} else {
		s = sum16(p[8:40], uint64(nh)+uint64(len(seg)))
	}
	seg[at], seg[at+1] = 0, 0
	c := ^fold(sum16(seg, s))
	if c == 0 && nh == protoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[at:], c)
}

// ECN field values (RFC 3168).
const (
	ecnMask = 3
	ecnCE   = 3 // Congestion Experienced
)

// outerECN returns the ECN field of the outer IP header h of version v.
func outerECN(h []byte, v uint8) uint8 {
	if v == 4 {
		return h[1] & ecnMask
	}
	return h[1] >> 4 & ecnMask
}

// setCE marks the inner packet p Congestion Experienced if it is
// ECN-capable, as a tunnel decapsulator must when the outer header arrived
// CE (RFC 6040 §4.2, RFC 4301 §5.1.2.1): otherwise the mark a congested
// router set on the tunnel path never reaches the endpoints. A Not-ECT
// inner packet is left as is (Linux's XFRM does the same). The IPv4
// header checksum is updated.
func setCE(p []byte) {
	if p[0]>>4 == 4 {
		if p[1]&ecnMask == 0 || p[1]&ecnMask == ecnCE {
			return
		}
		p[1] |= ecnCE
		ipv4Checksum(p[:int(p[0]&0xf)*4])
		return
	}
	if tc := p[1] >> 4 & ecnMask; tc == 0 || tc == ecnCE {
		return
	}
	p[1] |= ecnCE << 4
}
