package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/capabilities"
)

// writeFile writes body as dir/name with mode and returns the path.
func writeFile(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigOffload(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "x.conf", `link xa0
offload IPsecV2=esp   # AH stays with the kernel
offload cbc(des)=on UdpEsp=off
offload ipsecv2=ah-esp IPsecV2=esp
`, 0o644)
	fc, err := LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	wantSettings := []string{"IPsecV2=esp", "cbc(des)=on", "UdpEsp=off", "ipsecv2=ah-esp", "IPsecV2=esp"}
	if strings.Join(fc.Offload, " ") != strings.Join(wantSettings, " ") {
		t.Fatalf("Offload = %q, want %q", fc.Offload, wantSettings)
	}
	got, err := capabilities.DefaultParameters().Update(fc.OffloadUpdate)
	if err != nil {
		t.Fatal(err)
	}
	want := capabilities.DefaultParameters()
	want.IPsecV2 = capabilities.NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED
	want.UdpEsp = capabilities.SwitchOff
	want.Algorithms["cbc(des)"] = capabilities.SwitchOn
	if !got.Equal(want) {
		t.Fatalf("parameters %+v, want %+v", got, want)
	}
	if ch := capabilities.ParameterChanges(capabilities.DefaultParameters(), got); strings.Join(ch, " ") != "IPsecV2=esp UdpEsp=off cbc(des)=on" {
		t.Errorf("ParameterChanges = %q", ch)
	}

	// The NDIS registry keyword, with the registry's numbers (2 = ESP).
	kw := writeFile(t, dir, "kw.conf", "link xa0\noffload *IPsecOffloadV2=2\n", 0o644)
	if fc, err := LoadConfig(kw); err != nil || fc.OffloadUpdate.IPsecV2 != capabilities.NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED {
		t.Fatalf("offload *IPsecOffloadV2=2: %+v, %v", fc, err)
	}

	// Without offload lines: nothing asked, the update changes nothing.
	plain := writeFile(t, dir, "plain.conf", "link xa0\n", 0o644)
	if fc, err = LoadConfig(plain); err != nil || len(fc.Offload) != 0 {
		t.Fatalf("LoadConfig without offload: %+v, %v", fc, err)
	}
	if p, _ := capabilities.DefaultParameters().Update(fc.OffloadUpdate); !p.Equal(capabilities.DefaultParameters()) {
		t.Errorf("no offload line changes the defaults: %+v", p)
	}

	// Bad lines: one line naming the file, the line and the setting.
	for _, c := range []struct{ line, want string }{
		{"offload", "`offload` takes PARAM=VALUE"},
		{"offload IPsecV2", `setting "IPsecV2": want PARAM=VALUE`},
		{"offload IPsecV2=maybe", "setting IPsecV2"},
		{"offload IPsecV3=esp", `"IPsecV3": unknown parameter`},
		{"offload cbc(des)=sometimes", "cbc(des)=sometimes"},
		{"offload IPsecV2=esp UdpEsp=", `"UdpEsp="`},
	} {
		p := writeFile(t, dir, "bad.conf", "link xa0\n# comment\n"+c.line+"\n", 0o644)
		_, err := LoadConfig(p)
		if err == nil {
			t.Errorf("%q accepted", c.line)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, p+":3: ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line starting %q and saying %q", c.line, msg, p+":3: ", c.want)
		}
		if c.line != "offload" && !errors.Is(err, capabilities.ErrBadParameter) {
			t.Errorf("%q: error does not wrap ErrBadParameter: %v", c.line, err)
		}
	}
	// A key file holds SAs only.
	writeFile(t, dir, "o.keys", "offload IPsecV2=esp\n", 0o600)
	p := writeFile(t, dir, "k.conf", "link xa0\nkeys o.keys\n", 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "holds only `ip xfrm state add") {
		t.Errorf("offload line in a key file: %v", err)
	}
}

