package ipsec

import (
	"bytes"
	"fmt"
	"testing"
)

// innerTC sets the TOS / traffic class of the IP packet p (fixing the IPv4
// checksum) and returns p.
func innerTC(p []byte, tc uint8) []byte {
	if p[0]>>4 == 4 {
		p[1] = tc
		ipv4Checksum(p[:20])
		return p
	}
	p[0] = p[0]&0xf0 | tc>>4
	p[1] = p[1]&0x0f | tc<<4
	return p
}

func tcOf(p []byte) uint8 { return innerTOS(p) }

// markOuterCE sets the ECN field of the outer header of the protected
// packet p to CE, as a congested router would (fixing the IPv4 checksum).
func markOuterCE(p []byte) {
	if p[0]>>4 == 4 {
		p[1] |= ecnCE
		ipv4Checksum(p[:20])
		return
	}
	p[1] |= ecnCE << 4
}

// TestTunnelECN: RFC 6040 / RFC 4301 §5.1.2 in tunnel mode, ESP and AH,
// every inner x outer family: the inner ECN is copied out, a CE mark the
// outer header picked up on the way reaches an ECN-capable inner packet
// (IPv4 checksum still valid, nothing else changed), a Not-ECT inner packet
// is left alone; flag noecn clears the outer ECN and propagates nothing,
// flag dont-encap-dscp clears the outer DSCP.
func TestTunnelECN(t *testing.T) {
	for _, proto := range []Proto{ProtoESP, ProtoAH} {
		for _, outer6 := range []bool{false, true} {
			for _, inner6 := range []bool{false, true} {
				for _, c := range []struct {
					name            string
					noECN, noDSCP   bool
					tc              uint8 // inner TOS / traffic class sent
					wantOut, wantIn uint8 // outer TC on the wire, inner TC after CE on the way
				}{
					{"ect0", false, false, 0xb8 | 2, 0xb8 | 2, 0xb8 | 3},
					{"ect1", false, false, 0x20 | 1, 0x20 | 1, 0x20 | 3},
					{"ce", false, false, 0x03, 0x03, 0x03},
					{"not-ect", false, false, 0xb8, 0xb8, 0xb8},
					{"noecn", true, false, 0xb8 | 2, 0xb8, 0xb8 | 2},
					{"dont-encap-dscp", false, true, 0xb8 | 2, 0x02, 0xb8 | 3},
				} {
					name := fmt.Sprintf("%s/outer6=%v/inner6=%v/%s", proto, outer6, inner6, c.name)
					p := gcmParams()
					if proto == ProtoAH {
						p.AEAD, p.Auth = AlgorithmKey{}, AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 5), ICVBits: 128}
					}
					p.Proto, p.NoECN, p.NoEncapDSCP = proto, c.noECN, c.noDSCP
					if outer6 {
						p.Src, p.Dst = addr6a, addr6b
					}
					tx, rx := newPair(t, p)
					pkt := innerTC(udpPacket(inner6, 33), c.tc)
					enc := seal(t, tx, pkt)
					if got := tcOf(enc); got != c.wantOut {
						t.Fatalf("%s: outer TOS %#x, want %#x", name, got, c.wantOut)
					}
					markOuterCE(enc)
					f := frameWith(enc)
					r := rx.Decrypt(f, testHead, len(enc))
					if r.Verdict != VerdictOK {
						t.Fatalf("%s: %v", name, r.Verdict)
					}
					got := f[r.Off : r.Off+r.N]
					if tc := tcOf(got); tc != c.wantIn {
						t.Fatalf("%s: inner TOS %#x after CE on the way, want %#x", name, tc, c.wantIn)
					}
					if !inner6 && fold(sum16(got[:20], 0)) != 0xffff {
						t.Fatalf("%s: inner IPv4 checksum wrong after the CE mark", name)
					}
					want := innerTC(append([]byte(nil), pkt...), c.wantIn)
					if !bytes.Equal(got, want) {
						t.Fatalf("%s: inner packet\n got %x\nwant %x", name, got, want)
					}
				}
			}
		}
	}
}
