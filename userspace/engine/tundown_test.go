package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// TestTUNDownUpRestoresRoutes: `ip link set xdpsec0 down; ... up` (an
// operator, a network manager) makes the kernel delete every route through
// the TUN and its IPv6 addresses. The engine used to leave it so: the
// tunnel was dead until a restart (a reload did not help, its policies
// being unchanged). It now puts them back when the TUN comes up.
func TestTUNDownUpRestoresRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin)+"route 203.0.113.0/24\n")
	startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin))
	before := p.A.MustRun(t, "sh", "-c", "ip route show dev "+DefaultTUN+"; ip -6 route show dev "+DefaultTUN+" | grep -v fe80; ip addr show dev "+DefaultTUN+" | grep -v fe80 | grep inet")
	for round := range 2 {
		p.A.MustRun(t, "ip", "link", "set", DefaultTUN, "down")
		p.A.MustRun(t, "ip", "link", "set", DefaultTUN, "up")
		for _, dst := range []string{"198.51.100.2", "2001:db8:b::1"} {
			var out string
			var err error
			// The engine hears of the link coming up asynchronously.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if out, err = p.A.Run("ping", "-c", "1", "-w", "1", dst); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("round %d: ping %s after the tun went down and up: %v\n%s\n%s", round, dst, err, out,
					p.A.MustRun(t, "sh", "-c", "ip route; ip -6 route; ip addr show dev "+DefaultTUN))
			}
		}
		after := p.A.MustRun(t, "sh", "-c", "ip route show dev "+DefaultTUN+"; ip -6 route show dev "+DefaultTUN+" | grep -v fe80; ip addr show dev "+DefaultTUN+" | grep -v fe80 | grep inet")
		for _, line := range strings.Split(strings.TrimSpace(before), "\n") {
			if f := strings.Fields(line); len(f) > 0 && !strings.Contains(after, f[0]+" "+strings.Join(f[1:2], "")) {
				t.Errorf("round %d: %q missing after down/up:\n%s", round, line, after)
			}
		}
	}
}
