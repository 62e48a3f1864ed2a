package ipsec

import (
	"encoding/binary"
	"slices"
	"testing"
)

// sealSeq encrypts a packet with sa and returns the sequence number in its
// ESP header (IPv4 tunnel: ESP at byte 20).
func sealSeq(t *testing.T, sa *SA) uint32 {
	t.Helper()
	return binary.BigEndian.Uint32(seal(t, sa, udpPacket(false, 10))[24:])
}

// TestNewSAReplacing: an SA replacing another in place shares its outbound
// counter (prev and the new SA interleaved never repeat a number), starts
// at the spec's OutSeq when that is higher, and shares the replay window
// when its size and ESN match (otherwise starts at prev's top).
func TestNewSAReplacing(t *testing.T) {
	p := gcmParams()
	prev, err := NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	sealSeq(t, prev)
	sealSeq(t, prev)
	next, err := NewSAReplacing(p, prev)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, sa := range []*SA{prev, next, prev, next} {
		got = append(got, sealSeq(t, sa))
	}
	if want := []uint32{3, 4, 5, 6}; !slices.Equal(got, want) {
		t.Fatalf("interleaved sequence numbers %v, want %v", got, want)
	}

	p.OutSeq = 100
	third, err := NewSAReplacing(p, next)
	if err != nil {
		t.Fatal(err)
	}
	if s := sealSeq(t, prev); s != 101 {
		t.Fatalf("after a replacement with replay-oseq 100, the oldest SA sends %d, want 101", s)
	}
	if s := sealSeq(t, third); s != 102 {
		t.Fatalf("replacement sends %d, want 102", s)
	}

	// Receive side: same window size and ESN -> one window.
	rx, _ := NewSA(gcmParams())
	sender, _ := NewSA(gcmParams())
	pk := seal(t, sender, udpPacket(false, 10))
	rx2, err := NewSAReplacing(gcmParams(), rx)
	if err != nil {
		t.Fatal(err)
	}
	if rx2.Window() != rx.Window() {
		t.Fatal("same size and ESN: windows not shared")
	}
	if r := open(rx, pk); r.Verdict != VerdictOK {
		t.Fatalf("through the old SA: %v", r.Verdict)
	}
	if r := open(rx2, pk); r.Verdict != VerdictReplay {
		t.Fatalf("the same packet through the new SA: %v, want replay", r.Verdict)
	}
	// Another size: a window of its own, starting at prev's top.
	q := gcmParams()
	q.ReplayWindow = 128
	rx3, err := NewSAReplacing(q, rx2)
	if err != nil {
		t.Fatal(err)
	}
	if rx3.Window() == rx2.Window() || rx3.Window().Top() != 1 {
		t.Fatalf("other window size: shared %v, top %d, want own window at top 1", rx3.Window() == rx2.Window(), rx3.Window().Top())
	}
	if _, err := NewSAReplacing(q, nil); err == nil {
		t.Fatal("replacing a nil SA accepted")
	}
}
