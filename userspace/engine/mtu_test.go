package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// TestConfigMTUAboveFrame: an explicit TUN MTU that one AF_XDP frame cannot
// carry is refused before anything is created, with the limit in the message.
func TestConfigMTUAboveFrame(t *testing.T) {
	_, err := Start(Config{Links: []string{"xdpsec-none"}, MTU: 9000})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), strconv.Itoa(MaxTUNMTU)) {
		t.Fatalf("Start with mtu 9000: %v, want ErrConfig naming the limit %d", err, MaxTUNMTU)
	}
}

// TestJumboLinkMTU runs a tunnel over links with MTU 9000, with frames of
// both sizes. A frame holds at most TUNMTULimit bytes of inner packet, so
// the TUN MTU must be capped there (it used to be link MTU - overhead: a
// larger packet then never fit a frame and was lost as gso-malformed, or,
// without TUN offload, cut to the frame and refused by Encrypt), and a
// packet of exactly that size goes through. When the TUN MTU is raised by
// hand past the limit, a packet with DF is answered with ICMP too-big
// naming the limit instead. (Native XDP on veth refuses MTU 9000, so the
// loader falls back to generic XDP here.)
func TestJumboLinkMTU(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		frameSize   int
		offload     string
		raised, big int // TUN MTU raised by hand, and a ping payload over the limit under it
	}{
		{2048, "on", 4000, 3000}, {2048, "off", 4000, 3000},
		{4096, "on", 6000, 5000}, {4096, "off", 6000, 5000},
	} {
		limit := TUNMTULimit(c.frameSize)
		t.Run(fmt.Sprintf("frame-size=%d/tun-offload=%s", c.frameSize, c.offload), func(t *testing.T) {
			p := testutil.NewVethPair(t)
			p.A.MustRun(t, "ip", "link", "set", p.IfA, "mtu", "9000")
			p.B.MustRun(t, "ip", "link", "set", p.IfB, "mtu", "9000")
			pin := mountBPFFS(t)
			extra := fmt.Sprintf("tun-offload %s\nframe-size %d\n", c.offload, c.frameSize)
			ea := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin)+extra)
			startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin)+extra)
			for _, ns := range []*testutil.NS{p.A, p.B} {
				if mtu := tunMTUIn(t, ns); mtu != limit {
					t.Errorf("%s: TUN MTU %d over links of MTU 9000, want the frame's limit %d", ns.Name, mtu, limit)
				}
			}
			// The largest packet the TUN MTU allows goes through both ways.
			size := strconv.Itoa(limit - 28)
			out, err := p.A.Run("ping", "-c", "3", "-i", "0.2", "-w", "6", "-M", "do", "-s", size, "198.51.100.2")
			if err != nil || strings.Contains(out, " 0 received") {
				t.Fatalf("%d-byte ping through the tunnel: %v\n%s\ncounters A %v", limit, err, out, ea.counters())
			}

			// The MTU raised by hand: too-big with the frame's limit.
			p.A.MustRun(t, "ip", "link", "set", DefaultTUN, "mtu", strconv.Itoa(c.raised))
			tb0 := ea.counter(OutTooBig)
			out, _ = p.A.Run("ping", "-c", "2", "-i", "0.2", "-w", "3", "-M", "do", "-s", strconv.Itoa(c.big), "198.51.100.2")
			if ea.counter(OutTooBig) <= tb0 {
				t.Fatalf("no too-big for a %d-byte DF packet over a TUN MTU of %d: counters %v\n%s", c.big+28, c.raised, ea.counters(), out)
			}
			if !strings.Contains(out, "mtu = "+strconv.Itoa(limit)) && !strings.Contains(out, "mtu="+strconv.Itoa(limit)) {
				t.Errorf("ping did not learn the frame's limit %d:\n%s", limit, out)
			}
			if n := ea.counter(OutGSOMalformed); n != 0 {
				t.Errorf("%d packets counted gso-malformed: an oversized packet is not malformed", n)
			}
		})
	}
}

// TestLinkMTULoweredAtRuntime: the link MTU lowered under a running
// engine (the TUN keeps its MTU) is followed per packet: a DF packet that
// no longer fits once encapsulated is answered with ICMP too-big naming
// the new link MTU minus the SA's overhead, and the sender's next packets
// of that size fit.
func TestLinkMTULoweredAtRuntime(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	ea := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin))
	startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin))
	if out, err := p.A.Run("ping", "-c", "2", "-i", "0.2", "-w", "4", "-M", "do", "-s", "1350", "198.51.100.2"); err != nil {
		t.Fatalf("1378-byte ping before the change: %v\n%s", err, out)
	}
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "mtu", "1300")
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "mtu", "1300")
	var overhead int
	for _, a := range ea.SAD().List() {
		if a.Spec().Dst == p.IPv4B {
			h, tl := a.Transform().Overhead()
			overhead = h + tl
		}
	}
	want := 1300 - overhead
	tb0 := ea.counter(OutTooBig)
	var out string
	// The neighbour resolver learns the new MTU from the link notification;
	// allow it a moment (bounded).
	for try := 0; try < 20 && ea.counter(OutTooBig) == tb0; try++ {
		out, _ = p.A.Run("ping", "-c", "1", "-w", "1", "-M", "do", "-s", "1350", "198.51.100.2")
	}
	if ea.counter(OutTooBig) == tb0 {
		t.Fatalf("no too-big after the link MTU went to 1300: counters %v\n%s", ea.counters(), out)
	}
	if !strings.Contains(out, "mtu = "+strconv.Itoa(want)) && !strings.Contains(out, "mtu="+strconv.Itoa(want)) {
		t.Errorf("ping did not learn %d (1300 - %d overhead):\n%s", want, overhead, out)
	}
	size := strconv.Itoa(want - 28)
	if out, err := p.A.Run("ping", "-c", "2", "-i", "0.2", "-w", "4", "-M", "do", "-s", size, "198.51.100.2"); err != nil {
		t.Fatalf("%d-byte ping after the change: %v\n%s\ncounters %v", want, err, out, ea.counters())
	}
}
