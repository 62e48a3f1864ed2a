package ipsec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Addresses of the routers a source route visits, and of the final node.
var (
	rtHop1  = netip.MustParseAddr("2001:db8:aa::1")
	rtHop2  = netip.MustParseAddr("2001:db8:aa::2")
	rtHop3  = netip.MustParseAddr("2001:db8:aa::3")
	rtFinal = netip.MustParseAddr("2001:db8:1::2")
)

// rtPacket builds an IPv6 UDP packet from addr6a to dst carrying a Routing
// header of type typ, Segments Left sl and Hdr Ext Len 2*len(addrs) (or
// hdrLen when not negative), with the addresses addrs.
func rtPacket(dst netip.Addr, typ, sl uint8, hdrLen int, addrs ...netip.Addr) []byte {
	p := udpPacket(true, 16)
	if hdrLen < 0 {
		hdrLen = 2 * len(addrs)
	}
	rh := make([]byte, (hdrLen+1)*8)
	rh[0], rh[1], rh[2], rh[3] = protoUDP, byte(hdrLen), typ, sl
	for i, a := range addrs {
		copy(rh[8+16*i:], a.AsSlice())
	}
	out := append(append(append([]byte(nil), p[:40]...), rh...), p[40:]...)
	out[6] = protoRouting
	copy(out[24:40], dst.AsSlice())
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

// route does what each node named by the destination does to the packet p
// (Routing header at p[40:]) while Segments Left is not 0, RFC 2460 §4.4:
// swap the destination with address n - SL + 1, decrement SL and the hop
// limit. It is the forwarding rule itself, for the tests to compare with
// routingFinal's closed form.
func route(p []byte, hops int) {
	rh := p[40:]
	n := int(rh[1]) / 2
	for ; hops > 0 && rh[3] > 0; hops-- {
		i := n - int(rh[3]) + 1
		a := rh[8+16*(i-1) : 8+16*i]
		var t [16]byte
		copy(t[:], a)
		copy(a, p[24:40])
		copy(p[24:40], t[:])
		rh[3]--
		p[7]--
	}
}

// TestRoutingFinalForm: zeroMutable puts type 0 and 2 Routing headers into
// the form routing gives them at the final destination, whatever number of
// segments was already processed; Segments Left 0 of any type stays as is.
func TestRoutingFinalForm(t *testing.T) {
	cases := []struct {
		name      string
		pkt       []byte
		processed int // hops already routed before the ICV is computed
	}{
		{"type 0, 3 segments, none processed", rtPacket(rtHop1, 0, 3, -1, rtHop2, rtHop3, rtFinal), 0},
		{"type 0, 3 segments, 1 processed", rtPacket(rtHop1, 0, 3, -1, rtHop2, rtHop3, rtFinal), 1},
		{"type 0, 3 segments, 2 processed", rtPacket(rtHop1, 0, 3, -1, rtHop2, rtHop3, rtFinal), 2},
		{"type 0, 1 segment", rtPacket(rtHop1, 0, 1, -1, rtFinal), 0},
		{"type 2", rtPacket(rtHop1, 2, 1, -1, rtFinal), 0},
		{"type 0, segments left 0", rtPacket(rtFinal, 0, 0, -1, rtHop1, rtHop2), 0},
		{"type 0, no addresses", rtPacket(rtFinal, 0, 0, -1), 0},
		{"type 4 (SRH), segments left 0", rtPacket(rtFinal, 4, 0, -1, rtHop1, rtHop2), 0},
		{"type 3 (RPL), segments left 0", rtPacket(rtFinal, 3, 0, -1, rtHop1), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			route(c.pkt, c.processed)
			want := append([]byte(nil), c.pkt...)
			route(want, 255)
			got := append([]byte(nil), c.pkt...)
			// zeroMutable sees the headers in front of AH.
			if !zeroMutable(got[:40+(int(got[41])+1)*8]) {
				t.Fatal("zeroMutable refused")
			}
			// What zeroMutable zeroes anyway: traffic class, flow label, hop limit.
			want[0] &= 0xf0
			want[1], want[2], want[3], want[7] = 0, 0, 0, 0
			if !bytes.Equal(got, want) {
				t.Fatalf("normalised\n got %x\nwant %x", got, want)
			}
			if !bytes.Equal(got[24:40], rtFinal.AsSlice()) || got[43] != 0 {
				t.Fatalf("destination %x, segments left %d: not the final form", got[24:40], got[43])
			}
		})
	}
}

