package ipsec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// fragments splits the whole IPv4 or IPv6 packet pkt the way a sender
// does (RFC 791; RFC 8200 §4.5 with the Fragment header right after the
// 40-byte header), each fragment carrying at most chunk bytes of the
// fragmentable part (a multiple of 8). It also reports the offsets so a
// test can reassemble.
func fragments(pkt []byte, chunk int, id uint32) [][]byte {
	var out [][]byte
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		data := pkt[ihl:]
		for off := 0; off < len(data); off += chunk {
			end := min(off+chunk, len(data))
			f := append(append([]byte(nil), pkt[:ihl]...), data[off:end]...)
			binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
			binary.BigEndian.PutUint16(f[4:], uint16(id))
			fo := uint16(off / 8)
			if end < len(data) {
				fo |= 0x2000 // MF
			}
			binary.BigEndian.PutUint16(f[6:], fo) // DF clear: a fragmented packet
			ipv4Checksum(f[:ihl])
			out = append(out, f)
		}
		return out
	}
	data := pkt[40:]
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		f := append([]byte(nil), pkt[:40]...)
		fh := make([]byte, 8)
		fh[0] = pkt[6]
		fo := uint16(off)
		if end < len(data) {
			fo |= 1 // M
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		f = append(append(f, fh...), data[off:end]...)
		f[6] = protoFragment
		binary.BigEndian.PutUint16(f[4:], uint16(len(f)-40))
		out = append(out, f)
	}
	return out
}

func TestParseInnerFragments(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		whole := udpPacket(v6, 1000)
		var in inner
		if !parseInner(whole, &in) || in.frag {
			t.Fatalf("v6=%v whole packet: ok=%v frag=%v", v6, parseInner(whole, &in), in.frag)
		}
		frs := fragments(whole, 512, 77)
		if len(frs) != 2 {
			t.Fatalf("want 2 fragments, got %d", len(frs))
		}
		for i, f := range frs {
			if !parseInner(f, &in) || !in.frag || in.v6 != v6 {
				t.Errorf("v6=%v fragment %d: ok=%v frag=%v v6=%v", v6, i, parseInner(f, &in), in.frag, in.v6)
			}
			// A fragment is still held to its header's length.
			if parseInner(f[:len(f)-1], &in) {
				t.Errorf("v6=%v fragment %d cut by one byte accepted", v6, i)
			}
		}
	}
	// IPv6 atomic fragment (RFC 6946: offset 0, M clear): a whole packet,
	// transport mode puts ESP after its Fragment header.
	atomic := fragments(udpPacket(true, 100), 4096, 9)[0]
	var in inner
	if !parseInner(atomic, &in) || in.frag || in.l3Len != 48 || in.protoOff != 40 || in.proto != protoUDP {
		t.Errorf("atomic fragment: ok=%v %+v, want whole, l3Len 48, protoOff 40, proto UDP", parseInner(atomic, &in), in)
	}
}

// TestTunnelCarriesFragments: every fragment of a packet, both families,
// each under each outer family, encrypts as an inner packet of its own
// and decrypts to the very bytes that went in (ESP with an AEAD, ESP
// CBC+HMAC, AH); the decrypted fragments reassemble to the original.
func TestTunnelCarriesFragments(t *testing.T) {
	shapes := []struct {
		name string
		p    SAParams
	}{
		{"gcm", gcmParams()},
		{"cbc+sha256", SAParams{Proto: ProtoESP, Mode: ModeTunnel, SPI: 0x3004, ReplayWindow: 32,
			Enc:  AlgorithmKey{Name: "cbc(aes)", Key: key(16, 2)},
			Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 9), ICVBits: 128}}},
		{"ah", SAParams{Proto: ProtoAH, Mode: ModeTunnel, SPI: 0x3005, ReplayWindow: 32,
			Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 9), ICVBits: 128}}},
	}
	for _, sh := range shapes {
		for _, outer6 := range []bool{false, true} {
			for _, inner6 := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/outer6=%v/inner6=%v", sh.name, outer6, inner6), func(t *testing.T) {
					p := sh.p
					p.Src, p.Dst = addr4a, addr4b
					if outer6 {
						p.Src, p.Dst = addr6a, addr6b
					}
					tx, rx := newPair(t, p)
					whole := udpPacket(inner6, 1500)
					var got [][]byte
					for _, f := range fragments(whole, 600, 0x1234) {
						r := roundTrip(t, tx, rx, f) // byte-exact per fragment
						if want := map[bool]uint8{false: protoIPIP, true: protoIPv6}[inner6]; r.NextHeader != want {
							t.Errorf("next header %d, want %d", r.NextHeader, want)
						}
						got = append(got, f)
					}
					if len(got) != 3 {
						t.Fatalf("%d fragments, want 3", len(got))
					}
					if re := reassemble(t, got); !bytes.Equal(re, whole[ipHeaderLen(whole):]) {
						t.Error("decrypted fragments do not reassemble to the original payload")
					}
				})
			}
		}
	}
}

