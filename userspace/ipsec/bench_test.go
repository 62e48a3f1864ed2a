package ipsec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// benchPair times ours and raw in interleaved chunks of the same run (the
// machine is shared and noisy), each with its own clock: toggling b's timer
// would stop the world to read memory statistics. It reports ours-ns/op,
// raw-ns/op and their ratio x-raw; the benchmark's own ns/op is the sum of
// both, and allocs/op counts both (raw allocates nothing).
func benchPair(b *testing.B, bytes int, ours, raw func()) {
	const chunk = 256
	ours()
	raw()
	var oursDur, rawDur time.Duration
	b.SetBytes(int64(bytes))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		t0 := time.Now()
		for i := 0; i < n; i++ {
			raw()
		}
		t1 := time.Now()
		for i := 0; i < n; i++ {
			ours()
		}
		oursDur += time.Since(t1)
		rawDur += t1.Sub(t0)
	}
	oursNs := float64(oursDur.Nanoseconds()) / float64(b.N)
	rawNs := float64(rawDur.Nanoseconds()) / float64(b.N)
	b.ReportMetric(oursNs, "ours-ns/op")
	b.ReportMetric(rawNs, "raw-ns/op")
	b.ReportMetric(oursNs/rawNs, "x-raw")
}

type benchAlg struct {
	name string
	p    SAParams
	// raw returns seal and open doing the bare crypto of one ESP packet as
	// the SA does it, on buf: the n-byte payload (plaintext plus trailer,
	// already aligned) at buf[pre:], the pre bytes before it (ESP header
	// and IV) authenticated where the algorithm authenticates them, the
	// ICV after it. Same AAD/MAC input lengths, same in-place Seal/Open.
	raw func(b *testing.B) (pre int, seal, open func(buf []byte, n int))
}

func benchAlgs() []benchAlg {
	gcmKey, chachaKey := key(20, 1), key(36, 1)
	cbcKey, macKey := key(16, 2), key(32, 3)
	base := SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x7007, Src: addr4a, Dst: addr4b}
	// RFC 4106 / RFC 7634: AAD is SPI and sequence number (8 bytes), the
	// IV is not authenticated, payload sealed in place.
	aeadRaw := func(a cipher.AEAD, icv int) func(*testing.B) (int, func([]byte, int), func([]byte, int)) {
		return func(b *testing.B) (int, func([]byte, int), func([]byte, int)) {
			var nonce, aad [12]byte
			noncep, aadp := nonce[:], aad[:8]
			return 16, func(buf []byte, n int) {
					a.Seal(buf[16:16], noncep, buf[16:16+n], aadp)
				}, func(buf []byte, n int) {
					if _, err := a.Open(buf[16:16], noncep, buf[16:16+n+icv], aadp); err != nil {
						b.Fatal(err)
					}
				}
		}
	}
	blk, _ := aes.NewCipher(gcmKey[:16])
	gcm, _ := cipher.NewGCM(blk)
	cc, _ := chacha20poly1305.New(chachaKey[:32])
	cbcBlk, _ := aes.NewCipher(cbcKey)
	var algs []benchAlg
	p := base
	p.AEAD = AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: gcmKey, ICVBits: 128}
	algs = append(algs, benchAlg{"aes128gcm", p, aeadRaw(gcm, 16)})
	p = base
	p.AEAD = AlgorithmKey{Name: "rfc7539esp(chacha20,poly1305)", Key: chachaKey, ICVBits: 128}
	algs = append(algs, benchAlg{"chacha20poly1305", p, aeadRaw(cc, 16)})
	p = base
	p.AEAD = AlgorithmKey{Name: "rfc4543(gcm(aes))", Key: gcmKey, ICVBits: 128}
	// RFC 4543: the ESP header, IV and payload are all AAD.
	algs = append(algs, benchAlg{"aes128gmac", p, func(b *testing.B) (int, func([]byte, int), func([]byte, int)) {
		var nonce [12]byte
		noncep := nonce[:]
		return 16, func(buf []byte, n int) {
				gcm.Seal(buf[16+n:16+n], noncep, nil, buf[:16+n])
			}, func(buf []byte, n int) {
				if _, err := gcm.Open(buf[16+n:16+n], noncep, buf[16+n:16+n+16], buf[:16+n]); err != nil {
					b.Fatal(err)
				}
			}
	}})
	p = base
	p.Enc = AlgorithmKey{Name: "cbc(aes)", Key: cbcKey}
	p.Auth = AlgorithmKey{Name: "hmac(sha256)", Key: macKey, ICVBits: 128}
	// RFC 4303 with CBC (RFC 3602) and HMAC-SHA-256-128 (RFC 4868): the
	// ICV covers ESP header, IV and ciphertext.
	algs = append(algs, benchAlg{"aes128cbc-hmacsha256", p, func(b *testing.B) (int, func([]byte, int), func([]byte, int)) {
		iv := make([]byte, 16)
		enc := cipher.NewCBCEncrypter(cbcBlk, iv)
		dec := cipher.NewCBCDecrypter(cbcBlk, iv)
		mac := hmac.New(sha256.New, macKey)
		sum := make([]byte, 0, 32)
		return 24, func(buf []byte, n int) {
				enc.(ivSetter).SetIV(buf[8:24])
				enc.CryptBlocks(buf[24:24+n], buf[24:24+n])
				mac.Reset()
				mac.Write(buf[:24+n])
				copy(buf[24+n:], mac.Sum(sum[:0])[:16])
			}, func(buf []byte, n int) {
				mac.Reset()
				mac.Write(buf[:24+n])
				if !hmac.Equal(mac.Sum(sum[:0])[:16], buf[24+n:24+n+16]) {
					b.Fatal("raw HMAC mismatch")
				}
				dec.(ivSetter).SetIV(buf[8:24])
				dec.CryptBlocks(buf[24:24+n], buf[24:24+n])
			}
	}})
	return algs
}

