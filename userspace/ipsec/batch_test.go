package ipsec

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// batchShapes are the SA shapes the batch tests run: every algorithm in
// tunnel mode, plus transport ESP, UDP-encapsulated ESP and AH, each with
// and without ESN; limited adds packet/byte lifetimes (the batch then
// counts per packet).
func batchShapes() []struct {
	name string
	p    SAParams
} {
	var out []struct {
		name string
		p    SAParams
	}
	add := func(name string, p SAParams) {
		for _, esn := range []bool{false, true} {
			q := p
			q.ESN, q.ReplayWindow = esn, 64
			if esn {
				// Start three below 2^32 so that every batch crosses the
				// ESN wrap.
				q.OutSeq, q.InSeq = 1<<32-3, 1<<32-3
			}
			out = append(out, struct {
				name string
				p    SAParams
			}{fmt.Sprintf("%s/esn=%v", name, esn), q})
		}
	}
	base := SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x6006, Src: addr4a, Dst: addr4b}
	for _, c := range algCases() {
		p := base
		p.AEAD, p.Enc, p.Auth = c.aead, c.enc, c.auth
		add(c.name, p)
	}
	p := gcmParams()
	p.Mode = ModeTransport
	add("transport-gcm", p)
	p = gcmParams()
	p.EncapSrcPort, p.EncapDstPort = 4500, 4500
	add("udp-gcm", p)
	p = gcmParams()
	p.Lifetime = Lifetime{SoftPackets: 5, HardPackets: 9}
	add("limited-gcm", p)
	p = SAParams{Proto: ProtoAH, Mode: ModeTunnel, SPI: 0x6007, Src: addr4a, Dst: addr4b,
		Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 5), ICVBits: 128}}
	add("ah-sha256", p)
	return out
}

// TestEncryptBatchMatchesSingle: EncryptBatch gives, packet for packet, the
// errors, bounds, bytes and sequence numbers of EncryptWith called once per
// packet, with malformed packets and a sequence space that runs out inside
// the batch.
func TestEncryptBatchMatchesSingle(t *testing.T) {
	sc := NewScratch()
	for _, sh := range batchShapes() {
		for _, exhaust := range []bool{false, true} {
			p := sh.p
			if exhaust {
				// Room for 4 more numbers: the batch runs out in its middle.
				p.OutSeq = 1<<32 - 5
				if p.ESN {
					p.OutSeq = 1<<64 - 5
				}
			}
			single, batch := newPair(t, p)
			sameIVs(single, batch)
			var pkts []Packet
			var want []Packet
			var wantErr []error
			for i := 0; i < 11; i++ {
				pkt := udpPacket(i%3 == 1 && p.Mode == ModeTunnel, 20+i*37)
				if i == 2 {
					pkt[0] = 0x35 // not IP: ErrBadPacket in the middle of the batch
				}
				f1, f2 := frameWith(pkt), frameWith(pkt)
				off, n, err := single.EncryptWith(sc, f1, testHead, len(pkt))
				if err != nil {
					off, n = testHead, len(pkt)
				}
				want = append(want, Packet{f1, off, n})
				wantErr = append(wantErr, err)
				pkts = append(pkts, Packet{f2, testHead, len(pkt)})
			}
			if p.Lifetime.HardPackets != 0 && wantErr[10] == nil {
				t.Fatalf("%s: the limited shape should reach its hard limit in the batch", sh.name)
			}
			errs := make([]error, len(pkts))
			done := batch.EncryptBatch(sc, pkts, errs)
			nOK := 0
			for i := range pkts {
				if (errs[i] == nil) != (wantErr[i] == nil) || (errs[i] != nil && errs[i].Error() != wantErr[i].Error()) {
					t.Fatalf("%s exhaust=%v packet %d: batch error %v, single %v", sh.name, exhaust, i, errs[i], wantErr[i])
				}
				if errs[i] == nil {
					nOK++
				}
				if pkts[i].Off != want[i].Off || pkts[i].N != want[i].N {
					t.Fatalf("%s packet %d: batch bounds [%d:+%d], single [%d:+%d]", sh.name, i, pkts[i].Off, pkts[i].N, want[i].Off, want[i].N)
				}
				// Both SAs have the same IV generators (sameIVs), CBC's too.
				if !bytes.Equal(pkts[i].Frame, want[i].Frame) {
					t.Fatalf("%s packet %d: batch and single frames differ", sh.name, i)
				}
			}
			if done != nOK {
				t.Fatalf("%s: EncryptBatch returned %d, %d packets have no error", sh.name, done, nOK)
			}
			if exhaust && !errors.Is(errs[10], ErrSeqOverflow) {
				t.Fatalf("%s: expected the last packet to hit ErrSeqOverflow, got %v", sh.name, errs[10])
			}
			if single.NextSeq() != batch.NextSeq() || single.Stats() != batch.Stats() ||
				single.SoftExpired() != batch.SoftExpired() || single.HardExpired() != batch.HardExpired() {
				t.Fatalf("%s: state differs: next seq %d/%d, stats %+v/%+v", sh.name,
					single.NextSeq(), batch.NextSeq(), single.Stats(), batch.Stats())
			}
		}
	}
}

