package neigh

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestStaticEntrySurvivesRefresh: an operator's static neighbour entry
// (nud permanent, the usual choice towards a peer that does not answer ARP
// or NDP) must never be touched by the refresh. NTF_USE on a PERMANENT
// entry turns it into an ordinary one that the kernel then resolves from
// scratch (seen on 6.18: PERMANENT -> INCOMPLETE -> FAILED, the lladdr
// gone), so the refresh used to kill the tunnel a few seconds after the
// first packet whenever the peer stays silent. The peer here answers
// nothing (its ARP and NDP are off); the static entries must stay
// PERMANENT and Resolved across many refresh rounds of traffic.
func TestStaticEntrySurvivesRefresh(t *testing.T) {
	p, r := newResolver(t, Config{RefreshInterval: 50 * time.Millisecond, FailedHold: 50 * time.Millisecond})
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "arp", "off")
	p.B.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+p.IfB+".disable_ipv6=1")
	static, _ := net.ParseMAC("02:00:5e:10:00:77")
	dsts := []netip.Addr{p.IPv4B, p.IPv6B}
	for _, dst := range dsts {
		p.A.MustRun(t, "ip", "neigh", "replace", dst.String(), "lladdr", static.String(), "dev", p.IfA, "nud", "permanent")
		r.Lookup(dst)
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, static, p.MACA, hop.etherType())
	}
	// Traffic (lookups) across 20 refresh rounds.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, dst := range dsts {
			if hop, st := r.Lookup(dst); st != Resolved || [6]byte(hop.Header[0:6]) != [6]byte(static) {
				t.Fatalf("%s: %s %x during refresh rounds, want Resolved to the static %s\n%s", dst, st, hop.Header[0:6], static,
					p.A.MustRun(t, "ip", "neigh", "show", "dev", p.IfA))
			}
		}
	}
	out := p.A.MustRun(t, "ip", "neigh", "show", "dev", p.IfA)
	for _, dst := range dsts {
		if !strings.Contains(out, dst.String()+" lladdr "+static.String()+" PERMANENT") {
			t.Errorf("the kernel's static entry for %s was changed by the refresh:\n%s", dst, out)
		}
	}
	if r.Stats().Triggers != 0 {
		t.Errorf("%d NTF_USE triggers for static entries, want 0", r.Stats().Triggers)
	}
}
