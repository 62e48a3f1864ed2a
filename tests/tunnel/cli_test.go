package tunnel

import (
	"fmt"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/loader"
)

// cli runs `xdpsec ARGS --socket S` in the daemon's namespace and returns
// its trimmed output and whether it succeeded.
func cli(d *xdpsectest.Daemon, args ...string) (string, bool) {
	out, err := d.CLI(args...)
	return strings.TrimSpace(out), err == nil
}

// oneLine fails the test unless out is a single line holding every want.
func oneLine(t *testing.T, what, out string, want ...string) {
	t.Helper()
	t.Logf("%s: %s", what, out)
	if strings.Contains(out, "\n") {
		t.Errorf("%s: error is not one line:\n%s", what, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: error %q does not say %q", what, out, w)
		}
	}
	if strings.Contains(out, "a1a2a3") || strings.Contains(out, "0102030405") {
		t.Errorf("%s: error shows key bytes: %s", what, out)
	}
}

// TestSAAddRefusals: through the CLI and a running daemon, `sa add` of an
// inbound SA beyond the XDP SA map's capacity, and of SAs the current
// capabilities view refuses, fail with one line that names the cause (the
// map and its size; the blocking parameter) — and refused SAs are not
// installed.
func TestSAAddRefusals(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("cli", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name}
		pin := xdpsectest.MountBPFFS(t)
		// A datapath pinned earlier with an 8-entry SA map: the daemon
		// attaches to the same pins and inherits the map's real size.
		if err := p.A.Do(func() error {
			dp, err := loader.Attach(p.IfA, loader.ModeAuto, loader.Options{PinRoot: pin, MaxSAs: 8})
			if err != nil {
				return err
			}
			return dp.Close()
		}); err != nil {
			t.Fatal(err)
		}
		confA := exampleConfig(t, "a", "pin "+pin)
		a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{})

		const key = "0xa1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"
		inbound := func(spi int) []string {
			return strings.Fields(fmt.Sprintf("sa add src 192.0.2.9 dst 192.0.2.1 proto esp spi %#x mode tunnel aead rfc4106(gcm(aes)) %s 128", spi, key))
		}
		// NAT-T: four UDP ports besides 4500 fit the XDP config, a fifth
		// does not.
		for i := range 5 {
			args := append(inbound(0x4001+i), "encap", "espinudp", "4500", fmt.Sprint(4601+i), "0.0.0.0")
			out, ok := cli(a, args...)
			if i < 4 && !ok {
				t.Fatalf("sa add with NAT-T port %d: %s", 4601+i, out)
			}
			if i == 4 {
				if ok {
					t.Fatalf("sa add with a fifth extra NAT-T port succeeded: %s", out)
				}
				oneLine(t, "sa add with a fifth NAT-T port", out, "encap port 4605", "at most 4 NAT-T ports besides 4500")
			}
		}
		var ports []uint16
		if err := p.A.Do(func() error {
			d, err := loader.Open(p.IfA, loader.Options{PinRoot: pin})
			if err != nil {
				return err
			}
			defer d.Close()
			c, err := d.Config()
			ports = c.NATTPorts
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ports) != "[4601 4602 4603 4604]" {
			t.Errorf("XDP config NAT-T ports %v, want [4601 4602 4603 4604]", ports)
		}
		// The example config's two inbound SAs and the four NAT-T ones
		// leave room for two.
		for spi := 0x5001; spi <= 0x5002; spi++ {
			if out, ok := cli(a, inbound(spi)...); !ok {
				t.Fatalf("sa add %#x (within capacity): %s", spi, out)
			}
		}
		out, ok := cli(a, inbound(0x5003)...)
		if ok {
			t.Fatalf("sa add beyond the SA map's 8 entries succeeded: %s", out)
		}
		oneLine(t, "sa add beyond capacity", out, "xdpsec sa: SA esp spi 0x00005003", "XDP SA map full", "holds 8 inbound SAs", "sa del")
		if out, _ := cli(a, "sa", "get", "src", "192.0.2.9", "dst", "192.0.2.1", "proto", "esp", "spi", "0x5003"); !strings.Contains(out, "not found") {
			t.Errorf("refused SA is installed anyway: %s", out)
		}
		// An outbound SA takes no map entry.
		if out, ok := cli(a, strings.Fields("sa add src 192.0.2.1 dst 192.0.2.9 proto esp spi 0x6001 mode tunnel aead rfc4106(gcm(aes)) "+key+" 128")...); !ok {
			t.Errorf("outbound sa add with a full map: %s", out)
		}
		// Free one: the refused SA fits now.
		if out, ok := cli(a, "sa", "del", "src", "192.0.2.9", "dst", "192.0.2.1", "proto", "esp", "spi", "0x5001"); !ok {
			t.Fatal(out)
		}
		if out, ok := cli(a, inbound(0x5003)...); !ok {
			t.Errorf("sa add after a delete: %s", out)
		}

		// Capabilities: switch AES-GCM off, then AH (ESP only).
		if out, ok := cli(a, "caps", "set", "rfc4106(gcm(aes))=off"); !ok {
			t.Fatalf("caps set: %s", out)
		}
		out, ok = cli(a, strings.Fields("sa add src 192.0.2.1 dst 192.0.2.9 proto esp spi 0x6002 mode tunnel aead rfc4106(gcm(aes)) "+key+" 128")...)
		if ok {
			t.Fatalf("sa add of an AES-GCM SA with rfc4106(gcm(aes))=off succeeded: %s", out)
		}
		oneLine(t, "sa add refused by caps (algorithm)", out, "rfc4106(gcm(aes))", "caps set")
		if out, ok := cli(a, "caps", "set", "IPsecV2=esp"); !ok {
			t.Fatalf("caps set: %s", out)
		}
		out, ok = cli(a, strings.Fields("sa add src 192.0.2.1 dst 192.0.2.9 proto ah spi 0x6003 mode tunnel auth-trunc hmac(sha256) "+hmacAB+" 128")...)
		if ok {
			t.Fatalf("sa add of an AH SA with IPsecV2=esp succeeded: %s", out)
		}
		oneLine(t, "sa add refused by caps (AH)", out, "IPsecV2", "caps set")
	})
	testutil.CheckRemoved(t, names...)
}