// TestDecryptBatchMatchesSingle: DecryptBatch gives, packet for packet,
// the Results and decapsulated bytes of DecryptWith called once per packet
// in the same order, for a batch with duplicates of packets accepted
// earlier in the same batch, a forged copy of a packet that comes later, a
// jump far ahead (everything older is then out of the window), sequence
// number 0, a malformed packet and, with ESN, the 2^32 wrap.
func TestDecryptBatchMatchesSingle(t *testing.T) {
	sc := NewScratch()
	for _, sh := range batchShapes() {
		txp := sh.p
		txp.Lifetime = Lifetime{} // the senders must not run out
		tx, err := NewSA(txp)
		if err != nil {
			t.Fatal(err)
		}
		jp := txp
		jp.OutSeq += 1000 // same keys, far ahead
		txJump, err := NewSA(jp)
		if err != nil {
			t.Fatal(err)
		}
		zp := txp
		zp.OutSeq = 0
		if zp.ESN {
			zp.OutSeq = 1<<32 - 1 // next is 2^32: seq_lo 0
		}
		txZero, err := NewSA(zp)
		if err != nil {
			t.Fatal(err)
		}
		seal := func(sa *SA, i int) []byte {
			pkt := udpPacket(i%2 == 1 && sa.p.Mode == ModeTunnel, 30+i*29)
			f := frameWith(pkt)
			off, n, err := sa.Encrypt(f, testHead, len(pkt))
			if err != nil {
				t.Fatalf("%s: %v", sh.name, err)
			}
			return f[off : off+n]
		}
		var c []([]byte)
		for i := 0; i < 6; i++ {
			c = append(c, seal(tx, i))
		}
		forged := append([]byte(nil), c[4]...)
		forged[len(forged)-1] ^= 1
		zero := seal(txZero, 0)
		jump := seal(txJump, 7)
		if !sh.p.ESN {
			// No sender makes sequence number 0: patch a copy of c[0].
			zero = append([]byte(nil), c[0]...)
			var o Outer
			if ParseOuter(zero, sh.p.EncapDstPort, &o) != VerdictOK {
				t.Fatalf("%s: cannot parse our own packet", sh.name)
			}
			seqAt := o.Off + 4
			if sh.p.Proto == ProtoAH {
				seqAt = o.Off + 8
			}
			copy(zero[seqAt:seqAt+4], []byte{0, 0, 0, 0})
		}
		in := [][]byte{c[0], c[1], c[1], forged, c[3], c[2], c[4], c[0], c[5], {0x45, 0}, zero, jump, c[5], seal(txJump, 8), jump}
		// A 70-packet tail runs past BatchMax: the second run must see the
		// first run's window.
		for i := 9; i < 79; i++ {
			in = append(in, seal(txJump, i%13))
			if i%10 == 0 {
				in = append(in, in[len(in)-3])
			}
		}
		single, err := NewSA(sh.p)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := NewSA(sh.p)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]Result, len(in))
		wantFrames := make([][]byte, len(in))
		pkts := make([]Packet, len(in))
		for i, e := range in {
			f := frameWith(e)
			want[i] = single.DecryptWith(sc, f, testHead, len(e))
			wantFrames[i] = f
			pkts[i] = Packet{frameWith(e), testHead, len(e)}
		}
		res := make([]Result, len(in))
		batch.DecryptBatch(sc, pkts, res)
		seen := map[Verdict]int{}
		for i := range in {
			seen[want[i].Verdict]++
			if res[i] != want[i] {
				t.Fatalf("%s packet %d: batch %+v, single %+v", sh.name, i, res[i], want[i])
			}
			if r := res[i]; r.Verdict == VerdictOK && !bytes.Equal(pkts[i].Frame[r.Off:r.Off+r.N], wantFrames[i][r.Off:r.Off+r.N]) {
				t.Fatalf("%s packet %d: batch and single inner packets differ", sh.name, i)
			}
		}
		for _, v := range []Verdict{VerdictOK, VerdictReplay, VerdictBadICV, VerdictMalformed} {
			if seen[v] == 0 && !(v == VerdictBadICV && sh.p.Auth.Name == "" && sh.p.AEAD.Name == "") {
				t.Fatalf("%s: the batch never produced %v (%v): the test lost its edge cases", sh.name, v, seen)
			}
		}
		if !sh.p.ESN && seen[VerdictBadSeq] == 0 {
			t.Fatalf("%s: sequence number 0 was not reported as bad-seq (%v)", sh.name, seen)
		}
		if single.Window().Top() != batch.Window().Top() || single.Stats() != batch.Stats() ||
			single.HardExpired() != batch.HardExpired() {
			t.Fatalf("%s: state differs: top %d/%d, stats %+v/%+v", sh.name,
				single.Window().Top(), batch.Window().Top(), single.Stats(), batch.Stats())
		}

		// The parsed variant gives the same answers.
		parsed, err := NewSA(sh.p)
		if err != nil {
			t.Fatal(err)
		}
		var pp []Packet
		var outers []Outer
		var idx []int
		for i, e := range in {
			var o Outer
			if ParseOuter(e, sh.p.EncapDstPort, &o) != VerdictOK {
				continue
			}
			pp = append(pp, Packet{frameWith(e), testHead, len(e)})
			outers = append(outers, o)
			idx = append(idx, i)
		}
		pres := make([]Result, len(pp))
		parsed.DecryptParsedBatch(sc, pp, outers, pres)
		for j, i := range idx {
			if pres[j] != want[i] {
				t.Fatalf("%s packet %d: parsed batch %+v, single %+v", sh.name, i, pres[j], want[i])
			}
		}
	}
}