// TestRoutingFinalBytes spells one case out byte for byte, with one of
// three segments processed: sent to H0 with the list H1 H2 F, H0 routed it
// on, so it travels to H1 holding H0 H2 F with Segments Left 2; at F it
// holds H0 H1 H2 with Segments Left 0.
func TestRoutingFinalBytes(t *testing.T) {
	h0 := netip.MustParseAddr("2001:db8:aa::")
	p := rtPacket(rtHop1, 0, 2, -1, h0, rtHop2, rtFinal)
	if !zeroMutable(p[:40+56]) {
		t.Fatal("zeroMutable refused")
	}
	var want []byte
	want = append(want, protoUDP, 6, 0, 0, 0, 0, 0, 0)
	for _, a := range []netip.Addr{h0, rtHop1, rtHop2} {
		want = append(want, a.AsSlice()...)
	}
	if !bytes.Equal(p[40:40+56], want) || !bytes.Equal(p[24:40], rtFinal.AsSlice()) {
		t.Fatalf("routing header %x dst %x, want %x dst %x", p[40:96], p[24:40], want, rtFinal.AsSlice())
	}
}

// TestRoutingRefused: unpredictable and malformed Routing headers make
// zeroMutable refuse, and Encrypt's check says why.
func TestRoutingRefused(t *testing.T) {
	cases := []struct {
		name    string
		pkt     []byte
		want    error
		message string
	}{
		{"type 4 (SRH) with segments left 2", rtPacket(rtHop1, 4, 2, -1, rtFinal, rtHop2), ErrAHRoutingHeader, "routing header type 4 with segments left 2"},
		{"type 3 (RPL) with segments left 1", rtPacket(rtHop1, 3, 1, -1, rtFinal), ErrAHRoutingHeader, "routing header type 3 with segments left 1"},
		{"type 0, odd hdr ext len", rtPacket(rtHop1, 0, 1, 3, rtFinal), ErrBadPacket, "hdr ext len 3"},
		{"type 0, segments left above segments", rtPacket(rtHop1, 0, 3, -1, rtHop2, rtFinal), ErrBadPacket, "segments left 3"},
		{"type 0, odd hdr ext len, segments left 0", rtPacket(rtFinal, 0, 0, 1), ErrBadPacket, "hdr ext len 1"},
		{"type 2, two addresses", rtPacket(rtHop1, 2, 1, -1, rtHop2, rtFinal), ErrBadPacket, "type 2"},
		{"type 2, segments left 2", rtPacket(rtHop1, 2, 2, -1, rtFinal), ErrBadPacket, "segments left 2"},
	}
	sa, err := NewSA(SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x7007, Src: addr6a, Dst: addr6b,
		ReplayWindow: 32, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if zeroMutable(append([]byte(nil), c.pkt[:40+(int(c.pkt[41])+1)*8]...)) {
				t.Fatal("zeroMutable accepted it")
			}
			var in inner
			if !parseInner(c.pkt, &in) {
				t.Fatal("parseInner refused the test packet")
			}
			err := sa.ahCheckOut(c.pkt, &in)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.message) {
				t.Fatalf("ahCheckOut: %v, want %v saying %q", err, c.want, c.message)
			}
		})
	}
	// The same SA takes a type 0 header, and a tunnel-mode SA anything:
	// there the packet is payload.
	p := rtPacket(rtHop1, 0, 2, -1, rtHop2, rtFinal)
	var in inner
	if !parseInner(p, &in) {
		t.Fatal("parseInner refused the test packet")
	}
	if err := sa.ahCheckOut(p, &in); err != nil {
		t.Fatalf("type 0: %v", err)
	}
	tun, err := NewSA(SAParams{Proto: ProtoAH, Mode: ModeTunnel, SPI: 0x7008, Src: addr6a, Dst: addr6b,
		ReplayWindow: 32, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}})
	if err != nil {
		t.Fatal(err)
	}
	p = rtPacket(rtHop1, 4, 2, -1, rtFinal, rtHop2)
	if !parseInner(p, &in) {
		t.Fatal("parseInner refused the test packet")
	}
	if err := tun.ahCheckOut(p, &in); err != nil {
		t.Fatalf("tunnel mode: %v", err)
	}
}

