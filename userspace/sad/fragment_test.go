package sad

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// fragV4 returns an IPv4 packet 192.0.2.1 -> 198.51.100.2 of protocol
// proto with fragment offset off (8-byte units), MF as given, carrying l4.
func fragV4(proto uint8, off uint16, mf bool, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4))
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(l4)))
	fo := off
	if mf {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(p[6:], fo)
	copy(p[12:], []byte{192, 0, 2, 1})
	copy(p[16:], []byte{198, 51, 100, 2})
	return append(p, l4...)
}

// fragV6 returns an IPv6 packet 2001:db8::1 -> 2001:db8:1::2 with a
// Fragment header (offset off in 8-byte units, M as given) before l4 of
// protocol proto.
func fragV6(proto uint8, off uint16, m bool, l4 []byte) []byte {
	p := make([]byte, 48, 48+len(l4))
	p[0], p[6], p[7] = 0x60, 44, 64
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(l4)))
	copy(p[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	copy(p[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: 2})
	fo := off << 3
	if m {
		fo |= 1
	}
	p[40] = proto
	binary.BigEndian.PutUint16(p[42:], fo)
	binary.BigEndian.PutUint32(p[44:], 0xabcd)
	return append(p, l4...)
}

// tcp443 is the first 8 bytes of a TCP header 40000 -> 443.
var tcp443 = []byte{0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1}

// TestFlowOfFragments: an initial fragment holding the ports is read like
// a whole packet; a non-initial fragment, or an initial one cut before
// its ports, is Opaque with its protocol and no ports, both families.
func TestFlowOfFragments(t *testing.T) {
	for _, c := range []struct {
		name          string
		pkt           []byte
		proto         uint8
		sport, dport  uint16
		opaque, wantD bool
	}{
		{"v4 initial tcp", fragV4(6, 0, true, tcp443), 6, 40000, 443, false, false},
		{"v4 non-initial tcp", fragV4(6, 185, true, tcp443), 6, 0, 0, true, false},
		{"v4 last tcp", fragV4(6, 370, false, tcp443), 6, 0, 0, true, false},
		{"v4 initial cut before the ports", fragV4(6, 0, true, tcp443[:3]), 6, 0, 0, true, false},
		{"v4 initial icmp echo", fragV4(1, 0, true, []byte{8, 0, 0, 0, 0, 7, 0, 1}), 1, 8, 0, false, false},
		{"v4 non-initial icmp", fragV4(1, 1, false, []byte{0, 0, 0, 0}), 1, 0, 0, true, false},
		{"v4 non-initial gre", fragV4(47, 3, false, []byte{0, 0, 0, 0}), 47, 0, 0, true, false},
		{"v4 whole gre", fragV4(47, 0, false, []byte{0, 0, 0, 0}), 47, 0, 0, false, false},
		{"v6 initial tcp", fragV6(6, 0, true, tcp443), 6, 40000, 443, false, true},
		{"v6 non-initial tcp", fragV6(6, 162, true, tcp443), 6, 0, 0, true, true},
		{"v6 last udp", fragV6(17, 324, false, tcp443), 17, 0, 0, true, true},
		{"v6 initial cut before the ports", fragV6(17, 0, true, tcp443[:2]), 17, 0, 0, true, true},
		{"v6 initial icmpv6 echo", fragV6(58, 0, true, []byte{128, 0, 0, 0}), 58, 128, 0, false, true},
		{"v6 non-initial icmpv6", fragV6(58, 1, false, []byte{0, 0, 0, 0}), 58, 0, 0, true, true},
		{"v6 atomic fragment", fragV6(6, 0, false, tcp443), 6, 40000, 443, false, true},
		{"v6 fragment header cut", fragV6(6, 0, false, nil)[:44], 44, 0, 0, true, true},
	} {
		f, err := FlowOf(c.pkt)
		if err != nil || f.Proto != c.proto || f.SrcPort != c.sport || f.DstPort != c.dport || f.Opaque != c.opaque || f.DF != c.wantD {
			t.Errorf("%s: FlowOf = %+v, %v; want proto %d ports %d/%d opaque %v DF %v",
				c.name, f, err, c.proto, c.sport, c.dport, c.opaque, c.wantD)
		}
	}
}

// TestLookupFlowOpaque: RFC 4301 §7.1. A fragment without ports is matched
// only by policies whose port selectors are ANY; a port-specific policy,
// even one asking for port 0 or ICMP type 0 (echo reply, the "ports" a
// non-initial ICMP fragment used to present), is passed over and the next
// policy in order decides, or none does. An initial fragment holding its
// ports is matched with them.
func TestLookupFlowOpaque(t *testing.T) {
	d := NewSPD(Config{})
	add := func(line string) *Policy {
		t.Helper()
		spec, err := ParsePolicy(mustTokenize(t, line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		p, err := d.Add(spec)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return p
	}
	https := add("dir out proto tcp dport 443 priority 10 tmpl proto esp mode tunnel src 192.0.2.1 dst 198.51.100.2")
	port0 := add("dir out proto tcp sport 0 priority 11 action block")
	reply := add("dir out proto icmp type 0 code 0 priority 12 action allow")
	tcpAny := add("dir out proto tcp priority 20 action block")
	mustLookup := func(name string, pkt []byte, want *Policy) {
		t.Helper()
		f, err := FlowOf(pkt)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := d.LookupFlow(DirOut, &f)
		if got != want {
			t.Errorf("%s (%+v): policy %v, want %v", name, f, got, want)
		}
		// MatchFlow agrees with the SPD for every policy.
		for _, p := range d.List() {
			sel := p.Spec().Sel
			if sel.MatchFlow(&f) != (p.m.match(toAddr128(f.Src), toAddr128(f.Dst), f.Version, f.Proto, f.SrcPort, f.DstPort) &&
				(!f.Opaque || sel.SrcPortMask|sel.DstPortMask == 0)) {
				t.Errorf("%s: MatchFlow and the SPD disagree on %v", name, p)
			}
		}
	}
	mustLookup("v4 initial fragment to 443", fragV4(6, 0, true, tcp443), https)
	mustLookup("v4 non-initial fragment", fragV4(6, 185, false, tcp443), tcpAny)
	mustLookup("v6 initial fragment to 443", fragV6(6, 0, true, tcp443), https)
	mustLookup("v6 non-initial fragment", fragV6(6, 162, false, tcp443), tcpAny)
	// A whole packet from port 0 is matched by the port-0 policy; an
	// opaque fragment's 0 is not a port.
	mustLookup("v4 whole packet from port 0", fragV4(6, 0, false, []byte{0, 0, 0, 80}), port0)
	mustLookup("v4 echo reply", fragV4(1, 0, false, []byte{0, 0, 0, 0}), reply)
	mustLookup("v4 non-initial icmp fragment", fragV4(1, 9, false, []byte{0, 0, 0, 0}), nil)
	mustLookup("v6 non-initial udp fragment", fragV6(17, 9, false, []byte{0, 0, 0, 0}), nil)
	// The plain Lookup keeps its meaning: ports as given.
	if p := d.Lookup(DirOut, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2"), 1, 0, 0); p != reply {
		t.Errorf("Lookup of icmp 0/0: %v, want %v", p, reply)
	}
	f, _ := FlowOf(fragV4(6, 185, false, tcp443))
	if n := testing.AllocsPerRun(100, func() { d.LookupFlow(DirOut, &f) }); n != 0 {
		t.Errorf("LookupFlow allocates %.1f times, want 0", n)
	}
}