// TestBatchZeroAllocs: both batch entry points allocate nothing, with a
// Scratch and with the pool, for an AEAD SA and a keyed (CBC+HMAC) one.
func TestBatchZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	cbc := gcmParams()
	cbc.AEAD = AlgorithmKey{}
	cbc.Enc = AlgorithmKey{Name: "cbc(aes)", Key: key(16, 1)}
	cbc.Auth = AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 1), ICVBits: 128}
	for _, p := range []SAParams{gcmParams(), cbc} {
		for _, sc := range []*Scratch{nil, NewScratch()} {
			tx, rx := newPair(t, p)
			pkt := udpPacket(false, 100)
			const n = 32
			frames := make([][]byte, n)
			pkts := make([]Packet, n)
			errs := make([]error, n)
			res := make([]Result, n)
			for i := range frames {
				frames[i] = frameWith(pkt)
			}
			allocs := testing.AllocsPerRun(50, func() {
				for i := range pkts {
					copy(frames[i][testHead:], pkt)
					pkts[i] = Packet{frames[i], testHead, len(pkt)}
				}
				if tx.EncryptBatch(sc, pkts, errs) != n {
					t.Fatal(errs[0])
				}
				rx.DecryptBatch(sc, pkts, res)
				if res[n-1].Verdict != VerdictOK {
					t.Fatal(res[n-1].Verdict)
				}
			})
			if allocs != 0 {
				t.Errorf("%s%s scratch=%v: %.1f allocations per batch", p.AEAD.Name, p.Enc.Name, sc != nil, allocs)
			}
		}
	}
}

// TestDecryptBatchConcurrent: two goroutines offer the same 300 packets of
// one SA, one with DecryptBatch in runs of 16, the other with DecryptWith
// one by one; every packet is accepted exactly once and the counters see
// each once (run with -race to check the window's publication).
func TestDecryptBatchConcurrent(t *testing.T) {
	p := gcmParams()
	p.ReplayWindow = 1024
	tx, rx := newPair(t, p)
	const n = 300
	var enc [][]byte
	for i := 0; i < n; i++ {
		pkt := udpPacket(false, 40)
		f := frameWith(pkt)
		off, l, err := tx.Encrypt(f, testHead, len(pkt))
		if err != nil {
			t.Fatal(err)
		}
		enc = append(enc, f[off:off+l])
	}
	var ok [2][n]bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := NewScratch()
		for i := range enc {
			f := frameWith(enc[i])
			ok[1][i] = rx.DecryptWith(sc, f, testHead, len(enc[i])).Verdict == VerdictOK
		}
	}()
	sc := NewScratch()
	pkts := make([]Packet, 16)
	res := make([]Result, 16)
	for start := 0; start < n; start += 16 {
		k := min(16, n-start)
		for j := 0; j < k; j++ {
			pkts[j] = Packet{frameWith(enc[start+j]), testHead, len(enc[start+j])}
		}
		rx.DecryptBatch(sc, pkts[:k], res[:k])
		for j := 0; j < k; j++ {
			if v := res[j].Verdict; v != VerdictOK && v != VerdictReplay {
				t.Fatalf("packet %d: %v", start+j, v)
			}
			ok[0][start+j] = res[j].Verdict == VerdictOK
		}
	}
	<-done
	for i := 0; i < n; i++ {
		if ok[0][i] == ok[1][i] {
			t.Fatalf("packet %d accepted by batch=%v and single=%v: must be exactly one", i, ok[0][i], ok[1][i])
		}
	}
	if st := rx.Stats(); st.Packets != n {
		t.Fatalf("counted %d packets, want %d", st.Packets, n)
	}
	if rx.Window().Top() != n {
		t.Fatalf("window top %d, want %d", rx.Window().Top(), n)
	}
}
