package gso

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// naiveSum is RFC 1071 over 16-bit words, the judge of sum/fold.
func naiveSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestChecksumMatchesRFC1071(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%7 == 0 {
			for i := range b {
				b[i] = 0xff // carries everywhere
			}
		}
		if got, want := fold(sum(b, 0)), naiveSum(b); got != want {
			t.Fatalf("len %d: fold(sum) = %#04x, RFC 1071 says %#04x", n, got, want)
		}
	}
	// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := fold(sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0)); got != 0xddf2 {
		t.Fatalf("RFC 1071 example: %#04x, want 0xddf2", got)
	}
}

var (
	src4 = netip.MustParseAddr("198.51.100.2")
	dst4 = netip.MustParseAddr("198.51.100.1")
	src6 = netip.MustParseAddr("2001:db8:b::1")
	dst6 = netip.MustParseAddr("2001:db8:a::1")
)

// tcpPacket builds an IPv4 or IPv6 TCP packet with correct checksums.
func tcpPacket(v6 bool, seq, ack uint32, flags byte, opts, payload []byte) []byte {
	l4 := 20
	if v6 {
		l4 = 40
	}
	thl := 20 + len(opts)
	p := make([]byte, l4+thl+len(payload))
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = protoTCP, 64
		s, d := src6.As16(), dst6.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		p[6], p[8], p[9] = 0x40, 64, protoTCP
		s, d := src4.As4(), dst4.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		ipv4HeaderChecksum(p[:20])
	}
	th := p[l4:]
	binary.BigEndian.PutUint16(th[0:], 40000)
	binary.BigEndian.PutUint16(th[2:], 5201)
	binary.BigEndian.PutUint32(th[4:], seq)
	binary.BigEndian.PutUint32(th[8:], ack)
	th[12] = byte(thl/4) << 4
	th[13] = flags
	binary.BigEndian.PutUint16(th[14:], 512)
	copy(th[20:], opts)
	copy(th[thl:], payload)
	binary.BigEndian.PutUint16(th[16:], ^fold(sum(th, pseudo(p, protoTCP, len(th)))))
	return p
}

// checkPacket verifies lengths and checksums of one IP/TCP|UDP packet with
// the naive RFC 1071 sum, independently of the code under test.
func checkPacket(t *testing.T, p []byte) {
	t.Helper()
	var l4 int
	var proto byte
	var ph []byte
	if p[0]>>4 == 4 {
		l4 = int(p[0]&0xf) * 4
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("IPv4 total length %d, packet %d", binary.BigEndian.Uint16(p[2:]), len(p))
		}
		if naiveSum(p[:l4]) != 0xffff {
			t.Fatalf("bad IPv4 header checksum")
		}
		proto = p[9]
		ph = append(ph, p[12:20]...)
	} else {
		l4 = 40
		if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			t.Fatalf("IPv6 payload length %d, packet %d", binary.BigEndian.Uint16(p[4:]), len(p))
		}
		proto = p[6]
		ph = append(ph, p[8:40]...)
	}
	n := len(p) - l4
	ph = append(ph, 0, proto, byte(n>>8), byte(n))
	whole := append(ph, p[l4:]...)
	if naiveSum(whole) != 0xffff {
		t.Fatalf("bad L4 checksum (proto %d, %d bytes)", proto, n)
	}
}

func TestSegmentTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, ecn := range []bool{false, true} {
			stream := make([]byte, 10*1000+345)
			for i := range stream {
				stream[i] = byte(i * 7)
			}
			opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamp
			flags := byte(tcpFlagACK | tcpFlagPSH | tcpFlagFIN)
			if ecn {
				flags |= tcpFlagCWR
			}
			super := tcpPacket(v6, 1000, 77, flags, opts, stream)
			l4 := 20
			gt := uint8(GSOTCPv4)
			if v6 {
				l4, gt = 40, GSOTCPv6
			}
			if ecn {
				gt |= GSOECN
			}
			// As the kernel hands it out: checksum partial.
			binary.BigEndian.PutUint16(super[l4+16:], fold(pseudo(super, protoTCP, len(super)-l4)))
			h := Hdr{Flags: FlagNeedsCsum, GSOType: gt, HdrLen: uint16(l4 + 32), GSOSize: 1000, CsumStart: uint16(l4), CsumOffset: 16}
			var s Segmenter
			if err := s.Reset(super, h); err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, 2048)
			segs := 0
			for {
				n, err := s.Next(buf)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				seg := buf[:n]
				checkPacket(t, seg)
				th := seg[l4:]
				if seq := binary.BigEndian.Uint32(th[4:]); seq != 1000+uint32(len(got)) {
					t.Fatalf("segment %d: seq %d, want %d", segs, seq, 1000+len(got))
				}
				last := len(got)+n-l4-32 == len(stream)
				if f := th[13]; (f&(tcpFlagFIN|tcpFlagPSH) != 0) != last || (f&tcpFlagCWR != 0) != (ecn && segs == 0) || f&tcpFlagACK == 0 {
					t.Fatalf("segment %d (last %v): flags %#02x", segs, last, f)
				}
				if !bytes.Equal(th[20:32], opts) {
					t.Fatalf("segment %d: options changed", segs)
				}
				if pay := n - l4 - 32; pay > 1000 {
					t.Fatalf("segment %d: %d bytes of payload > gso_size 1000", segs, pay)
				}
				if !v6 && binary.BigEndian.Uint16(seg[4:]) != 0x1234+uint16(segs) {
					t.Fatalf("segment %d: IPv4 ID %#x", segs, binary.BigEndian.Uint16(seg[4:]))
				}
				got = append(got, seg[l4+32:]...)
				segs++
			}
			if segs != 11 || !bytes.Equal(got, stream) {
				t.Fatalf("v6=%v: %d segments, stream equal %v", v6, segs, bytes.Equal(got, stream))
			}
		}
	}
}

