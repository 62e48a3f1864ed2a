package tunnel

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

// rekeyV4 rewrites the key of the IPv4 A->B SA (SPI 0x1001) in a copied
// example key file.
func rekeyV4(t *testing.T, conf xdpsectest.Config) {
	t.Helper()
	keys := conf.Keys
	b, err := os.ReadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "spi 0x1001 ") {
			l = strings.Replace(l, "0x0102030405060708090a0b0c0d0e0f1011121314", "0xa1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4", 1)
		}
		out = append(out, l)
	}
	if err := os.WriteFile(keys, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP to the daemon's PID and waits (bounded) for its log to
// report the n-th reload.
func hup(t *testing.T, d *xdpsectest.Daemon, n int) {
	t.Helper()
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(d.Log(), "msg=\"reloaded ") >= n {
			return
		}
	}
	t.Fatalf("no reload logged 5 s after SIGHUP:\n%s", d.Log())
}

// TestReloadRekey: SIGHUP with one SA's key changed in the config, while
// a ping flows through another SA: that ping loses nothing, and the changed
// SA uses the new key (after A alone reloaded, B refuses A's IPv4 packets as
// bad-icv; once B reloaded too, IPv4 flows again).
func TestReloadRekey(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("sighup", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		_, a, b := startExampleTunnel(t, p)
		xdpsectest.Ping(t, p.A, "198.51.100.2", 2, a, b)
		xdpsectest.Ping(t, p.A, "2001:db8:b::1", 2, a, b)

		// 60 echo requests over 3 s through the unchanged IPv6 SAs.
		pinger := p.A.Command("ping", "-c", "60", "-i", "0.05", "-W", "2", "2001:db8:b::1")
		var pout xdpsectest.LogBuffer
		pinger.Stdout, pinger.Stderr = &pout, &pout
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if pinger.ProcessState == nil {
				pinger.Process.Kill()
				pinger.Wait()
			}
		}()
		time.Sleep(500 * time.Millisecond)

		rekeyV4(t, a.Config())
		rekeyV4(t, b.Config())
		b0 := b.Stats()
		hup(t, a, 1)
		if out, err := p.A.Run("ping", "-c", "3", "-i", "0.1", "-W", "1", "198.51.100.2"); err == nil {
			t.Errorf("IPv4 ping went through although only A has the new key:\n%s", out)
		}
		if d := b.Stats().InVerdicts["bad-icv"] - b0.InVerdicts["bad-icv"]; d == 0 {
			t.Errorf("B counted no bad-icv for A's packets under the new key%s", xdpsectest.Dump(a, b))
		}
		hup(t, b, 1)
		xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
		xdpsectest.Ping(t, p.B, "198.51.100.1", 3, a, b)

		pinger.Wait()
		if sent, got, _ := testutil.PingCounts(pout.String()); sent != 60 || got != 60 {
			t.Errorf("ping through the unchanged SA during the reloads lost packets:\n%s%s", pout.String(), xdpsectest.Dump(a, b))
		}
		for _, d := range []*xdpsectest.Daemon{a, b} {
			if !strings.Contains(d.Log(), "SAsUpdated:1 SAsDeleted:0 SAsUnchanged:3") {
				t.Errorf("%s: reload summary not 1 updated, 3 unchanged:\n%s", d.NS().Name, d.Log())
			}
		}
	})
	testutil.CheckRemoved(t, names...)
}
