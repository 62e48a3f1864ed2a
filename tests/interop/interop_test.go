// Package interop proves xdpsec's IPsec transforms against independent
// implementations: scapy's IPsec layer (both directions) and tshark's ESP
// dissector, through the `xdpsec pcap` command a user would run.
//
// The scapy side is generated in the test run by scapy_ipsec.py under
// Debian's /usr/bin/python3 (scapy 2.5, python3-cryptography); the matrix of
// cases lives here and is handed to the script as JSON.
package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// python is Debian's interpreter: the first python3 in PATH may lack scapy.
const python = "/usr/bin/python3"

// xdpsecBin is the command under test, built once by TestMain.
var xdpsecBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xdpsec-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xdpsecBin = filepath.Join(dir, "xdpsec")
	out, err := exec.Command("go", "build", "-o", xdpsecBin, "github.com/xdpsec/xdpsec/cmd/xdpsec").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build xdpsec: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// interopCase is one SA both implementations run. The JSON names are the
// script's; the xfrm spec is built from the same fields (spec).
type interopCase struct {
	Name  string `json:"name"`
	Proto string `json:"proto"` // esp, ah
	Mode  string `json:"mode"`  // transport, tunnel
	Outer int    `json:"outer"` // 4, 6
	Inner int    `json:"inner"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	SPI   uint32 `json:"spi"`
	// Crypt and Auth are scapy's algorithm names; CryptKey and AuthKey hex
	// with the salt at the end as xfrm takes it; ICV is the AEAD ICV in
	// bytes for scapy's crypt_icv_size.
	Crypt    string    `json:"crypt,omitempty"`
	CryptKey string    `json:"crypt_key,omitempty"`
	ICV      int       `json:"icv,omitempty"`
	Auth     string    `json:"auth,omitempty"`
	AuthKey  string    `json:"auth_key,omitempty"`
	NATT     *[2]int   `json:"natt,omitempty"`
	ESN      bool      `json:"esn,omitempty"`
	Seq      uint64    `json:"seq"`
	xfrm     xfrmAlgos `json:"-"`
}

type xfrmAlgos struct{ aead, enc, auth string }

// algo pairs scapy's name with the xfrm words (KEY is replaced by the key).
type algo struct {
	scapy, xfrm string
	keyLen      int
	icv         int
}

var (
	aeads = []algo{
		{"AES-GCM", "rfc4106(gcm(aes)) KEY 128", 20, 16},
		{"AES-GCM", "rfc4106(gcm(aes)) KEY 128", 28, 16},
		{"AES-GCM", "rfc4106(gcm(aes)) KEY 128", 36, 16},
		{"AES-GCM-TRUNC", "rfc4106(gcm(aes)) KEY 64", 20, 8},
		{"AES-GCM-TRUNC", "rfc4106(gcm(aes)) KEY 96", 36, 12},
		{"AES-NULL-GMAC", "rfc4543(gcm(aes)) KEY 128", 20, 16},
		{"AES-NULL-GMAC", "rfc4543(gcm(aes)) KEY 128", 36, 16},
		{"CHACHA20-POLY1305", "rfc7539esp(chacha20,poly1305) KEY 128", 36, 16},
	}
	ciphers = []algo{
		{"AES-CBC", "cbc(aes) KEY", 16, 0},
		{"AES-CBC", "cbc(aes) KEY", 24, 0},
		{"AES-CBC", "cbc(aes) KEY", 32, 0},
		{"AES-CTR", "rfc3686(ctr(aes)) KEY", 20, 0},
		{"AES-CTR", "rfc3686(ctr(aes)) KEY", 28, 0},
		{"AES-CTR", "rfc3686(ctr(aes)) KEY", 36, 0},
		{"3DES", "cbc(des3_ede) KEY", 24, 0},
		{"DES", "cbc(des) KEY", 8, 0},
		{"NULL", "ecb(cipher_null) KEY", 0, 0},
	}
	auths = []algo{
		{"HMAC-MD5-96", "hmac(md5) KEY 96", 16, 12},
		{"HMAC-SHA1-96", "hmac(sha1) KEY 96", 20, 12},
		{"SHA2-256-128", "hmac(sha256) KEY 128", 32, 16},
		{"SHA2-384-192", "hmac(sha384) KEY 192", 48, 24},
		{"SHA2-512-256", "hmac(sha512) KEY 256", 64, 32},
	}
)

// key returns n deterministic key bytes in hex, different per seed.
func key(n int, seed byte) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)*7
	}
	return fmt.Sprintf("%x", b)
}

func xfrmWords(a algo, hexKey string) string {
	k := "0x" + hexKey
	if hexKey == "" {
		k = `""`
	}
	return strings.Replace(a.xfrm, "KEY", k, 1)
}

type shape struct {
	mode         string
	outer, inner int
}

var (
	t4   = shape{"transport", 4, 4}
	t6   = shape{"transport", 6, 6}
	tu4  = shape{"tunnel", 4, 4}
	tu6  = shape{"tunnel", 6, 6}
	tu46 = shape{"tunnel", 6, 4} // IPv4 inside IPv6
	tu64 = shape{"tunnel", 4, 6}
)

var addrs = map[int][2]string{4: {"192.0.2.1", "192.0.2.2"}, 6: {"2001:db8::1", "2001:db8::2"}}

func newCase(name string, sh shape, proto string, spi uint32) interopCase {
	return interopCase{Name: name, Proto: proto, Mode: sh.mode, Outer: sh.outer, Inner: sh.inner,
		Src: addrs[sh.outer][0], Dst: addrs[sh.outer][1], SPI: spi, Seq: 1}
}

func withAEAD(c interopCase, a algo) interopCase {
	c.Crypt, c.ICV = a.scapy, a.icv
	c.CryptKey = key(a.keyLen, byte(c.SPI))
	c.xfrm.aead = xfrmWords(a, c.CryptKey)
	return c
}

func withCipherAuth(c interopCase, ci, au algo) interopCase {
	if c.Proto == "esp" {
		c.Crypt = ci.scapy
		c.CryptKey = key(ci.keyLen, byte(c.SPI))
		c.xfrm.enc = xfrmWords(ci, c.CryptKey)
	}
	c.Auth = au.scapy
	c.AuthKey = key(au.keyLen, byte(c.SPI)+1)
	c.xfrm.auth = xfrmWords(au, c.AuthKey)
	return c
}

// interopCases is the matrix proven against scapy.
func interopCases() []interopCase {
	var cs []interopCase
	spi := uint32(0x1000)
	next := func() uint32 { spi++; return spi }
	shapes := []shape{t4, tu6, t6, tu4, tu46, tu64}
	for i, a := range aeads {
		for j, sh := range []shape{shapes[i%len(shapes)], shapes[(i+3)%len(shapes)]} {
			cs = append(cs, withAEAD(newCase(fmt.Sprintf("esp-%s-%d-icv%d-%s%d-%d", a.scapy, (a.keyLen-4)*8, a.icv, sh.mode, sh.outer*10+sh.inner, j), sh, "esp", next()), a))
		}
	}
	sha256 := auths[2]
	for i, ci := range ciphers {
		sh := shapes[i%len(shapes)]
		cs = append(cs, withCipherAuth(newCase(fmt.Sprintf("esp-%s-%d-sha256-%s%d", ci.scapy, ci.keyLen*8, sh.mode, sh.outer*10+sh.inner), sh, "esp", next()), ci, sha256))
	}
	for i, au := range auths {
		sh := shapes[(i+1)%len(shapes)]
		cs = append(cs, withCipherAuth(newCase(fmt.Sprintf("esp-AES-CBC-%s-%s%d", au.scapy, sh.mode, sh.outer*10+sh.inner), sh, "esp", next()), ciphers[0], au))
		for _, sh := range []shape{t4, t6, tu4, tu6} {
			cs = append(cs, withCipherAuth(newCase(fmt.Sprintf("ah-%s-%s%d", au.scapy, sh.mode, sh.outer*10+sh.inner), sh, "ah", next()), algo{}, au))
		}
	}
	// NAT-T (RFC 3948) in both modes and families.
	for i, sh := range []shape{tu4, t4, tu6, t6} {
		var c interopCase
		if i%2 == 0 {
			c = withAEAD(newCase(fmt.Sprintf("natt-esp-AES-GCM-%s%d", sh.mode, sh.outer*10+sh.inner), sh, "esp", next()), aeads[0])
		} else {
			c = withCipherAuth(newCase(fmt.Sprintf("natt-esp-AES-CBC-sha256-%s%d", sh.mode, sh.outer*10+sh.inner), sh, "esp", next()), ciphers[0], sha256)
		}
		c.NATT = &[2]int{4500 + i, 4500}
		cs = append(cs, c)
	}
	// ESN across 2^32: AEADs (scapy puts the high bits in the AAD), CBC+HMAC
	// (the script adds them to the ICV, see its quirk note) and AH.
	for _, c := range []interopCase{
		withAEAD(newCase("esn-esp-AES-GCM-tunnel44", tu4, "esp", next()), aeads[0]),
		withAEAD(newCase("esn-esp-CHACHA-transport66", t6, "esp", next()), aeads[7]),
		withAEAD(newCase("esn-esp-GMAC-transport44", t4, "esp", next()), aeads[5]),
		withCipherAuth(newCase("esn-esp-AES-CBC-sha256-transport44", t4, "esp", next()), ciphers[0], sha256),
		withCipherAuth(newCase("esn-esp-AES-CTR-sha1-tunnel66", tu6, "esp", next()), ciphers[3], auths[1]),
		withCipherAuth(newCase("esn-ah-sha256-transport44", t4, "ah", next()), algo{}, sha256),
		withCipherAuth(newCase("esn-ah-sha512-tunnel66", tu6, "ah", next()), algo{}, auths[4]),
	} {
		c.ESN = true
		c.Seq = 1<<32 - 4
		cs = append(cs, c)
	}
	return cs
}

// spec renders the case as `ip xfrm state add` words for --sa.
func (c interopCase) spec() string {
	s := fmt.Sprintf("src %s dst %s proto %s spi 0x%08x mode %s", c.Src, c.Dst, c.Proto, c.SPI, c.Mode)
	if c.xfrm.aead != "" {
		s += " aead " + c.xfrm.aead
	}
	if c.xfrm.enc != "" {
		s += " enc " + c.xfrm.enc
	}
	if c.xfrm.auth != "" {
		s += " auth-trunc " + c.xfrm.auth
	}
	if c.NATT != nil {
		s += fmt.Sprintf(" encap espinudp %d %d 0.0.0.0", c.NATT[0], c.NATT[1])
	}
	if c.ESN {
		s += " flag esn"
	}
	return s + " replay-window 128"
}

// needScapy skips when Debian's python with scapy is not there.
func needScapy(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import scapy.layers.ipsec, cryptography").CombinedOutput(); err != nil {
		t.Skipf("needs %s with scapy and cryptography (Debian python3-scapy): %v %s", python, err, out)
	}
}

func runScript(t *testing.T, args ...string) []byte {
	t.Helper()
	return runPython(t, "scapy_ipsec.py", args...)
}

// runPython runs one of this directory's scapy scripts and returns its
// stdout; a failure ends the test with the script's stderr.
func runPython(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(python, append([]string{script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// xdpsec runs the command and returns stdout; a non-zero exit fails the test.
func xdpsec(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(xdpsecBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("xdpsec %s: %v\n%s", args[0:2], err, stderr.String())
	}
	return stdout.String()
}

type decryptLine struct {
	Index       int     `json:"index"`
	Verdict     string  `json:"verdict"`
	SPI         string  `json:"spi"`
	Seq         *uint64 `json:"seq"`
	InnerSHA256 string  `json:"inner_sha256"`
}

func parseLines(t *testing.T, out string) []decryptLine {
	t.Helper()
	var ls []decryptLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var d decryptLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		ls = append(ls, d)
	}
	return ls
}

// TestScapyInterop: scapy encrypts, xdpsec decrypts (verdict, sequence
// number, inner SHA-256 equal to scapy's plaintext); xdpsec encrypts, scapy
// decrypts, verifies the ICV and compares with the original packet, and
// the script checks the RFC 4303 padding bytes scapy ignores.
func TestScapyInterop(t *testing.T) {
	needScapy(t)
	dir := t.TempDir()
	cases := interopCases()
	cj, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	casesFile := filepath.Join(dir, "cases.json")
	if err := os.WriteFile(casesFile, cj, 0o600); err != nil {
		t.Fatal(err)
	}
	var sums map[string][]string
	if err := json.Unmarshal(runScript(t, "gen", casesFile, dir), &sums); err != nil {
		t.Fatalf("gen output: %v", err)
	}

	for _, c := range cases {
		want := sums[c.Name]
		if len(want) == 0 {
			t.Fatalf("%s: scapy generated nothing", c.Name)
		}
		// scapy -> xdpsec
		out := xdpsec(t, "pcap", "decrypt", "--sa", c.spec(), "--json", filepath.Join(dir, c.Name+".scapy.pcap"))
		lines := parseLines(t, out)
		if len(lines) != len(want) {
			t.Errorf("%s: %d decrypt lines for %d packets", c.Name, len(lines), len(want))
			continue
		}
		for i, l := range lines {
			seq := c.Seq + uint64(i)
			if l.Verdict != "ok" || l.Seq == nil || *l.Seq != seq || l.InnerSHA256 != want[i] || l.SPI != fmt.Sprintf("0x%08x", c.SPI) {
				got := "none"
				if l.Seq != nil {
					got = fmt.Sprint(*l.Seq)
				}
				t.Errorf("%s: scapy packet %d: got %s seq %s sha256 %s, want ok seq %d sha256 %s", c.Name, i, l.Verdict, got, l.InnerSHA256, seq, want[i])
			}
		}
		// xdpsec -> scapy (checked below in one script run)
		xdpsec(t, "pcap", "encrypt", "--sa", c.spec(), filepath.Join(dir, c.Name+".plain.pcap"),
			"-w", filepath.Join(dir, c.Name+".xdpsec.pcap"), "--seq", fmt.Sprint(c.Seq))
	}

	var res map[string][]string
	if err := json.Unmarshal(runScript(t, "check", casesFile, dir), &res); err != nil {
		t.Fatalf("check output: %v", err)
	}
	for _, c := range cases {
		errs, ok := res[c.Name]
		if !ok {
			t.Errorf("%s: scapy did not check it", c.Name)
		}
		for _, e := range errs {
			t.Errorf("%s: xdpsec -> scapy: %s", c.Name, e)
		}
	}
	t.Logf("%d SAs, both directions, %d packets each way per SA", len(cases), len(sums[cases[0].Name]))
}