func TestSegmentUDPAndPartialChecksum(t *testing.T) {
	// A UDP super-packet (USO), IPv4.
	pay := make([]byte, 3000)
	for i := range pay {
		pay[i] = byte(i)
	}
	p := make([]byte, 28+len(pay))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, protoUDP
	s4, d4 := src4.As4(), dst4.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	ipv4HeaderChecksum(p[:20])
	binary.BigEndian.PutUint16(p[20:], 1111)
	binary.BigEndian.PutUint16(p[22:], 2222)
	binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
	copy(p[28:], pay)
	binary.BigEndian.PutUint16(p[26:], fold(pseudo(p, protoUDP, len(p)-20)))
	var s Segmenter
	if err := s.Reset(p, Hdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1200, CsumStart: 20, CsumOffset: 6}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	var got []byte
	for {
		n, err := s.Next(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		checkPacket(t, buf[:n])
		if int(binary.BigEndian.Uint16(buf[24:])) != n-20 {
			t.Fatalf("UDP length %d, want %d", binary.BigEndian.Uint16(buf[24:]), n-20)
		}
		got = append(got, buf[28:n]...)
	}
	if !bytes.Equal(got, pay) {
		t.Fatal("UDP payload not reassembled")
	}

	// One packet, no GSO, checksum partial: completed.
	q := tcpPacket(true, 5, 6, tcpFlagACK, nil, []byte("hello"))
	binary.BigEndian.PutUint16(q[56:], fold(pseudo(q, protoTCP, len(q)-40)))
	if err := s.Reset(q, Hdr{Flags: FlagNeedsCsum, CsumStart: 40, CsumOffset: 16}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Next(buf)
	if err != nil || n != len(q) {
		t.Fatalf("Next = %d, %v", n, err)
	}
	checkPacket(t, buf[:n])
	if n, _ := s.Next(buf); n != 0 {
		t.Fatal("a packet without GSO gave more than one segment")
	}
}

func TestSegmentRejects(t *testing.T) {
	good := tcpPacket(false, 1, 2, tcpFlagACK, nil, make([]byte, 3000))
	var s Segmenter
	for name, c := range map[string]struct {
		p []byte
		h Hdr
	}{
		"short":         {good[:10], Hdr{}},
		"version 5":     {append([]byte{0x55}, good[1:]...), Hdr{}},
		"v6 type on v4": {good, Hdr{Flags: 1, GSOType: GSOTCPv6, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}},
		"gso size 0":    {good, Hdr{Flags: 1, GSOType: GSOTCPv4, CsumStart: 20, CsumOffset: 16}},
		"csum beyond":   {good, Hdr{Flags: 1, CsumStart: 3030, CsumOffset: 16}},
		"csum in IP":    {good, Hdr{Flags: 1, GSOType: GSOTCPv4, GSOSize: 100, CsumStart: 8, CsumOffset: 16}},
		"UFO":           {good, Hdr{GSOType: GSOUDP, GSOSize: 100}},
	} {
		if err := s.Reset(c.p, c.h); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if n, _ := s.Next(make([]byte, 2048)); n != 0 {
			t.Errorf("%s: Next after a refused Reset gave %d bytes", name, n)
		}
	}
	// A segment larger than the buffer is an error, not a cut packet.
	if err := s.Reset(good, Hdr{Flags: 1, GSOType: GSOTCPv4, GSOSize: 1400, CsumStart: 20, CsumOffset: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(make([]byte, 1000)); err != ErrShortBuffer {
		t.Fatalf("small buffer: %v, want ErrShortBuffer", err)
	}
}

// joined returns the bytes of one Flush result after its header, and the header.
func joined(t *testing.T, parts [][]byte) (Hdr, []byte) {
	t.Helper()
	var h Hdr
	if err := h.Decode(parts[0]); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, p := range parts[1:] {
		b = append(b, p...)
	}
	return h, b
}

func TestCoalesceRoundTrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		c := NewCoalescer(64)
		var want [][]byte // segments as sent, per flow A
		seq := uint32(100)
		var in [][]byte
		for i := 0; i < 20; i++ {
			pay := bytes.Repeat([]byte{byte(i)}, 1000)
			flags := byte(tcpFlagACK)
			if i == 19 {
				flags |= tcpFlagPSH
			}
			p := tcpPacket(v6, seq, 9, flags, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, pay)
			seq += 1000
			want = append(want, bytes.Clone(p))
			in = append(in, p)
		}
		// A non-TCP packet and a SYN in the middle pass alone.
		udp := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, protoUDP}
		udp = append(udp, make([]byte, 18)...)
		for _, p := range in[:10] {
			c.Add(p)
		}
		c.Add(udp)
		for _, p := range in[10:] {
			c.Add(p)
		}
		out := c.Flush()
		if len(out) != 2 {
			t.Fatalf("v6=%v: %d packets out, want 2 (one super-packet, one UDP)", v6, len(out))
		}
		h, super := joined(t, out[0])
		l4 := 20
		if v6 {
			l4 = 40
		}
		if h.GSOType != map[bool]uint8{false: GSOTCPv4, true: GSOTCPv6}[v6] || h.GSOSize != 1000 || int(h.CsumStart) != l4 || h.CsumOffset != 16 || h.Flags != FlagNeedsCsum || int(h.HdrLen) != l4+32 {
			t.Fatalf("header %+v", h)
		}
		if len(super) != l4+32+20000 {
			t.Fatalf("super-packet %d bytes", len(super))
		}
		// The checksum field is the kernel's partial: completing it over
		// the whole super-packet (what skb_checksum_help does) gives a
		// correct checksum.
		var s Segmenter
		if err := s.Reset(super, Hdr{Flags: FlagNeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}); err != nil {
			t.Fatal(err)
		}
		whole := make([]byte, 70000)
		if n, err := s.Next(whole); err != nil || n != len(super) {
			t.Fatalf("complete the partial checksum: %d, %v", n, err)
		} else {
			checkPacket(t, whole[:n])
		}
		// What the kernel would do with it: segment it back.
		if err := s.Reset(super, h); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			n, err := s.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				if i != 20 {
					t.Fatalf("%d segments back, want 20", i)
				}
				break
			}
			w := want[i]
			if !v6 { // the IPv4 ID is the head's plus i, as GSO makes it
				binary.BigEndian.PutUint16(w[4:], 0x1234+uint16(i))
				ipv4HeaderChecksum(w[:20])
			}
			if !bytes.Equal(buf[:n], w) {
				t.Fatalf("v6=%v segment %d differs from the one coalesced", v6, i)
			}
		}
		h2, u := joined(t, out[1])
		if h2 != (Hdr{}) || !bytes.Equal(u, udp) {
			t.Fatal("the UDP packet did not pass unchanged behind a zero header")
		}
	}
}

