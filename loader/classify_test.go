package loader

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

const (
	dst4 = "192.0.2.1"
	dst6 = "2001:db8::1"
)

// testSAs is the SA table of the table, fuzz and benchmark tests.
var testSAs = map[SAKey]SA{
	{SPI: 0x1001, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}: {ID: 1},
	{SPI: 0x1002, Dst: netip.MustParseAddr(dst6), Proto: ProtoESP}: {ID: 2},
	{SPI: 0x2001, Dst: netip.MustParseAddr(dst4), Proto: ProtoAH}:  {ID: 3},
	{SPI: 0x2002, Dst: netip.MustParseAddr(dst6), Proto: ProtoAH}:  {ID: 4},
	{SPI: 0x3001, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}: {ID: 5, EncapPort: 4500},
	{SPI: 0x3002, Dst: netip.MustParseAddr(dst6), Proto: ProtoESP}: {ID: 6, EncapPort: 4500},
	{SPI: 0x3003, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}: {ID: 7, EncapPort: 4501},
	{SPI: 0x4001, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}: {ID: 8, EncapPort: 4500},
	{SPI: 0xff, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}:   {ID: 9},
}

func testConfig() Config {
	c := DefaultConfig()
	c.NATTPorts = []uint16{4501}
	return c
}

func newTestClassifier(tb testing.TB) *Classifier {
	tb.Helper()
	testutil.RequireRoot(tb)
	c, err := NewClassifier()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	for k, sa := range testSAs {
		if err := c.PutSA(k, sa); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.SetConfig(testConfig()); err != nil {
		tb.Fatal(err)
	}
	return c
}

type classifyCase struct {
	name   string
	frame  []byte
	reason Reason
	sa     uint32 // matched SA id, 0 = none
	config *Config
	lladdr net.HardwareAddr // the link's address (SetLinkAddr); nil: unset
}

// Link addresses for the other-host cases. Test frames go to macDst.
var (
	llOwn   = net.HardwareAddr(macDst)
	llOther = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	llZero  = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

// toMAC returns frame with its destination MAC replaced by mac.
func toMAC(frame []byte, mac string) []byte {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	out := slices.Clone(frame)
	copy(out, hw)
	return out
}

func bytesOf(b byte, n int) []byte { return slices.Repeat([]byte{b}, n) }

func classifyCases() []classifyCase {
	noESP, noAH, noUDP, no4, no6 := testConfig(), testConfig(), testConfig(), testConfig(), testConfig()
	noESP.ESP, noAH.AH, noUDP.UDPESP, no4.IPv4, no6.IPv6 = false, false, false, false, false
	hbh, rt, dopt := ext{typ: 0}, ext{typ: 43, len: 1}, ext{typ: 60, len: 2}
	marker := append(make([]byte, 4), bytesOf(0x33, 40)...)
	return []classifyCase{
		// ESP over IPv4 and L2 shapes.
		{name: "esp4 hit", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 header only", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 0)}.frame(), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 unknown spi", frame: v4{dst: dst4, proto: 50, payload: esp(0x9999, 64)}.frame(), reason: ReasonNoState},
		{name: "esp4 other dst", frame: v4{dst: "192.0.2.2", proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonNoState},
		{name: "esp4 spi 0", frame: v4{dst: dst4, proto: 50, payload: esp(0, 64)}.frame(), reason: ReasonMalformedESP},
		{name: "esp4 4 bytes", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, -4)}.frame(), reason: ReasonMalformedESP},
		{name: "esp4 7 bytes", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, -1)}.frame(), reason: ReasonMalformedESP},
		{name: "esp4 runt in padded frame", frame: append(v4{dst: dst4, proto: 50, payload: esp(0x1001, -4)}.frame(), bytesOf(0xee, 20)...), reason: ReasonMalformedESP},
		{name: "esp4 ip options 4", frame: v4{dst: dst4, proto: 50, options: 4, payload: esp(0x1001, 32)}.frame(), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 ip options 40", frame: v4{dst: dst4, proto: 50, options: 40, payload: esp(0x1001, 32)}.frame(), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 802.1Q", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(0x8100), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 QinQ 802.1ad", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(0x88a8, 0x8100), reason: ReasonSteerFallback, sa: 1},
		{name: "esp4 double 802.1Q", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(0x8100, 0x8100), reason: ReasonSteerFallback, sa: 1},
		{name: "three vlan tags", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(0x88a8, 0x8100, 0x8100), reason: ReasonPassUnparsed},
		{name: "vlan tag truncated", frame: ether(0x8100, nil)[:14], reason: ReasonPassUnparsed},
		{name: "esp4 first fragment", frame: v4{dst: dst4, proto: 50, frag: 0x2000, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassFragment},
		{name: "esp4 later fragment", frame: v4{dst: dst4, proto: 50, frag: 0x0010, payload: bytesOf(7, 64)}.frame(), reason: ReasonPassFragment},
		{name: "tcp4 fragment", frame: v4{dst: dst4, proto: 6, frag: 0x2000, payload: tcp(80)}.frame(), reason: ReasonPassFragment},
		{name: "esp4 DF set", frame: v4{dst: dst4, proto: 50, frag: 0x4000, payload: esp(0x1001, 64)}.frame(), reason: ReasonSteerFallback, sa: 1},
		{name: "tcp4", frame: v4{dst: dst4, proto: 6, payload: tcp(443)}.frame(), reason: ReasonPassOther},
		{name: "icmp4", frame: v4{dst: dst4, proto: 1, payload: bytesOf(8, 16)}.frame(), reason: ReasonPassOther},
		{name: "arp", frame: ether(0x0806, bytesOf(0, 28)), reason: ReasonPassOther},
		{name: "ethernet header only", frame: ether(0x0800, nil), reason: ReasonPassUnparsed},
		{name: "ipv4 truncated header", frame: ether(0x0800, v4{dst: dst4, proto: 50}.bytes()[:19]), reason: ReasonPassUnparsed},
		{name: "ipv4 total length beyond frame", frame: v4{dst: dst4, proto: 50, totDelta: 1, payload: esp(0x1001, 16)}.frame(), reason: ReasonPassUnparsed},
		{name: "ipv4 total length below header", frame: v4{dst: dst4, proto: 50, totDelta: -30, payload: esp(0x1001, 16)}.frame(), reason: ReasonPassUnparsed},
		{name: "ipv4 ihl 4", frame: v4{dst: dst4, proto: 50, ihl: 4, payload: esp(0x1001, 16)}.frame(), reason: ReasonPassUnparsed},
		{name: "ipv4 version 5", frame: v4{dst: dst4, proto: 50, version: 5, payload: esp(0x1001, 16)}.frame(), reason: ReasonPassUnparsed},
		{name: "esp4 state mismatch (SA wants UDP)", frame: v4{dst: dst4, proto: 50, payload: esp(0x4001, 32)}.frame(), reason: ReasonStateMismatch, sa: 8},
		{name: "esp4 ESP disabled", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(), reason: ReasonDisabledClass, sa: 1, config: &noESP},
		{name: "esp4 IPv4 disabled", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(), reason: ReasonDisabledClass, sa: 1, config: &no4},
		{name: "esp4 IPv6 disabled", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 32)}.frame(), reason: ReasonSteerFallback, sa: 1, config: &no6},

		// ESP over IPv6 and extension headers.
		{name: "esp6 hit", frame: v6{dst: dst6, proto: 50, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 unknown spi", frame: v6{dst: dst6, proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonNoState},
		{name: "esp6 hop-by-hop", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 hbh+routing+dstopts", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, rt, dopt}, payload: esp(0x1002, 64)}.frame(0x8100), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 six ext headers", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, dopt, rt, dopt, dopt, dopt}, payload: esp(0x1002, 8)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 seven ext headers", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, dopt, rt, dopt, dopt, dopt, dopt}, payload: esp(0x1002, 8)}.frame(), reason: ReasonPassUnparsed},
		{name: "esp6 ext header beyond payload", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh}, plDelta: -8, payload: esp(0x1002, -8)}.frame(), reason: ReasonPassUnparsed},
		{name: "esp6 after fragment header", frame: v6{dst: dst6, proto: 50, fragment: true, fragField: fragFirst, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassFragment},
		{name: "esp6 hbh then fragment", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh}, fragment: true, fragField: fragFirst, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassFragment},
		{name: "esp6 truncated", frame: v6{dst: dst6, proto: 50, payload: esp(0x1002, -2)}.frame(), reason: ReasonMalformedESP},
		{name: "esp6 spi 0", frame: v6{dst: dst6, proto: 50, payload: esp(0, 16)}.frame(), reason: ReasonMalformedESP},
		{name: "esp6 payload length beyond frame", frame: v6{dst: dst6, proto: 50, plDelta: 4, payload: esp(0x1002, 16)}.frame(), reason: ReasonPassUnparsed},
		{name: "ipv6 truncated header", frame: ether(0x86dd, v6{dst: dst6, proto: 50}.bytes()[:39]), reason: ReasonPassUnparsed},
		{name: "tcp6", frame: v6{dst: dst6, proto: 6, payload: tcp(443)}.frame(), reason: ReasonPassOther},
		{name: "tcp6 after hop-by-hop", frame: v6{dst: dst6, proto: 6, exts: []ext{hbh}, payload: tcp(443)}.frame(), reason: ReasonPassOther},
		{name: "icmp6", frame: v6{dst: dst6, proto: 58, payload: bytesOf(0x80, 16)}.frame(), reason: ReasonPassOther},
		{name: "esp6 IPv6 disabled", frame: v6{dst: dst6, proto: 50, payload: esp(0x1002, 32)}.frame(), reason: ReasonDisabledClass, sa: 2, config: &no6},

		// AH.
		{name: "ah4 hit", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 12, -1, bytesOf(0x45, 40))}.frame(), reason: ReasonSteerFallback, sa: 3},
		{name: "ah4 then esp", frame: v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 32))}.frame(), reason: ReasonSteerFallback, sa: 3},
		{name: "ah4 then truncated esp", frame: v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0x1001, -3))}.frame(), reason: ReasonMalformedESP},
		{name: "ah4 then esp spi 0", frame: v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0, 8))}.frame(), reason: ReasonMalformedESP},
		{name: "ah4 unknown spi", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2002, 12, -1, nil)}.frame(), reason: ReasonNoState},
		{name: "ah4 hdrlen 0", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 12, 0, nil)}.frame(), reason: ReasonMalformedAH},
		{name: "ah4 length beyond datagram", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 12, 200, nil)}.frame(), reason: ReasonMalformedAH},
		{name: "ah4 spi 0", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0, 12, -1, nil)}.frame(), reason: ReasonMalformedAH},
		{name: "ah4 truncated", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 0, -1, nil)[:10]}.frame(), reason: ReasonMalformedAH},
		{name: "ah4 AH disabled", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 12, -1, nil)}.frame(), reason: ReasonDisabledClass, sa: 3, config: &noAH},
		{name: "ah6 hit", frame: v6{dst: dst6, proto: 51, payload: ah(41, 0x2002, 12, -1, bytesOf(0x60, 40))}.frame(), reason: ReasonSteerFallback, sa: 4},
		{name: "ah6 after dstopts", frame: v6{dst: dst6, proto: 51, exts: []ext{dopt}, payload: ah(41, 0x2002, 20, -1, nil)}.frame(), reason: ReasonSteerFallback, sa: 4},
		{name: "ah6 length not 64-bit aligned", frame: v6{dst: dst6, proto: 51, payload: ah(41, 0x2002, 8, -1, nil)}.frame(), reason: ReasonMalformedAH},

		// UDP: IKE, NAT-T.
		{name: "udp4 4500 esp hit", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 64), 0)}.frame(), reason: ReasonSteerFallback, sa: 5},
		{name: "udp6 4500 esp hit", frame: v6{dst: dst6, proto: 17, payload: withCsum(udp(4500, esp(0x3002, 64), 0))}.frame(), reason: ReasonSteerFallback, sa: 6},
		{name: "udp4 4500 unknown spi", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x7777, 64), 0)}.frame(), reason: ReasonNoState},
		{name: "udp4 4500 ike marker", frame: v4{dst: dst4, proto: 17, payload: udp(4500, marker, 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 500 ike", frame: v4{dst: dst4, proto: 17, payload: udp(500, bytesOf(0x21, 28), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp6 500 ike", frame: v6{dst: dst6, proto: 17, payload: udp(500, bytesOf(0x21, 28), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 keepalive", frame: v4{dst: dst4, proto: 17, payload: udp(4500, []byte{0xff}, 0)}.frame(), reason: ReasonPassKeepalive},
		{name: "udp6 4500 keepalive", frame: v6{dst: dst6, proto: 17, payload: udp(4500, []byte{0xff}, 0)}.frame(), reason: ReasonPassKeepalive},
		{name: "udp4 4500 one byte not 0xff", frame: v4{dst: dst4, proto: 17, payload: udp(4500, []byte{0xfe}, 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 empty", frame: v4{dst: dst4, proto: 17, payload: udp(4500, nil, 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 length beyond datagram", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 16), 1)}.frame(), reason: ReasonMalformedUDP},
		{name: "udp4 4500 length below header", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 16), -26)}.frame(), reason: ReasonMalformedUDP},
		{name: "udp4 4500 header truncated", frame: v4{dst: dst4, proto: 17, payload: udp(4500, nil, 0)[:6]}.frame(), reason: ReasonMalformedUDP},
		{name: "udp4 3 bytes", frame: v4{dst: dst4, proto: 17, payload: []byte{0x11, 0x94, 0x11}}.frame(), reason: ReasonPassUnparsed},
		{name: "udp4 4500 six byte esp", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, -2), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4501 extra port hit", frame: v4{dst: dst4, proto: 17, payload: udp(4501, esp(0x3003, 32), 0)}.frame(), reason: ReasonSteerFallback, sa: 7},
		{name: "udp4 4502 not configured", frame: v4{dst: dst4, proto: 17, payload: udp(4502, esp(0x3003, 32), 0)}.frame(), reason: ReasonPassOther},
		{name: "udp4 dns", frame: v4{dst: dst4, proto: 17, payload: udp(53, bytesOf(0, 30), 0)}.frame(), reason: ReasonPassOther},
		{name: "udp4 4500 SA on 4501", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3003, 32), 0)}.frame(), reason: ReasonStateMismatch, sa: 7},
		{name: "udp4 4500 SA without encap", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x1001, 32), 0)}.frame(), reason: ReasonStateMismatch, sa: 1},
		{name: "udp4 4500 UDP-ESP disabled", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 32), 0)}.frame(), reason: ReasonDisabledClass, sa: 5, config: &noUDP},
		// The program reads what sits at a variable offset (IPv4 options, IPv6
		// extension headers) from copies: a 64-byte window after the IPv6
		// header, single loads past it, a 16-byte L4 window on the stack.
		{name: "esp6 L4 at the end of the ext window", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 60, len: 5}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 L4 straddling the ext window", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 60, len: 6}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 L4 past the ext window", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, {typ: 60, len: 8}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 ext header past the window", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 60, len: 7}, dopt, rt}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 spi 0 past the window", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 60, len: 7}, dopt}, payload: esp(0, 64)}.frame(), reason: ReasonMalformedESP},
		{name: "esp6 ext walk ends in a short payload", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh}, payload: esp(0x1002, -1)}.frame(), reason: ReasonMalformedESP},
		{name: "ah6 after dstopts then esp", frame: v6{dst: dst6, proto: 51, exts: []ext{dopt}, payload: ah(50, 0x2002, 20, -1, esp(0x1002, 16))}.frame(), reason: ReasonSteerFallback, sa: 4},
		{name: "ah6 after dstopts then esp spi 0", frame: v6{dst: dst6, proto: 51, exts: []ext{dopt}, payload: ah(50, 0x2002, 20, -1, esp(0, 16))}.frame(), reason: ReasonMalformedESP},
		{name: "udp6 keepalive after hbh", frame: v6{dst: dst6, proto: 17, exts: []ext{hbh}, payload: udp(4500, []byte{0xff}, 0)}.frame(), reason: ReasonPassKeepalive},
		{name: "udp4 keepalive after ip options", frame: v4{dst: dst4, proto: 17, options: 8, payload: udp(4500, []byte{0xff}, 0)}.frame(), reason: ReasonPassKeepalive},
		{name: "udp4 3 bytes after ip options", frame: v4{dst: dst4, proto: 17, options: 4, payload: []byte{0x11, 0x94, 0x11}}.frame(), reason: ReasonPassUnparsed},
		{name: "ah4 after ip options then esp", frame: v4{dst: dst4, proto: 51, options: 12, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 32))}.frame(), reason: ReasonSteerFallback, sa: 3},
		{name: "udp4 4500 frame padding ignored", frame: append(v4{dst: dst4, proto: 17, payload: udp(4500, []byte{0xff}, 0)}.frame(), bytesOf(0, 17)...), reason: ReasonPassKeepalive},

		// The IPv4 header checksum (RFC 1122 §3.2.1.2): checked only on what
		// would be steered, since that alone bypasses the kernel's check.
		{name: "esp4 bad header checksum", frame: v4{dst: dst4, proto: 50, badCsum: true, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassUnparsed, sa: 1},
		{name: "esp4 802.1Q bad header checksum", frame: v4{dst: dst4, proto: 50, badCsum: true, payload: esp(0x1001, 64)}.frame(0x8100), reason: ReasonPassUnparsed, sa: 1},
		{name: "esp4 QinQ bad header checksum", frame: v4{dst: dst4, proto: 50, badCsum: true, payload: esp(0x1001, 64)}.frame(0x88a8, 0x8100), reason: ReasonPassUnparsed, sa: 1},
		{name: "esp4 ip options bad header checksum", frame: v4{dst: dst4, proto: 50, options: 8, badCsum: true, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassUnparsed, sa: 1},
		{name: "esp4 ip options 40 bad header checksum", frame: v4{dst: dst4, proto: 50, options: 40, badCsum: true, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassUnparsed, sa: 1},
		{name: "ah4 bad header checksum", frame: v4{dst: dst4, proto: 51, badCsum: true, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 32))}.frame(), reason: ReasonPassUnparsed, sa: 3},
		{name: "udp4 4500 esp bad header checksum", frame: v4{dst: dst4, proto: 17, badCsum: true, payload: udp(4500, esp(0x3001, 64), 0)}.frame(), reason: ReasonPassUnparsed, sa: 5},
		{name: "esp4 unknown spi bad header checksum", frame: v4{dst: dst4, proto: 50, badCsum: true, payload: esp(0x9999, 64)}.frame(), reason: ReasonNoState},
		{name: "esp4 disabled bad header checksum", frame: v4{dst: dst4, proto: 50, badCsum: true, payload: esp(0x1001, 64)}.frame(), reason: ReasonDisabledClass, sa: 1, config: &noESP},
		{name: "tcp4 bad header checksum", frame: v4{dst: dst4, proto: 6, badCsum: true, payload: tcp(443)}.frame(), reason: ReasonPassOther},

		// IPv6 extension header rules (RFC 8200 §4).
		{name: "esp6 routing header in transit", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 43, len: 2, segleft: 1}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassOther},
		{name: "esp6 routing header after hbh in transit", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, {typ: 43, len: 2, segleft: 255}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassOther},
		{name: "esp6 routing header segments left 0", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 43, len: 2}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 routing header past the window in transit", frame: v6{dst: dst6, proto: 50, exts: []ext{{typ: 60, len: 7}, {typ: 43, len: 0, segleft: 1}}, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassOther},
		{name: "esp6 hbh not first", frame: v6{dst: dst6, proto: 50, exts: []ext{dopt, hbh}, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassUnparsed},
		{name: "esp6 after dstopts", frame: v6{dst: dst6, proto: 50, exts: []ext{dopt}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 atomic fragment", frame: v6{dst: dst6, proto: 50, fragment: true, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "esp6 dstopts then atomic fragment", frame: v6{dst: dst6, proto: 50, exts: []ext{dopt}, fragment: true, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2},
		{name: "udp6 atomic fragment esp", frame: v6{dst: dst6, proto: 17, fragment: true, payload: withCsum(udp(4500, esp(0x3002, 64), 0))}.frame(), reason: ReasonSteerFallback, sa: 6},
		{name: "esp6 later fragment", frame: v6{dst: dst6, proto: 50, fragment: true, fragField: 8, payload: bytesOf(7, 64)}.frame(), reason: ReasonPassFragment},
		{name: "esp6 last fragment", frame: v6{dst: dst6, proto: 50, fragment: true, fragField: 16, payload: bytesOf(7, 64)}.frame(), reason: ReasonPassFragment},
		{name: "tcp6 fragment", frame: v6{dst: dst6, proto: 6, fragment: true, fragField: fragFirst, payload: tcp(443)}.frame(), reason: ReasonPassFragment},
		{name: "tcp6 atomic fragment", frame: v6{dst: dst6, proto: 6, fragment: true, payload: tcp(443)}.frame(), reason: ReasonPassOther},
		// Payload length 0: a jumbogram (RFC 2675) needs a hop-by-hop header
		// (left to the kernel); without one the datagram is 40 bytes long.
		{name: "ipv6 jumbogram", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh}, plDelta: -80, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassUnparsed},
		{name: "esp6 payload length 0", frame: v6{dst: dst6, proto: 50, plDelta: -72, payload: esp(0x1002, 64)}.frame(), reason: ReasonMalformedESP},

		// NAT-T payloads, by the kernel's rule: ESP needs more than 8 bytes.
		{name: "udp4 4500 eight byte esp header", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 0), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 nine byte esp", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 1), 0)}.frame(), reason: ReasonSteerFallback, sa: 5},
		{name: "udp4 4500 short marker", frame: v4{dst: dst4, proto: 17, payload: udp(4500, make([]byte, 4), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 two zero bytes", frame: v4{dst: dst4, proto: 17, payload: udp(4500, make([]byte, 2), 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp4 4500 keepalive in a longer datagram", frame: v4{dst: dst4, proto: 17, payload: udp(4500, []byte{0xff, 0}, 0)}.frame(), reason: ReasonPassIKE},
		{name: "udp6 4500 esp checksum 0", frame: v6{dst: dst6, proto: 17, payload: udp(4500, esp(0x3002, 64), 0)}.frame(), reason: ReasonPassUnparsed},
		{name: "udp6 4500 ike marker checksum 0", frame: v6{dst: dst6, proto: 17, payload: udp(4500, marker, 0)}.frame(), reason: ReasonPassIKE},

		// SPIs 1-255 are reserved to IANA (RFC 4303 §2.1), not forbidden on
		// the wire as 0 is: an SA configured with one is honoured.
		{name: "esp4 spi 255 hit", frame: v4{dst: dst4, proto: 50, payload: esp(0xff, 64)}.frame(), reason: ReasonSteerFallback, sa: 9},
		{name: "esp4 spi 1 unknown", frame: v4{dst: dst4, proto: 50, payload: esp(1, 64)}.frame(), reason: ReasonNoState},
		// AH length: 32-bit multiple over IPv4, 64-bit over IPv6 (RFC 4302 §2.2).
		{name: "ah4 length 32-bit aligned", frame: v4{dst: dst4, proto: 51, payload: ah(4, 0x2001, 8, -1, nil)}.frame(), reason: ReasonSteerFallback, sa: 3},
		{name: "ah6 length 64-bit aligned", frame: v6{dst: dst6, proto: 51, payload: ah(41, 0x2002, 4, -1, nil)}.frame(), reason: ReasonSteerFallback, sa: 4},

		// The link's address (SetLinkAddr): a unicast frame to another MAC
		// (promiscuous mode) is PACKET_OTHERHOST to the kernel, which drops
		// it; group addresses are not; an unset address checks nothing.
		{name: "esp4 to the link's address", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonSteerFallback, sa: 1, lladdr: llOwn},
		{name: "esp4 link address all zero", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonSteerFallback, sa: 1, lladdr: llZero},
		{name: "esp4 other host", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp4 other host differs in byte 0", frame: toMAC(v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), "06:00:00:00:00:01"), reason: ReasonPassOtherHost, lladdr: llOwn},
		{name: "esp4 other host differs in byte 4", frame: toMAC(v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), "02:00:00:00:01:01"), reason: ReasonPassOtherHost, lladdr: llOwn},
		{name: "esp4 other host zero MAC", frame: toMAC(v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), "00:00:00:00:00:00"), reason: ReasonPassOtherHost, lladdr: llOwn},
		{name: "esp4 broadcast", frame: toMAC(v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), "ff:ff:ff:ff:ff:ff"), reason: ReasonSteerFallback, sa: 1, lladdr: llOwn},
		{name: "esp4 multicast", frame: toMAC(v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(), "01:00:5e:00:00:01"), reason: ReasonSteerFallback, sa: 1, lladdr: llOwn},
		{name: "esp4 802.1Q other host", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(0x8100), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp4 QinQ to the link's address", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(0x88a8, 0x8100), reason: ReasonSteerFallback, sa: 1, lladdr: llOwn},
		{name: "esp4 ip options other host", frame: v4{dst: dst4, proto: 50, options: 8, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp4 truncated other host not dropped", frame: v4{dst: dst4, proto: 50, payload: esp(0x1001, -4)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp4 fragment other host", frame: v4{dst: dst4, proto: 50, frag: 0x2000, payload: esp(0x1001, 64)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "ah4 other host", frame: v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 32))}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "udp4 4500 esp other host", frame: v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 64), 0)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "udp4 500 other host", frame: v4{dst: dst4, proto: 17, payload: udp(500, bytesOf(1, 40), 0)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "tcp4 other host", frame: v4{dst: dst4, proto: 6, payload: tcp(443)}.frame(), reason: ReasonPassOther, lladdr: llOther},
		{name: "tcp4 fragment other host", frame: v4{dst: dst4, proto: 6, frag: 0x2000, payload: tcp(443)}.frame(), reason: ReasonPassFragment, lladdr: llOther},
		{name: "esp6 other host", frame: v6{dst: dst6, proto: 50, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp6 ext headers other host", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, dopt}, payload: esp(0x1002, 64)}.frame(), reason: ReasonPassOtherHost, lladdr: llOther},
		{name: "esp6 multicast", frame: toMAC(v6{dst: dst6, proto: 50, payload: esp(0x1002, 64)}.frame(), "33:33:00:00:00:01"), reason: ReasonSteerFallback, sa: 2, lladdr: llOther},
		{name: "esp6 to the link's address", frame: v6{dst: dst6, proto: 50, exts: []ext{hbh, dopt}, payload: esp(0x1002, 64)}.frame(), reason: ReasonSteerFallback, sa: 2, lladdr: llOwn},
		{name: "tcp6 other host", frame: v6{dst: dst6, proto: 6, payload: tcp(443)}.frame(), reason: ReasonPassOther, lladdr: llOther},
	}
}

func saByID(id uint32) (SAKey, bool) {
	for k, sa := range testSAs {
		if sa.ID == id {
			return k, true
		}
	}
	return SAKey{}, false
}

// ipLength is the IP datagram length of a well-formed test frame.
func ipLength(frame []byte) uint64 {
	off := 12
	for frame[off] == 0x81 || frame[off] == 0x88 {
		off += 4
	}
	l3 := frame[off+2:]
	if frame[off] == 0x86 {
		return 40 + uint64(be16(l3[4:]))
	}
	return uint64(be16(l3[2:]))
}

func TestClassifyTable(t *testing.T) {
	c := newTestClassifier(t)
	cases := classifyCases()
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	seen := map[Reason]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.config != nil {
				cfg = *tc.config
			}
			if err := c.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			if err := c.SetLinkAddr(tc.lladdr); err != nil {
				t.Fatal(err)
			}
			var saKey SAKey
			var saBefore SACounters
			if tc.sa != 0 {
				saKey, _ = saByID(tc.sa)
				_, saBefore, _ = c.LookupSA(saKey)
			}
			before, err := c.Counters()
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Classify(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			after, err := c.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != tc.reason || res.Verdict != VerdictOf(tc.reason) {
				t.Errorf("got %v, want %s %s", res, VerdictOf(tc.reason), ReasonName(tc.reason))
			}
			for r := range NumReasons {
				want := uint64(0)
				if Reason(r) == tc.reason {
					want = 1
				}
				if d := after[r] - before[r]; d != want {
					t.Errorf("counter %s moved by %d, want %d", ReasonName(Reason(r)), d, want)
				}
			}
			switch {
			case tc.sa == 0 && res.Matched:
				t.Errorf("matched SA %d (%s), want none", res.SAID, res.Key)
			case tc.sa != 0 && (!res.Matched || res.SAID != tc.sa || res.Key != saKey):
				t.Errorf("matched %v sa %d %s, want sa %d %s", res.Matched, res.SAID, res.Key, tc.sa, saKey)
			case tc.sa != 0:
				_, saAfter, err := c.LookupSA(saKey)
				if err != nil {
					t.Fatal(err)
				}
				if saAfter.Packets-saBefore.Packets != 1 || saAfter.Bytes-saBefore.Bytes != ipLength(tc.frame) {
					t.Errorf("SA counters moved by %d packets %d bytes, want 1 and %d",
						saAfter.Packets-saBefore.Packets, saAfter.Bytes-saBefore.Bytes, ipLength(tc.frame))
				}
			}
			ref := ReferenceClassify(tc.frame, &ReferenceTable{SAs: testSAs, Config: cfg, LinkAddr: tc.lladdr})
			if ref != res {
				t.Errorf("reference classifier says %v, BPF says %v", ref, res)
			}
			seen[res.Reason] = true
		})
	}
	for r := range NumReasons {
		if !seen[Reason(r)] && Reason(r) != ReasonSteered {
			t.Errorf("no case produces %s", ReasonName(Reason(r)))
		}
	}
}

