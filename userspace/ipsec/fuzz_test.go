package ipsec

import (
	"testing"
)

// fuzzSeeds are real packets of each shape for the corpora.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	mk := func(p SAParams, v6 bool) {
		sa, err := NewSA(p)
		if err != nil {
			t.Fatal(err)
		}
		pkt := udpPacket(v6, 24)
		f := frameWith(pkt)
		off, n, err := sa.Encrypt(f, testHead, len(pkt))
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, append([]byte(nil), f[off:off+n]...))
	}
	g := gcmParams()
	mk(g, false)
	g.EncapSrcPort, g.EncapDstPort = 4500, 4500
	mk(g, false)
	g6 := gcmParams()
	g6.Src, g6.Dst = addr6a, addr6b
	mk(g6, true)
	mk(fuzzAH(false), false)
	mk(fuzzAH(true), true)
	seeds = append(seeds, natPacket(4500, []byte{0xff}), natPacket(4500, []byte{0, 0, 0, 0, 1}), udpPacket(true, 3))
	return seeds
}

func fuzzAH(v6 bool) SAParams {
	p := SAParams{Proto: ProtoAH, Mode: ModeTunnel, SPI: 0x3003, Src: addr4a, Dst: addr4b, ReplayWindow: 32,
		Auth: AlgorithmKey{Name: "hmac(sha1)", Key: key(20, 4), ICVBits: 96}}
	if v6 {
		p.Src, p.Dst = addr6a, addr6b
	}
	return p
}

func FuzzParseOuter(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var o Outer
		v := ParseOuter(pkt, 0, &o)
		if v == VerdictOK {
			if o.Off+8 > o.Len || o.Len > len(pkt) || o.L3Len > o.Off {
				t.Fatalf("inconsistent answer %+v for %d bytes", o, len(pkt))
			}
		}
	})
}

// FuzzDecrypt feeds arbitrary packets to ESP (plain and UDP) and AH SAs of
// both families. Nothing may panic, and nothing but an authentic payload may
// come out OK: the fuzzer cannot forge an ICV, so it may only change what the
// ICV does not cover (ESP's outer header and UDP header, AH's mutable
// fields), and every OK must yield one of the seeds' inner packets.
func FuzzDecrypt(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	var sas []*SA
	g := gcmParams()
	g.ReplayWindow = 0 // so a seed may pass more than once
	sas = append(sas, mustSA(f, g))
	g.EncapSrcPort, g.EncapDstPort = 4500, 4500
	sas = append(sas, mustSA(f, g))
	g6 := gcmParams()
	g6.ReplayWindow = 0
	g6.Src, g6.Dst = addr6a, addr6b
	sas = append(sas, mustSA(f, g6))
	for _, v6 := range []bool{false, true} {
		p := fuzzAH(v6)
		p.ReplayWindow = 0
		sas = append(sas, mustSA(f, p))
	}
	cbc := gcmParams()
	cbc.AEAD = AlgorithmKey{}
	cbc.Enc = AlgorithmKey{Name: "cbc(aes)", Key: key(16, 2)}
	cbc.Auth = AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 9), ICVBits: 128}
	sas = append(sas, mustSA(f, cbc))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		inner4, inner6 := string(udpPacket(false, 24)), string(udpPacket(true, 24))
		for _, sa := range sas {
			frame := make([]byte, len(pkt)+64)
			copy(frame[32:], pkt)
			var batch [2]Packet
			var res [2]Result
			for j := range batch {
				batch[j] = Packet{append([]byte(nil), frame...), 32, len(pkt)}
			}
			r := sa.Decrypt(frame, 32, len(pkt))
			// The same packet, twice, through DecryptBatch must get what
			// Decrypt says both times (the windows are off).
			sa.DecryptBatch(nil, batch[:], res[:])
			if res[0] != r || res[1] != r {
				t.Fatalf("SA %#x: Decrypt %+v, DecryptBatch %+v", sa.SPI(), r, res)
			}
			if r.Verdict == VerdictOK {
				if r.Off < 0 || r.Off+r.N > len(frame) || r.PayloadOff < r.Off || r.PayloadOff+r.PayloadN > r.Off+r.N {
					t.Fatalf("result out of bounds: %+v", r)
				}
				if got := string(frame[r.Off : r.Off+r.N]); got != inner4 && got != inner6 {
					t.Fatalf("forged payload accepted by SA %#x: %x", sa.SPI(), got)
				}
			}
		}
	})
}

func mustSA(t testing.TB, p SAParams) *SA {
	sa, err := NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}
