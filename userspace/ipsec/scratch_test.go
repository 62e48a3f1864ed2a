package ipsec

import (
	"bytes"
	"testing"
)

// TestScratchMatchesPool: for every algorithm, the Scratch entry points
// produce what the pooled ones do. AEAD/CTR/GMAC IVs are the sequence
// number, so the two ways of encrypting must give identical bytes; every
// packet must decrypt both ways to the same Result, and one Scratch is
// shared by all the SAs in turn, as an engine worker shares it.
func TestScratchMatchesPool(t *testing.T) {
	sc := NewScratch()
	for _, c := range algCases() {
		for _, esn := range []bool{false, true} {
			p := SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x5005, Src: addr4a, Dst: addr4b,
				AEAD: c.aead, Enc: c.enc, Auth: c.auth, ESN: esn, OutSeq: 0xffff_fffe * uint64(b2i(esn)), ReplayWindow: 64}
			if esn {
				p.InSeq = p.OutSeq
			}
			txPool, rxPool := newPair(t, p)
			txScr, rxScr := newPair(t, p)
			sameIVs(txPool, txScr)
			for i, size := range []int{20, 61, 64, 333, 1400} {
				pkt := udpPacket(i%2 == 1, size)
				fp, fs := frameWith(pkt), frameWith(pkt)
				op, np, err := txPool.Encrypt(fp, testHead, len(pkt))
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				os, ns, err := txScr.EncryptWith(sc, fs, testHead, len(pkt))
				if err != nil {
					t.Fatalf("%s scratch: %v", c.name, err)
				}
				if op != os || np != ns {
					t.Fatalf("%s: pool gave [%d:+%d], scratch [%d:+%d]", c.name, op, np, os, ns)
				}
				if !bytes.Equal(fp[op:op+np], fs[os:os+ns]) { // same IV generators (sameIVs)
					t.Fatalf("%s esn=%v: scratch and pool ciphertexts differ", c.name, esn)
				}
				rp := rxPool.Decrypt(fp, op, np)
				rs := rxScr.DecryptWith(sc, fs, os, ns)
				if rp.Verdict != VerdictOK || rp != rs {
					t.Fatalf("%s esn=%v size %d: pool %+v, scratch %+v", c.name, esn, size, rp, rs)
				}
				if !bytes.Equal(fs[rs.Off:rs.Off+rs.N], pkt) {
					t.Fatalf("%s: scratch decrypt lost the inner packet", c.name)
				}
			}
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sameIVs makes b generate the IVs a generates (same counter-mode offset,
// same CBC IV key), so that two SAs' outputs can be compared byte for byte.
func sameIVs(a, b *SA) {
	b.ivOffset, b.ivBlock = a.ivOffset, a.ivBlock
}