func TestReasonTableMatchesObject(t *testing.T) {
	spec, err := loadSpecForTest()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps["xdpsec_counters"].MaxEntries; got != uint32(NumReasons) {
		t.Fatalf("object has %d reason counters, loader names %d", got, NumReasons)
	}
	for r := range NumReasons {
		name := ReasonName(Reason(r))
		if got, err := ParseReason(name); err != nil || got != Reason(r) {
			t.Errorf("ParseReason(%q) = %v, %v", name, got, err)
		}
	}
	if _, err := ParseReason("bogus"); err == nil {
		t.Error("ParseReason accepted bogus")
	}
}

func TestObjectFeatures(t *testing.T) {
	f, err := ObjectFeatures()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"vlan", "qinq", "ipv4", "ipv4-options", "ipv6", "ipv6-ext-headers", "esp", "ah", "ah-esp", "udp-esp", "ike-pass", "fragment-pass", "steer-xsk", "otherhost-pass"}
	if got := f.Names(); !slices.Equal(got, want) {
		t.Fatalf("features %v, want %v", got, want)
	}
}

func TestSAValidation(t *testing.T) {
	c := newTestClassifier(t)
	d := netip.MustParseAddr(dst4)
	bad := []struct {
		k  SAKey
		sa SA
	}{
		{SAKey{SPI: 0, Dst: d, Proto: ProtoESP}, SA{}},
		{SAKey{SPI: 1, Dst: d, Proto: 17}, SA{}},
		{SAKey{SPI: 1, Proto: ProtoESP}, SA{}},
		{SAKey{SPI: 1, Dst: netip.MustParseAddr("fe80::1%eth0"), Proto: ProtoESP}, SA{}},
		{SAKey{SPI: 1, Dst: d, Proto: ProtoAH}, SA{EncapPort: 4500}},
		{SAKey{SPI: 1, Dst: d, Proto: ProtoESP}, SA{EncapPort: 500}},
	}
	for _, b := range bad {
		if err := c.PutSA(b.k, b.sa); !errors.Is(err, ErrInvalidSA) {
			t.Errorf("PutSA(%v, %v) = %v, want ErrInvalidSA", b.k, b.sa, err)
		}
	}
	missing := SAKey{SPI: 0xdead, Dst: d, Proto: ProtoESP}
	if err := c.DeleteSA(missing); !errors.Is(err, ErrSANotFound) {
		t.Errorf("DeleteSA(missing) = %v, want ErrSANotFound", err)
	}
	if _, _, err := c.LookupSA(missing); !errors.Is(err, ErrSANotFound) {
		t.Errorf("LookupSA(missing) = %v, want ErrSANotFound", err)
	}
	// An IPv4-mapped destination is the IPv4 SA.
	mapped := SAKey{SPI: 0x1001, Dst: netip.MustParseAddr("::ffff:192.0.2.1"), Proto: ProtoESP}
	if sa, _, err := c.LookupSA(mapped); err != nil || sa.ID != 1 {
		t.Errorf("LookupSA(v4-mapped) = %v, %v; want SA 1", sa, err)
	}
	// Update keeps counters; delete removes; list shows the rest.
	k := SAKey{SPI: 0x1001, Dst: d, Proto: ProtoESP}
	frame := v4{dst: dst4, proto: 50, payload: esp(0x1001, 8)}.frame()
	if _, err := c.Classify(frame); err != nil {
		t.Fatal(err)
	}
	_, before, _ := c.LookupSA(k)
	if err := c.PutSA(k, SA{ID: 41}); err != nil {
		t.Fatal(err)
	}
	sa, after, err := c.LookupSA(k)
	if err != nil || sa.ID != 41 || after != before || before.Packets == 0 {
		t.Errorf("after update: %v %v %v, counters before %v", sa, after, err, before)
	}
	if err := c.DeleteSA(k); err != nil {
		t.Fatal(err)
	}
	list, err := c.SAs()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(testSAs)-1 {
		t.Errorf("SAs lists %d, want %d", len(list), len(testSAs)-1)
	}
	for _, e := range list {
		if want, ok := testSAs[e.Key]; !ok || want != e.SA {
			t.Errorf("listed %v %v, not in the table", e.Key, e.SA)
		}
	}
	res, err := c.Classify(frame)
	if err != nil || res.Reason != ReasonNoState {
		t.Errorf("after delete: %v %v, want no-state", res, err)
	}
}

func TestConfigValidation(t *testing.T) {
	c := newTestClassifier(t)
	for _, bad := range []Config{
		{NATTPorts: []uint16{1, 2, 3, 4, 5}},
		{NATTPorts: []uint16{0}},
		{NATTPorts: []uint16{500}},
	} {
		if err := c.SetConfig(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SetConfig(%+v) = %v, want ErrInvalidConfig", bad, err)
		}
	}
	want := Config{ESP: true, IPv6: true, NATTPorts: []uint16{4501, 10000}}
	if err := c.SetConfig(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Config()
	if err != nil || !slices.Equal(got.NATTPorts, want.NATTPorts) || got.ESP != want.ESP || got.AH || got.UDPESP || got.IPv4 || !got.IPv6 {
		t.Errorf("Config() = %+v, %v; want %+v", got, err, want)
	}
}
