package ipsec

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

func nullSHA(p SAParams) SAParams {
	p.Enc = AlgorithmKey{Name: "ecb(cipher_null)"}
	p.Auth = AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 7), ICVBits: 128}
	return p
}

func gcmParams() SAParams {
	return SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x3003, Src: addr4a, Dst: addr4b, ReplayWindow: 32,
		AEAD: AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: key(20, 1), ICVBits: 128}}
}

// seal encrypts pkt and returns a copy of the protected packet.
func seal(t *testing.T, sa *SA, pkt []byte) []byte {
	t.Helper()
	f := frameWith(pkt)
	off, n, err := sa.Encrypt(f, testHead, len(pkt))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), f[off:off+n]...)
}

func open(sa *SA, pkt []byte) Result {
	f := frameWith(pkt)
	return sa.Decrypt(f, testHead, len(pkt))
}

// reMAC recomputes the HMAC ICV of an IPv4 ESP packet after a test edited it.
func reMAC(sa *SA, pkt []byte, seq uint64) {
	s := sa.getScratch()
	defer sa.putScratch(s)
	end := len(pkt) - sa.icvLen
	sa.mac(s, pkt[20:end], seq)
	copy(pkt[end:], s.sum[:sa.icvLen])
}

func TestVerdicts(t *testing.T) {
	p := nullSHA(SAParams{Proto: ProtoESP, Mode: ModeTransport, SPI: 0x4004, Src: addr4a, Dst: addr4b, ReplayWindow: 32})
	tx, rx := newPair(t, p)
	want := func(name string, r Result, v Verdict) {
		t.Helper()
		if r.Verdict != v {
			t.Fatalf("%s: verdict %v, want %v", name, r.Verdict, v)
		}
	}

	good := seal(t, tx, udpPacket(false, 20))
	bad := append([]byte(nil), good...)
	bad[30] ^= 1
	want("flipped payload bit", open(rx, bad), VerdictBadICV)
	bad = append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	want("flipped ICV bit", open(rx, bad), VerdictBadICV)
	// The forged packets did not move the window: the genuine one passes.
	want("genuine after forgeries", open(rx, good), VerdictOK)
	want("duplicate", open(rx, good), VerdictReplay)

	// Authentic packet with wrong padding content: bad-padding.
	pkt := seal(t, tx, udpPacket(false, 21)) // 29-byte payload: 1 pad byte
	end := len(pkt) - 16
	pkt[end-3] = 7 // the pad byte must be 1
	reMAC(rx, pkt, 2)
	want("pad content", open(rx, pkt), VerdictBadPadding)
	// Pad length beyond the payload.
	pkt = seal(t, tx, udpPacket(false, 21))
	pkt[len(pkt)-16-2] = 200
	reMAC(rx, pkt, 3)
	want("pad length", open(rx, pkt), VerdictBadPadding)

	// Sequence number 0, even with a valid ICV.
	pkt = seal(t, tx, udpPacket(false, 4))
	binary.BigEndian.PutUint32(pkt[24:], 0)
	reMAC(rx, pkt, 0)
	want("seq 0", open(rx, pkt), VerdictBadSeq)

	// Left of the window.
	tx.outSeq.Store(100)
	want("jump", open(rx, seal(t, tx, udpPacket(false, 4))), VerdictOK)
	tx.outSeq.Store(10)
	want("left of window", open(rx, seal(t, tx, udpPacket(false, 4))), VerdictReplay)

	// Next header 59: an authenticated dummy.
	d := udpPacket(false, 4)
	d[9] = protoNone
	ipv4Checksum(d[:20])
	tx.outSeq.Store(200)
	r := open(rx, seal(t, tx, d))
	want("next header 59", r, VerdictDummy)
	if r.Seq != 201 {
		t.Fatalf("dummy seq %d", r.Seq)
	}

	// Other SPI.
	other := nullSHA(p)
	other.SPI = 0x4005
	otx, _ := newPair(t, other)
	want("other SPI", open(rx, seal(t, otx, udpPacket(false, 4))), VerdictNoState)

	// Truncated and inconsistent packets.
	good = seal(t, tx, udpPacket(false, 40))
	want("truncated", open(rx, good[:len(good)-5]), VerdictMalformed)
	short := append([]byte(nil), good[:20+8+3]...)
	binary.BigEndian.PutUint16(short[2:], uint16(len(short)))
	want("ESP shorter than its ICV", open(rx, short), VerdictMalformed)

	// Fragment.
	frag := append([]byte(nil), good...)
	frag[6] |= 0x20
	want("fragment", open(rx, frag), VerdictFragment)

	// Plain UDP is not IPsec.
	want("plain UDP", open(rx, udpPacket(false, 10)), VerdictNotIPsec)
}

