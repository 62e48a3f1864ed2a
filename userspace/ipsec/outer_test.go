package ipsec

import (
	"encoding/binary"
	"testing"
)

// TestOuterHeaderTemplate checks the tunnel-mode outer headers Encrypt
// builds from the SA's template against a from-scratch computation: IPv4
// checksum (RFC 1071, verified by summing the header to 0xffff), length,
// ID, TOS copied from the inner packet, TTL and protocol; IPv6 traffic
// class, payload length, next header and hop limit. Sequence numbers and
// TOS values are chosen so that the checksum's end-around carry is used.
func TestOuterHeaderTemplate(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			p := gcmParams()
			p.Mode, p.TTL = ModeTunnel, 17
			p.OutSeq = 0xfffe_fff0
			if v6 {
				p.Src, p.Dst = addr6a, addr6b
			}
			if udp {
				p.EncapSrcPort, p.EncapDstPort = 4500, 4500
			}
			sa := mustSA(t, p)
			for i, tos := range []uint8{0, 0xb8, 0xff, 0x03} {
				pkt := udpPacket(false, 40+i*7)
				pkt[1] = tos
				ipv4Checksum(pkt[:20])
				f := frameWith(pkt)
				off, n, err := sa.Encrypt(f, testHead, len(pkt))
				if err != nil {
					t.Fatal(err)
				}
				h := f[off : off+n]
				wantProto := uint8(protoESP)
				if udp {
					wantProto = protoUDP
				}
				if !v6 {
					if got := fold(sum16(h[:20], 0)); got != 0xffff {
						t.Errorf("v4 udp=%v tos %#x: header sums to %#x, want 0xffff", udp, tos, got)
					}
					if h[0] != 0x45 || h[1] != tos || int(binary.BigEndian.Uint16(h[2:])) != n ||
						binary.BigEndian.Uint16(h[4:]) != uint16(sa.NextSeq()-1) || h[8] != 17 || h[9] != wantProto {
						t.Errorf("v4 udp=%v tos %#x: bad header % x", udp, tos, h[:20])
					}
					continue
				}
				w := binary.BigEndian.Uint32(h)
				if w>>28 != 6 || uint8(w>>20) != tos || int(binary.BigEndian.Uint16(h[4:])) != n-40 ||
					h[6] != wantProto || h[7] != 17 {
					t.Errorf("v6 udp=%v tos %#x: bad header % x", udp, tos, h[:40])
				}
			}
		}
	}
}
