package sad

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

const (
	gcm128 = "0x44434241343332312423222114131211f4f3f2f1" // 16-byte key + 4-byte salt, from the kernel docs
	aes128 = "0x000102030405060708090a0b0c0d0e0f"
	sha256 = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	sha1   = "0x0102030405060708090a0b0c0d0e0f1011121314"
	cc20   = "0x808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3"
)

func mustTokenize(t testing.TB, line string) []string {
	t.Helper()
	w, err := Tokenize(line)
	if err != nil {
		t.Fatalf("Tokenize(%q): %v", line, err)
	}
	return w
}

func TestTokenize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   # only a comment", nil},
		{"a b\tc", []string{"a", "b", "c"}},
		{`aead 'rfc4106(gcm(aes))' 0x01 128 # trailing comment`, []string{"aead", "rfc4106(gcm(aes))", "0x01", "128"}},
		{`enc "ecb(cipher_null)" ""`, []string{"enc", "ecb(cipher_null)", ""}},
		{`a"b c"d`, []string{"ab cd"}},
		{`x "q\"uote\\" y`, []string{"x", `q"uote\`, "y"}},
		{`a\ b c#notcomment`, []string{"a b", "c#notcomment"}},
	} {
		got, err := Tokenize(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Tokenize(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{`a 'b`, `a "b`} {
		if _, err := Tokenize(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("Tokenize(%q): %v, want ErrSyntax", in, err)
		}
	}
}

func TestParseSAGood(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for _, c := range []struct {
		line  string
		check func(t *testing.T, s *SASpec)
	}{
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel aead 'rfc4106(gcm(aes))' " + gcm128 + " 128",
			func(t *testing.T, s *SASpec) {
				want := &SASpec{Src: v4a, Dst: v4b, Proto: ipsec.ProtoESP, SPI: 0x100, Mode: ipsec.ModeTunnel,
					AEAD:         ipsec.AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: hexBytes(gcm128), ICVBits: 128},
					ReplayWindow: DefaultReplayWindow}
				if !reflect.DeepEqual(s, want) {
					t.Errorf("got %+v\nwant %+v", s, want)
				}
			}},
		// The kernel documentation's example, with its leading command.
		{"ip x s add proto esp dst 198.51.100.70 src 198.51.100.52 spi 0x107 mode transport reqid 0x07 replay-window 32 " +
			"aead 'rfc4106(gcm(aes))' " + gcm128 + " 128 sel src 198.51.100.52/24 dst 198.51.100.70/24 proto tcp offload packet dev eth4 dir in",
			func(t *testing.T, s *SASpec) {
				if s.ReqID != 7 || s.ReplayWindow != 32 || s.Mode != ipsec.ModeTransport || s.Sel == nil ||
					s.Sel.Src != netip.MustParsePrefix("198.51.100.0/24") || s.Sel.Proto != 6 ||
					s.Offload == nil || *s.Offload != (Offload{"packet", "eth4", "in"}) {
					t.Errorf("got %+v sel %+v offload %+v", s, s.Sel, s.Offload)
				}
			}},
		{"ip xfrm state update src 2001:db8::1 dst 2001:db8::2 proto esp spi 4096 enc cbc(aes) " + aes128 +
			" auth-trunc hmac(sha256) " + sha256 + " 128 flag esn noecn replay-oseq 0xfffffffe replay-oseq-hi 1 replay-seq 5",
			func(t *testing.T, s *SASpec) {
				if !s.ESN || !reflect.DeepEqual(s.Flags, []string{"noecn"}) || s.OutSeq != 1<<32|0xfffffffe || s.InSeq != 5 ||
					s.Auth.ICVBits != 128 || s.Enc.Name != "cbc(aes)" || s.Mode != ipsec.ModeTransport || s.SPI != 4096 {
					t.Errorf("got %+v", s)
				}
			}},
		// auth with Linux's default truncation (96 bits for SHA-1).
		{"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x200 auth hmac(sha1) " + sha1,
			func(t *testing.T, s *SASpec) {
				if !reflect.DeepEqual(s.Auth, ipsec.AlgorithmKey{Name: "hmac(sha1)", Key: hexBytes(sha1), ICVBits: 96}) {
					t.Errorf("auth %+v", s.Auth)
				}
			}},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x300 mode tunnel aead rfc7539esp(chacha20,poly1305) " + cc20 + " 128 " +
			"encap espinudp 4500 4500 0.0.0.0 limit byte-soft 1000 byte-hard 2000 limit packet-hard 10 limit time-soft 60 time-use-hard 120 " +
			"replay-window 4096 if_id 7 mark 0x10 mask 0xff output-mark 5 dir out seq 9",
			func(t *testing.T, s *SASpec) {
				wantL := Limits{Lifetime: ipsec.Lifetime{SoftBytes: 1000, HardBytes: 2000, HardPackets: 10}, TimeSoft: time.Minute, TimeUseHard: 2 * time.Minute}
				if s.Encap == nil || *s.Encap != (Encap{"espinudp", 4500, 4500, netip.MustParseAddr("0.0.0.0")}) ||
					s.Limits != wantL || s.ReplayWindow != 4096 || s.IfID != 7 || *s.Mark != (Mark{0x10, 0xff}) ||
					*s.OutputMark != (Mark{5, 0xffffffff}) || s.Dir != "out" || s.Seq != 9 {
					t.Errorf("got %+v encap %+v", s, s.Encap)
				}
			}},
		// Integrity-only ESP with the null cipher's empty key, as iproute2
		// takes it; string keys are taken byte for byte.
		{`src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x400 enc ecb(cipher_null) "" auth-trunc hmac(md5) 'sixteen byte key' 96 replay-window 0`,
			func(t *testing.T, s *SASpec) {
				if len(s.Enc.Key) != 0 || string(s.Auth.Key) != "sixteen byte key" || s.ReplayWindow != 0 {
					t.Errorf("got %+v", s)
				}
			}},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x500 aead rfc4543(gcm(aes)) " + gcm128 + " 128 sel src 192.0.2.0/24 dst 192.0.2.0/24 proto icmp type 8 code 0 dev veth0",
			func(t *testing.T, s *SASpec) {
				if s.Sel.SrcPort != 8 || s.Sel.SrcPortMask != 0xffff || s.Sel.DstPortMask != 0xffff || s.Sel.Dev != "veth0" {
					t.Errorf("sel %+v", s.Sel)
				}
			}},
		// RFC 9611 per-queue SA: pcpu-num is kept and printed back, 0 too.
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x700 mode tunnel reqid 1 aead rfc4106(gcm(aes)) " + gcm128 + " 128 pcpu-num 0",
			func(t *testing.T, s *SASpec) {
				if s.PCPU == nil || *s.PCPU != 0 || !strings.HasSuffix(s.String(), " pcpu-num 0") {
					t.Errorf("pcpu-num 0: got %v in %s", s.PCPU, s)
				}
			}},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x701 aead rfc4106(gcm(aes)) " + gcm128 + " 128 pcpu-num 255",
			func(t *testing.T, s *SASpec) {
				if s.PCPU == nil || *s.PCPU != MaxPCPU || !strings.Contains(s.String(), " pcpu-num 255") {
					t.Errorf("pcpu-num 255: got %v in %s", s.PCPU, s)
				}
			}},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x702 aead rfc4106(gcm(aes)) " + gcm128 + " 128",
			func(t *testing.T, s *SASpec) {
				if s.PCPU != nil || strings.Contains(s.String(), "pcpu-num") {
					t.Errorf("no pcpu-num: got %v in %s", s.PCPU, s)
				}
			}},
		{"src ::ffff:192.0.2.1 dst 192.0.2.2 proto esp spi 0x600 aead rfc4106(gcm(aes)) " + gcm128 + " 64",
			func(t *testing.T, s *SASpec) {
				if !s.Src.Is4() || s.AEAD.ICVBits != 64 {
					t.Errorf("got %+v", s)
				}
			}},
	} {
		s, err := ParseSA(mustTokenize(t, c.line))
		if err != nil {
			t.Errorf("ParseSA(%q): %v", redactLine(c.line), err)
			continue
		}
		c.check(t, s)
		checkSpecInvariants(t, s)
	}
}