// benchPaths are the two ways a caller hands the SA per-call memory: the
// SA's own pool (Encrypt, Decrypt) or a per-worker Scratch (EncryptWith,
// DecryptWith), which the engine uses.
var benchPaths = []string{"pool", "scratch"}

// BenchmarkEncrypt: SA.Encrypt of a whole IPv4 packet (tunnel mode: outer
// header, ESP header, IV, padding, trailer, ICV) against the raw cipher on
// the same-sized payload. Both sides re-copy the packet each iteration.
func BenchmarkEncrypt(b *testing.B) {
	for _, a := range benchAlgs() {
		for _, size := range []int{64, 1400} {
			for _, path := range benchPaths {
				b.Run(fmt.Sprintf("%s/%d/%s", a.name, size, path), func(b *testing.B) {
					sa := mustSA(b, a.p)
					pkt := udpPacket(false, size-28)
					frame := frameWith(pkt)
					pre, seal, _ := a.raw(b)
					// Raw payload: the packet plus the trailer, block-aligned.
					n := (len(pkt) + 2 + sa.blk - 1) / sa.blk * sa.blk
					rawBuf := make([]byte, pre+n+64)
					var sc *Scratch
					if path == "scratch" {
						sc = NewScratch()
					}
					benchPair(b, size, func() {
						copy(frame[testHead:], pkt)
						if _, _, err := sa.EncryptWith(sc, frame, testHead, len(pkt)); err != nil {
							b.Fatal(err)
						}
					}, func() {
						copy(rawBuf[pre:], pkt)
						seal(rawBuf, n)
					})
				})
			}
		}
	}
}

