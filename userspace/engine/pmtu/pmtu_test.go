package pmtu

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	local4  = netip.MustParseAddr("198.51.100.1")
	remote4 = netip.MustParseAddr("203.0.113.7")
	local6  = netip.MustParseAddr("2001:db8:1::1")
	remote6 = netip.MustParseAddr("2001:db8:2::7")
)

// packet4 builds an IPv4 packet of total length size with protocol proto,
// the flags/fragment field frag and a recognisable payload.
func packet4(size int, proto byte, frag uint16, src, dst netip.Addr) []byte {
	p := make([]byte, size)
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	binary.BigEndian.PutUint16(p[4:], 0x1234)
	binary.BigEndian.PutUint16(p[6:], frag)
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^fold(sum(p[:20], 0)))
	for i := 20; i < size; i++ {
		p[i] = byte(i)
	}
	if proto == 17 {
		binary.BigEndian.PutUint16(p[20:], 40000)
		binary.BigEndian.PutUint16(p[22:], 9)
		binary.BigEndian.PutUint16(p[24:], uint16(size-20))
		binary.BigEndian.PutUint16(p[26:], 0)
	}
	return p
}

func packet6(size int, next byte, src, dst netip.Addr) []byte {
	p := make([]byte, size)
	p[0], p[6], p[7] = 0x60, next, 64
	binary.BigEndian.PutUint16(p[4:], uint16(size-40))
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	for i := 40; i < size; i++ {
		p[i] = byte(i)
	}
	return p
}

const df = 0x4000

