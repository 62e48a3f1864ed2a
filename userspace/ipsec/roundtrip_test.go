package ipsec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

var (
	addr4a = netip.MustParseAddr("192.0.2.1")
	addr4b = netip.MustParseAddr("198.51.100.2")
	addr6a = netip.MustParseAddr("2001:db8::1")
	addr6b = netip.MustParseAddr("2001:db8:1::2")
)

// udpPacket builds an IPv4 or IPv6 UDP packet with payload of n bytes.
func udpPacket(v6 bool, n int) []byte {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i*7 + 3)
	}
	udp := make([]byte, 8+n)
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+n))
	copy(udp[8:], payload)
	if !v6 {
		h := make([]byte, 20)
		h[0], h[1] = 0x45, 0x28
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
		binary.BigEndian.PutUint16(h[4:], 0x1234)
		h[6], h[8], h[9] = 0x40, 63, protoUDP
		copy(h[12:], addr4a.AsSlice())
		copy(h[16:], addr4b.AsSlice())
		ipv4Checksum(h)
		return append(h, udp...)
	}
	h := make([]byte, 40)
	binary.BigEndian.PutUint32(h, 6<<28|0x28<<20|0xbeef)
	binary.BigEndian.PutUint16(h[4:], uint16(len(udp)))
	h[6], h[7] = protoUDP, 63
	copy(h[8:], addr6a.AsSlice())
	copy(h[24:], addr6b.AsSlice())
	return append(h, udp...)
}

// key returns n deterministic key bytes.
func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*13
	}
	return k
}

type algCase struct {
	name            string
	aead, enc, auth AlgorithmKey
}

// algCases returns one SA shape per algorithm and key size of the table
// (cipher algorithms paired with hmac(sha256), integrity algorithms with
// ecb(cipher_null)), plus the AEAD ICV sizes.
func algCases() []algCase {
	var cs []algCase
	sha := AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 9), ICVBits: 128}
	for _, a := range Algorithms {
		for _, ks := range a.KeySizes {
			switch a.Kind {
			case KindAEAD:
				for _, icv := range a.ICVSizes {
					cs = append(cs, algCase{name: fmt.Sprintf("%s/%d/icv%d", a.Name, ks*8, icv*8),
						aead: AlgorithmKey{Name: a.Name, Key: key(ks, 1), ICVBits: icv * 8}})
				}
			case KindCipher:
				cs = append(cs, algCase{name: fmt.Sprintf("%s/%d+hmac(sha256)", a.Name, ks*8),
					enc: AlgorithmKey{Name: a.Name, Key: key(ks, 2)}, auth: sha})
			case KindIntegrity:
				cs = append(cs, algCase{name: "ecb(cipher_null)+" + a.Name,
					enc:  AlgorithmKey{Name: "ecb(cipher_null)", Key: []byte{}},
					auth: AlgorithmKey{Name: a.Name, Key: key(ks, 3), ICVBits: a.ICVSizes[0] * 8}})
			}
		}
	}
	// Confidentiality-only ESP (no ICV), which XFRM allows, is refused
	// (TestNewSAErrors); the self-test still opens RFC 3602's packets.
	return cs
}

func newPair(t testing.TB, p SAParams) (tx, rx *SA) {
	t.Helper()
	tx, err := NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	rx, err = NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	return tx, rx
}

const testHead = 256

// frameWith puts pkt into a 2048-byte frame at testHead.
func frameWith(pkt []byte) []byte {
	f := make([]byte, 2048)
	copy(f[testHead:], pkt)
	return f
}

// roundTrip encrypts pkt with tx, decrypts with rx and checks the result.
func roundTrip(t *testing.T, tx, rx *SA, pkt []byte) Result {
	t.Helper()
	f := frameWith(pkt)
	off, n, err := tx.Encrypt(f, testHead, len(pkt))
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	enc := append([]byte(nil), f[off:off+n]...)
	var o Outer
	if v := ParseOuter(enc, tx.p.EncapDstPort, &o); v != VerdictOK {
		t.Fatalf("parse of our own output: %v", v)
	}
	if o.SPI != tx.p.SPI || o.Proto != tx.p.Proto || o.UDP != tx.udp {
		t.Fatalf("parsed %+v", o)
	}
	g := frameWith(enc)
	r := rx.Decrypt(g, testHead, len(enc))
	if r.Verdict != VerdictOK {
		t.Fatalf("decrypt: verdict %v", r.Verdict)
	}
	got := g[r.Off : r.Off+r.N]
	if rx.p.Mode == ModeTunnel {
		if !bytes.Equal(got, pkt) {
			t.Fatalf("tunnel inner differs:\n got %x\nwant %x", got, pkt)
		}
	} else {
		want := append([]byte(nil), pkt...)
		if want[0]>>4 == 4 && rx.p.Proto == ProtoESP {
			// ESP transport keeps the header as is; AH restores it too.
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("transport packet differs:\n got %x\nwant %x", got, want)
		}
		l3 := 20
		if pkt[0]>>4 == 6 {
			l3 = 40
		}
		if !bytes.Equal(g[r.PayloadOff:r.PayloadOff+r.PayloadN], pkt[l3:]) {
			t.Fatal("transport payload differs")
		}
	}
	return r
}

func TestRoundTripESP(t *testing.T) {
	for _, c := range algCases() {
		for _, mode := range []Mode{ModeTransport, ModeTunnel} {
			for _, fam := range []struct {
				name       string
				outer6     bool
				inner6     bool
				encap      bool
				transport6 bool
			}{{"4", false, false, false, false}, {"6", true, true, false, false}, {"4in6", true, false, false, false},
				{"6in4", false, true, false, false}, {"4-udp", false, false, true, false}, {"6-udp", true, true, true, false}} {
				if mode == ModeTransport && fam.outer6 != fam.inner6 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/%s", c.name, mode, fam.name), func(t *testing.T) {
					p := SAParams{Proto: ProtoESP, Mode: mode, SPI: 0x1001, Src: addr4a, Dst: addr4b,
						AEAD: c.aead, Enc: c.enc, Auth: c.auth, ReplayWindow: 64}
					if fam.outer6 {
						p.Src, p.Dst = addr6a, addr6b
					}
					if fam.encap {
						p.EncapSrcPort, p.EncapDstPort = 4500, 4500
					}
					tx, rx := newPair(t, p)
					for _, size := range []int{0, 1, 2, 3, 13, 64, 1400} {
						r := roundTrip(t, tx, rx, udpPacket(fam.inner6, size))
						if r.NextHeader == 0 {
							t.Fatal("no next header")
						}
					}
				})
			}
		}
	}
}

func TestRoundTripAH(t *testing.T) {
	for _, a := range AlgorithmNames(KindIntegrity) {
		alg, _ := LookupAlgorithm(KindIntegrity, a)
		for _, mode := range []Mode{ModeTransport, ModeTunnel} {
			for _, v6 := range []bool{false, true} {
				for _, esn := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s/v6=%v/esn=%v", a, mode, v6, esn), func(t *testing.T) {
						p := SAParams{Proto: ProtoAH, Mode: mode, SPI: 0x2002, Src: addr4a, Dst: addr4b, ESN: esn,
							Auth: AlgorithmKey{Name: a, Key: key(alg.KeySizes[0], 5), ICVBits: alg.ICVSizes[0] * 8}, ReplayWindow: 32}
						if v6 {
							p.Src, p.Dst = addr6a, addr6b
						}
						tx, rx := newPair(t, p)
						for _, size := range []int{0, 7, 1400} {
							roundTrip(t, tx, rx, udpPacket(v6, size))
						}
					})
				}
			}
		}
	}
}
