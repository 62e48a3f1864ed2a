package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/pcap"
)

// The interop proof (scapy, tshark, every verdict) is in tests/interop;
// these tests cover the command line itself.

const (
	testKeyHex = "0x0102030405060708090a0b0c0d0e0f1011121314"
	saGCM4in6  = "src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x1000 mode tunnel aead rfc4106(gcm(aes)) " + testKeyHex + " 128"
	saTrans4   = "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode transport aead rfc4106(gcm(aes)) " + testKeyHex + " 128"
)

func udp4(src, dst [4]byte, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[20:], 1000)
	binary.BigEndian.PutUint16(p[22:], 7)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	return p
}

func writeFrames(t *testing.T, name string, frames ...[]byte) {
	t.Helper()
	w, err := pcap.Create(name, pcap.LinkTypeEthernet, pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(time.Unix(1, 0), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func eth(et uint16, ip []byte) []byte {
	f := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0, 0}
	binary.BigEndian.PutUint16(f[12:], et)
	return append(f, ip...)
}

func readFrames(t *testing.T, name string) [][]byte {
	t.Helper()
	r, err := pcap.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out [][]byte
	for {
		p, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, p.Clone().Data)
	}
}

// TestPcapEncryptDecryptLinkHeader: a 4-in-6 tunnel changes the EtherType
// both ways; a transport SA takes only packets with its own addresses;
// non-IP frames are reported and left out; decrypt -w restores the frame.
func TestPcapEncryptDecryptLinkHeader(t *testing.T) {
	dir := t.TempDir()
	in, enc, dec := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "enc.pcap"), filepath.Join(dir, "dec.pcap")
	a := eth(0x0800, udp4([4]byte{198, 51, 100, 1}, [4]byte{198, 51, 100, 2}, "hello"))
	b := eth(0x0800, udp4([4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, "transport"))
	arp := eth(0x0806, make([]byte, 28))
	writeFrames(t, in, b, a, arp)
	// saTrans4 first: it fits b only; a falls through to the tunnel SA.
	code, out, errOut := runCLI(t, "pcap", "encrypt", "--sa", saTrans4, "--sa", saGCM4in6, in, "-w", enc, "--seq", "41")
	if code != 0 {
		t.Fatalf("encrypt exit %d: %s", code, errOut)
	}
	for _, want := range []string{"0 encrypted spi=0x00001001 seq=41", "1 encrypted spi=0x00001000 seq=41", "2 skipped: not an IP packet", "wrote 2 packets"} {
		if !strings.Contains(out, want) {
			t.Errorf("encrypt output lacks %q:\n%s", want, out)
		}
	}
	frames := readFrames(t, enc)
	if len(frames) != 2 || binary.BigEndian.Uint16(frames[1][12:]) != 0x86dd || binary.BigEndian.Uint16(frames[0][12:]) != 0x0800 {
		t.Fatalf("encrypted frames: %x", frames)
	}
	if fi, err := os.Stat(enc); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("output mode %v, %v", fi.Mode(), err)
	}
	code, out, errOut = runCLI(t, "pcap", "decrypt", enc, "--sa", saGCM4in6, "--sa", saTrans4, "-w", dec)
	if code != 0 {
		t.Fatalf("decrypt exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "0 ok spi=0x00001001 seq=41 inner_sha256=") || !strings.Contains(out, "# 2 packets: ok 2") {
		t.Errorf("decrypt output:\n%s", out)
	}
	got := readFrames(t, dec)
	if len(got) != 2 || string(got[0]) != string(b) || string(got[1]) != string(a) {
		t.Errorf("decrypted frames\n got %x\nwant %x %x", got, b, a)
	}
}

// TestPcapBadInputIsOneLineWithoutKeys: command-line mistakes exit 2 with
// one line saying what is wrong; keys never appear.
func TestPcapBadInputIsOneLineWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	writeFrames(t, in, eth(0x0800, udp4([4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, "x")))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pcap"}, "decrypt or encrypt"},
		{[]string{"pcap", "frobnicate"}, "unknown pcap subcommand"},
		{[]string{"pcap", "decrypt", in}, "--sa"},
		{[]string{"pcap", "decrypt", "--sa", saTrans4}, "one input capture"},
		{[]string{"pcap", "encrypt", "--sa", saTrans4, in}, "-w"},
		{[]string{"pcap", "encrypt", "--sa", saTrans4, in, "-w", filepath.Join(dir, "o"), "--seq", "4294967296"}, "flag esn"},
		{[]string{"pcap", "encrypt", "--sa", saTrans4, in, "-w", filepath.Join(dir, "o"), "--seq", "0"}, "--seq"},
		{[]string{"pcap", "decrypt", "--sa", strings.Replace(saTrans4, " 128", " 100", 1), in}, "--sa #1"},
		{[]string{"pcap", "decrypt", "--sa", strings.Replace(saTrans4, testKeyHex, testKeyHex+"ff", 1), in}, "--sa #1"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 2 {
			t.Errorf("%q: exit %d stderr %q, want 2 and %q", tc.args, code, errOut, tc.want)
		}
		if strings.Contains(errOut, "0102030405") {
			t.Errorf("%q: key bytes in the error: %q", tc.args, errOut)
		}
	}
	code, _, errOut := runCLI(t, "pcap", "decrypt", "--sa", saTrans4, filepath.Join(dir, "missing.pcap"))
	if code != 1 || !strings.Contains(errOut, "missing.pcap") {
		t.Errorf("missing file: exit %d %q", code, errOut)
	}
}

// TestPcapSAFile: --sa-file (a 0600 file, or stdin with -) gives the same
// SAs as --sa without a warning; --sa warns once on stderr, after the work;
// a file others can read is refused with one line saying chmod 600.
func TestPcapSAFile(t *testing.T) {
	dir := t.TempDir()
	in, enc := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "enc.pcap")
	writeFrames(t, in, eth(0x0800, udp4([4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, "transport")),
		eth(0x0800, udp4([4]byte{198, 51, 100, 1}, [4]byte{198, 51, 100, 2}, "tunnel")))
	keys := filepath.Join(dir, "a.keys")
	body := "# the SAs, in --sa order\nip xfrm state add " + saTrans4 + "\n" + saGCM4in6 + "\n"
	if err := os.WriteFile(keys, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, viaFile, errOut := runCLI(t, "pcap", "encrypt", "--sa-file", keys, in, "-w", enc)
	if code != 0 || errOut != "" || !strings.Contains(viaFile, "0 encrypted spi=0x00001001") || !strings.Contains(viaFile, "1 encrypted spi=0x00001000") {
		t.Fatalf("encrypt --sa-file: exit %d stdout %q stderr %q", code, viaFile, errOut)
	}
	code, viaArgv, errOut := runCLI(t, "pcap", "encrypt", "--sa", saTrans4, "--sa", saGCM4in6, in, "-w", enc)
	if code != 0 || viaArgv != viaFile {
		t.Fatalf("encrypt --sa: exit %d, output differs from --sa-file:\n%s\n%s", code, viaArgv, viaFile)
	}
	if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "warning") || !strings.Contains(errOut, "--sa-file") {
		t.Errorf("encrypt --sa: stderr %q, want one warning line", errOut)
	}

	saStdin = strings.NewReader(body)
	defer func() { saStdin = os.Stdin }()
	code, out, errOut := runCLI(t, "pcap", "decrypt", "--sa-file", "-", enc)
	if code != 0 || errOut != "" || !strings.Contains(out, "# 2 packets: ok 2") {
		t.Fatalf("decrypt --sa-file -: exit %d stdout %q stderr %q", code, out, errOut)
	}

	os.Chmod(keys, 0o640)
	code, out, errOut = runCLI(t, "pcap", "decrypt", "--sa-file", keys, enc)
	if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "chmod 600 "+keys) || strings.Contains(errOut, "0102030405") {
		t.Fatalf("decrypt --sa-file of a 0640 file: exit %d stdout %q stderr %q", code, out, errOut)
	}
	// A failing run with keys on argv is its one error line, no warning.
	code, _, errOut = runCLI(t, "pcap", "decrypt", "--sa", saTrans4, filepath.Join(dir, "missing.pcap"))
	if code != 1 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("failed decrypt --sa: exit %d stderr %q, want one line", code, errOut)
	}
}