func TestCoalesceKeepsApart(t *testing.T) {
	pay := make([]byte, 1000)
	a1 := tcpPacket(false, 1, 9, tcpFlagACK, nil, pay)
	bad := tcpPacket(false, 1001, 9, tcpFlagACK, nil, pay)
	bad[len(bad)-1] ^= 1 // corrupt payload: checksum now wrong
	c := NewCoalescer(8)
	c.Add(a1)
	c.Add(bad)
	if out := c.Flush(); len(out) != 2 {
		t.Fatalf("a segment with a bad checksum was merged (%d packets out)", len(out))
	}
	// Gap in sequence, other ACK, other flow, shorter then longer.
	cases := map[string][]byte{
		"gap":       tcpPacket(false, 2001, 9, tcpFlagACK, nil, pay),
		"other ack": tcpPacket(false, 1001, 10, tcpFlagACK, nil, pay),
		"FIN":       tcpPacket(false, 1001, 9, tcpFlagACK|tcpFlagFIN, nil, pay),
		"longer":    tcpPacket(false, 1001, 9, tcpFlagACK, nil, make([]byte, 1001)),
	}
	for name, p := range cases {
		c.Add(a1)
		c.Add(p)
		if out := c.Flush(); len(out) != 2 {
			t.Errorf("%s: merged", name)
		}
	}
	// After a short segment the super-packet is closed.
	c.Add(a1)
	c.Add(tcpPacket(false, 1001, 9, tcpFlagACK, nil, make([]byte, 500)))
	c.Add(tcpPacket(false, 1501, 9, tcpFlagACK, nil, make([]byte, 500)))
	if out := c.Flush(); len(out) != 2 || len(out[0]) != 3 {
		t.Errorf("short segment: %d packets out", len(out))
	}
	// A pure ACK of the flow between two segments stops the merge, so
	// nothing is reordered.
	c.Add(a1)
	c.Add(tcpPacket(false, 1001, 9, tcpFlagACK, nil, nil))
	c.Add(tcpPacket(false, 1001, 9, tcpFlagACK, nil, pay))
	if out := c.Flush(); len(out) != 3 {
		t.Errorf("pure ACK in between: %d packets out, want 3", len(out))
	}
	// Full batch: Add refuses.
	for i := 0; i < 8; i++ {
		if !c.Add(tcpPacket(false, uint32(i), 9, tcpFlagACK|tcpFlagFIN, nil, pay)) {
			t.Fatal("refused before the batch was full")
		}
	}
	if c.Add(a1) {
		t.Fatal("accepted past the batch size")
	}
}

func TestNoAllocations(t *testing.T) {
	pay := make([]byte, 1000)
	var pkts [][]byte
	for i := 0; i < 32; i++ {
		pkts = append(pkts, tcpPacket(false, 1+uint32(i)*1000, 9, tcpFlagACK, nil, pay))
	}
	c := NewCoalescer(64)
	if n := testing.AllocsPerRun(100, func() {
		for _, p := range pkts {
			c.Add(p)
		}
		c.Flush()
	}); n != 0 {
		t.Errorf("Coalescer: %v allocations per batch", n)
	}
	super := tcpPacket(true, 1, 2, tcpFlagACK, nil, make([]byte, 60000))
	h := Hdr{Flags: 1, GSOType: GSOTCPv6, GSOSize: 1400, CsumStart: 40, CsumOffset: 16}
	var s Segmenter
	buf := make([]byte, 2048)
	if n := testing.AllocsPerRun(100, func() {
		s.Reset(super, h)
		for {
			if n, _ := s.Next(buf); n == 0 {
				break
			}
		}
	}); n != 0 {
		t.Errorf("Segmenter: %v allocations per super-packet", n)
	}
}