func natPacket(dport uint16, payload []byte) []byte {
	p := udpPacket(false, len(payload))
	binary.BigEndian.PutUint16(p[22:], dport)
	copy(p[28:], payload)
	return p
}

func TestNATTVerdicts(t *testing.T) {
	p := gcmParams()
	p.EncapSrcPort, p.EncapDstPort = 4500, 4500
	_, rx := newPair(t, p)
	for _, c := range []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"keepalive", natPacket(4500, []byte{0xff}), VerdictNATKeepalive},
		{"non-ESP marker", natPacket(4500, []byte{0, 0, 0, 0, 1, 2, 3, 4, 5}), VerdictIKE},
		{"IKE port 500", natPacket(500, []byte{1, 2, 3, 4, 5, 6, 7, 8}), VerdictIKE},
		// The kernel's rule (xfrm4_udp_encap_rcv), which the XDP program
		// follows too: 8 bytes or less, other than a keepalive, is IKE.
		{"5 bytes", natPacket(4500, []byte{1, 2, 3, 4, 5}), VerdictIKE},
		{"0xff and more", natPacket(4500, []byte{0xff, 0}), VerdictIKE},
		{"ESP header alone", natPacket(4500, []byte{0, 0, 0x10, 1, 0, 0, 0, 1}), VerdictIKE},
		{"empty", natPacket(4500, nil), VerdictIKE},
		{"ESP header and 1 byte is ESP", natPacket(4500, []byte{0, 0, 0x10, 1, 0, 0, 0, 1, 0}), VerdictNoState},
		{"other port", natPacket(53, []byte{1, 2, 3, 4, 5, 6, 7, 8}), VerdictNotIPsec},
	} {
		if r := open(rx, c.pkt); r.Verdict != c.want {
			t.Errorf("%s: verdict %v, want %v", c.name, r.Verdict, c.want)
		}
	}
	// Any UDP checksum is accepted on receive (RFC 3948 §3.1.2).
	tx, rx := newPair(t, p)
	pkt := seal(t, tx, udpPacket(false, 30))
	if binary.BigEndian.Uint16(pkt[26:]) != 0 {
		t.Fatal("UDP checksum over IPv4 is not 0")
	}
	pkt[26], pkt[27] = 0x12, 0x34
	if r := open(rx, pkt); r.Verdict != VerdictOK {
		t.Fatalf("non-zero UDP checksum: %v", r.Verdict)
	}
}

func TestESNAcrossWrap(t *testing.T) {
	for _, name := range []string{"rfc4106(gcm(aes))", "rfc4543(gcm(aes))", "rfc7539esp(chacha20,poly1305)", "cbc(aes)"} {
		p := SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x5005, Src: addr6a, Dst: addr6b, ESN: true, ReplayWindow: 64,
			OutSeq: 1<<32 - 3, InSeq: 1<<32 - 3}
		if name == "cbc(aes)" {
			p.Enc = AlgorithmKey{Name: name, Key: key(16, 2)}
			p.Auth = AlgorithmKey{Name: "hmac(sha1)", Key: key(20, 3), ICVBits: 96}
		} else {
			a, _ := LookupAlgorithm(KindAEAD, name)
			p.AEAD = AlgorithmKey{Name: name, Key: key(a.KeySizes[0], 1), ICVBits: 128}
		}
		tx, rx := newPair(t, p)
		var pkts [][]byte
		for i := 0; i < 5; i++ {
			pkts = append(pkts, seal(t, tx, udpPacket(true, 33)))
		}
		// Deliver out of order across the wrap: 2^32+1, 2^32-2, 2^32+0, 2^32-1, 2^32+2.
		for _, i := range []int{3, 0, 2, 1, 4} {
			r := open(rx, pkts[i])
			if want := uint64(1<<32-2) + uint64(i); r.Verdict != VerdictOK || r.Seq != want {
				t.Fatalf("%s: packet %d: verdict %v seq %#x, want ok %#x", name, i, r.Verdict, r.Seq, want)
			}
		}
		// A receiver whose window believes it is still before the wrap
		// infers the wrong high word and the ICV fails: ESN is authenticated.
		_, rx2 := newPair(t, SAParams{Proto: p.Proto, Mode: p.Mode, SPI: p.SPI, Src: p.Src, Dst: p.Dst, ESN: true,
			ReplayWindow: 64, AEAD: p.AEAD, Enc: p.Enc, Auth: p.Auth, InSeq: 1<<32 + 1<<31})
		if r := open(rx2, pkts[4]); r.Verdict != VerdictBadICV {
			t.Fatalf("%s: wrong high word: %v", name, r.Verdict)
		}
	}
}