// TestAHRoutingHeader: AH in transport mode over a packet with a type 0
// Routing header verifies as sent (Segments Left 2), after each hop of its
// route, and at the final destination; ahICV leaves the packet as it was;
// an address of the route changed in transit fails the ICV.
func TestAHRoutingHeader(t *testing.T) {
	p := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x7007, Src: addr6a, Dst: rtFinal,
		ReplayWindow: 32, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}}
	tx, err := NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []uint8{0, 2} {
		plain := rtPacket(rtHop1, 0, 2, -1, rtHop2, rtFinal)
		if typ == 2 {
			plain = rtPacket(rtHop1, 2, 1, -1, rtFinal)
		}
		sent := seal(t, tx, plain)
		rhLen := (int(plain[41]) + 1) * 8
		if sent[6] != protoRouting || sent[40] != protoAH || !bytes.Equal(sent[8:40], plain[8:40]) ||
			!bytes.Equal(sent[41:40+rhLen], plain[41:40+rhLen]) {
			t.Fatalf("type %d: AH not after the routing header, or the route rearranged on the wire: %x", typ, sent[:40+rhLen])
		}
		for hop := 0; hop <= int(plain[43]); hop++ {
			pkt := append([]byte(nil), sent...)
			route(pkt, hop)
			f := frameWith(pkt)
			r := mustSA(t, p).Decrypt(f, testHead, len(pkt))
			if r.Verdict != VerdictOK {
				t.Fatalf("type %d after %d hops: %v", typ, hop, r.Verdict)
			}
			if got := f[r.PayloadOff : r.PayloadOff+r.PayloadN]; r.NextHeader != protoUDP || !bytes.Equal(got, plain[40+rhLen:]) {
				t.Fatalf("type %d after %d hops: next header %d payload %x", typ, hop, r.NextHeader, got)
			}
		}

		// ahICV restores every byte it normalised.
		rx := mustSA(t, p)
		pkt := append([]byte(nil), sent...)
		var o Outer
		if v := ParseOuter(pkt, 0, &o); v != VerdictOK {
			t.Fatalf("parse: %v", v)
		}
		s := rx.getScratch()
		ok := rx.ahICV(s, pkt, o.Off, (int(pkt[o.Off+1])+2)*4, 1)
		rx.putScratch(s)
		if !ok || !bytes.Equal(pkt, sent) {
			t.Fatalf("type %d: ahICV %v, packet after it\n%x\nwas\n%x", typ, ok, pkt, sent)
		}

		// The route is covered: change the last address on the way.
		pkt = append([]byte(nil), sent...)
		pkt[40+8+16*(int(pkt[41])/2)-1] ^= 1
		if r := open(mustSA(t, p), pkt); r.Verdict != VerdictBadICV {
			t.Fatalf("type %d: route changed in transit: %v", typ, r.Verdict)
		}
	}
}

// TestAHRoutingRefusedIntact: a received AH packet whose Routing header
// cannot be normalised is not authentic (bad-icv) and ahICV leaves it as it
// came.
func TestAHRoutingRefusedIntact(t *testing.T) {
	p := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x7007, Src: addr6a, Dst: rtFinal,
		ReplayWindow: 32, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}}
	sent := seal(t, mustSA(t, p), rtPacket(rtHop1, 0, 2, -1, rtHop2, rtFinal))
	sent[42] = 4 // type 4 (SRH) with segments left 2: unpredictable
	pkt := append([]byte(nil), sent...)
	var o Outer
	if v := ParseOuter(pkt, 0, &o); v != VerdictOK {
		t.Fatalf("parse: %v", v)
	}
	rx := mustSA(t, p)
	s := rx.getScratch()
	ok := rx.ahICV(s, pkt, o.Off, (int(pkt[o.Off+1])+2)*4, 1)
	rx.putScratch(s)
	if ok || !bytes.Equal(pkt, sent) {
		t.Fatalf("ahICV %v, packet changed: %v", ok, !bytes.Equal(pkt, sent))
	}
	if r := open(rx, pkt); r.Verdict != VerdictBadICV {
		t.Fatalf("verdict %v", r.Verdict)
	}
}

// TestAHRoutingZeroAllocs: normalising a routing header allocates nothing.
func TestAHRoutingZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	p := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x7007, Src: addr6a, Dst: rtFinal,
		ReplayWindow: 0, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}}
	sent := seal(t, mustSA(t, p), rtPacket(rtHop1, 0, 2, -1, rtHop2, rtFinal))
	rx := mustSA(t, p)
	s := NewScratch()
	f := frameWith(sent)
	allocs := testing.AllocsPerRun(50, func() {
		copy(f[testHead:], sent)
		if r := rx.DecryptWith(s, f, testHead, len(sent)); r.Verdict != VerdictOK {
			t.Fatalf("verdict %v", r.Verdict)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}

// TestAHEncryptRefusesUnpredictableRoute: Encrypt itself refuses, before it
// spends a sequence number, a transport-mode packet whose routing header
// the ICV cannot cover as the receiver will see it (it used to go out with
// an all-zero ICV that the peer drops as bad-icv).
func TestAHEncryptRefusesUnpredictableRoute(t *testing.T) {
	p := SAParams{Proto: ProtoAH, Mode: ModeTransport, SPI: 0x7009, Src: addr6a, Dst: rtFinal,
		ReplayWindow: 32, Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 4), ICVBits: 128}}
	tx := mustSA(t, p)
	srh := rtPacket(rtHop1, 4, 2, -1, rtFinal, rtHop2)
	f := frameWith(srh)
	if _, _, err := tx.Encrypt(f, testHead, len(srh)); !errors.Is(err, ErrAHRoutingHeader) {
		t.Fatalf("Encrypt of a type 4 routing header with segments left 2: %v, want ErrAHRoutingHeader", err)
	}
	// The next packet gets sequence number 1: the refused one spent none.
	sent := seal(t, tx, rtPacket(rtHop1, 0, 2, -1, rtHop2, rtFinal))
	rhLen := (int(sent[41]) + 1) * 8
	if seq := binary.BigEndian.Uint32(sent[40+rhLen+8:]); seq != 1 {
		t.Errorf("sequence number after the refusal = %d, want 1", seq)
	}
}
