package engine

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/sad"
)

// TestInboundPolicyFragments: the inbound policy check of decrypted
// fragments (RFC 4301 §7). An initial fragment holding its ports is judged
// by them (a port-specific DISCARD refuses it); a non-initial fragment has
// no ports, passes over every port-specific policy and is judged by the
// first ANY-port one (here the tunnel's PROTECT, whose template the SA
// fits). The per-batch memo never hands a whole packet's answer to a
// fragment that shows the same (zero) ports.
func TestInboundPolicyFragments(t *testing.T) {
	spd := sad.NewSPD(sad.Config{})
	db := sad.NewSAD(sad.Config{})
	parse := func(line string) []string {
		t.Helper()
		words, err := sad.Tokenize(line)
		if err != nil {
			t.Fatal(err)
		}
		return words
	}
	for _, line := range []string{
		"ip xfrm policy add src 198.51.100.2/32 dst 198.51.100.1/32 proto udp dport 9 dir in priority 10 action block",
		"ip xfrm policy add src 198.51.100.2/32 dst 198.51.100.1/32 proto udp sport 0 dport 0 dir in priority 11 action block",
		"ip xfrm policy add src 198.51.100.0/24 dst 198.51.100.1/32 dir in priority 20 tmpl src 192.0.2.2 dst 192.0.2.1 proto esp mode tunnel",
	} {
		p, err := sad.ParsePolicy(parse(line))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := spd.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	s, err := sad.ParseSA(parse("ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2001 mode tunnel aead 'rfc4106(gcm(aes))' " + benchKey + " 128"))
	if err != nil {
		t.Fatal(err)
	}
	tunnel, err := db.Add(s)
	if err != nil {
		t.Fatal(err)
	}
	via := []*sad.Association{tunnel}
	src, dst := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.1")
	// frag sets the IPv4 flags/offset word of a copy of p (the header
	// checksum does not matter to the policy check).
	frag := func(p []byte, word uint16) []byte {
		q := append([]byte(nil), p...)
		binary.BigEndian.PutUint16(q[6:], word)
		return q
	}
	to9 := ipv4UDP(make([]byte, 600), src, dst, 600) // UDP 40000 -> 9
	zero := append([]byte(nil), to9...)
	binary.BigEndian.PutUint32(zero[20:], 0) // UDP 0 -> 0

	w := &worker{e: &Engine{spd: spd}}
	w.memo.valid = false // a batch begins
	for i, c := range []struct {
		what string
		pkt  []byte
		want bool
	}{
		{"whole packet to port 9", to9, false},
		{"initial fragment to port 9 (MF)", frag(to9, 0x2000), false},
		{"non-initial fragment (offset 72, MF)", frag(to9, 0x2000|9), true},
		{"last fragment (offset 144)", frag(to9, 18), true},
		{"whole packet from port 0 to port 0", zero, false},
		{"non-initial fragment showing zeros", frag(zero, 9), true}, // same ports in Flow, but Opaque: not the memo's answer
		{"whole packet from port 0 to port 0 again", zero, false},
	} {
		if got := w.inboundAllowed(c.pkt, via); got != c.want {
			t.Errorf("packet %d, %s: allowed %v, want %v", i, c.what, got, c.want)
		}
	}
}