func TestSeqOverflow(t *testing.T) {
	p := gcmParams()
	p.OutSeq = 1<<32 - 2
	sa, err := NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	pkt := udpPacket(false, 10)
	f := frameWith(pkt)
	if _, _, err := sa.Encrypt(f, testHead, len(pkt)); err != nil {
		t.Fatalf("last 32-bit seq: %v", err)
	}
	f = frameWith(pkt)
	if _, _, err := sa.Encrypt(f, testHead, len(pkt)); !errors.Is(err, ErrSeqOverflow) {
		t.Fatalf("after 2^32-1: %v, want ErrSeqOverflow", err)
	}
	p.ESN, p.OutSeq = true, 1<<64-1
	sa, _ = NewSA(p)
	if _, _, err := sa.Encrypt(f, testHead, len(pkt)); !errors.Is(err, ErrSeqOverflow) {
		t.Fatalf("after 2^64-1: %v, want ErrSeqOverflow", err)
	}
}

func TestLifetimes(t *testing.T) {
	p := gcmParams()
	var fired atomic.Int32
	p.Lifetime = Lifetime{SoftPackets: 2, HardPackets: 3}
	p.OnSoftExpire = func(*SA) { fired.Add(1) }
	tx, rx := newPair(t, p)
	for i := 1; i <= 3; i++ {
		r := open(rx, seal(t, tx, udpPacket(false, 10)))
		if r.Verdict != VerdictOK {
			t.Fatalf("packet %d: %v", i, r.Verdict)
		}
		if soft := rx.SoftExpired(); soft != (i >= 2) {
			t.Fatalf("packet %d: soft expired %v", i, soft)
		}
	}
	if fired.Load() != 2 { // once per SA: tx and rx
		t.Fatalf("soft expiry callback ran %d times, want once per SA", fired.Load())
	}
	pkt := udpPacket(false, 10)
	f := frameWith(pkt)
	if _, _, err := tx.Encrypt(f, testHead, len(pkt)); !errors.Is(err, ErrExpired) {
		t.Fatalf("4th packet: %v, want ErrExpired", err)
	}
	// The receiver: another sender on the same keys gets past the ICV but
	// the hard limit says expired.
	p.Lifetime, p.OnSoftExpire, p.OutSeq = Lifetime{}, nil, 10
	tx2, _ := newPair(t, p)
	if r := open(rx, seal(t, tx2, udpPacket(false, 10))); r.Verdict != VerdictExpired {
		t.Fatalf("past the hard limit: %v", r.Verdict)
	}
	if r := open(rx, seal(t, tx2, udpPacket(false, 10))); r.Verdict != VerdictExpired {
		t.Fatalf("hard-expired SA: %v", r.Verdict)
	}
	p.Lifetime = Lifetime{HardBytes: 100}
	tx3, _ := newPair(t, p)
	if _, _, err := tx3.Encrypt(frameWith(udpPacket(false, 200)), testHead, 228); !errors.Is(err, ErrExpired) {
		t.Fatalf("byte limit: %v", err)
	}
}