func TestFragNeeded4(t *testing.T) {
	inner := packet4(1500, 17, df, local4, remote4)
	buf := make([]byte, MaxLen4)
	n, err := TooBig(buf, inner, 1400, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if n != MaxLen4 {
		t.Fatalf("length %d, want %d (RFC 1812: as much as fits in 576)", n, MaxLen4)
	}
	p := buf[:n]
	if fold(sum(p[:20], 0)) != 0xffff {
		t.Error("IPv4 header checksum does not verify")
	}
	if fold(sum(p[20:], 0)) != 0xffff {
		t.Error("ICMP checksum does not verify")
	}
	if p[9] != 1 || p[20] != 3 || p[21] != 4 || binary.BigEndian.Uint16(p[26:]) != 1400 {
		t.Errorf("proto %d type %d code %d mtu %d", p[9], p[20], p[21], binary.BigEndian.Uint16(p[26:]))
	}
	if netip.AddrFrom4([4]byte(p[12:16])) != remote4 || netip.AddrFrom4([4]byte(p[16:20])) != local4 {
		t.Errorf("addressed %v -> %v", p[12:16], p[16:20])
	}
	if !bytes.Equal(p[28:], inner[:n-28]) {
		t.Error("quoted bytes differ from the inner packet")
	}
	// An explicit source is used as given.
	from := netip.MustParseAddr("203.0.113.1")
	if _, err := TooBig(buf, inner, 1400, from); err != nil || netip.AddrFrom4([4]byte(buf[12:16])) != from {
		t.Errorf("explicit source: %v, got %v", err, buf[12:16])
	}
}

func TestPacketTooBig6(t *testing.T) {
	inner := packet6(1500, 17, local6, remote6)
	buf := make([]byte, MaxLen6)
	n, err := TooBig(buf, inner, 1280, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1280 {
		t.Fatalf("length %d, want 1280 (RFC 4443: as much as fits the minimum MTU)", n)
	}
	p := buf[:n]
	pseudo := sum(p[8:40], 0) + uint32(n-40) + 58
	if fold(sum(p[40:], pseudo)) != 0xffff {
		t.Error("ICMPv6 checksum does not verify")
	}
	if p[6] != 58 || p[40] != 2 || p[41] != 0 || binary.BigEndian.Uint32(p[44:]) != 1280 {
		t.Errorf("next %d type %d code %d mtu %d", p[6], p[40], p[41], binary.BigEndian.Uint32(p[44:]))
	}
	if netip.AddrFrom16([16]byte(p[8:24])) != remote6 || netip.AddrFrom16([16]byte(p[24:40])) != local6 {
		t.Error("wrong addresses")
	}
	if !bytes.Equal(p[48:], inner[:n-48]) {
		t.Error("quoted bytes differ")
	}
	// A packet shorter than the limit is quoted whole.
	small := packet4(300, 17, df, local4, remote4)
	if n, err := TooBig(buf, small, 200, netip.Addr{}); err != nil || n != 28+300 || !bytes.Equal(buf[28:n], small) {
		t.Errorf("300-byte packet: n=%d err=%v, want the whole packet quoted", n, err)
	}
}

func TestRefusals(t *testing.T) {
	buf := make([]byte, 2048)
	icmpErr4 := packet4(1500, 1, df, local4, remote4)
	icmpErr4[20] = 3
	echo4 := packet4(1500, 1, df, local4, remote4)
	echo4[20] = 8
	icmpErr6 := packet6(1500, 58, local6, remote6)
	icmpErr6[40] = 1
	echo6 := packet6(1500, 58, local6, remote6)
	echo6[40] = 128
	hbhErr6 := packet6(1500, 0, local6, remote6) // hop-by-hop, then ICMPv6 error
	hbhErr6[40], hbhErr6[41], hbhErr6[48] = 58, 0, 4
	multicast6 := packet6(1500, 17, local6, netip.MustParseAddr("ff0e::1"))
	badIHL := packet4(1500, 17, df, local4, remote4)
	badIHL[0] = 0x44
	for _, tc := range []struct {
		name  string
		inner []byte
		mtu   int
		from  netip.Addr
		want  error
	}{
		{"DF clear", packet4(1500, 17, 0, local4, remote4), 1400, netip.Addr{}, ErrFragmentable},
		{"non-first fragment", packet4(1500, 17, df|100, local4, remote4), 1400, netip.Addr{}, ErrNoReport},
		{"multicast destination", packet4(1500, 17, df, local4, netip.MustParseAddr("239.1.2.3")), 1400, netip.Addr{}, ErrNoReport},
		{"broadcast destination", packet4(1500, 17, df, local4, netip.MustParseAddr("255.255.255.255")), 1400, netip.Addr{}, ErrNoReport},
		{"unspecified source", packet4(1500, 17, df, netip.MustParseAddr("0.0.0.0"), remote4), 1400, netip.Addr{}, ErrNoReport},
		{"ICMPv4 error", icmpErr4, 1400, netip.Addr{}, ErrNoReport},
		{"fits", packet4(1400, 17, df, local4, remote4), 1400, netip.Addr{}, ErrFits},
		{"IPv4 mtu too small", packet4(1500, 17, df, local4, remote4), 60, netip.Addr{}, ErrBadMTU},
		{"IPv6 mtu too small", packet6(1500, 17, local6, remote6), 1200, netip.Addr{}, ErrBadMTU},
		{"ICMPv6 error", icmpErr6, 1280, netip.Addr{}, ErrNoReport},
		{"ICMPv6 error behind hop-by-hop", hbhErr6, 1280, netip.Addr{}, ErrNoReport},
		{"IPv6 multicast without source", multicast6, 1280, netip.Addr{}, ErrNoReport},
		{"IPv6 unspecified source", packet6(1500, 17, netip.IPv6Unspecified(), remote6), 1280, netip.Addr{}, ErrNoReport},
		{"truncated IPv4", packet4(1500, 17, df, local4, remote4)[:19], 1400, netip.Addr{}, ErrMalformed},
		{"IHL 4", badIHL, 1400, netip.Addr{}, ErrMalformed},
		{"version 5", []byte{0x50, 0, 0, 0}, 1400, netip.Addr{}, ErrMalformed},
		{"empty", nil, 1400, netip.Addr{}, ErrMalformed},
		{"IPv6 source for IPv4", packet4(1500, 17, df, local4, remote4), 1400, remote6, ErrMalformed},
		{"short buffer", packet4(1500, 17, df, local4, remote4), 1400, netip.Addr{}, ErrShortBuffer},
	} {
		dst := buf
		if tc.want == ErrShortBuffer {
			dst = buf[:100]
		}
		if _, err := TooBig(dst, tc.inner, tc.mtu, tc.from); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	for name, p := range map[string][]byte{"echo4": echo4, "echo6": echo6, "multicast6 with source": multicast6} {
		if _, err := TooBig(buf, p, 1280, map[bool]netip.Addr{true: local6}[name == "multicast6 with source"]); err != nil {
			t.Errorf("%s: %v, want an error message built", name, err)
		}
	}
}

// TestSumMatchesRFC1071: the 8-bytes-at-a-time sum equals the textbook
// 16-bit one's complement sum for every length and extreme contents.
func TestSumMatchesRFC1071(t *testing.T) {
	naive := func(b []byte) uint16 {
		var acc uint32
		for i := 0; i+1 < len(b); i += 2 {
			acc += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			acc += uint32(b[len(b)-1]) << 8
		}
		return fold(acc)
	}
	for _, fill := range []func(i int) byte{
		func(int) byte { return 0xff },
		func(int) byte { return 0 },
		func(i int) byte { return byte(i*131 + 7) },
	} {
		for n := 0; n < 1300; n++ {
			b := make([]byte, n)
			for i := range b {
				b[i] = fill(i)
			}
			if got, want := fold(sum(b, 0)), naive(b); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
				t.Fatalf("length %d: sum %04x, RFC 1071 %04x", n, got, want)
			}
		}
	}
}

func TestZeroAlloc(t *testing.T) {
	in4 := packet4(1500, 17, df, local4, remote4)
	in6 := packet6(1500, 17, local6, remote6)
	buf := make([]byte, MaxLen6)
	if a := testing.AllocsPerRun(100, func() {
		TooBig(buf, in4, 1400, netip.Addr{})
		TooBig(buf, in6, 1280, netip.Addr{})
		TooBig(buf, packetNoDF, 1400, netip.Addr{})
	}); a != 0 {
		t.Fatalf("%v allocations per run, want 0", a)
	}
}

var packetNoDF = packet4(1500, 17, 0, local4, remote4)

// BenchmarkTooBig reports the cost of building an error against copying
// the quoted bytes alone (the floor), measured in the same run.
func BenchmarkTooBig(b *testing.B) {
	buf := make([]byte, MaxLen6)
	for _, tc := range []struct {
		name  string
		inner []byte
		mtu   int
		quote int
	}{
		{"ipv4", packet4(1500, 17, df, local4, remote4), 1400, MaxLen4 - 28},
		{"ipv6", packet6(1500, 17, local6, remote6), 1280, MaxLen6 - 48},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const refN = 100000
			start := time.Now()
			for i := 0; i < refN; i++ {
				copy(buf, tc.inner[:tc.quote])
			}
			refNs := float64(time.Since(start).Nanoseconds()) / refN
			b.ResetTimer()
			for b.Loop() {
				TooBig(buf, tc.inner, tc.mtu, netip.Addr{})
			}
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(refNs, "copy-ns")
			b.ReportMetric(per/refNs, "x-copy")
		})
	}
}

