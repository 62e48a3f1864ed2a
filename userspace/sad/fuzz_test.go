package sad

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// specSeeds are good and nearly good specs the fuzzers start from (the
// committed corpus under testdata/fuzz adds more).
var specSeeds = []string{
	gcmSpec(0x100, ""),
	gcmSpec(0x102, "reqid 3 pcpu-num 7 dir out"),
	gcmSpec(0x101, "flag esn replay-oseq-hi 1 replay-seq 0xffffffff limit packet-soft 1 packet-hard 2 sel src 192.0.2.0/24 proto udp dport 53"),
	"ip x s add src 2001:db8::1 dst 2001:db8::2 proto esp spi 4096 enc cbc(aes) " + aes128 + " auth hmac(sha1) " + sha1 + " encap espinudp 4500 4500 ::",
	"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x200 auth-trunc hmac(sha512) 0x" + strings.Repeat("11", 64) + " 256 mode tunnel",
	`src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x400 enc ecb(cipher_null) "" auth-trunc hmac(md5) 'sixteen byte key' 96 replay-window 0 offload packet dev eth0 dir in mark 1 mask 0xff`,
	"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xff",
}

// FuzzParseSA: no panic on any line; an accepted spec is one the
// transforms accept, its String shows no key, and its SecretWords parse
// back to an equal spec.
func FuzzParseSA(f *testing.F) {
	for _, s := range specSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words, err := Tokenize(line)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Tokenize error without ErrSyntax: %v", err)
			}
			return
		}
		for _, lookup := range []bool{false, true} {
			var s *SASpec
			if lookup {
				s, err = ParseSAForLookup(words)
			} else {
				s, err = ParseSA(words)
			}
			if err != nil {
				if !errors.Is(err, ErrSyntax) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %q: not one line wrapping ErrSyntax", err)
				}
				continue
			}
			if !lookup {
				if _, err := ipsec.NewSA(s.Params()); err != nil {
					t.Fatalf("transforms refuse an accepted spec %s: %v", s, err)
				}
			}
			str := s.String()
			for _, k := range [][]byte{s.AEAD.Key, s.Enc.Key, s.Auth.Key} {
				if len(k) >= 8 && strings.Contains(str, hexKey(k)[2:]) {
					t.Fatalf("String shows a key: %s", str)
				}
			}
			again, err := parseSA(s.SecretWords(), !lookup)
			if err != nil {
				t.Fatalf("re-parse of %s: %v", str, err)
			}
			if !reflect.DeepEqual(again, s) {
				t.Fatalf("re-parse differs:\n%s\n%s", again, s)
			}
		}
	})
}

// FuzzParsePolicy: no panic; accepted policies re-render to an equal
// policy; the SPD's compiled matcher agrees with Selector.Match.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"src 198.51.100.0/24 dst 203.0.113.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel reqid 1",
		"src 192.0.2.1 dst 192.0.2.2 proto tcp sport 22 dir in action allow priority 10",
		"src 2001:db8::/32 dst 2001:db8:1::/48 proto ipv6-icmp type 135 dir fwd action block",
		"dir out priority 5 tmpl proto ah mode transport level use tmpl proto esp spi 0x1000",
		"src 192.0.2.9/24 dst 0.0.0.0/0 proto udp dport 4500 dev veth0 dir in if_id 3 mark 7 mask 0xf index 8 ptype main",
	} {
		f.Add(s, "198.51.100.7", "203.0.113.9", uint8(6), uint16(1), uint16(22))
	}
	f.Fuzz(func(t *testing.T, line, src, dst string, proto uint8, sport, dport uint16) {
		words, err := Tokenize(line)
		if err != nil {
			return
		}
		p, err := ParsePolicy(words)
		if err != nil {
			if !errors.Is(err, ErrSyntax) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: not one line wrapping ErrSyntax", err)
			}
			return
		}
		again, err := ParsePolicy(p.Words())
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("re-parse of %s: %+v, %v", p, again, err)
		}
		s, err1 := netip.ParseAddr(src)
		d, err2 := netip.ParseAddr(dst)
		if err1 != nil || err2 != nil || s.Zone() != "" || d.Zone() != "" {
			return
		}
		s, d = s.Unmap(), d.Unmap()
		if s.Is4() != d.Is4() {
			return
		}
		spd := NewSPD(Config{})
		if _, err := spd.Add(p); err != nil {
			t.Fatal(err)
		}
		want := p.Sel.Match(s, d, proto, sport, dport)
		if got := spd.Lookup(p.Dir, s, d, proto, sport, dport) != nil; got != want {
			t.Fatalf("SPD lookup %v, Selector.Match %v for %s>%s %d %d>%d on %s", got, want, s, d, proto, sport, dport, p)
		}
	})
}