func ipHeaderLen(p []byte) int {
	if p[0]>>4 == 4 {
		return int(p[0]&0xf) * 4
	}
	return 40
}

// reassemble joins the fragmentable parts of fragments by their offsets.
func reassemble(t *testing.T, frs [][]byte) []byte {
	t.Helper()
	var out []byte
	for _, f := range frs {
		var off int
		var data []byte
		if f[0]>>4 == 4 {
			off = int(binary.BigEndian.Uint16(f[6:])&0x1fff) * 8
			data = f[ipHeaderLen(f):]
		} else {
			off = int(binary.BigEndian.Uint16(f[42:]) &^ 7)
			data = f[48:]
		}
		if off != len(out) {
			t.Fatalf("fragment at offset %d after %d bytes", off, len(out))
		}
		out = append(out, data...)
	}
	return out
}

// TestTransportRefusesFragments: transport-mode ESP and AH refuse first
// and non-first fragments of both families with ErrFragment (not
// ErrBadPacket), leave the frame as it was and spend no sequence number;
// an IPv6 atomic fragment is a whole packet and goes through, ESP after
// its Fragment header.
func TestTransportRefusesFragments(t *testing.T) {
	for _, proto := range []Proto{ProtoESP, ProtoAH} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/v6=%v", proto, v6), func(t *testing.T) {
				p := SAParams{Proto: proto, Mode: ModeTransport, SPI: 0x3006, Src: addr4a, Dst: addr4b, ReplayWindow: 32,
					Auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 9), ICVBits: 128}}
				if proto == ProtoESP {
					p = gcmParams()
					p.Mode = ModeTransport
				}
				if v6 {
					p.Src, p.Dst = addr6a, addr6b
				}
				tx, rx := newPair(t, p)
				for i, f := range fragments(udpPacket(v6, 1500), 600, 0x55) {
					fr := frameWith(f)
					before := append([]byte(nil), fr...)
					_, _, err := tx.Encrypt(fr, testHead, len(f))
					if !errors.Is(err, ErrFragment) || errors.Is(err, ErrBadPacket) {
						t.Fatalf("fragment %d: err %v, want ErrFragment only", i, err)
					}
					if !strings.Contains(err.Error(), "fragment") {
						t.Errorf("error %q does not say fragment", err)
					}
					if !bytes.Equal(fr, before) {
						t.Fatalf("fragment %d: refused, but the frame changed", i)
					}
				}
				// No sequence number was spent: the next whole packet is seq 1.
				enc := seal(t, tx, udpPacket(v6, 100))
				var o Outer
				if ParseOuter(enc, 0, &o) != VerdictOK || o.Seq != 1 {
					t.Fatalf("after the refusals the next packet has seq %d, want 1", o.Seq)
				}
				if v6 {
					atomic := fragments(udpPacket(true, 100), 4096, 9)[0]
					enc := seal(t, tx, atomic)
					if enc[6] != protoFragment || enc[40] != uint8(map[Proto]int{ProtoESP: protoESP, ProtoAH: protoAH}[proto]) {
						t.Fatalf("atomic fragment: next headers %d then %d, want Fragment then %v", enc[6], enc[40], proto)
					}
					r := open(rx, enc)
					if r.Verdict != VerdictOK {
						t.Fatalf("atomic fragment: verdict %v", r.Verdict)
					}
				}
			})
		}
	}
}