// checkSpecInvariants: the transforms accept every spec the parser does,
// String shows no key, and SecretWords parse back to an equal spec.
func checkSpecInvariants(t *testing.T, s *SASpec) {
	t.Helper()
	if _, err := ipsec.NewSA(s.Params()); err != nil {
		t.Errorf("ipsec.NewSA refuses a spec ParseSA accepted (%s): %v", s, err)
	}
	str := s.String()
	for _, k := range [][]byte{s.AEAD.Key, s.Enc.Key, s.Auth.Key} {
		if len(k) >= 4 && (strings.Contains(str, hexString(k)) || strings.Contains(str, string(k))) {
			t.Errorf("String shows key bytes: %s", str)
		}
	}
	again, err := ParseSA(s.SecretWords())
	if err != nil {
		t.Fatalf("re-parse of %s: %v", s, err)
	}
	if !reflect.DeepEqual(again, s) {
		t.Errorf("re-parse differs:\n%+v\n%+v", again, s)
	}
	// String is itself parseable except for the redacted keys.
	if !strings.Contains(str, "<key ") && s.AEAD.Name+s.Enc.Name+s.Auth.Name != "" {
		t.Errorf("String lost the key placeholders: %s", str)
	}
}

func TestParseSABad(t *testing.T) {
	base := "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 "
	gcm := " aead rfc4106(gcm(aes)) " + gcm128 + " 128"
	for _, c := range []struct {
		line string
		want string // a fragment of the one-line error
	}{
		{"", "needs src ADDR and dst ADDR"},
		{"src 192.0.2.1 proto esp spi 0x100" + gcm, "needs src ADDR and dst ADDR"},
		{"src 192.0.2.1 dst 192.0.2.2 spi 0x100" + gcm, "needs proto esp or proto ah"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp" + gcm, "needs spi"},
		{"src 192.0.2.1 dst 2001:db8::2 proto esp spi 0x100" + gcm, "different address families"},
		{"src 192.0.2.300 dst 192.0.2.2 proto esp spi 0x100" + gcm, `word 2 "192.0.2.300": src must be an IPv4 or IPv6 address`},
		{"src fe80::1%eth0 dst fe80::2 proto esp spi 0x100" + gcm, "must be an IPv4 or IPv6 address"},
		{"src 192.0.2.1 dst 192.0.2.2 proto comp spi 0x100", "not supported"},
		{"src 192.0.2.1 dst 192.0.2.2 proto udp spi 0x100", "proto must be esp or ah"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0" + gcm, "spi 0 is reserved for local use"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xff" + gcm, "reserved by IANA (RFC 4303 §2.1)"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 1" + gcm, "reserved by IANA"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100000000" + gcm, "at most 32 bits"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi banana" + gcm, "spi must be a number"},
		{base + "mode beet" + gcm, "mode beet is not supported"},
		{base + "pcpu-num 256" + gcm, `word 10 "256": pcpu-num 256 is out of range: it names the engine queue (0-255)`},
		{base + "pcpu-num 4294967295" + gcm, "pcpu-num 4294967295 is out of range"},
		{base + "pcpu-num -1" + gcm, "pcpu-num must be a number"},
		{base + "pcpu-num" + gcm, "pcpu-num must be a number"},
		{base + "pcpu-num 1 pcpu-num 2" + gcm, "pcpu-num given twice"},
		{base + "mode fast" + gcm, "mode must be transport or tunnel"},
		{base, "proto esp needs aead NAME KEY ICVBITS, or enc NAME KEY"},
		{base + "auth-trunc hmac(sha256) " + sha256 + " 128", "proto esp needs aead"},
		{base + "aead gcm(aes) " + gcm128 + " 128", `unknown aead algorithm "gcm(aes)" (known: rfc4106(gcm(aes)), rfc4543(gcm(aes)), rfc7539esp(chacha20,poly1305))`},
		{base + "aead cbc(aes) " + aes128 + " 128", "is an enc algorithm, not aead"},
		{base + "aead rfc4106(gcm(aes)) " + aes128 + " 128", "takes a key of 160 or 224 or 288 bits, got 128 bits"},
		{base + "aead rfc4106(gcm(aes)) " + gcm128 + " 100", "allows an ICV of 64 or 96 or 128 bits, got 100"},
		{base + "aead rfc4543(gcm(aes)) " + gcm128 + " 96", "allows an ICV of 128 bits"},
		{base + "aead rfc4106(gcm(aes)) 0x0g" + gcm128[4:] + " 128", "not an even number of hex digits"},
		{base + "aead rfc4106(gcm(aes)) " + gcm128 + "0 128", "not an even number of hex digits"},
		{base + "aead rfc4106(gcm(aes)) " + gcm128, "needs the ICV length in bits"},
		{base + "enc cbc(aes) " + aes128 + gcm, "aead is a combined algorithm"},
		{base + "enc cbc(aes) 0x0011", "takes a key of 128 or 192 or 256 bits, got 16 bits"},
		{base + "enc ecb(cipher_null) \"\"", "would protect nothing"},
		{base + "enc cbc(aes) " + aes128, "enc cbc(aes) without auth-trunc is encryption without integrity"},
		{base + "enc rfc3686(ctr(aes)) 0x" + strings.Repeat("11", 20), "enc rfc3686(ctr(aes)) without auth-trunc"},
		{base + gcm + " tfcpad 128", "xdpsec does not add TFC padding"},
		{base + "enc cbc(aes) " + aes128 + " auth hmac(sha256) " + sha256, "auth hmac(sha256) means 96-bit truncation in Linux, which RFC 4868 does not allow; write auth-trunc 'hmac(sha256)' KEY 128"},
		{base + "enc cbc(aes) " + aes128 + " auth-trunc hmac(sha256) " + sha256 + " 96", "allows an ICV of 128 bits, got 96"},
		{base + "enc cbc(aes) " + aes128 + " auth-trunc hmac(sha1) " + sha1 + " 96 auth hmac(sha1) " + sha1, "auth/auth-trunc given twice"},
		{base + "enc cbc(aes) " + aes128 + " auth-trunc hmac(sha3) " + sha1 + " 96", "unknown auth-trunc algorithm"},
		{"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x100" + gcm, "proto ah takes auth or auth-trunc only"},
		{"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x100 enc cbc(aes) " + aes128, "proto ah takes auth or auth-trunc only"},
		{"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x100", "proto ah needs auth-trunc"},
		{"src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x100 auth-trunc hmac(sha1) " + sha1 + " 96 encap espinudp 4500 4500 0.0.0.0", "encap espinudp applies to proto esp only"},
		{base + gcm + " encap espintcp 4500 4500 0.0.0.0", "encap espintcp is not supported"},
		{base + gcm + " encap espinudp 0 4500 0.0.0.0", "source port must not be 0"},
		{base + gcm + " encap espinudp 4500 70000 0.0.0.0", "at most 16 bits"},
		{base + gcm + " encap espinudp 4500 4500", "needs the original address"},
		{base + gcm + " flag esn oseq-may-wrap", "never lets a sequence number wrap"},
		{base + gcm + " flag bogus", "unknown flag; flags are: noecn"},
		{base + gcm + " flag", "flag needs a flag name"},
		{base + gcm + " replay-window 100000", "replay-window 100000 is too large"},
		{base + gcm + " replay-oseq-hi 1", "need flag esn"},
		{base + gcm + " limit byte-soft 10 byte-hard 5", "soft limit is above its hard limit"},
		{base + gcm + " limit bytes 10", "unknown limit"},
		{base + gcm + " limit time-soft 99999999999999999", "too large"},
		{base + gcm + " sel", "sel needs selector words"},
		{base + gcm + " sel src 192.0.2.0/24 dst 2001:db8::/32", "different address families"},
		{base + gcm + " sel src 192.0.2.0/24 sport 80", "sport needs proto tcp"},
		{base + gcm + " sel src 192.0.2.0/33", "must be an address or prefix"},
		{base + gcm + " dir sideways", "dir must be in or out"},
		{base + gcm + " offload dev eth0 dir up", "offload dir must be in or out"},
		{base + gcm + " offload eth0", "offload takes"},
		{base + gcm + " spi 0x200", "spi given twice"},
		{base + gcm + " frobnicate 1", `word 13 "frobnicate": unknown word; an SA spec takes: src, dst, proto`},
		{base + gcm + " comp deflate", "IPComp"},
		{base + gcm + " mark", "mark needs a mark value (a number) after it"},
	} {
		_, err := ParseSA(mustTokenize(t, c.line))
		if err == nil {
			t.Errorf("ParseSA(%q) accepted", redactLine(c.line))
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseSA(%q): %v does not wrap ErrSyntax", redactLine(c.line), err)
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) {
			t.Errorf("ParseSA(%q):\n got %q\nwant %q", redactLine(c.line), msg, c.want)
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("error is more than one line: %q", msg)
		}
		for _, k := range []string{gcm128, aes128, sha256, sha1} {
			if strings.Contains(msg, k[2:10]) {
				t.Errorf("error shows key bytes: %q", msg)
			}
		}
	}
}

func TestUnknownWordRedactsKeys(t *testing.T) {
	// A key in the wrong place is reported by its shape, not its bytes.
	_, err := ParseSA([]string{"src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x100", gcm128})
	if err == nil || strings.Contains(err.Error(), gcm128[2:12]) || !strings.Contains(err.Error(), "<40 hex digits>") {
		t.Fatalf("got %v", err)
	}
}

func TestParseSAForLookup(t *testing.T) {
	s, err := ParseSAForLookup(strings.Fields("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1234 encap espinudp 4500 4500 0.0.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Key() != (SAKey{SPI: 0x1234, Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP}) || s.Encap == nil {
		t.Fatalf("got %+v", s)
	}
	if _, err := ParseSA(strings.Fields("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1234")); err == nil {
		t.Fatal("ParseSA accepted an ESP SA without algorithms")
	}
	// Present algorithm words are still checked.
	if _, err := ParseSAForLookup(strings.Fields("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1234 enc cbc(aes) 0x00")); err == nil {
		t.Fatal("ParseSAForLookup accepted a bad key length")
	}
}

func TestSAStringCanonical(t *testing.T) {
	s, err := ParseSA(mustTokenize(t, "ip xfrm state add dst 192.0.2.2 src 192.0.2.1 spi 256 proto esp mode tunnel reqid 1 "+
		"enc cbc(aes) "+aes128+" auth hmac(sha1) "+sha1+" flag esn limit packet-soft 5"))
	if err != nil {
		t.Fatal(err)
	}
	want := "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00000100 reqid 1 mode tunnel replay-window 64 flag esn " +
		"enc cbc(aes) <key 128 bits> auth-trunc hmac(sha1) <key 160 bits> 96 limit packet-soft 5"
	if got := s.String(); got != want {
		t.Fatalf("String:\n got %s\nwant %s", got, want)
	}
}

func hexBytes(s string) []byte {
	b, err := (&wordReader{words: []string{s}}).key("")
	if err != nil {
		panic(err)
	}
	return b
}

func hexString(b []byte) string { return hexKey(b)[2:] }

// redactLine keeps test failure messages free of the (test) keys anyway,
// so a failing test shows what a user would see.
func redactLine(l string) string {
	w := strings.Fields(l)
	for i := range w {
		w[i] = redact(w[i])
	}
	return strings.Join(w, " ")
}

func TestParseSpecFile(t *testing.T) {
	in := "# xdpsec example\n\n" +
		"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel \\\n" +
		"    aead 'rfc4106(gcm(aes))' " + gcm128 + " 128   # outbound\n" +
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x101 mode tunnel aead rfc4106(gcm(aes)) " + gcm128 + " 128\n" +
		"ip xfrm policy add src 198.51.100.0/24 dst 203.0.113.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel\n" +
		"policy src 203.0.113.0/24 dst 198.51.100.0/24 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp mode tunnel\n"
	f, err := ParseSpecFile(strings.NewReader(in), "xdpsec.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.SAs) != 2 || len(f.Policies) != 2 || f.SAs[0].SPI != 0x100 || f.SAs[1].SPI != 0x101 ||
		f.Policies[0].Dir != DirOut || f.Policies[1].Dir != DirIn {
		t.Fatalf("got %d SAs %d policies", len(f.SAs), len(f.Policies))
	}
	bad := "# comment\nsrc 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 \\\n aead rfc4106(gcm(aes)) " + gcm128 + " 99\n"
	_, err = ParseSpecFile(strings.NewReader(bad), "x.conf")
	if !errors.Is(err, ErrSyntax) || !strings.HasPrefix(err.Error(), "x.conf:2: word 12 \"99\": rfc4106(gcm(aes)) allows an ICV of 64 or 96 or 128 bits") || strings.Contains(err.Error(), gcm128[2:]) {
		t.Fatalf("got %v", err)
	}
}