func TestNewSAErrors(t *testing.T) {
	base := gcmParams()
	for _, c := range []struct {
		edit func(*SAParams)
		want string
	}{
		{func(p *SAParams) { p.AEAD.Key = key(16, 1) }, "rfc4106(gcm(aes)) takes a key of 160 or 224 or 288 bits, got 128 bits"},
		{func(p *SAParams) { p.AEAD.ICVBits = 100 }, "allows an ICV of 64 or 96 or 128 bits, got 100"},
		{func(p *SAParams) { p.AEAD.Name = "gcm(aes)" }, "unknown aead algorithm"},
		{func(p *SAParams) { p.SPI = 0 }, "reserved"},
		{func(p *SAParams) { p.Dst = addr6a }, "one family"},
		{func(p *SAParams) { p.Proto = ProtoAH }, "ah takes auth-trunc only"},
		{func(p *SAParams) { p.Auth = AlgorithmKey{Name: "hmac(sha1)", Key: key(20, 1), ICVBits: 96} }, "aead excludes"},
		{func(p *SAParams) { p.EncapSrcPort = 4500 }, "both ports"},
		{func(p *SAParams) { p.ReplayWindow = 1 << 20 }, "too large"},
		{func(p *SAParams) { p.OutSeq = 1 << 40 }, "need flag esn"},
		{func(p *SAParams) { p.AEAD = AlgorithmKey{}; p.Enc = AlgorithmKey{Name: "ecb(cipher_null)"} }, "needs auth-trunc"},
		{func(p *SAParams) { p.AEAD = AlgorithmKey{}; p.Enc = AlgorithmKey{Name: "cbc(aes)", Key: key(16, 1)} }, "enc cbc(aes) needs auth-trunc"},
		{func(p *SAParams) {
			p.AEAD = AlgorithmKey{}
			p.Enc = AlgorithmKey{Name: "rfc3686(ctr(aes))", Key: key(20, 1)}
		}, "without integrity"},
	} {
		p := base
		c.edit(&p)
		_, err := NewSA(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want error containing %q, got %v", c.want, err)
		}
		if err != nil && strings.Contains(err.Error(), string(key(20, 1)[:4])) {
			t.Errorf("error leaks key bytes: %v", err)
		}
	}
	sa, err := NewSA(base)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Params().AEAD.Key != nil {
		t.Fatal("Params returns key bytes")
	}
}

func TestNoRoom(t *testing.T) {
	sa, _ := NewSA(gcmParams())
	pkt := udpPacket(false, 100)
	f := make([]byte, len(pkt)+100)
	copy(f[4:], pkt)
	if _, _, err := sa.Encrypt(f, 4, len(pkt)); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("no headroom: %v", err)
	}
	if sa.NextSeq() != 1 {
		t.Fatal("a refused packet used a sequence number")
	}
	if _, _, err := sa.Encrypt(frameWith(pkt[:50]), testHead, 50); !errors.Is(err, ErrBadPacket) {
		t.Fatalf("truncated packet: %v", err)
	}
}

// TestBundleAHOverESP: ESP transport inside AH transport (AH outside), as
// an `ip xfrm` bundle applies them.
func TestBundleAHOverESP(t *testing.T) {
	esp := gcmParams()
	esp.Mode = ModeTransport
	ah := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x6006, Src: addr4a, Dst: addr4b, ReplayWindow: 32,
		Auth: AlgorithmKey{Name: "hmac(sha1)", Key: key(20, 4), ICVBits: 96}}
	etx, erx := newPair(t, esp)
	atx, arx := newPair(t, ah)
	pkt := udpPacket(false, 50)
	f := frameWith(pkt)
	off, n, err := etx.Encrypt(f, testHead, len(pkt))
	if err != nil {
		t.Fatal(err)
	}
	off, n, err = atx.Encrypt(f, off, n)
	if err != nil {
		t.Fatal(err)
	}
	var o Outer
	if v := ParseOuter(f[off:off+n], 0, &o); v != VerdictOK || o.Proto != ProtoAH {
		t.Fatalf("outer: %v %v", v, o.Proto)
	}
	// In transit: TTL and TOS change, AH must not care.
	f[off+8]--
	f[off+1] = 0xb8
	ipv4Checksum(f[off : off+20])
	r := arx.Decrypt(f, off, n)
	if r.Verdict != VerdictOK || r.NextHeader != protoESP {
		t.Fatalf("AH: %v nh %d", r.Verdict, r.NextHeader)
	}
	r = erx.Decrypt(f, r.Off, r.N)
	if r.Verdict != VerdictOK || string(f[r.PayloadOff:r.PayloadOff+r.PayloadN]) != string(pkt[20:]) {
		t.Fatalf("ESP inside AH: %v", r.Verdict)
	}
}

