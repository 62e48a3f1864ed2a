package tunnel

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

var linkMTURE = regexp.MustCompile(`\bmtu (\d+)\b`)

// bigEchoSize is the ICMP payload of the big pings: every echo is 3008
// bytes of ICMP, more than twice any TUN MTU the tests run with.
const bigEchoSize = 3000

// fragmentsPer is how many fragments the kernel cuts a bigEchoSize echo
// into at a TUN MTU of mtu: IPv4 carries (mtu-20) bytes rounded down to 8
// per fragment, IPv6 (mtu-48) (40-byte header and 8-byte Fragment header).
func fragmentsPer(mtu int, v6 bool) int {
	per := (mtu - 20) &^ 7
	if v6 {
		per = (mtu - 48) &^ 7
	}
	return (bigEchoSize + 8 + per - 1) / per
}

// tunMTU reads the MTU of the TUN xdpsec0 in ns.
func tunMTU(t *testing.T, ns *testutil.NS) int {
	t.Helper()
	m := linkMTURE.FindStringSubmatch(ns.MustRun(t, "ip", "link", "show", "xdpsec0"))
	if m == nil {
		t.Fatal("no mtu in ip link show xdpsec0")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// bigPing runs ping with a bigEchoSize payload (args before the address)
// and returns how many echoes it sent and how many replies came back.
func bigPing(t *testing.T, ns *testutil.NS, dst string, args ...string) (sent, received int, out string) {
	t.Helper()
	args = append(append([]string{"-c", "3", "-i", "0.2", "-W", "2", "-s", strconv.Itoa(bigEchoSize)}, args...), dst)
	out, _ = ns.Run("ping", args...)
	sent, received, ok := testutil.PingCounts(out)
	if !ok {
		t.Fatalf("ping %v: no summary:\n%s", args, out)
	}
	return sent, received, out
}

// TestFragmentsThroughTunnel: an echo bigger than the TUN's MTU, sent
// without DF over IPv4 and by an IPv6 host (which fragments at the
// source), reaches the TUN as fragments; in tunnel mode each fragment is
// encrypted as an inner packet of its own, the far end delivers each to
// its TUN, the kernel reassembles, and every echo is answered the same
// way back. The counters show the fragments, one by one, through the SAs
// of both directions.
func TestFragmentsThroughTunnel(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("esp-tunnel", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		_, a, b := startExampleTunnel(t, p)
		// Resolve the next hops first: a fragment finding it pending is
		// dropped (out-neigh-pending) like any packet.
		xdpsectest.Ping(t, p.A, "198.51.100.2", 1, a, b)
		xdpsectest.Ping(t, p.A, "2001:db8:b::1", 1, a, b)
		mtuA, mtuB := tunMTU(t, p.A), tunMTU(t, p.B)
		for _, c := range []struct {
			name, dst, outerA, outerB string
			v6                        bool
			args                      []string
		}{
			{"ipv4-no-df", "198.51.100.2", "192.0.2.1", "192.0.2.2", false, []string{"-M", "dont"}},
			{"ipv6", "2001:db8:b::1", "2001:db8::1", "2001:db8::2", true, []string{"-6"}},
		} {
			a0, b0 := a.SettledStats(), b.SettledStats()
			sent, got, out := bigPing(t, p.A, c.dst, c.args...)
			a1, b1 := a.SettledStats(), b.SettledStats()
			if got != sent || sent < 3 {
				t.Fatalf("%s: ping -s %d: %d of %d replies\n%s%s", c.name, bigEchoSize, got, sent, out, xdpsectest.Dump(a, b))
			}
			fa, fb := fragmentsPer(mtuA, c.v6), fragmentsPer(mtuB, c.v6)
			if fa < 3 || fb < 3 {
				t.Fatalf("TUN MTUs %d/%d cut a %d-byte echo into %d/%d fragments, want >= 3", mtuA, mtuB, bigEchoSize, fa, fb)
			}
			delta := func(x, y engine.Stats, name string) uint64 { return y.Counters[name] - x.Counters[name] }
			for _, w := range []struct {
				what string
				got  uint64
				want int
			}{
				{"A out-protected", delta(a0, a1, "out-protected"), sent * fa},
				{"B in-delivered", delta(b0, b1, "in-delivered"), sent * fa},
				{"B out-protected", delta(b0, b1, "out-protected"), sent * fb},
				{"A in-delivered", delta(a0, a1, "in-delivered"), sent * fb},
				{"B SA A->B packets", saDelta(b0, b1, saKeyOf("esp", spiAB(c.v6), c.outerB)), sent * fa},
				{"A SA B->A packets", saDelta(a0, a1, saKeyOf("esp", spiBA(c.v6), c.outerA)), sent * fb},
			} {
				if w.got != uint64(w.want) {
					t.Errorf("%s: %s grew by %d, want %d (%d echoes of %d fragments)%s", c.name, w.what, w.got, w.want, sent, w.want/sent, xdpsectest.Dump(a, b))
				}
			}
			for _, st := range []engine.Stats{a1, b1} {
				for _, bad := range []string{"out-encrypt-error", "out-transport-fragment", "in-policy-mismatch", "in-tun-rejected"} {
					if st.Counters[bad] != 0 {
						t.Errorf("%s: %s = %d, want 0", c.name, bad, st.Counters[bad])
					}
				}
			}
		}
	})
	testutil.CheckRemoved(t, names...)
}

// spiAB and spiBA are the example tunnel's SPIs (examples/tunnel-*.keys).
func spiAB(v6 bool) string {
	if v6 {
		return "0x1101"
	}
	return "0x1001"
}

func spiBA(v6 bool) string {
	if v6 {
		return "0x1102"
	}
	return "0x1002"
}

func saDelta(x, y engine.Stats, key string) uint64 {
	return xdpsectest.SAStats(y, key).Packets - xdpsectest.SAStats(x, key).Packets
}

// TestTransportRefusesFragments: transport mode is applied to whole
// datagrams only (RFC 4303 §3.1.1). The same big echoes to the peer's
// own address reach the TUN as fragments; each is refused and counted
// out-transport-fragment (not out-encrypt-error), nothing leaves, and
// whole packets still pass.
func TestTransportRefusesFragments(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("esp-transport", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		sh := shape{mode: "transport", protos: []string{"esp"}}
		pin := xdpsectest.MountBPFFS(t)
		confA, confB := sh.configs(t, p.IfA, p.IfB, "pin "+pin)
		a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{})
		b := xdpsectest.StartDaemon(t, p.B, confB, xdpsectest.Options{})
		mtu := tunMTU(t, p.A)
		for _, c := range []struct {
			name, dst string
			v6        bool
			args      []string
		}{
			{"ipv4-no-df", sideB.outer4, false, []string{"-M", "dont"}},
			{"ipv6", sideB.outer6, true, []string{"-6"}},
		} {
			xdpsectest.Ping(t, p.A, c.dst, 1, a, b) // next hop resolved, whole packets pass
			a0 := a.SettledStats()
			sent, got, out := bigPing(t, p.A, c.dst, c.args...)
			a1 := a.SettledStats()
			if got != 0 {
				t.Errorf("%s: %d replies to fragmented echoes through a transport-mode SA, want 0\n%s", c.name, got, out)
			}
			want := uint64(sent * fragmentsPer(mtu, c.v6))
			if d := a1.Counters["out-transport-fragment"] - a0.Counters["out-transport-fragment"]; d != want {
				t.Errorf("%s: out-transport-fragment grew by %d, want %d (%d echoes)%s", c.name, d, want, sent, xdpsectest.Dump(a, b))
			}
			for _, n := range []string{"out-encrypt-error", "out-protected"} {
				if d := a1.Counters[n] - a0.Counters[n]; d != 0 {
					t.Errorf("%s: %s grew by %d, want 0", c.name, n, d)
				}
			}
			xdpsectest.Ping(t, p.A, c.dst, 1, a, b)
		}
		if got := fmt.Sprint(engine.CounterName(engine.OutTransportFragment)); got != "out-transport-fragment" {
			t.Errorf("counter name %q", got)
		}
	})
	testutil.CheckRemoved(t, names...)
}
