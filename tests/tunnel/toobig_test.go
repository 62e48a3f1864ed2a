package tunnel

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

var (
	fragNeededRE = regexp.MustCompile(`(?i)frag needed and DF set \(mtu = (\d+)\)|message too long, mtu[=:] ?(\d+)`)
	ptbRE        = regexp.MustCompile(`(?i)packet too big: mtu=(\d+)|message too long, mtu[=:] ?(\d+)`)
	routeMTURE   = regexp.MustCompile(`\bmtu (\d+)\b`)
)

func firstNumber(m []string) int {
	for _, s := range m[1:] {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return 0
}

// TestTooBig: once the link's MTU shrinks below what the TUN lets through,
// a DF packet that fits the TUN but not the link after encapsulation is
// answered by the engine with an ICMP "fragmentation needed" (IPv4) or
// "packet too big" (IPv6) naming the inner MTU that fits; ping reports it,
// the kernel records the path MTU exception, and a packet of that size
// then goes through.
func TestTooBig(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("icmp", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		_, a, b := startExampleTunnel(t, p)
		xdpsectest.Ping(t, p.A, "198.51.100.2", 2, a, b)
		xdpsectest.Ping(t, p.A, "2001:db8:b::1", 2, a, b)
		tunMTU := 0
		if m := routeMTURE.FindStringSubmatch(p.A.MustRun(t, "ip", "link", "show", "xdpsec0")); m != nil {
			tunMTU, _ = strconv.Atoi(m[1])
		}
		// Shrink the path: both veth ends to 1400 (IPv6 needs an inner MTU of at least 1280), the TUN stays larger.
		p.A.MustRun(t, "ip", "link", "set", p.IfA, "mtu", "1400")
		p.B.MustRun(t, "ip", "link", "set", p.IfB, "mtu", "1400")
		// ICMP echoes that fit the TUN with 8 bytes to spare.
		size4, size6 := tunMTU-28-8, tunMTU-48-8
		a0 := a.Stats()

		out, err := p.A.Run("ping", "-M", "do", "-c", "2", "-i", "0.2", "-W", "1", "-s", strconv.Itoa(size4), "198.51.100.2")
		m := fragNeededRE.FindStringSubmatch(out)
		if err == nil || m == nil {
			t.Fatalf("ping -M do -s %d (tun mtu %d) got no frag-needed (err %v):\n%s%s", size4, tunMTU, err, out, xdpsectest.Dump(a, b))
		}
		mtu4 := firstNumber(m)
		if mtu4 <= 0 || mtu4 >= 1400 {
			t.Errorf("frag-needed says mtu %d, want below the link's 1400", mtu4)
		}
		xdpsectest.Ping(t, p.A, "198.51.100.2", 1, a, b) // small packets still pass

		out, err = p.A.Run("ping", "-6", "-M", "do", "-c", "2", "-i", "0.2", "-W", "1", "-s", strconv.Itoa(size6), "2001:db8:b::1")
		m = ptbRE.FindStringSubmatch(out)
		if err == nil || m == nil {
			t.Fatalf("ping -6 -s %d got no packet-too-big (err %v):\n%s%s", size6, err, out, xdpsectest.Dump(a, b))
		}
		mtu6 := firstNumber(m)
		rt := p.A.MustRun(t, "ip", "-6", "route", "get", "2001:db8:b::1")
		if rm := routeMTURE.FindStringSubmatch(rt); rm == nil || rm[1] != strconv.Itoa(mtu6) {
			t.Errorf("ip -6 route get shows no PMTU exception of %d:\n%s", mtu6, rt)
		}
		a1 := a.Stats()
		if d := a1.Counters["out-too-big"] - a0.Counters["out-too-big"]; d < 2 {
			t.Errorf("A out-too-big grew by %d, want >= 2 (one per family)", d)
		}
		// What the engine said fits does fit.
		for _, c := range []struct {
			fam, dst string
			mtu      int
		}{{"-4", "198.51.100.2", mtu4}, {"-6", "2001:db8:b::1", mtu6}} {
			hdr := 28
			if c.fam == "-6" {
				hdr = 48
			}
			if out, err := p.A.Run("ping", c.fam, "-M", "do", "-c", "1", "-W", "2", "-s", strconv.Itoa(c.mtu-hdr), c.dst); err != nil || !strings.Contains(out, "1 received") {
				t.Errorf("ping %s -s %d (the reported mtu %d) failed: %v\n%s%s", c.fam, c.mtu-hdr, c.mtu, err, out, xdpsectest.Dump(a, b))
			}
		}
	})
	testutil.CheckRemoved(t, names...)
}