func FuzzTooBig(f *testing.F) {
	f.Add(packet4(600, 17, df, local4, remote4), 100)
	f.Add(packet6(1400, 58, local6, remote6), 1280)
	f.Add(packet6(1400, 0, local6, remote6), 1280)
	f.Fuzz(func(t *testing.T, inner []byte, mtu int) {
		buf := make([]byte, MaxLen6)
		n, err := TooBig(buf, inner, mtu, netip.Addr{})
		if err != nil {
			return
		}
		p := buf[:n]
		switch p[0] >> 4 {
		case 4:
			if n > MaxLen4 || fold(sum(p[:20], 0)) != 0xffff || fold(sum(p[20:], 0)) != 0xffff {
				t.Fatalf("bad IPv4 error %x", p)
			}
		case 6:
			if n > MaxLen6 || fold(sum(p[40:], sum(p[8:40], 0)+uint32(n-40)+58)) != 0xffff {
				t.Fatalf("bad ICMPv6 error %x", p)
			}
		default:
			t.Fatalf("built version %d", p[0]>>4)
		}
	})
}

// judgePackets returns one IPv4 and one IPv6 error built from 1500-byte
// UDP packets.
func judgePackets(t *testing.T) [][]byte {
	var out [][]byte
	for _, in := range [][]byte{packet4(1500, 17, df, local4, remote4), packet6(1500, 17, local6, remote6)} {
		buf := make([]byte, MaxLen6)
		mtu := 1400
		if in[0]>>4 == 6 {
			mtu = 1280
		}
		n, err := TooBig(buf, in, mtu, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n])
	}
	return out
}

// TestScapyJudges: scapy (an independent implementation) parses both
// errors, recomputes every checksum and length, and finds the same bytes.
func TestScapyJudges(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs /usr/bin/python3 with scapy (Debian python3-scapy)")
	}
	const script = `
import sys
from scapy.all import IP, IPv6, ICMP, ICMPv6PacketTooBig, raw
for line in sys.stdin:
    b = bytes.fromhex(line.strip())
    if b[0] >> 4 == 4:
        p = IP(b)
        assert p[ICMP].type == 3 and p[ICMP].code == 4, p.summary()
        mtu = p[ICMP].nexthopmtu
        q = p.copy(); del q.chksum; del q.len; del q[ICMP].chksum
    else:
        p = IPv6(b)
        mtu = p[ICMPv6PacketTooBig].mtu
        q = p.copy(); del q.plen; del q[ICMPv6PacketTooBig].cksum
    assert raw(q.__class__(raw(q))) == b, "scapy recomputed different bytes"
    print(mtu)
`
	var in strings.Builder
	for _, p := range judgePackets(t) {
		in.WriteString(hex.EncodeToString(p) + "\n")
	}
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named 'scapy'") {
			t.Skip("scapy not installed for /usr/bin/python3")
		}
		t.Fatalf("scapy rejects the errors: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "1400" || got[1] != "1280" {
		t.Fatalf("scapy read MTUs %q, want [1400 1280]", got)
	}
}

// TestTsharkJudges: tshark's dissectors, with IPv4 header checksum
// validation on, call every checksum good.
func TestTsharkJudges(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("needs tshark")
	}
	file := filepath.Join(t.TempDir(), "toobig.pcap")
	if err := os.WriteFile(file, rawPcap(judgePackets(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-n", "-r", file, "-V", "-o", "ip.check_checksum:TRUE").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"[Header checksum status: Good]",
		"Type: 3 (Destination unreachable)",
		"Code: 4 (Fragmentation needed)",
		"MTU of next hop: 1400",
		"Type: Packet Too Big (2)",
		"MTU: 1280",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if strings.Count(s, "[Checksum Status: Good]") != 2 || strings.Contains(s, "Bad") || strings.Contains(s, "incorrect") {
		t.Errorf("tshark does not call both ICMP checksums good:\n%s", s)
	}
}

// rawPcap writes a classic pcap (LINKTYPE_RAW) holding pkts.
func rawPcap(pkts [][]byte) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 101)
	for i, p := range pkts {
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}
