package engine

import (
	"net/netip"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/sad"
)

// TestInboundPolicyMemo checks that remembering the last decision within a
// batch never gives one flow's or one SA list's answer to another, and that
// a policy change is seen once the batch ends.
func TestInboundPolicyMemo(t *testing.T) {
	spd := sad.NewSPD(sad.Config{})
	db := sad.NewSAD(sad.Config{})
	addPolicy := func(line string) *sad.PolicySpec {
		t.Helper()
		words, err := sad.Tokenize(line)
		if err != nil {
			t.Fatal(err)
		}
		p, err := sad.ParsePolicy(words)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := spd.Add(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	addSA := func(line string) *sad.Association {
		t.Helper()
		words, err := sad.Tokenize(line)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sad.ParseSA(words)
		if err != nil {
			t.Fatal(err)
		}
		a, err := db.Add(s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tunnel := addSA("ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2001 mode tunnel aead 'rfc4106(gcm(aes))' " + benchKey + " 128")
	transport := addSA("ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2002 mode transport aead 'rfc4106(gcm(aes))' " + benchKey + " 128")
	discard := addPolicy("ip xfrm policy add src 198.51.100.9/32 dst 198.51.100.1/32 dir in action block")
	addPolicy("ip xfrm policy add src 198.51.100.0/24 dst 198.51.100.1/32 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp mode tunnel")

	w := &worker{e: &Engine{spd: spd}}
	a, b := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.9")
	dst := netip.MustParseAddr("198.51.100.1")
	pktA := ipv4UDP(make([]byte, 64), a, dst, 64)
	pktB := ipv4UDP(make([]byte, 64), b, dst, 64)
	viaTunnel := []*sad.Association{tunnel}
	viaTransport := []*sad.Association{transport}

	w.memo.valid = false // a batch begins
	for i, c := range []struct {
		pkt  []byte
		sas  []*sad.Association
		want bool
	}{
		{pktA, viaTunnel, true},     // PROTECT, the template fits
		{pktA, viaTunnel, true},     // remembered
		{pktA, viaTransport, false}, // same flow, an SA the template does not fit
		{pktB, viaTunnel, false},    // another flow: DISCARD
		{pktA, viaTunnel, true},
		{pktB, viaTunnel, false},
	} {
		if got := w.inboundAllowed(c.pkt, c.sas); got != c.want {
			t.Errorf("packet %d of the batch: allowed %v, want %v", i, got, c.want)
		}
	}
	// Between batches the DISCARD policy goes: the next batch sees it.
	if err := spd.Delete(discard); err != nil {
		t.Fatal(err)
	}
	if !w.inboundAllowed(pktA, viaTunnel) {
		t.Fatal("flow A refused")
	}
	w.memo.valid = false // the next batch
	if !w.inboundAllowed(pktB, viaTunnel) {
		t.Error("flow B refused after its DISCARD policy was deleted")
	}
}
