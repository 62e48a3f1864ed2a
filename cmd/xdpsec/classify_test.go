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

// espFrame returns an Ethernet/IPv4/ESP frame to dst 192.0.2.1 with spi,
// built by hand (tests/datapath builds its corpus with scapy).
func espFrame(spi uint32) []byte {
	f := make([]byte, 14+20+8+32)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 50
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	copy(ip[12:], []byte{192, 0, 2, 2})
	copy(ip[16:], []byte{192, 0, 2, 1})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint32(ip[20:], spi)
	binary.BigEndian.PutUint32(ip[24:], 1)
	return f
}

func writePcap(t *testing.T, lt pcap.LinkType, frames ...[]byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "in.pcap")
	w, err := pcap.Create(name, lt, pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(time.Unix(0, 0), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestClassifyJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads the XDP program (CAP_BPF, CAP_NET_ADMIN)")
	}
	raw := espFrame(0x1001)[14:] // the same packet as a raw-IP capture
	name := writePcap(t, pcap.LinkTypeEthernet, espFrame(0x1001), espFrame(0x2002), espFrame(0))
	rawName := writePcap(t, pcap.LinkTypeRaw, raw)
	sa := "src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001"
	code, out, stderr := runCLI(t, "classify", "--pcap", name, "--sa", sa, "--json")
	want := `{"index":0,"verdict":"steer","reason":"steer-fallback","spi":"0x00001001"}
{"index":1,"verdict":"pass","reason":"no-state","spi":"0x00002002"}
{"index":2,"verdict":"drop","reason":"malformed-esp"}
`
	if code != 0 || out != want || stderr != "" {
		t.Errorf("classify --json: exit %d, stderr %q, got\n%swant\n%s", code, stderr, out, want)
	}
	// The whole spec, keys included: the same result, and one warning that
	// the keys were on the command line for nothing.
	keyed := sa + " mode tunnel aead 'rfc4106(gcm(aes))' 0x" + strings.Repeat("5a", 20) + " 128"
	code, out, stderr = runCLI(t, "classify", "--pcap", name, "--sa", keyed, "--json")
	if code != 0 || out != want || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--sa #1 carried keys") || strings.Contains(stderr, "5a5a5a") {
		t.Errorf("classify --sa with keys: exit %d, stderr %q, out\n%s", code, stderr, out)
	}
	code, out, _ = runCLI(t, "classify", rawName, "--sa", sa, "--json")
	if code != 0 || !strings.HasPrefix(out, `{"index":0,"verdict":"steer","reason":"steer-fallback","spi":"0x00001001"}`) {
		t.Errorf("raw-IP capture: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "classify", "--pcap", name, "--sa", sa, "--off", "esp")
	if code != 0 || !strings.Contains(out, "0\tpass\tdisabled-class\tsa 1: esp spi 0x00001001 dst 192.0.2.1") ||
		!strings.Contains(out, "3 packets: 0 steer, 2 pass, 1 drop") {
		t.Errorf("classify --off esp: exit %d:\n%s", code, out)
	}
}

func TestClassifyBadInput(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("not packets\n"), 0o600)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"classify"}, 2, "--pcap FILE is required"},
		{[]string{"classify", "--pcap", text}, 1, "not a pcap"},
		{[]string{"classify", "--pcap", filepath.Join(dir, "none.pcap")}, 1, "none.pcap"},
		{[]string{"classify", "--pcap", text, "--off", "gre"}, 2, `--off "gre"`},
		{[]string{"classify", "--pcap", text, "--sa", "proto esp spi 1"}, 2, "--sa #1"},
		{[]string{"classify", "--pcap", text, "extra"}, 2, `unexpected argument "extra"`},
	} {
		code, _, stderr := runCLI(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != c.code || !strings.Contains(first, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}
