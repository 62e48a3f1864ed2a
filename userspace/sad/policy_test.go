package sad

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

func TestParsePolicyGood(t *testing.T) {
	a := netip.MustParseAddr
	pf := netip.MustParsePrefix
	for _, c := range []struct {
		line string
		want PolicySpec
	}{
		{"ip xfrm policy add src 198.51.100.0/24 dst 203.0.113.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel reqid 1",
			PolicySpec{Sel: Selector{Src: pf("198.51.100.0/24"), Dst: pf("203.0.113.0/24")}, Dir: DirOut, Action: ActionProtect,
				Templates: []Template{{Src: a("192.0.2.1"), Dst: a("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}}}},
		// The kernel docs' example (addresses moved to the documentation ranges).
		{"ip x p add src 192.0.2.70 dst 192.0.2.52 offload packet dev eth4 dir in tmpl src 192.0.2.70 dst 192.0.2.52 proto esp reqid 10000 mode transport",
			PolicySpec{}}, // offload is refused below; this entry is replaced in the loop
		{"src 192.0.2.1 dst 192.0.2.2 proto tcp sport 22 dir in action allow priority 10",
			PolicySpec{Sel: Selector{Src: pf("192.0.2.1/32"), Dst: pf("192.0.2.2/32"), Proto: 6, SrcPort: 22, SrcPortMask: 0xffff},
				Dir: DirIn, Action: ActionBypass, Priority: 10}},
		{"src 2001:db8::/32 dst 2001:db8:1::/48 proto ipv6-icmp type 135 dir fwd action block",
			PolicySpec{Sel: Selector{Src: pf("2001:db8::/32"), Dst: pf("2001:db8:1::/48"), Proto: 58, SrcPort: 135, SrcPortMask: 0xffff},
				Dir: DirFwd, Action: ActionDiscard}},
		{"dir out priority 5 tmpl proto ah mode transport level use tmpl proto esp spi 0x1000",
			PolicySpec{Dir: DirOut, Priority: 5, Action: ActionProtect, Templates: []Template{
				{Proto: ipsec.ProtoAH, Mode: ipsec.ModeTransport, Level: LevelUse},
				{Proto: ipsec.ProtoESP, Mode: ipsec.ModeTransport, SPI: 0x1000}}}},
		{"src 192.0.2.9/24 dst 0.0.0.0/0 proto udp dport 4500 dev veth0 dir in if_id 3 mark 7 mask 0xf index 8 ptype main",
			PolicySpec{Sel: Selector{Src: pf("192.0.2.0/24"), Dst: pf("0.0.0.0/0"), Proto: 17, DstPort: 4500, DstPortMask: 0xffff, Dev: "veth0"},
				Dir: DirIn, Action: ActionBypass, IfID: 3, Mark: &Mark{7, 0xf}, Index: 8}},
	} {
		p, err := ParsePolicy(mustTokenize(t, c.line))
		if strings.Contains(c.line, "offload") {
			if err == nil || !strings.Contains(err.Error(), "unknown word") {
				t.Errorf("offload on a policy: %v", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", c.line, err)
			continue
		}
		if !reflect.DeepEqual(*p, c.want) {
			t.Errorf("ParsePolicy(%q):\n got %+v\nwant %+v", c.line, *p, c.want)
		}
		again, err := ParsePolicy(p.Words())
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Errorf("re-parse of %q: %+v, %v", p, again, err)
		}
	}
}

func TestParsePolicyBad(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"src 192.0.2.0/24 dst 198.51.100.0/24", "needs dir in, out or fwd"},
		{"dir up", "dir must be in, out or fwd"},
		{"src 192.0.2.0/24 dst 2001:db8::/32 dir out", "different address families"},
		{"dir out action block tmpl proto esp", "action block discards the traffic"},
		{"dir out action deny", "action must be allow or block"},
		{"dir out tmpl mode tunnel", "tmpl needs proto esp or proto ah"},
		{"dir out tmpl proto esp mode tunnel", "tunnel-mode tmpl needs src ADDR and dst ADDR"},
		{"dir out tmpl src 192.0.2.1 proto esp", "both src and dst, or neither"},
		{"dir out tmpl src 192.0.2.1 dst 2001:db8::1 proto esp mode tunnel", "different address families"},
		{"dir out tmpl proto udp", "tmpl proto must be esp or ah"},
		{"dir out tmpl proto esp spi 7", "reserved by IANA"},
		{"dir out tmpl proto esp level maybe", "level must be required or use"},
		{"src 2001:db8::/32 dst 2001:db8::/32 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode transport", "family must match"},
		{"proto tcp type 3 dir in", "type needs proto icmp"},
		{"dport 80 dir in", "dport needs proto tcp"},
		{"proto mobility-header type 1 code 2 dir in", "mobility-header takes type only"},
		{"proto bogus dir in", "proto must be a protocol name"},
		{"proto 300 dir in", "proto must be a protocol name"},
		{"src 192.0.2.0/24 src 192.0.2.0/24 dir in", "src given twice"},
		{"dir in dir out", "dir given twice"},
		{"dir in priority -1", "priority must be a number"},
		{"dir in ptype sub", "ptype must be main"},
		{"dir in dev ''", "dev must be an interface name"},
		{"dir in whatever", `word 3 "whatever": unknown word; a policy spec takes: src, dst`},
	} {
		_, err := ParsePolicy(mustTokenize(t, c.line))
		if err == nil {
			t.Errorf("ParsePolicy(%q) accepted", c.line)
			continue
		}
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePolicy(%q):\n got %q\nwant %q", c.line, err, c.want)
		}
	}
}

func TestSelectorMatch(t *testing.T) {
	a := netip.MustParseAddr
	p, err := ParsePolicy(strings.Fields("src 198.51.100.0/24 dst 203.0.113.7 proto tcp dport 443 dir out"))
	if err != nil {
		t.Fatal(err)
	}
	s := &p.Sel
	for _, c := range []struct {
		src, dst     string
		proto        uint8
		sport, dport uint16
		want         bool
	}{
		{"198.51.100.9", "203.0.113.7", 6, 40000, 443, true},
		{"198.51.100.9", "203.0.113.7", 6, 40000, 80, false},
		{"198.51.100.9", "203.0.113.7", 17, 40000, 443, false},
		{"198.51.101.9", "203.0.113.7", 6, 40000, 443, false},
		{"198.51.100.9", "203.0.113.8", 6, 40000, 443, false},
		{"2001:db8::1", "203.0.113.7", 6, 40000, 443, false},
	} {
		if got := s.Match(a(c.src), a(c.dst), c.proto, c.sport, c.dport); got != c.want {
			t.Errorf("Match(%+v) = %v", c, got)
		}
	}
	var any Selector
	if !any.Match(a("2001:db8::1"), a("192.0.2.1"), 99, 1, 2) || any.Family() != 0 {
		t.Error("zero selector must match everything")
	}
}