// TestLoadConfigRefusesWritable: a config or key file others can write is
// refused, whatever it holds; one line saying chmod go-w.
func TestLoadConfigRefusesWritable(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o664, 0o646, 0o622} {
		conf := writeFile(t, dir, "w.conf", "link xa0\n", mode)
		_, err := LoadConfig(conf)
		if !errors.Is(err, ErrConfigWritable) || !strings.Contains(err.Error(), "chmod go-w "+conf) || strings.Contains(err.Error(), "\n") {
			t.Errorf("config mode %04o: %v, want ErrConfigWritable saying chmod go-w", mode, err)
		}
	}
	writeFile(t, dir, "w.keys", "# no SA yet\n", 0o620)
	conf := writeFile(t, dir, "k.conf", "link xa0\nkeys w.keys\n", 0o644)
	if _, err := LoadConfig(conf); !errors.Is(err, ErrConfigWritable) || !strings.Contains(err.Error(), "w.keys") {
		t.Errorf("group-writable key file: %v", err)
	}
	if _, err := LoadConfig(writeFile(t, dir, "ok.conf", "link xa0\n", 0o644)); err != nil {
		t.Errorf("a 0644 config without keys: %v", err)
	}
}

func TestReadSAFile(t *testing.T) {
	dir := t.TempDir()
	const key = "0x5aa5c33cf00f1234567890abcdef00112233cafe"
	body := "# rekey of the example tunnel\n\n" +
		"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead 'rfc4106(gcm(aes))' " + key + " 128\n" +
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) " + key + " 128 # bare SPEC\n"
	f := writeFile(t, dir, "rekey.sas", body, 0o600)
	lines, err := ReadSAFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Source != f+":3" || lines[1].Source != f+":4" {
		t.Fatalf("lines %+v", lines)
	}
	if lines[0].Spec.Key().String() == lines[1].Spec.Key().String() || lines[1].Words[0] != "src" {
		t.Errorf("specs %s / %s, words %q", lines[0].Spec.Key(), lines[1].Spec.Key(), lines[1].Words)
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(f, mode)
		_, err := ReadSAFile(f)
		if !errors.Is(err, ErrKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+f) || strings.Contains(err.Error(), "5aa5c33c") {
			t.Errorf("mode %04o: %v, want ErrKeyFileMode saying chmod 600 and no key", mode, err)
		}
	}
	os.Chmod(f, 0o400)
	if _, err := ReadSAFile(f); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	if _, err := ReadSAFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadSAFile(filepath.Join(dir, "missing")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}

	// Bad input: the first bad line stops the read, named, without keys.
	for _, c := range []struct{ body, want string }{
		{"", "stdin: no SA found"},
		{"# only a comment\n", "stdin: no SA found"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead rfc4106(gcm(aes)) " + key + " 128\nsrc 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) " + key[:30] + " 128\n", "stdin:2: "},
		{"ip xfrm policy add src 198.51.100.1/32 dst 198.51.100.2/32 dir out\n", "stdin:1: \"ip xfrm policy\": only SAs"},
		{"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead 'rfc4106(gcm(aes)) " + key + " 128\n", "stdin:1: "},
		{"link xa0\n", "stdin:1: "},
	} {
		_, err := ReadSALines(strings.NewReader(c.body), "stdin")
		if err == nil {
			t.Errorf("%q accepted", c.body)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, c.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "5aa5c33c") {
			t.Errorf("%q: error %q, want one line starting %q without key bytes", c.body, msg, c.want)
		}
	}
}

// TestLoadConfigMTU: `mtu` accepts what one AF_XDP frame carries and
// refuses more with one line naming file:line and the limit.
func TestLoadConfigMTU(t *testing.T) {
	dir := t.TempDir()
	fc, err := LoadConfig(writeFile(t, dir, "ok.conf", "link xa0\nmtu "+strconv.Itoa(MaxTUNMTU)+"\n", 0o644))
	if err != nil || fc.MTU != MaxTUNMTU {
		t.Fatalf("mtu %d: %v (got %v)", MaxTUNMTU, err, fc)
	}
	for _, v := range []string{"9000", strconv.Itoa(MaxTUNMTU + 1), "67"} {
		p := writeFile(t, dir, "bad.conf", "link xa0\nmtu "+v+"\n", 0o644)
		_, err := LoadConfig(p)
		if err == nil || !strings.HasPrefix(err.Error(), p+":2: ") || !strings.Contains(err.Error(), strconv.Itoa(MaxTUNMTU)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("mtu %s: %v", v, err)
		}
	}
}
