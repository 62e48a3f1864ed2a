package engine

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// TestUpdatesUnderTraffic changes A's SAD and SPD continuously while flood
// pings cross the tunnel both ways: an unrelated SA and policy added and
// deleted, the SAs in use updated in place with their own keys (a rekey
// that keeps sequence numbers and replay windows), Reload with the same
// configuration, Stats. Run with -race, it checks that the workers and the
// writers share nothing unsynchronised; and traffic must not notice: no
// no-state, replay or bad-icv drop, most echoes answered.
func TestUpdatesUnderTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	base := tunnelConfig(true, p.IfA, pin)
	ea := startFromConfig(t, p.A, base)
	startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin))

	// The same configuration plus one unrelated outbound SA and policy,
	// parsed by LoadConfig into specs.
	extra := base + "ip xfrm state add src 192.0.2.1 dst 192.0.2.99 proto esp spi 0x7777 mode tunnel aead 'rfc4106(gcm(aes))' " + keyAB + " 128\n" +
		"ip xfrm policy add src 198.51.100.1/32 dst 203.0.113.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.99 proto esp mode tunnel\n"
	path := filepath.Join(t.TempDir(), "extra.conf")
	if err := os.WriteFile(path, []byte(extra), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	sas, pols := fc.SAs, fc.Policies
	xSA, xPol := sas[len(sas)-1], pols[len(pols)-1]

	// Warm up: neighbours resolved both ways.
	p.A.Run("ping", "-c", "1", "-w", "3", "198.51.100.2")
	p.A.Run("ping", "-c", "1", "-w", "3", "2001:db8:b::1")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var rounds int
	errs := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rounds++
			steps := []func() error{
				func() error { return ea.AddSA(xSA) },
				func() error { return ea.AddPolicy(xPol) },
				func() error { return ea.UpdateSA(sas[0]) },
				func() error { return ea.UpdateSA(sas[1]) },
				func() error { _, err := ea.Stats(); return err },
				func() error { return ea.DeletePolicy(xPol) },
				func() error { return ea.DeleteSA(xSA.Key()) },
				func() error { _, err := ea.Reload(sas[:len(sas)-1], pols[:len(pols)-1]); return err },
			}
			for _, step := range steps {
				if err := step(); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}
	}()
	type result struct {
		out string
		err error
	}
	res := make([]result, 2)
	var pw sync.WaitGroup
	for i, dst := range []string{"198.51.100.2", "2001:db8:b::1"} {
		pw.Add(1)
		go func() {
			defer pw.Done()
			res[i].out, res[i].err = p.A.Run("ping", "-f", "-q", "-c", "3000", "-w", "10", dst)
		}()
	}
	pw.Wait()
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("update under traffic: %v", err)
	default:
	}
	for _, r := range res {
		sent, got, ok := testutil.PingCounts(r.out)
		if !ok {
			t.Fatalf("ping: %v\n%s", r.err, r.out)
		}
		if got < sent*9/10 {
			t.Errorf("ping answered %d of %d during updates\n%s", got, sent, r.out)
		}
	}
	st, err := ea.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []ipsec.Verdict{ipsec.VerdictNoState, ipsec.VerdictReplay, ipsec.VerdictBadICV} {
		if n := st.InVerdicts[v.String()]; n != 0 {
			t.Errorf("%d inbound packets dropped %s while the SAs were updated in place", n, v)
		}
	}
	if rounds < 3 {
		t.Errorf("only %d update rounds ran during the traffic", rounds)
	}
	t.Logf("%d update rounds; delivered %d, protected %d", rounds, st.Counters["in-delivered"], st.Counters["out-protected"])
}