// TestAHMutableOptions: IPv4 options and IPv6 hop-by-hop options that may
// change en route are excluded from the ICV; immutable ones are covered.
func TestAHMutableOptions(t *testing.T) {
	// IPv4 with a record-route option (mutable) and router alert (immutable).
	p4 := udpPacket(false, 16)
	opts := []byte{7, 7, 4, 0, 0, 0, 0, 148, 4, 0, 0, 1} // RR (7 bytes), RA (4), EOL
	h := append(append(append([]byte(nil), p4[:20]...), opts...), p4[20:]...)
	h[0] = 0x45 + byte(len(opts)/4)
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)))
	ipv4Checksum(h[:20+len(opts)])
	ah := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x6006, Src: addr4a, Dst: addr4b, ReplayWindow: 32,
		Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}}
	tx, rx := newPair(t, ah)
	pkt := seal(t, tx, h)
	pkt[23] = 0xc6 // a router records its address in RR
	if r := open(rx, pkt); r.Verdict != VerdictOK {
		t.Fatalf("mutable IPv4 option changed: %v", r.Verdict)
	}
	pkt = seal(t, tx, h)
	pkt[30] = 1 // router alert value: immutable
	if r := open(rx, pkt); r.Verdict != VerdictBadICV {
		t.Fatalf("immutable IPv4 option changed: %v", r.Verdict)
	}

	// IPv6 with a hop-by-hop header: option 0x3e (may change) and 0x1e (may not).
	p6 := udpPacket(true, 16)
	// nh, length 1 (16 bytes), option 0x3e, option 0x1e, PadN, Pad1... as bytes:
	hbh := []byte{protoUDP, 1, 0x3e, 2, 0xaa, 0xbb, 0x1e, 2, 0xcc, 0xdd, 1, 2, 0, 0, 1, 0}
	h6 := append(append(append([]byte(nil), p6[:40]...), hbh...), p6[40:]...)
	h6[6] = protoHopByHop
	binary.BigEndian.PutUint16(h6[4:], uint16(len(h6)-40))
	ah.Src, ah.Dst = addr6a, addr6b
	tx, rx = newPair(t, ah)
	pkt = seal(t, tx, h6)
	if pkt[40] != protoAH || pkt[6] != protoHopByHop || pkt[56] != protoUDP {
		t.Fatalf("AH not after the hop-by-hop header")
	}
	pkt[44] = 0x11 // data of the may-change option
	pkt[1] ^= 0x0f // flow label
	pkt[7] = 1     // hop limit
	if r := open(rx, pkt); r.Verdict != VerdictOK {
		t.Fatalf("mutable IPv6 fields changed: %v", r.Verdict)
	}
	pkt = seal(t, tx, h6)
	pkt[48] = 0x11 // data of the immutable option
	if r := open(rx, pkt); r.Verdict != VerdictBadICV {
		t.Fatalf("immutable IPv6 option changed: %v", r.Verdict)
	}
}

func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, p := range []SAParams{gcmParams(), func() SAParams {
		p := gcmParams()
		p.AEAD = AlgorithmKey{}
		p.Enc = AlgorithmKey{Name: "cbc(aes)", Key: key(16, 1)}
		p.Auth = AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 1), ICVBits: 128}
		p.ESN = true
		return p
	}()} {
		for _, sc := range []*Scratch{nil, NewScratch()} {
			tx, rx := newPair(t, p)
			pkt := udpPacket(false, 1000)
			f := frameWith(pkt)
			g := make([]byte, len(f))
			allocs := testing.AllocsPerRun(200, func() {
				copy(f[testHead:], pkt)
				off, n, err := tx.EncryptWith(sc, f, testHead, len(pkt))
				if err != nil {
					t.Fatal(err)
				}
				copy(g, f)
				if r := rx.DecryptWith(sc, g, off, n); r.Verdict != VerdictOK {
					t.Fatal(r.Verdict)
				}
			})
			if allocs != 0 {
				t.Errorf("%s%s scratch=%v: %.1f allocations per packet", p.AEAD.Name, p.Enc.Name, sc != nil, allocs)
			}
		}
	}
}