func BenchmarkSegment64K(b *testing.B) {
	super := tcpPacket(false, 1, 2, tcpFlagACK, nil, make([]byte, 65535-40))
	h := Hdr{Flags: 1, GSOType: GSOTCPv4, GSOSize: 1391, CsumStart: 20, CsumOffset: 16}
	var s Segmenter
	buf := make([]byte, 2048)
	segs := 0
	for b.Loop() {
		s.Reset(super, h)
		for {
			n, _ := s.Next(buf)
			if n == 0 {
				break
			}
			segs++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(segs), "ns/segment")
}

func BenchmarkChecksum1400(b *testing.B) {
	buf := make([]byte, 1400)
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sum(buf, 0)
	}
}

// udpPacket builds an IPv4 or IPv6 UDP datagram with correct checksums.
func udpPacket(v6 bool, payload []byte) []byte {
	l4 := 20
	if v6 {
		l4 = 40
	}
	p := make([]byte, l4+8+len(payload))
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = protoUDP, 64
		s, d := src6.As16(), dst6.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		p[8], p[9] = 64, protoUDP
		s, d := src4.As4(), dst4.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		ipv4HeaderChecksum(p[:20])
	}
	u := p[l4:]
	binary.BigEndian.PutUint16(u[0:], 4000)
	binary.BigEndian.PutUint16(u[2:], 9)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	c := ^fold(sum(u, pseudo(p, protoUDP, len(u))))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return p
}

func TestCoalesceUDPRoundTrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		c := NewCoalescer(64)
		var want [][]byte
		for i := 0; i < 10; i++ {
			n := 500
			if i == 9 {
				n = 123 // the last may be shorter
			}
			p := udpPacket(v6, bytes.Repeat([]byte{byte(i + 1)}, n))
			want = append(want, bytes.Clone(p))
			c.Add(p)
		}
		c.Add(udpPacket(v6, make([]byte, 500))) // after a short one: a new packet
		out := c.Flush()
		if len(out) != 2 {
			t.Fatalf("v6=%v: %d packets out, want 2", v6, len(out))
		}
		h, super := joined(t, out[0])
		l4 := 20
		if v6 {
			l4 = 40
		}
		if h.GSOType != GSOUDPL4 || h.GSOSize != 500 || int(h.CsumStart) != l4 || h.CsumOffset != 6 || int(h.HdrLen) != l4+8 {
			t.Fatalf("header %+v", h)
		}
		var s Segmenter
		if err := s.Reset(super, Hdr{Flags: FlagNeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}); err != nil {
			t.Fatal(err)
		}
		whole := make([]byte, 70000)
		n, err := s.Next(whole)
		if err != nil {
			t.Fatal(err)
		}
		checkPacket(t, whole[:n]) // the partial checksum completes correctly
		if err := s.Reset(super, h); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			n, err := s.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				if i != 10 {
					t.Fatalf("%d datagrams back, want 10", i)
				}
				break
			}
			w := want[i]
			if !v6 {
				binary.BigEndian.PutUint16(w[4:], 0x1234+uint16(i))
				ipv4HeaderChecksum(w[:20])
			}
			if !bytes.Equal(buf[:n], w) {
				t.Fatalf("v6=%v datagram %d differs", v6, i)
			}
		}
	}
	// A datagram with a bad checksum, or another size first, is not merged.
	c := NewCoalescer(8)
	a := udpPacket(false, make([]byte, 100))
	bad := udpPacket(false, make([]byte, 100))
	bad[len(bad)-1] ^= 1
	c.Add(a)
	c.Add(bad)
	if out := c.Flush(); len(out) != 2 {
		t.Fatal("a datagram with a bad checksum was merged")
	}
	c.Add(a)
	c.Add(udpPacket(false, make([]byte, 101)))
	if out := c.Flush(); len(out) != 2 {
		t.Fatal("a longer datagram was merged")
	}
}