// TestScapyDecryptsFragmentInESP: the independent judge. scapy builds a
// 3000-byte ICMP echo and fragments it (fragment() for IPv4 without DF,
// fragment6() for IPv6); we encrypt each fragment in tunnel mode with
// AES-GCM; scapy's own SecurityAssociation decrypts each ESP packet,
// must find the very fragment inside, and defragments them back into the
// echo it built.
func TestScapyDecryptsFragmentInESP(t *testing.T) {
	if _, err := exec.Command("/usr/bin/python3", "-c", "import scapy").CombinedOutput(); err != nil {
		t.Skip("needs /usr/bin/python3 with scapy (Debian's python3-scapy)")
	}
	const gen = `
from scapy.all import IP, IPv6, ICMP, ICMPv6EchoRequest, IPv6ExtHdrFragment, Raw, fragment, fragment6
data = bytes(range(256)) * 12
p4 = IP(src="192.0.2.1", dst="198.51.100.2", id=0x4242, flags=0)/ICMP(id=7, seq=1)/Raw(data[:2972])
p6 = IPv6(src="2001:db8::1", dst="2001:db8:1::2")/IPv6ExtHdrFragment(id=0x4242)/ICMPv6EchoRequest(id=7, seq=1, data=data[:2952])
print(bytes(p4).hex(), ",".join(bytes(f).hex() for f in fragment(p4, 1400)))
print(bytes(p6).hex(), ",".join(bytes(f).hex() for f in fragment6(p6, 1400)))
`
	out, err := exec.Command("/usr/bin/python3", "-c", gen).Output()
	if err != nil {
		t.Fatalf("scapy: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("scapy said %q", out)
	}
	p := gcmParams()
	p.Src, p.Dst = addr6a, addr6b // 4in6 and 6in6 alike
	tx, _ := newPair(t, p)
	var args []string
	for _, l := range lines {
		fs := strings.Fields(l)
		var encs []string
		frs := strings.Split(fs[1], ",")
		if len(frs) < 3 {
			t.Fatalf("scapy made %d fragments of %d bytes, want 3", len(frs), len(fs[0])/2)
		}
		for _, h := range frs {
			f, _ := hex.DecodeString(h)
			var in inner
			if !parseInner(f, &in) || !in.frag {
				t.Fatalf("scapy's fragment %s... not read as a fragment", h[:80])
			}
			encs = append(encs, hex.EncodeToString(seal(t, tx, f)))
		}
		args = append(args, fs[0], strings.Join(frs, ","), strings.Join(encs, ","))
	}
	k := hex.EncodeToString(p.AEAD.Key)
	judge := `
import sys
from scapy.all import IP, IPv6, ESP, ICMPv6EchoRequest, SecurityAssociation, defragment
from scapy.layers.inet6 import defragment6
sa = SecurityAssociation(ESP, spi=0x3003, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(sys.argv[1]),
                         tunnel_header=IPv6(src="2001:db8::1", dst="2001:db8:1::2"))
a = sys.argv[2:]
for i in range(0, len(a), 3):
    whole, frs, encs = bytes.fromhex(a[i]), a[i+1].split(","), a[i+2].split(",")
    got = []
    for f, e in zip(frs, encs):
        d = sa.decrypt(IPv6(bytes.fromhex(e)))
        assert bytes(d) == bytes.fromhex(f), "fragment %d differs" % len(got)
        got.append(d)
    if whole[0] >> 4 == 4:
        re = defragment(got)
        assert len(re) == 1 and bytes(re[0]) == whole, "IPv4 reassembly differs"
    else:
        re = defragment6(got)
        w = IPv6(whole)
        assert re.src == w.src and bytes(re[ICMPv6EchoRequest]) == bytes(w[ICMPv6EchoRequest]), "IPv6 reassembly differs"
    print("ok", len(got))
`
	out, err = exec.Command("/usr/bin/python3", append([]string{"-c", judge, k}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("scapy judge: %v\n%s", err, out)
	}
	if got := strings.Count(string(out), "ok "); got != 2 {
		t.Fatalf("scapy judge said %s", out)
	}
}

// TestEncryptBatchFragments: EncryptBatch treats fragments as Encrypt
// does: in tunnel mode each is protected (and decrypts to itself), in
// transport mode each gets ErrFragment, its frame untouched, while the
// whole packets around it are protected with consecutive sequence numbers.
func TestEncryptBatchFragments(t *testing.T) {
	for _, mode := range []Mode{ModeTunnel, ModeTransport} {
		p := gcmParams()
		p.Mode = mode
		tx, rx := newPair(t, p)
		frs := fragments(udpPacket(false, 1500), 600, 0x77)
		in := [][]byte{udpPacket(false, 64), frs[0], frs[1], udpPacket(false, 64), frs[2]}
		pkts := make([]Packet, len(in))
		for i, b := range in {
			pkts[i] = Packet{frameWith(b), testHead, len(b)}
		}
		errs := make([]error, len(pkts))
		done := tx.EncryptBatch(nil, pkts, errs)
		seq := uint32(0)
		for i, b := range in {
			isFrag := i == 1 || i == 2 || i == 4
			if mode == ModeTransport && isFrag {
				if !errors.Is(errs[i], ErrFragment) || !bytes.Equal(pkts[i].Frame[testHead:testHead+len(b)], b) {
					t.Errorf("%v: packet %d: err %v (want ErrFragment), frame unchanged %v", mode, i, errs[i], bytes.Equal(pkts[i].Frame[testHead:testHead+len(b)], b))
				}
				continue
			}
			if errs[i] != nil {
				t.Fatalf("%v: packet %d: %v", mode, i, errs[i])
			}
			seq++
			enc := pkts[i].Frame[pkts[i].Off : pkts[i].Off+pkts[i].N]
			var o Outer
			if ParseOuter(enc, 0, &o) != VerdictOK || o.Seq != seq {
				t.Errorf("%v: packet %d: seq %d, want %d", mode, i, o.Seq, seq)
			}
			f := frameWith(enc)
			r := rx.Decrypt(f, testHead, len(enc))
			if r.Verdict != VerdictOK || !bytes.Equal(f[r.Off:r.Off+r.N], b) {
				t.Errorf("%v: packet %d: verdict %v, same bytes %v", mode, i, r.Verdict, r.Verdict == VerdictOK && bytes.Equal(f[r.Off:r.Off+r.N], b))
			}
		}
		if want := map[Mode]int{ModeTunnel: 5, ModeTransport: 2}[mode]; done != want {
			t.Errorf("%v: %d protected, want %d", mode, done, want)
		}
	}
}
