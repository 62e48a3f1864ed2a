package engine

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// startAccounted is startFromConfig with afxdp frame accounting on every
// socket: Stop then fails if any frame is held by the engine or was ever
// in two places.
func startAccounted(t *testing.T, ns *testutil.NS, text string) *Engine {
	t.Helper()
	return startWith(t, ns, text, func(fc *FileConfig) { fc.Config.frameAccounting = true })
}

// TestFramesAccountedOnEveryPath runs both pipelines through their drop
// paths at once, under load, with frame accounting on: inbound packets
// that fail their ICV (the peer seals with another key), outbound packets
// no policy selects, delivered traffic both ways, the peer's link going
// down and up (full tx ring, frames dropped), and Stop while flood pings
// still run (shutdown mid-batch). Every frame must be back with its socket
// or with the kernel afterwards, and none may ever have been in two places.
func TestFramesAccountedOnEveryPath(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	// A has a route into its TUN that no policy selects.
	ea := startAccounted(t, p.A, tunnelConfig(true, p.IfA, pin)+"route 203.0.113.0/24\n")
	// B seals its IPv4 packets to A with the wrong key: A drops them
	// bad-icv. IPv6 stays right, so traffic is also delivered.
	bText := tunnelConfig(false, p.IfB, pin)
	badKey := "0x" + strings.Repeat("5a", 20)
	bText = strings.Replace(bText, "spi 0x1002 mode tunnel aead 'rfc4106(gcm(aes))' "+keyBA, "spi 0x1002 mode tunnel aead 'rfc4106(gcm(aes))' "+badKey, 1)
	if !strings.Contains(bText, badKey) {
		t.Fatal("B's config lost the wrong key")
	}
	eb := startAccounted(t, p.B, bText)

	var floods []*exec.Cmd
	flood := func(ns *testutil.NS, args ...string) {
		cmd := ns.Command("ping", append([]string{"-f", "-q", "-w", "8"}, args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		floods = append(floods, cmd)
	}
	t.Cleanup(func() {
		for _, c := range floods {
			c.Process.Kill()
			c.Wait()
		}
	})
	flood(p.A, "-s", "1000", "198.51.100.2")  // replies fail their ICV at A
	flood(p.A, "-s", "64", "2001:db8:b::1")   // delivered both ways
	flood(p.B, "-s", "1200", "2001:db8:a::1") // delivered both ways
	flood(p.A, "-s", "100", "203.0.113.9")    // out-no-policy at A
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (ea.counter(InDelivered) < 500 || ea.counter(OutNoPolicy) < 100 ||
		ea.workers[0].ctr.v[ipsec.VerdictBadICV].Load() < 100) {
		time.Sleep(20 * time.Millisecond)
	}
	// The peer's link down and up under load: A's tx ring fills while the
	// link has no carrier.
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "down")
	time.Sleep(300 * time.Millisecond)
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "up")
	time.Sleep(300 * time.Millisecond)

	st, err := ea.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("A counters %v verdicts %v", st.Counters, st.InVerdicts)
	for _, c := range []struct {
		name string
		n    uint64
	}{
		{"in-delivered", st.Counters["in-delivered"]},
		{"out-no-policy", st.Counters["out-no-policy"]},
		{"bad-icv", st.InVerdicts[ipsec.VerdictBadICV.String()]},
		{"out-transmitted", st.Counters["out-transmitted"]},
	} {
		if c.n == 0 {
			t.Errorf("%s is 0: the path it counts was not exercised", c.name)
		}
	}
	// Stop both while the floods still run.
	if err := ea.Stop(); err != nil {
		t.Errorf("stop A: %v", err)
	}
	if err := eb.Stop(); err != nil {
		t.Errorf("stop B: %v", err)
	}
}
