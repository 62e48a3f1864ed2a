package ops

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

// keyForms are the ways a key could leak into text: hex both cases (with
// and without 0x), base64 (how JSON renders []byte), and the raw bytes.
func keyForms(k []byte) []string {
	h := hex.EncodeToString(k)
	return []string{h, strings.ToUpper(h), base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k), string(k),
		h[:16], // a prefix: no partial key either
	}
}

// TestLogsNeverShowKeys runs a full two-daemon session with --log-format
// json --log-level debug: start, traffic, `sa add` (good and malformed
// keys), SIGHUP with an added SA and with a broken key file, a drop
// capture, stop. Every log line must be JSON, and no log line and no CLI
// output may hold any configured key, in any form.
func TestLogsNeverShowKeys(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)
	k := newKeys(t)
	confA := writeConfig(t, "a", k, "pin "+pin)
	confB := writeConfig(t, "b", k, "pin "+pin)
	keysA := confA.Keys
	logArgs := []string{"--log-format", "json", "--log-level", "debug", "--metrics", metricsAddr}
	a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{Args: logArgs})
	b := xdpsectest.StartDaemon(t, p.B, confB, xdpsectest.Options{Args: logArgs})

	// Every key the session configures.
	keys := k.all()
	fresh := func(n int) []byte {
		b := make([]byte, n)
		for {
			rand.Read(b)
			// Avoid keys whose hex prefix is all one digit etc.: any
			// random key is fine for the grep, but not the empty one.
			if !bytes.Equal(b, make([]byte, n)) {
				keys = append(keys, b)
				return b
			}
		}
	}
	var cli strings.Builder
	run := func(d *xdpsectest.Daemon, wantErr bool, args ...string) {
		t.Helper()
		// Only what the command printed: the command line itself holds
		// the key of `sa add` (it is the operator's input, not output).
		out, err := d.Command(args...).CombinedOutput()
		if (err != nil) != wantErr {
			t.Errorf("xdpsec %s: %v, want error %v\n%s", args[0], err, wantErr, out)
		}
		fmt.Fprintf(&cli, "$ xdpsec %s ...\n%s", args[0], out)
	}

	xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
	xdpsectest.Ping(t, p.B, "2001:db8:a::1", 3, a, b)

	sa := func(spi int, key []byte) []string {
		return []string{"sa", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", fmt.Sprintf("%#x", spi),
			"mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + hex.EncodeToString(key), "128"}
	}
	run(b, false, sa(0x2001, fresh(20))...)
	run(b, true, sa(0x2002, fresh(19))...) // one byte short: refused
	run(b, true, sa(0x2003, fresh(30))...) // 240 bits: no AES size, refused
	for _, args := range [][]string{{"sa", "list"}, {"sa", "list", "-j"}, {"stats"}, {"stats", "-j"},
		{"sa", "get", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x2001"},
		{"stats", "--watch", "--samples", "1", "--interval", "100ms", "-j"}, {"policy", "list"}} {
		run(b, false, args...)
	}
	run(b, false, "capture", "--reason", "all", "-w", t.TempDir()+"/c.pcap", "--duration", "300ms")
	// The metrics name SPIs and peers, never keys.
	for s := range scrape(t, p.B, metricsAddr) {
		cli.WriteString(s + "\n")
	}

	// SIGHUP: an added SA, then a key file with a malformed key.
	addLine := func(key []byte) {
		f, err := os.OpenFile(keysA, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi %#x mode tunnel aead 'rfc4106(gcm(aes))' 0x%s 128\n",
			0x3000+len(keys), hex.EncodeToString(key))
		f.Close()
	}
	hup := func(want string) {
		t.Helper()
		a.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(a.Stderr(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in A's log 10 s after SIGHUP:\n%s", want, a.Stderr())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	addLine(fresh(20))
	hup(`"msg":"reloaded `)
	addLine(fresh(17))
	hup(`"level":"ERROR","msg":"reload `)
	xdpsectest.Ping(t, p.A, "198.51.100.2", 2, a, b)

	a.Stop()
	b.Stop()

	for _, d := range []*xdpsectest.Daemon{a, b} {
		for _, line := range strings.Split(strings.TrimSpace(d.Stderr()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil || m["level"] == nil {
				t.Errorf("%s: log line is not slog JSON: %q", d.NS().Name, line)
			}
		}
	}
	texts := map[string]string{
		"A log": a.Stderr() + a.Stdout(),
		"B log": b.Stderr() + b.Stdout(),
		"CLI":   cli.String(),
	}
	for what, text := range texts {
		for i, key := range keys {
			for _, form := range keyForms(key) {
				if strings.Contains(text, form) {
					t.Errorf("%s holds key %d (as %q)", what, i, form)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("A log:\n%s\nB log:\n%s\nCLI:\n%s", texts["A log"], texts["B log"], texts["CLI"])
	}
	t.Logf("%d keys, %d log lines and %d bytes of CLI output checked", len(keys),
		strings.Count(texts["A log"]+texts["B log"], "\n"), cli.Len())
}