// BenchmarkDecrypt: SA.Decrypt (parse, replay check, verify+decrypt,
// padding check, decapsulation, lifetimes) against the raw open of the same
// payload. Both sides copy the whole encrypted packet back each iteration.
// The SA's replay window is off so that one packet can be replayed b.N
// times; the window's own cost is in package replay's benchmarks.
func BenchmarkDecrypt(b *testing.B) {
	for _, a := range benchAlgs() {
		for _, size := range []int{64, 1400} {
			for _, path := range benchPaths {
				b.Run(fmt.Sprintf("%s/%d/%s", a.name, size, path), func(b *testing.B) {
					sa := mustSA(b, a.p)
					pkt := udpPacket(false, size-28)
					frame := frameWith(pkt)
					off, n, err := sa.Encrypt(frame, testHead, len(pkt))
					if err != nil {
						b.Fatal(err)
					}
					enc := append([]byte(nil), frame[off:off+n]...)
					pre, seal, open := a.raw(b)
					rn := (len(pkt) + 2 + sa.blk - 1) / sa.blk * sa.blk
					rawBuf := make([]byte, max(pre+rn+16, len(enc)))
					copy(rawBuf[pre:], pkt)
					seal(rawBuf, rn)
					rawEnc := append([]byte(nil), rawBuf...)
					var sc *Scratch
					if path == "scratch" {
						sc = NewScratch()
					}
					benchPair(b, size, func() {
						copy(frame[testHead:], enc)
						if r := sa.DecryptWith(sc, frame, testHead, len(enc)); r.Verdict != VerdictOK {
							b.Fatal(r.Verdict)
						}
					}, func() {
						copy(rawBuf, rawEnc[:len(enc)])
						open(rawBuf, rn)
					})
				})
			}
		}
	}
}

// batchBench times, in rounds of BatchMax packets interleaved in one run,
// the batch entry point, the per-packet entry point with a Scratch and the
// raw primitive over the same packets. It reports ns per packet of each
// and the two ratios to raw: x-raw (batch) and x-raw-single.
type batchBench struct {
	batch, single, raw time.Duration
}

func (t *batchBench) report(b *testing.B, packets int) {
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(packets) }
	b.ReportMetric(per(t.batch), "batch-ns/pkt")
	b.ReportMetric(per(t.single), "single-ns/pkt")
	b.ReportMetric(per(t.raw), "raw-ns/pkt")
	b.ReportMetric(per(t.batch)/per(t.raw), "x-raw")
	b.ReportMetric(per(t.single)/per(t.raw), "x-raw-single")
}

// sink keeps BenchmarkBatch's cache-warming loads alive.
var sink byte

