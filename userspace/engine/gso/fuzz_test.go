package gso

import (
	"encoding/binary"
	"testing"
)

// FuzzSegment feeds arbitrary headers and packets to the Segmenter: it must
// never panic, never write past the buffer, stop after a bounded number of
// segments, and every TCP/UDP segment of an accepted GSO packet must carry
// correct lengths and checksums.
func FuzzSegment(f *testing.F) {
	f.Add(uint8(1), uint8(GSOTCPv4), uint16(1000), uint16(20), uint16(16), tcpPacket(false, 1, 2, tcpFlagACK, nil, make([]byte, 2500)))
	f.Add(uint8(1), uint8(GSOTCPv6), uint16(700), uint16(40), uint16(16), tcpPacket(true, 1, 2, tcpFlagACK|tcpFlagFIN, nil, make([]byte, 2100)))
	f.Add(uint8(1), uint8(GSOUDPL4), uint16(100), uint16(20), uint16(6), make([]byte, 300))
	f.Add(uint8(1), uint8(GSONone), uint16(0), uint16(20), uint16(16), tcpPacket(false, 1, 2, tcpFlagACK, nil, []byte("x")))
	f.Fuzz(func(t *testing.T, flags, gt uint8, size, start, off uint16, pkt []byte) {
		h := Hdr{Flags: flags, GSOType: gt, GSOSize: size, CsumStart: start, CsumOffset: off}
		var s Segmenter
		if err := s.Reset(pkt, h); err != nil {
			return
		}
		buf := make([]byte, 1600)
		for i := 0; ; i++ {
			if i > len(pkt)+1 {
				t.Fatalf("more segments (%d) than packet bytes", i)
			}
			n, err := s.Next(buf)
			if err != nil || n == 0 {
				return
			}
			if n > len(buf) {
				t.Fatalf("segment of %d bytes in a %d-byte buffer", n, len(buf))
			}
			seg := buf[:n]
			if gt&^GSOECN != GSONone && pkt[0]>>4 == 4 && int(pkt[0]&0xf)*4 == int(start) {
				if int(binary.BigEndian.Uint16(seg[2:])) != n || Checksum(seg[:start]) != 0 {
					t.Fatalf("segment %d: IPv4 length/checksum wrong", i)
				}
				proto := uint8(protoTCP)
				if gt&^GSOECN == GSOUDPL4 {
					proto = protoUDP
				}
				if fold(sum(seg[start:], pseudo(seg, proto, n-int(start)))) != 0xffff {
					t.Fatalf("segment %d: L4 checksum wrong", i)
				}
			}
		}
	})
}

// FuzzCoalesce cuts arbitrary bytes into packets and coalesces them: no
// panic, and no byte lost or invented (the parts after each header add up
// to the input, less the headers of merged segments).
func FuzzCoalesce(f *testing.F) {
	p := tcpPacket(false, 1, 2, tcpFlagACK, nil, make([]byte, 100))
	q := tcpPacket(false, 101, 2, tcpFlagACK, nil, make([]byte, 100))
	f.Add(append(append([]byte{}, p...), q...), uint8(len(p)))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		c := NewCoalescer(16)
		var pkts [][]byte
		step := int(cut) + 1
		for len(data) > 0 && len(pkts) < 16 {
			n := min(step, len(data))
			pkts = append(pkts, data[:n])
			data = data[n:]
		}
		in := 0
		for _, p := range pkts {
			if !c.Add(p) {
				t.Fatal("Add refused within the batch size")
			}
			in += len(p)
		}
		out := c.Flush()
		got := 0
		for _, parts := range out {
			var h Hdr
			if err := h.Decode(parts[0]); err != nil {
				t.Fatal(err)
			}
			for _, b := range parts[1:] {
				got += len(b)
			}
			if len(parts) > 2 {
				got += (len(parts) - 2) * int(h.HdrLen) // merged segments' headers
			}
		}
		if got != in {
			t.Fatalf("%d bytes in, %d out", in, got)
		}
	})
}
