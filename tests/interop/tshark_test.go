package interop

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/pcap"
)

// Packet builders for the tests that do not need scapy. Checksums are
// left 0 (UDP over IPv4 allows it; nobody here validates the others).

func ipv4(src, dst string, proto byte, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(payload)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	return append(p, payload...)
}

func ipv6(src, dst string, nh byte, payload []byte) []byte {
	p := make([]byte, 40, 40+len(payload))
	p[0], p[6], p[7] = 0x60, nh, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, payload...)
}

func udp(sport, dport uint16, data []byte) []byte {
	u := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(data)))
	return append(u, data...)
}

func icmpEcho(data []byte) []byte {
	return append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, data...)
}

// writeEthernetPcap writes IP packets as Ethernet frames.
func writeEthernetPcap(t *testing.T, name string, pkts [][]byte) {
	t.Helper()
	w, err := pcap.Create(name, pcap.LinkTypeEthernet, pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	for i, p := range pkts {
		et := []byte{0x08, 0x00}
		if p[0]>>4 == 6 {
			et = []byte{0x86, 0xdd}
		}
		f := append([]byte{2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa}, et...)
		if err := w.WritePacket(ts.Add(time.Duration(i)*time.Millisecond), append(f, p...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// tsharkCase is one SA tshark 4.0 can decrypt and authenticate, with the
// names of its ESP SA table (UAT esp_sa: protocol, src, dst, SPI,
// encryption algorithm, key, authentication algorithm, key).
type tsharkCase struct {
	name, spec       string
	family           int
	src, dst         string
	spi              uint32
	encName, encKey  string
	authName, authKy string
	// want: next header tshark must find in each decrypted packet.
	wantNH []string
}

func TestTsharkDecryptsOurOutput(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("needs tshark (Debian tshark)")
	}
	dir := t.TempDir()
	gcmKey := "0x" + key(20, 0x31)
	gcm256Key := "0x" + key(36, 0x41)
	cbcKey := "0x" + key(16, 0x51)
	cbc256Key := "0x" + key(32, 0x61)
	shaKey := "0x" + key(32, 0x71)
	cases := []tsharkCase{
		{"gcm128-tunnel44", "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2001 mode tunnel aead rfc4106(gcm(aes)) " + gcmKey + " 128",
			4, "192.0.2.1", "192.0.2.2", 0x2001, "AES-GCM with 16 octet ICV [RFC4106]", gcmKey, "NULL", "", []string{"0x04", "0x04", "0x04"}},
		{"gcm128-icv8-transport44", "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2002 mode transport aead rfc4106(gcm(aes)) " + gcmKey + " 64",
			4, "192.0.2.1", "192.0.2.2", 0x2002, "AES-GCM with 8 octet ICV [RFC4106]", gcmKey, "NULL", "", []string{"0x11", "0x01", "0x11"}},
		{"gcm256-transport66", "src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x2003 mode transport aead rfc4106(gcm(aes)) " + gcm256Key + " 128",
			6, "2001:db8::1", "2001:db8::2", 0x2003, "AES-GCM with 16 octet ICV [RFC4106]", gcm256Key, "NULL", "", []string{"0x11", "0x11", "0x11"}},
		{"cbc128-sha256-transport44", "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2004 mode transport enc cbc(aes) " + cbcKey + " auth-trunc hmac(sha256) " + shaKey + " 128",
			4, "192.0.2.1", "192.0.2.2", 0x2004, "AES-CBC [RFC3602]", cbcKey, "HMAC-SHA-256-128 [RFC4868]", shaKey, []string{"0x11", "0x01", "0x11"}},
		{"cbc256-sha256-tunnel66", "src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x2005 mode tunnel enc cbc(aes) " + cbc256Key + " auth-trunc hmac(sha256) " + shaKey + " 128",
			6, "2001:db8::1", "2001:db8::2", 0x2005, "AES-CBC [RFC3602]", cbc256Key, "HMAC-SHA-256-128 [RFC4868]", shaKey, []string{"0x29", "0x29", "0x29"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var plain [][]byte
			if c.family == 4 {
				for _, n := range []int{0, 3, 200} {
					if strings.Contains(c.name, "tunnel") {
						plain = append(plain, ipv4("198.51.100.1", "198.51.100.2", 17, udp(40000, 7, bytes.Repeat([]byte{0xa5}, n))))
						continue
					}
					if n == 3 {
						plain = append(plain, ipv4(c.src, c.dst, 1, icmpEcho([]byte("xdpsec"))))
						continue
					}
					plain = append(plain, ipv4(c.src, c.dst, 17, udp(40000, 7, bytes.Repeat([]byte{0xa5}, n))))
				}
			} else {
				for _, n := range []int{0, 3, 200} {
					src, dst := c.src, c.dst
					if strings.Contains(c.name, "tunnel") {
						src, dst = "2001:db8:1::1", "2001:db8:1::2"
					}
					plain = append(plain, ipv6(src, dst, 17, udp(40000, 7, bytes.Repeat([]byte{0x5a}, n))))
				}
			}
			in, out := filepath.Join(dir, c.name+".plain.pcap"), filepath.Join(dir, c.name+".esp.pcap")
			writeEthernetPcap(t, in, plain)
			xdpsec(t, "pcap", "encrypt", "--sa", c.spec, in, "-w", out)

			uat := func(encKey, authKey string) string {
				proto := "IPv4"
				if c.family == 6 {
					proto = "IPv6"
				}
				return fmt.Sprintf(`uat:esp_sa:"%s","%s","%s","0x%08x","%s","%s","%s","%s"`,
					proto, c.src, c.dst, c.spi, c.encName, encKey, c.authName, authKey)
			}
			fields := func(file, u string) [][]string {
				cmd := exec.Command("tshark", "-r", file, "-o", "esp.enable_encryption_decode:TRUE",
					"-o", "esp.enable_authentication_check:TRUE", "-o", u,
					"-T", "fields", "-E", "separator=|", "-e", "esp.icv_good", "-e", "esp.icv_bad", "-e", "esp.protocol", "-e", "udp.length")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				o, err := cmd.Output()
				if err != nil {
					t.Fatalf("tshark: %v\n%s", err, stderr.String())
				}
				var rows [][]string
				for _, l := range strings.Split(strings.TrimSpace(string(o)), "\n") {
					rows = append(rows, strings.Split(l, "|"))
				}
				return rows
			}
			rows := fields(out, uat(c.encKey, c.authKy))
			if len(rows) != len(plain) {
				t.Fatalf("tshark shows %d packets, want %d", len(rows), len(plain))
			}
			for i, r := range rows {
				if r[0] != "1" || r[1] != "0" || r[2] != c.wantNH[i] {
					t.Errorf("packet %d: icv_good=%q icv_bad=%q next header=%q, want 1, 0, %s", i, r[0], r[1], r[2], c.wantNH[i])
				}
			}
			// The judge must be able to say no. With the right keys and
			// one ICV bit flipped, the plaintext is still right (so tshark
			// dissects the inner packet) and the ICV must be judged bad.
			// A wrong AEAD key is no use here: the IV is random, so the
			// garbage "next header" sometimes sends tshark into a dissector
			// that throws before it records the ICV verdict.
			tampered := filepath.Join(dir, c.name+".badicv.pcap")
			flipLastByte(t, out, tampered)
			for i, r := range fields(tampered, uat(c.encKey, c.authKy)) {
				if r[0] == "1" || r[1] != "1" || r[2] != c.wantNH[i] {
					t.Errorf("flipped ICV bit, packet %d: icv_good=%q icv_bad=%q next header=%q, want 0, 1, %s", i, r[0], r[1], r[2], c.wantNH[i])
				}
			}
			// A wrong integrity key (plaintext unaffected) must fail too.
			if c.authName != "NULL" {
				wrongAuth := c.authKy[:len(c.authKy)-2] + "ff"
				for i, r := range fields(out, uat(c.encKey, wrongAuth)) {
					if r[0] == "1" || r[1] != "1" {
						t.Errorf("wrong integrity key, packet %d: icv_good=%q icv_bad=%q, want the ICV judged bad", i, r[0], r[1])
					}
				}
			}
		})
	}
}

// flipLastByte copies a capture with the last byte of every frame (the
// last ICV byte of an ESP frame without a trailer) inverted in its low bit.
func flipLastByte(t *testing.T, in, out string) {
	t.Helper()
	r, err := pcap.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := pcap.Create(out, r.LinkType(), pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d := append([]byte(nil), p.Data...)
		d[len(d)-1] ^= 1
		if err := w.WritePacket(p.Timestamp, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// craftCBCSHA256 builds an ESP transport packet for the SA of
// TestEveryVerdict with this test's own AES-CBC and HMAC-SHA-256-128 (not
// xdpsec's), so that padding, next header and sequence number can be
// wrong while the ICV is right.
func craftCBCSHA256(t *testing.T, encKey, authKey []byte, spi, seq uint32, payload, pad []byte, nh byte) []byte {
	t.Helper()
	pt := append(append(append([]byte{}, payload...), pad...), byte(len(pad)), nh)
	if len(pt)%16 != 0 {
		t.Fatalf("crafted plaintext %d bytes is not a multiple of 16", len(pt))
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		t.Fatal(err)
	}
	iv := bytes.Repeat([]byte{0x3c}, 16)
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
	esp := binary.BigEndian.AppendUint32(nil, spi)
	esp = binary.BigEndian.AppendUint32(esp, seq)
	esp = append(append(esp, iv...), ct...)
	m := hmac.New(sha256.New, authKey)
	m.Write(esp)
	return ipv4("192.0.2.1", "192.0.2.2", 50, append(esp, m.Sum(nil)[:16]...))
}

// TestEveryVerdict produces each verdict of `xdpsec pcap decrypt` on
// purpose, in one capture, through the command line.
func TestEveryVerdict(t *testing.T) {
	dir := t.TempDir()
	encKey := mustHex(t, key(16, 0x11))
	authKey := mustHex(t, key(32, 0x22))
	const spi = 0x3001
	spec := fmt.Sprintf("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x%x mode transport enc cbc(aes) 0x%x auth-trunc hmac(sha256) 0x%x 128 replay-window 32", spi, encKey, authKey)
	seg := udp(40000, 7, []byte("0123456789abc")) // 21 bytes: 21+pad+2 = 32 with pad 9
	good := func(seq uint32) []byte {
		return craftCBCSHA256(t, encKey, authKey, spi, seq, seg, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, 17)
	}
	badICV := good(2)
	badICV[len(badICV)-1] ^= 0x80
	truncated := good(9)[:20+6]
	binary.BigEndian.PutUint16(truncated[2:], 26)
	frag := good(10)
	frag[6] = 0x20 // more fragments
	ike := ipv4("192.0.2.1", "192.0.2.2", 17, udp(500, 500, make([]byte, 28)))
	ikeNATT := ipv4("192.0.2.1", "192.0.2.2", 17, udp(4500, 4500, make([]byte, 32))) // non-ESP marker: SPI field 0
	keepalive := ipv4("192.0.2.1", "192.0.2.2", 17, udp(4500, 4500, []byte{0xff}))
	forged200 := good(200)
	forged200[len(forged200)-5] ^= 1
	otherSPI := good(1)
	binary.BigEndian.PutUint32(otherSPI[20:], 0x3002)

	type want struct {
		pkt     []byte
		verdict string
	}
	cases := []want{
		{good(1), "ok"},
		{badICV, "bad-icv"},
		{craftCBCSHA256(t, encKey, authKey, spi, 3, seg, []byte{1, 2, 3, 4, 5, 6, 7, 9, 9}, 17), "bad-padding"},
		{craftCBCSHA256(t, encKey, authKey, spi, 0, seg, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, 17), "bad-seq"},
		{good(1), "replay"},
		{good(4), "ok"},
		{good(100), "ok"},
		{good(50), "replay"}, // left of the 32-packet window ending at 100
		{otherSPI, "no-state"},
		{truncated, "malformed"},
		{frag, "fragment"},
		{ike, "ike"},
		{ikeNATT, "ike"},
		{keepalive, "nat-keepalive"},
		{craftCBCSHA256(t, encKey, authKey, spi, 101, nil, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 59), "dummy"},
		{ipv4("192.0.2.1", "192.0.2.2", 17, udp(40000, 7, []byte("plain"))), "not-ipsec"},
		{good(2), "replay"},    // left of the window (101-32) now, checked before the ICV
		{forged200, "bad-icv"}, // a forged packet must not move the window to 200...
		{good(150), "ok"},      // ...or 150 (left of 200-32) would be a replay
	}
	var pkts [][]byte
	for _, c := range cases {
		pkts = append(pkts, c.pkt)
	}
	in := filepath.Join(dir, "verdicts.pcap")
	writeEthernetPcap(t, in, pkts)
	lines := parseLines(t, xdpsec(t, "pcap", "decrypt", "--sa", spec, "--json", in))
	if len(lines) != len(cases) {
		t.Fatalf("%d lines for %d packets", len(lines), len(cases))
	}
	seen := map[string]bool{}
	for i, l := range lines {
		seen[l.Verdict] = true
		if l.Index != i || l.Verdict != cases[i].verdict {
			t.Errorf("packet %d: index %d verdict %q, want %q", i, l.Index, l.Verdict, cases[i].verdict)
		}
		if l.Verdict == "ok" {
			sum := sha256.Sum256(seg)
			if l.InnerSHA256 != fmt.Sprintf("%x", sum) {
				t.Errorf("packet %d: inner_sha256 %s, want the UDP segment's %x", i, l.InnerSHA256, sum)
			}
		} else if l.InnerSHA256 != "" {
			t.Errorf("packet %d: %s with inner_sha256", i, l.Verdict)
		}
	}
	for _, v := range []string{"ok", "dummy", "no-state", "bad-icv", "bad-padding", "bad-seq", "replay", "malformed", "fragment", "ike", "nat-keepalive"} {
		if !seen[v] {
			t.Errorf("verdict %s never produced", v)
		}
	}

	// -w writes only what decrypted ok: the Ethernet header kept, ESP removed.
	out := filepath.Join(dir, "decrypted.pcap")
	xdpsec(t, "pcap", "decrypt", "--sa", spec, in, "-w", out)
	r, err := pcap.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for {
		p, err := r.Next()
		if err != nil {
			break
		}
		n++
		wantPkt := ipv4("192.0.2.1", "192.0.2.2", 17, seg)
		wantEth := []byte{2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 8, 0}
		if len(p.Data) < 14 || !bytes.Equal(p.Data[:14], wantEth) || !bytes.Equal(p.Data[14:], wantPkt) {
			t.Errorf("decrypted packet %d:\n got %x\nwant %x", n, p.Data, wantPkt)
		}
	}
	if n != 4 {
		t.Errorf("%d packets written, want the 4 ok ones", n)
	}
	if fi, err := os.Stat(out); err == nil && fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("decrypted capture has mode %v, want no group/other access", fi.Mode().Perm())
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		t.Fatal(err)
	}
	return b
}
