package tunnel

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// rekeyV4 rewrites the key of the IPv4 A->B SA (SPI 0x1001) in a copied
// example key file.
func rekeyV4(t *testing.T, conf string) {
	t.Helper()
	keys := filepath.Join(filepath.Dir(conf), strings.TrimSuffix(filepath.Base(conf), ".conf")+".keys")
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
func (d *daemon) hup(n int) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(d.out.String(), "msg=\"reloaded ") >= n {
			return
		}
	}
	d.t.Fatalf("no reload logged 5 s after SIGHUP:\n%s", d.out)
}

var lossRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

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
		pin := mountBPFFS(t)
		confA, sockA := exampleConfig(t, "a", "pin "+pin)
		confB, sockB := exampleConfig(t, "b", "pin "+pin)
		a := startDaemon(t, p.A, confA, sockA)
		b := startDaemon(t, p.B, confB, sockB)
		ping(t, p.A, "198.51.100.2", 2, a, b)
		ping(t, p.A, "2001:db8:b::1", 2, a, b)

		// 60 echo requests over 3 s through the unchanged IPv6 SAs.
		pinger := p.A.Command("ping", "-c", "60", "-i", "0.05", "-W", "2", "2001:db8:b::1")
		var pout logBuffer
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

		rekeyV4(t, confA)
		rekeyV4(t, confB)
		b0 := b.stats()
		a.hup(1)
		if out, err := p.A.Run("ping", "-c", "3", "-i", "0.1", "-W", "1", "198.51.100.2"); err == nil {
			t.Errorf("IPv4 ping went through although only A has the new key:\n%s", out)
		}
		if d := b.stats().InVerdicts["bad-icv"] - b0.InVerdicts["bad-icv"]; d == 0 {
			t.Errorf("B counted no bad-icv for A's packets under the new key%s", dump(a, b))
		}
		b.hup(1)
		ping(t, p.A, "198.51.100.2", 3, a, b)
		ping(t, p.B, "198.51.100.1", 3, a, b)

		pinger.Wait()
		m := lossRE.FindStringSubmatch(pout.String())
		if m == nil || m[1] != "60" || m[2] != "60" {
			t.Errorf("ping through the unchanged SA during the reloads lost packets:\n%s%s", pout.String(), dump(a, b))
		}
		for _, d := range []*daemon{a, b} {
			if !strings.Contains(d.out.String(), "SAsUpdated:1 SAsDeleted:0 SAsUnchanged:3") {
				t.Errorf("%s: reload summary not 1 updated, 3 unchanged:\n%s", d.ns.Name, d.out)
			}
		}
	})
	checkNoLeaks(t, names)
}
