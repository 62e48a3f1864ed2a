package neigh

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
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

// installPermanent is a test hook body: the operator's `ip neigh replace
// ADDR lladdr MAC nud permanent`, run on the resolver's goroutine.
func installPermanent(t *testing.T, p *testutil.VethPair, addr netip.Addr, mac net.HardwareAddr) {
	if out, err := p.A.Run("ip", "neigh", "replace", addr.String(), "lladdr", mac.String(), "dev", p.IfA, "nud", "permanent"); err != nil {
		t.Errorf("ip neigh replace %s: %v: %s", addr, err, out)
	}
}

// checkPermanent asserts that the kernel's entries for addrs are still the
// operator's: PERMANENT with mac.
func checkPermanent(t *testing.T, p *testutil.VethPair, addrs []netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	out := p.A.MustRun(t, "ip", "neigh", "show", "dev", p.IfA)
	for _, a := range addrs {
		if !strings.Contains(out, a.String()+" lladdr "+mac.String()+" PERMANENT") {
			t.Errorf("the operator's static entry for %s was rewritten:\n%s", a, out)
		}
	}
}

// TestMissYieldsToEntryMadeMeanwhile: an operator's static entry made
// between the resolver's read (no entry) and its NTF_USE request must
// survive. The hook runs `ip neigh replace ... nud permanent` exactly in
// that window, for IPv4 and IPv6. With NLM_F_REPLACE (what the resolver
// sent before) the kernel cleared PERMANENT and resolved B's real MAC
// over the operator's; with NLM_F_EXCL it refuses (EEXIST), the resolver
// reads the entry again and takes the operator's MAC. B answers ARP and
// NDP here, so a rewrite would show as B's MAC.
func TestMissYieldsToEntryMadeMeanwhile(t *testing.T) {
	hand, _ := net.ParseMAC("02:00:5e:10:00:42")
	var p *testutil.VethPair // set before the first Lookup, which the hook follows
	var hooked sync.Map      // next hop -> done: one install each
	hooks := &testHooks{beforeUse: func(next netip.Addr) {
		if _, done := hooked.LoadOrStore(next, true); !done {
			installPermanent(t, p, next, hand)
		}
	}}
	p, r := newResolver(t, Config{RefreshInterval: 50 * time.Millisecond, hooks: hooks})
	dsts := []netip.Addr{p.IPv4B, p.IPv6B}
	for _, dst := range dsts {
		if _, st := r.Lookup(dst); st != Pending {
			t.Fatalf("first lookup of %s: %s, want pending", dst, st)
		}
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, hand, p.MACA, hop.etherType())
	}
	// Traffic across several refresh rounds: the static entries stay
	// untouched and no NTF_USE goes out for them.
	triggers := r.Stats().Triggers
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, dst := range dsts {
			if hop, st := r.Lookup(dst); st != Resolved || [6]byte(hop.Header[0:6]) != [6]byte(hand) {
				t.Fatalf("%s: %s %x, want Resolved to the operator's %s", dst, st, hop.Header[0:6], hand)
			}
		}
	}
	checkPermanent(t, p, dsts, hand)
	s := r.Stats()
	if s.TriggersYielded != 2 || s.Triggers != 2 || s.Triggers != triggers {
		t.Errorf("stats %+v, want the 2 refused creations counted in Triggers and TriggersYielded, and no NTF_USE after them", s)
	}
}

// TestRefreshYieldsToStaticEntry: the refresh decides from the table,
// which may not have seen the operator's change yet (its notification is
// queued behind the refresh). The hook makes B's dynamic entries static by
// hand exactly then; the refresh must read the kernel's entry again, see
// PERMANENT and send nothing. The old refresh sent NTF_USE, which cleared
// PERMANENT and brought B's real MAC back.
func TestRefreshYieldsToStaticEntry(t *testing.T) {
	hand, _ := net.ParseMAC("02:00:5e:10:00:43")
	var p *testutil.VethPair
	var armed atomic.Bool
	var hooked sync.Map
	hooks := &testHooks{beforeRefreshRead: func(next netip.Addr) {
		if !armed.Load() {
			return
		}
		if _, done := hooked.LoadOrStore(next, true); !done {
			installPermanent(t, p, next, hand)
		}
	}}
	p, r := newResolver(t, Config{RefreshInterval: 50 * time.Millisecond, hooks: hooks})
	dsts := []netip.Addr{p.IPv4B, p.IPv6B}
	for _, dst := range dsts {
		r.Lookup(dst)
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, hop.etherType())
	}
	armed.Store(true)
	// waitState's lookups are the traffic that makes the refresh run.
	for _, dst := range dsts {
		hop := waitState(t, r, dst, Resolved, func(h Hop) bool { return [6]byte(h.Header[0:6]) == [6]byte(hand) })
		checkHeader(t, hop, hand, p.MACA, hop.etherType())
	}
	for _, dst := range dsts {
		if _, done := hooked.Load(dst); !done {
			t.Errorf("the refresh never chose %s", dst)
		}
	}
	checkPermanent(t, p, dsts, hand)
	if s := r.Stats(); s.TriggersYielded < 2 {
		t.Errorf("stats %+v, want at least 2 refreshes yielded to the static entries", s)
	}
}
