package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

func TestMain(m *testing.M) { xdpsectest.Main(m) }

// hostConfig is a daemon config for side A of p with no SA, plus extra
// lines; keyLines, when given, go to a 0600 key file the config names.
// pin is the bpffs directory of the XDP pins, "" for a fresh one.
func hostConfig(t *testing.T, p *testutil.VethPair, pin string, extra, keyLines []string) xdpsectest.Config {
	t.Helper()
	if pin == "" {
		pin = xdpsectest.MountBPFFS(t)
	}
	lines := []string{"link " + p.IfA, "tun xdpsec0", "address 198.51.100.1/32", "pin " + pin}
	if len(keyLines) > 0 {
		lines = append(lines, "keys host.keys")
	}
	return xdpsectest.WriteConfig(t, t.TempDir(), "host", append(lines, extra...), keyLines)
}

// cliRun runs `xdpsec ARGS --socket S` in d's namespace with stdin and
// returns stdout, stderr and whether it exited 0.
func cliRun(d *xdpsectest.Daemon, stdin *os.File, args ...string) (string, string, bool) {
	cmd := d.Command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

// stdinFile returns a file holding body, opened for reading, with mode.
func stdinFile(t *testing.T, body string, mode os.FileMode) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// pipeOf returns the read end of a pipe that carries body and then EOF.
func pipeOf(t *testing.T, body string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() {
		w.WriteString(body)
		w.Close()
	}()
	return r
}

// TestSAAddKeysOffArgv: against a real daemon, SAs with their keys come in
// on stdin (a pipe) and from a 0600 file, are installed and rekeyed; a file
// or a stdin file others can read is refused with one line saying chmod
// 600; keys on argv still work, with one warning line on stderr (none when
// the command fails); the first refused line of a file is named with what
// was done before it; and no key byte appears in any output, error or the
// daemon's log.
func TestSAAddKeysOffArgv(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	d := xdpsectest.StartDaemon(t, p.A, hostConfig(t, p, "", nil, nil), xdpsectest.Options{})

	var keys [][]byte
	key := func() string {
		k := make([]byte, 20)
		rand.Read(k)
		keys = append(keys, k)
		return "0x" + hex.EncodeToString(k)
	}
	sa := func(spi int, k string) string {
		return fmt.Sprintf("src 192.0.2.2 dst 192.0.2.1 proto esp spi %#x mode tunnel aead rfc4106(gcm(aes)) %s 128", spi, k)
	}
	var all strings.Builder // every output and error, checked for keys at the end
	record := func(out, errOut string) { all.WriteString(out + errOut) }
	lines := func(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

	// stdin, a pipe: an `ip xfrm state add` line, a comment, a bare SPEC.
	k1, k2 := key(), key()
	body := "# two SAs\nip xfrm state add " + strings.Replace(sa(0x2001, k1), "rfc4106(gcm(aes))", "'rfc4106(gcm(aes))'", 1) + "\n\n" + sa(0x2002, k2) + "   # inbound\n"
	out, errOut, ok := cliRun(d, pipeOf(t, body), "sa", "add", "-")
	record(out, errOut)
	if !ok || len(lines(out)) != 2 || !strings.Contains(out, "spi 0x00002001") || !strings.Contains(out, "added") || errOut != "" {
		t.Fatalf("sa add - from a pipe: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	for _, spi := range []string{"0x2001", "0x2002"} {
		record(d.MustCLI("sa", "get", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", spi), "")
	}

	// --file, 0600: rekey 0x2001 (sa update keeps it, the key changes).
	dir := t.TempDir()
	file := filepath.Join(dir, "rekey.sas")
	os.WriteFile(file, []byte(sa(0x2001, key())+"\n"), 0o600)
	out, errOut, ok = cliRun(d, nil, "sa", "update", "--file", file)
	record(out, errOut)
	if !ok || !strings.Contains(out, "spi 0x00002001") || !strings.Contains(out, "updated") || errOut != "" {
		t.Fatalf("sa update --file: ok %v stdout %q stderr %q", ok, out, errOut)
	}

	// A file group or others can read: refused before it is read, one
	// line, exit 1, nothing installed.
	os.WriteFile(file, []byte(sa(0x2003, key())+"\n"), 0o600)
	os.Chmod(file, 0o644)
	out, errOut, ok = cliRun(d, nil, "sa", "add", "--file", file)
	record(out, errOut)
	if ok || len(lines(errOut)) != 1 || !strings.Contains(errOut, "chmod 600 "+file) || !strings.Contains(errOut, "mode 0644") {
		t.Fatalf("sa add --file of a 0644 file: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	// Stdin redirected from such a file is refused too; a 0600 one is read.
	out, errOut, ok = cliRun(d, stdinFile(t, sa(0x2003, key())+"\n", 0o640), "sa", "add", "-")
	record(out, errOut)
	if ok || len(lines(errOut)) != 1 || !strings.Contains(errOut, "stdin is a file with mode 0640") {
		t.Fatalf("sa add - < 0640 file: ok %v stderr %q", ok, errOut)
	}
	if o, _ := d.CLI("sa", "get", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", "0x2003"); !strings.Contains(o, "not found") {
		t.Fatalf("a refused SA is installed: %s", o)
	}
	out, errOut, ok = cliRun(d, stdinFile(t, sa(0x2003, key())+"\n", 0o600), "sa", "add", "-")
	record(out, errOut)
	if !ok || !strings.Contains(out, "spi 0x00002003") {
		t.Fatalf("sa add - < 0600 file: ok %v stdout %q stderr %q", ok, out, errOut)
	}

	// The daemon refuses line 3 (an SA that exists): lines 1-2 stay in,
	// line 4 is not sent, and the error names line 3.
	os.Chmod(file, 0o600)
	os.WriteFile(file, []byte("# batch\n"+sa(0x2004, key())+"\n"+sa(0x2005, key())+"\n"+sa(0x2001, key())+"\n"+sa(0x2006, key())+"\n"), 0o600)
	out, errOut, ok = cliRun(d, nil, "sa", "add", "--file", file)
	record(out, errOut)
	if ok || len(lines(errOut)) != 1 || !strings.Contains(errOut, file+":4: ") || !strings.Contains(errOut, "the 2 SA(s) before it were added") || len(lines(out)) != 2 {
		t.Fatalf("sa add --file with a refused line: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	if o, _ := d.CLI("sa", "get", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", "0x2006"); !strings.Contains(o, "not found") {
		t.Fatalf("a line after the refused one was sent: %s", o)
	}
	// A malformed line: nothing is sent at all.
	os.WriteFile(file, []byte(sa(0x2007, key())+"\n"+sa(0x2008, key()[:20])+"\n"), 0o600)
	out, errOut, ok = cliRun(d, nil, "sa", "add", "--file", file)
	record(out, errOut)
	if ok || !strings.Contains(errOut, file+":2: ") || out != "" {
		t.Fatalf("sa add --file with a malformed line: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	if o, _ := d.CLI("sa", "get", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", "0x2007"); !strings.Contains(o, "not found") {
		t.Fatalf("a file with a malformed line was partly sent: %s", o)
	}

	// Keys on argv: accepted, and one warning line on stderr.
	out, errOut, ok = cliRun(d, nil, append([]string{"sa", "add"}, strings.Fields(sa(0x2009, key()))...)...)
	record(out, errOut)
	if !ok || !strings.Contains(out, "spi 0x00002009") || len(lines(errOut)) != 1 ||
		!strings.Contains(errOut, "warning") || !strings.Contains(errOut, "/proc/PID/cmdline") || !strings.Contains(errOut, "xdpsec sa add -") {
		t.Fatalf("sa add with keys on argv: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	// ... and a refused one is only its one error line.
	out, errOut, ok = cliRun(d, nil, append([]string{"sa", "add"}, strings.Fields(sa(0x2009, key()))...)...)
	record(out, errOut)
	if ok || len(lines(errOut)) != 1 || strings.Contains(errOut, "warning") {
		t.Fatalf("refused sa add with keys on argv: ok %v stderr %q", ok, errOut)
	}
	// Usage mistakes.
	for _, args := range [][]string{
		{"sa", "add", "-", "src", "192.0.2.2"},
		{"sa", "add", "--file", file, "src", "192.0.2.2"},
		{"sa", "list", "--file", file},
		{"sa", "add"},
	} {
		_, errOut, ok = cliRun(d, nil, args...)
		if ok || !strings.HasPrefix(errOut, "xdpsec sa: ") || len(lines(errOut)) != 2 || !strings.Contains(errOut, "run 'xdpsec help sa'") {
			t.Errorf("%q: ok %v stderr %q, want a usage error", args, ok, errOut)
		}
	}

	record(d.MustCLI("sa", "list"), d.MustCLI("sa", "list", "-j"))
	text := all.String() + d.Log()
	for _, k := range keys {
		for _, form := range []string{hex.EncodeToString(k), hex.EncodeToString(k[:8]), base64.StdEncoding.EncodeToString(k), string(k[:8])} {
			if strings.Contains(text, form) {
				t.Fatalf("a key appears in the output, errors or daemon log (%q):\n%s", form, text)
			}
		}
	}
	if n := strings.Count(all.String(), "<key 160 bits>"); n < 3 {
		t.Errorf("sa get/list show %d redacted keys, want at least 3", n)
	}
}

// TestSAAddFromTerminalSaysHowToEnd: `sa add -` on a terminal says how to
// end the input, then reads it (a pseudo-terminal here; no daemon, so the
// command ends with its one error line after the hint).
func TestSAAddFromTerminalSaysHowToEnd(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	defer pts.Close()
	saStdin = pts
	defer func() { saStdin = os.Stdin }()
	// A line, then Ctrl-D at the start of the next: end of input.
	if _, err := ptmx.WriteString("src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2001 mode tunnel aead rfc4106(gcm(aes)) 0x5aa5c33cf00f1234567890abcdef00112233cafe 128\n\x04"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "sa", "add", "-", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || out != "" || len(lines) != 2 || !strings.Contains(lines[0], "end with Ctrl-D") || !strings.Contains(lines[1], "no daemon at") {
		t.Fatalf("exit %d stdout %q stderr %q, want the hint, then no daemon", code, out, errOut)
	}
}

// TestSAAddFromStdinCarriesTraffic: the keys given on stdin are the keys
// the engine uses. Host A of the example tunnel starts without SAs, its
// key file (fresh random keys) is piped into `xdpsec sa add -`, and ping
// crosses the tunnel to host B (configured from its own key file) both
// ways, IPv4 and IPv6: a key mangled on the way would fail B's ICV check.
func TestSAAddFromStdinCarriesTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)
	const exampleKeyAB, exampleKeyBA = "0102030405060708090a0b0c0d0e0f1011121314", "2122232425262728292a2b2c2d2e2f3031323334"
	ab, ba := make([]byte, 20), make([]byte, 20)
	rand.Read(ab)
	rand.Read(ba)
	keys := func(side string) []string {
		k := strings.Join(xdpsectest.ReadExample(t, "tunnel-"+side+".keys"), "\n")
		if !strings.Contains(k, exampleKeyAB) || !strings.Contains(k, exampleKeyBA) {
			t.Fatalf("tunnel-%s.keys no longer holds the example keys this test replaces", side)
		}
		k = strings.ReplaceAll(k, exampleKeyAB, hex.EncodeToString(ab))
		return strings.Split(strings.ReplaceAll(k, exampleKeyBA, hex.EncodeToString(ba)), "\n")
	}
	conf := func(side string, withKeys bool) xdpsectest.Config {
		var lines []string
		for _, l := range xdpsectest.ReadExample(t, "tunnel-"+side+".conf") {
			if !withKeys && strings.HasPrefix(l, "keys ") {
				continue
			}
			lines = append(lines, l)
		}
		var keyLines []string
		if withKeys {
			keyLines = keys(side)
		}
		return xdpsectest.WriteConfig(t, t.TempDir(), "tunnel-"+side, append(lines, "pin "+pin), keyLines)
	}
	a := xdpsectest.StartDaemon(t, p.A, conf("a", false), xdpsectest.Options{})
	b := xdpsectest.StartDaemon(t, p.B, conf("b", true), xdpsectest.Options{})
	if st := a.Stats(); len(st.SAs) != 0 {
		t.Fatalf("A starts with %d SAs, want none", len(st.SAs))
	}
	out, errOut, ok := cliRun(a, pipeOf(t, strings.Join(keys("a"), "\n")+"\n"), "sa", "add", "-")
	if !ok || strings.Count(out, " added\n") != 4 || errOut != "" {
		t.Fatalf("sa add - of A's key file: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
	xdpsectest.Ping(t, p.B, "198.51.100.1", 3, a, b)
	xdpsectest.Ping(t, p.A, "2001:db8:b::1", 3, a, b)
	st := b.Stats()
	for _, s := range st.SAs {
		if s.Verdicts["bad-icv"] != 0 {
			t.Errorf("B's SA %s counted %d bad-icv", s.Key, s.Verdicts["bad-icv"])
		}
	}
}