// BenchmarkBatch: EncryptBatch and DecryptBatch of BatchMax IPv4 packets
// of one SA (tunnel mode, each in its own 2048-byte frame), against
// EncryptWith/DecryptWith of the same packets one by one and the raw
// primitive on the same payloads at the same places of BatchMax frames of
// their own (see benchAlgs). Unlike
// BenchmarkDecrypt, the SAs' replay windows are on (1024 packets, as an
// engine runs them): the packets are 4096 distinct sequence numbers, and
// fresh receiving SAs are made, untimed, when they are used up. b.N counts
// packets. Every side copies its round of packets in first and then
// processes them, as a worker gets them from its rx ring: at 1400 B a
// round (90 KB) does not fit in L1, so all three read their packets from
// L2 alike.
func BenchmarkBatch(b *testing.B) {
	const k = BatchMax
	for _, a := range benchAlgs() {
		for _, size := range []int{64, 1400} {
			b.Run(fmt.Sprintf("encrypt/%s/%d", a.name, size), func(b *testing.B) {
				p := a.p
				sa := mustSA(b, p)
				pkt := udpPacket(false, size-28)
				pre, seal, _ := a.raw(b)
				n := (len(pkt) + 2 + sa.blk - 1) / sa.blk * sa.blk
				pkts := make([]Packet, k)
				frames := make([][]byte, k)
				raws := make([][]byte, k)
				for i := range frames {
					frames[i] = frameWith(pkt)
					// The raw payload sits where the SA's does, in a frame of
					// its own: same alignment, same cache footprint.
					raws[i] = make([]byte, 2048)[testHead-pre:]
				}
				errs := make([]error, k)
				sc := NewScratch()
				var t batchBench
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += k {
					t0 := time.Now()
					for i := range raws {
						copy(raws[i][pre:], pkt)
					}
					for i := range raws {
						seal(raws[i], n)
					}
					t1 := time.Now()
					for i := range pkts {
						copy(frames[i][testHead:], pkt)
						pkts[i] = Packet{frames[i], testHead, len(pkt)}
					}
					if sa.EncryptBatch(sc, pkts, errs) != k {
						b.Fatal(errs[0])
					}
					t2 := time.Now()
					for i := range frames {
						copy(frames[i][testHead:], pkt)
					}
					for i := range frames {
						if _, _, err := sa.EncryptWith(sc, frames[i], testHead, len(pkt)); err != nil {
							b.Fatal(err)
						}
					}
					t3 := time.Now()
					t.raw += t1.Sub(t0)
					t.batch += t2.Sub(t1)
					t.single += t3.Sub(t2)
				}
				t.report(b, (b.N+k-1)/k*k)
			})
			b.Run(fmt.Sprintf("decrypt/%s/%d", a.name, size), func(b *testing.B) {
				p := a.p
				p.ReplayWindow = 1024
				tx := mustSA(b, p)
				pkt := udpPacket(false, size-28)
				const pool = 4096
				enc := make([][]byte, pool)
				for i := range enc {
					f := frameWith(pkt)
					off, n, err := tx.Encrypt(f, testHead, len(pkt))
					if err != nil {
						b.Fatal(err)
					}
					enc[i] = f[off : off+n]
				}
				pre, seal, open := a.raw(b)
				rn := (len(pkt) + 2 + tx.blk - 1) / tx.blk * tx.blk
				rawEnc := make([]byte, max(pre+rn+16, len(enc[0])))
				copy(rawEnc[pre:], pkt)
				seal(rawEnc, rn)
				raws := make([][]byte, k)
				frames := make([][]byte, k)
				for i := range raws {
					raws[i] = make([]byte, 2048)[testHead+20-pre:][:len(rawEnc)]
					frames[i] = make([]byte, 2048)
				}
				pkts := make([]Packet, k)
				res := make([]Result, k)
				sc := NewScratch()
				var rxBatch, rxSingle *SA
				next := pool
				var t batchBench
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += k {
					if next == pool {
						rxBatch, rxSingle, next = mustSA(b, p), mustSA(b, p), 0
					}
					round := enc[next : next+k]
					next += k
					// Untimed: bring the round's packets (4096 of them do not
					// fit in L2) into the cache, so that the side that reads
					// them first does not pay for the others.
					for _, e := range round {
						for i := 0; i < len(e); i += 64 {
							sink += e[i]
						}
					}
					t0 := time.Now()
					for i := range raws {
						copy(raws[i], rawEnc)
					}
					for i := range raws {
						open(raws[i], rn)
					}
					t1 := time.Now()
					for i := range pkts {
						copy(frames[i][testHead:], round[i])
						pkts[i] = Packet{frames[i], testHead, len(round[i])}
					}
					rxBatch.DecryptBatch(sc, pkts, res)
					t2 := time.Now()
					for i := range frames {
						copy(frames[i][testHead:], round[i])
					}
					for i := range frames {
						if r := rxSingle.DecryptWith(sc, frames[i], testHead, len(round[i])); r.Verdict != VerdictOK {
							b.Fatal(r.Verdict)
						}
					}
					t3 := time.Now()
					for i := range res {
						if res[i].Verdict != VerdictOK {
							b.Fatal(res[i].Verdict)
						}
					}
					t.raw += t1.Sub(t0)
					t.batch += t2.Sub(t1)
					t.single += t3.Sub(t2)
				}
				t.report(b, (b.N+k-1)/k*k)
			})
		}
	}
}
