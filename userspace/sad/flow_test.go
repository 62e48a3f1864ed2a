package sad

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"
)

func TestFlowOf(t *testing.T) {
	// IPv4 UDP 192.0.2.1:1234 -> 198.51.100.2:4789, DF set.
	v4 := []byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x12, 0xb5, 0, 8, 0, 0}
	f, err := FlowOf(v4)
	if err != nil || f.Proto != 17 || f.SrcPort != 1234 || f.DstPort != 4789 || f.Src.String() != "192.0.2.1" ||
		f.Dst.String() != "198.51.100.2" || f.Version != 4 || !f.DF {
		t.Errorf("v4 UDP: %+v, %v", f, err)
	}
	// DF clear.
	nodf := append([]byte(nil), v4...)
	nodf[6] = 0
	if f, _ := FlowOf(nodf); f.DF {
		t.Errorf("DF clear read as set")
	}
	// Non-first fragment: no ports.
	frag := append([]byte(nil), v4...)
	frag[6], frag[7] = 0, 10
	if f, err := FlowOf(frag); err != nil || f.SrcPort != 0 || f.DstPort != 0 || f.Proto != 17 {
		t.Errorf("v4 fragment: %+v, %v", f, err)
	}
	// IPv6 ICMPv6 echo request behind a destination-options header.
	v6 := make([]byte, 40+8+8)
	v6[0], v6[6] = 0x60, 60
	copy(v6[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	copy(v6[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	v6[40] = 58 // next header ICMPv6, length 0 (8 bytes)
	v6[48] = 128
	if f, err := FlowOf(v6); err != nil || f.Proto != 58 || f.SrcPort != 128 || f.DstPort != 0 || f.Dst.String() != "2001:db8:b::1" || !f.DF {
		t.Errorf("v6 ICMPv6: %+v, %v", f, err)
	}
	// An extension header chain cut short: the last Next Header, no ports.
	if f, err := FlowOf(v6[:41]); err != nil || f.Proto != 60 || f.SrcPort != 0 {
		t.Errorf("v6 cut in its extension header: %+v, %v", f, err)
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x4f, 0, 0, 20}, make([]byte, 39), {0x70}, {0x46, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := FlowOf(bad); !errors.Is(err, ErrNotIP) {
			t.Errorf("FlowOf(%x) = %v, want ErrNotIP", bad, err)
		}
	}
	sel := Selector{Proto: 17, DstPort: 4789, DstPortMask: 0xffff}
	if f, _ := FlowOf(v4); !sel.MatchFlow(&f) {
		t.Errorf("selector %+v does not match %+v", sel, f)
	}
}

// TestFlowOfAgreesWithScapy: scapy (Debian's python3) builds packets with
// extension headers, fragments and the port-carrying protocols, and states
// the fields; FlowOf must read the same.
func TestFlowOfAgreesWithScapy(t *testing.T) {
	if _, err := exec.Command("/usr/bin/python3", "-c", "import scapy").CombinedOutput(); err != nil {
		t.Skip("needs /usr/bin/python3 with scapy (Debian's python3-scapy)")
	}
	const script = `
import json
from scapy.all import IP, IPv6, TCP, UDP, ICMP, ICMPv6EchoRequest, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, Raw
from scapy.layers.sctp import SCTP
pk = [
 (IP(src="192.0.2.1", dst="203.0.113.9", flags="DF")/TCP(sport=40000, dport=443), ("192.0.2.1","203.0.113.9",6,40000,443,True)),
 (IP(src="192.0.2.1", dst="203.0.113.9", options=b"\x01\x01\x01\x00")/UDP(sport=53, dport=5353), ("192.0.2.1","203.0.113.9",17,53,5353,False)),
 (IP(src="198.51.100.7", dst="192.0.2.1")/ICMP(type=3, code=4), ("198.51.100.7","192.0.2.1",1,3,4,False)),
 (IP(src="192.0.2.1", dst="192.0.2.2", frag=100, proto=6)/Raw(b"x"*16), ("192.0.2.1","192.0.2.2",6,0,0,False)),
 (IPv6(src="2001:db8::1", dst="2001:db8::2")/IPv6ExtHdrHopByHop()/IPv6ExtHdrDestOpt()/UDP(sport=1, dport=2), ("2001:db8::1","2001:db8::2",17,1,2,True)),
 (IPv6(src="2001:db8::1", dst="2001:db8::2")/IPv6ExtHdrRouting(addresses=["2001:db8::3"])/IPv6ExtHdrFragment(offset=0, m=1)/TCP(sport=22, dport=2222), ("2001:db8::1","2001:db8::2",6,22,2222,True)),
 (IPv6(src="2001:db8::1", dst="2001:db8::2")/IPv6ExtHdrFragment(offset=10, nh=17)/Raw(b"y"*16), ("2001:db8::1","2001:db8::2",17,0,0,True)),
 (IPv6(src="2001:db8::1", dst="2001:db8::2")/ICMPv6EchoRequest(), ("2001:db8::1","2001:db8::2",58,128,0,True)),
 (IPv6(src="2001:db8::1", dst="2001:db8::2")/SCTP(sport=3868, dport=3869), ("2001:db8::1","2001:db8::2",132,3868,3869,True)),
]
print(json.dumps([{"hex": bytes(p).hex(), "want": w} for p, w in pk]))
`
	out, err := exec.Command("/usr/bin/python3", "-c", script).Output()
	if err != nil {
		t.Fatalf("scapy: %v", err)
	}
	var cases []struct {
		Hex  string `json:"hex"`
		Want []any  `json:"want"`
	}
	if err := json.Unmarshal(out, &cases); err != nil {
		t.Fatalf("scapy output: %v\n%s", err, out)
	}
	if len(cases) != 9 {
		t.Fatalf("scapy gave %d packets, want 9", len(cases))
	}
	for _, c := range cases {
		pkt, _ := hex.DecodeString(c.Hex)
		f, err := FlowOf(pkt)
		w := c.Want
		if err != nil || f.Src.String() != w[0] || f.Dst.String() != w[1] || float64(f.Proto) != w[2] ||
			float64(f.SrcPort) != w[3] || float64(f.DstPort) != w[4] || f.DF != w[5] {
			t.Errorf("FlowOf(%s) = %+v, %v; scapy says %v", c.Hex, f, err, w)
		}
	}
}

func TestFlowOfAllocatesNothing(t *testing.T) {
	v4 := []byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x12, 0xb5, 0, 8, 0, 0}
	if n := testing.AllocsPerRun(100, func() {
		FlowOf(v4)
		FlowOf(v4[:3])
	}); n != 0 {
		t.Errorf("FlowOf allocates %.1f times per call pair, want 0", n)
	}
}

func FuzzFlowOf(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x12, 0xb5, 0, 8, 0, 0})
	v6 := make([]byte, 56)
	v6[0], v6[6], v6[40] = 0x60, 0, 44
	f.Add(v6)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fl, err := FlowOf(pkt)
		if err != nil {
			return
		}
		if fl.Version != pkt[0]>>4 || (fl.Version == 4) != fl.Src.Is4() || (fl.Version == 6) != fl.Dst.Is6() {
			t.Fatalf("FlowOf(%x) = %+v: version and addresses disagree", pkt, fl)
		}
		if fl.Opaque && (fl.SrcPort != 0 || fl.DstPort != 0) {
			t.Fatalf("FlowOf(%x) = %+v: opaque with ports", pkt, fl)
		}
		// A non-initial IPv4 fragment is always opaque.
		if fl.Version == 4 && binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 && !fl.Opaque {
			t.Fatalf("FlowOf(%x) = %+v: non-initial fragment with ports", pkt, fl)
		}
	})
}
