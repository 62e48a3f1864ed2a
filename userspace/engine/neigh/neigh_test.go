package neigh

import (
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// newResolver starts a Resolver in namespace A of a fresh veth pair. The
// kernel's neighbour probes are made fast (one probe, 100 ms) so a failed
// resolution takes a fraction of a second instead of three.
func newResolver(t *testing.T, cfg Config) (*testutil.VethPair, *Resolver) {
	t.Helper()
	p := testutil.NewVethPair(t)
	for _, fam := range []string{"ipv4", "ipv6"} {
		p.A.MustRun(t, "sysctl", "-qw",
			"net."+fam+".neigh."+p.IfA+".mcast_solicit=1",
			"net."+fam+".neigh."+p.IfA+".retrans_time_ms=100")
	}
	var r *Resolver
	if err := p.A.Do(func() error {
		var err error
		r, err = New(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return p, r
}

// waitState looks dst up until it reaches want (bounded: 5 s).
func waitState(t *testing.T, r *Resolver, dst netip.Addr, want State, cond func(Hop) bool) Hop {
	t.Helper()
	var hop Hop
	var st State
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		hop, st = r.Lookup(dst)
		if st == want && (cond == nil || cond(hop)) {
			return hop
		}
	}
	t.Fatalf("%s: state %s hop %+v after 5s, want %s", dst, st, hop, want)
	return hop
}

func checkHeader(t *testing.T, hop Hop, dstMAC, srcMAC net.HardwareAddr, etherType uint16) {
	t.Helper()
	if net.HardwareAddr(hop.Header[0:6]).String() != dstMAC.String() ||
		net.HardwareAddr(hop.Header[6:12]).String() != srcMAC.String() ||
		uint16(hop.Header[12])<<8|uint16(hop.Header[13]) != etherType {
		t.Fatalf("header %x, want dst %s src %s type %04x", hop.Header, dstMAC, srcMAC, etherType)
	}
}

// TestMissResolves: the first lookups of a fresh IPv4 and IPv6 neighbour
// are Pending; the kernel resolves them (ARP, NDP) on our request, and the
// lookup then gives B's MAC, A's MAC, the right EtherType, link and MTU.
// The kernel's own table holds the entry afterwards.
func TestMissResolves(t *testing.T) {
	p, r := newResolver(t, Config{})
	for _, tc := range []struct {
		dst       netip.Addr
		etherType uint16
	}{{p.IPv4B, 0x0800}, {p.IPv6B, 0x86dd}} {
		if _, st := r.Lookup(tc.dst); st != Pending {
			t.Fatalf("first lookup of %s: %s, want pending", tc.dst, st)
		}
		hop := waitState(t, r, tc.dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, tc.etherType)
		if hop.LinkIndex != p.IndexA || hop.NextHop != tc.dst || hop.MTU != 1500 {
			t.Fatalf("%s: hop %+v", tc.dst, hop)
		}
		if out := p.A.MustRun(t, "ip", "neigh", "show", tc.dst.String(), "dev", p.IfA); !strings.Contains(out, p.MACB.String()) {
			t.Fatalf("the kernel's table lacks %s: %q", tc.dst, out)
		}
	}
	if s := r.Stats(); s.Triggers < 2 || s.Entries != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestGatewayRoute: a destination behind a gateway resolves to the
// gateway's MAC; removing the route makes it Unreachable.
func TestGatewayRoute(t *testing.T) {
	p, r := newResolver(t, Config{FailedHold: 100 * time.Millisecond})
	p.A.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "via", p.IPv4B.String(), "mtu", "1400")
	p.A.MustRun(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", p.IPv6B.String())
	for _, tc := range []struct{ dst, gw netip.Addr }{
		{netip.MustParseAddr("203.0.113.9"), p.IPv4B},
		{netip.MustParseAddr("2001:db8:2::9"), p.IPv6B},
	} {
		hop := waitState(t, r, tc.dst, Resolved, nil)
		if hop.NextHop != tc.gw {
			t.Fatalf("%s: next hop %s, want %s", tc.dst, hop.NextHop, tc.gw)
		}
		if tc.dst.Is4() && hop.MTU != 1400 {
			t.Fatalf("%s: MTU %d, want the route's 1400", tc.dst, hop.MTU)
		}
		checkHeader(t, hop, p.MACB, p.MACA, map[bool]uint16{true: 0x0800, false: 0x86dd}[tc.dst.Is4()])
	}
	p.A.MustRun(t, "ip", "route", "del", "203.0.113.0/24")
	waitState(t, r, netip.MustParseAddr("203.0.113.9"), Unreachable, nil)
	// Unreachable is held for FailedHold, then forgotten and retried.
	p.A.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "via", p.IPv4B.String())
	waitState(t, r, netip.MustParseAddr("203.0.113.9"), Resolved, nil)
}

// TestPeerMACChange: when B changes its MAC and announces it (gratuitous
// ARP, unsolicited NA: arp_notify/ndisc_notify), the kernel in A updates
// its neighbour entry and the cached header follows, with no lookup miss.
// No refresh round runs (RefreshInterval is an hour): the refresh's
// NTF_USE is not what this test is about, and its window (see
// TestRefreshYieldsToStaticEntry) is not ours to race here.
func TestPeerMACChange(t *testing.T) {
	p, r := newResolver(t, Config{RefreshInterval: time.Hour})
	p.B.MustRun(t, "sysctl", "-qw", "net.ipv4.conf."+p.IfB+".arp_notify=1", "net.ipv6.conf."+p.IfB+".ndisc_notify=1")
	for _, dst := range []netip.Addr{p.IPv4B, p.IPv6B} {
		r.Lookup(dst)
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, hop.etherType())
	}
	newMAC, _ := net.ParseMAC("02:00:5e:10:00:2b")
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "address", newMAC.String())
	for _, dst := range []netip.Addr{p.IPv4B, p.IPv6B} {
		hop := waitState(t, r, dst, Resolved, func(h Hop) bool { return [6]byte(h.Header[0:6]) == [6]byte(newMAC) })
		checkHeader(t, hop, newMAC, p.MACA, hop.etherType())
	}
	// The same when the operator changes the entry by hand.
	hand, _ := net.ParseMAC("02:00:5e:10:00:99")
	p.A.MustRun(t, "ip", "neigh", "replace", p.IPv4B.String(), "lladdr", hand.String(), "dev", p.IfA, "nud", "permanent")
	waitState(t, r, p.IPv4B, Resolved, func(h Hop) bool { return [6]byte(h.Header[0:6]) == [6]byte(hand) })
	// Deleting the entry drops the cached header; the next lookups resolve
	// it again through the kernel.
	p.A.MustRun(t, "ip", "neigh", "del", p.IPv4B.String(), "dev", p.IfA)
	waitState(t, r, p.IPv4B, Resolved, func(h Hop) bool { return [6]byte(h.Header[0:6]) == [6]byte(newMAC) })
}

func (h Hop) etherType() uint16 { return uint16(h.Header[12])<<8 | uint16(h.Header[13]) }

// TestUnresolvable: an on-link address nobody owns ends Unreachable once
// the kernel gives up; an address without a route or on a non-Ethernet
// link is Unreachable at once.
func TestUnresolvable(t *testing.T) {
	p, r := newResolver(t, Config{FailedHold: time.Minute})
	for _, dst := range []netip.Addr{netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("2001:db8::99")} {
		r.Lookup(dst)
		waitState(t, r, dst, Unreachable, nil)
	}
	p.A.MustRun(t, "ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
	for _, dst := range []netip.Addr{netip.MustParseAddr("198.51.100.77"), netip.MustParseAddr("198.51.100.1")} {
		r.Lookup(dst)
		waitState(t, r, dst, Unreachable, nil)
	}
}

// TestFailedEntryRetried: after the kernel gave up on a neighbour
// (FAILED), the retry after FailedHold makes it resolve the same entry
// again (NTF_USE without NLM_F_CREATE), so a peer that came up since is
// found. On the retry a hook deletes the kernel's entry right before that
// request (as `ip neigh flush` might): the kernel answers ENOENT and the
// resolver creates the entry instead. The entries end dynamic with B's MAC.
func TestFailedEntryRetried(t *testing.T) {
	var p *testutil.VethPair // set before the first Lookup, which the hook follows
	var armed atomic.Bool
	var hooked sync.Map
	hooks := &testHooks{beforeUse: func(next netip.Addr) {
		if !armed.Load() {
			return
		}
		if _, done := hooked.LoadOrStore(next, true); !done {
			// An error is no failure: the kernel may have collected the
			// FAILED entry already, and then there is nothing to delete.
			p.A.Run("ip", "neigh", "del", next.String(), "dev", p.IfA)
		}
	}}
	p, r := newResolver(t, Config{FailedHold: 100 * time.Millisecond, RefreshInterval: time.Hour, hooks: hooks})
	dsts := []netip.Addr{netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("2001:db8::99")}
	for _, dst := range dsts {
		r.Lookup(dst)
		waitState(t, r, dst, Unreachable, nil)
	}
	armed.Store(true)
	p.B.MustRun(t, "ip", "addr", "add", dsts[0].String()+"/24", "dev", p.IfB)
	p.B.MustRun(t, "ip", "addr", "add", dsts[1].String()+"/64", "dev", p.IfB, "nodad")
	for _, dst := range dsts {
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, hop.etherType())
		if _, done := hooked.Load(dst); !done {
			t.Errorf("%s resolved without a retry request", dst)
		}
	}
	out := p.A.MustRun(t, "ip", "neigh", "show", "dev", p.IfA)
	for _, dst := range dsts {
		if !strings.Contains(out, dst.String()+" lladdr "+p.MACB.String()) || strings.Contains(out, dst.String()+" lladdr "+p.MACB.String()+" PERMANENT") {
			t.Errorf("kernel entry for %s is not a dynamic one with B's MAC:\n%s", dst, out)
		}
	}
	if s := r.Stats(); s.TriggersYielded != 0 {
		t.Errorf("stats %+v: nothing was someone else's, want TriggersYielded 0", s)
	}
}

// TestHitAllocatesNothing: a cache hit makes no allocation.
func TestHitAllocatesNothing(t *testing.T) {
	p, r := newResolver(t, Config{})
	r.Lookup(p.IPv4B)
	waitState(t, r, p.IPv4B, Resolved, nil)
	if a := testing.AllocsPerRun(1000, func() { r.Lookup(p.IPv4B) }); a != 0 {
		t.Fatalf("%v allocations per hit", a)
	}
}

// TestConcurrentLookups: workers look up while the table changes under
// them (run with -race); every answer is a consistent state. The first
// resolution completes before the first change by hand, and no refresh
// round runs, so each change is the operator's alone.
func TestConcurrentLookups(t *testing.T) {
	p, r := newResolver(t, Config{RefreshInterval: time.Hour})
	for _, dst := range []netip.Addr{p.IPv4B, p.IPv6B} {
		r.Lookup(dst)
		hop := waitState(t, r, dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, hop.etherType())
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for _, dst := range []netip.Addr{p.IPv4B, p.IPv6B} {
					hop, st := r.Lookup(dst)
					if st == Resolved && hop.LinkIndex != p.IndexA {
						t.Errorf("resolved hop with link %d", hop.LinkIndex)
						return
					}
				}
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		mac := net.HardwareAddr{0x02, 0, 0x5e, 0x10, 0, byte(i)}
		p.A.MustRun(t, "ip", "neigh", "replace", p.IPv4B.String(), "lladdr", mac.String(), "dev", p.IfA)
		waitState(t, r, p.IPv4B, Resolved, func(h Hop) bool { return [6]byte(h.Header[0:6]) == [6]byte(mac) })
	}
	close(stop)
	wg.Wait()
}

func BenchmarkLookupHit(b *testing.B) {
	p := testutil.NewVethPair(b)
	var r *Resolver
	if err := p.A.Do(func() error {
		var err error
		r, err = New(Config{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.Lookup(p.IPv4B)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, st := r.Lookup(p.IPv4B); st == Resolved {
			break
		}
	}
	// Reference, same run: what asking the kernel costs per packet (one
	// RTM_GETROUTE round trip, without even the neighbour dump).
	const refN = 2000
	start := time.Now()
	for i := 0; i < refN; i++ {
		if _, err := r.nl.RouteGet(p.IPv4B.AsSlice()); err != nil {
			b.Fatal(err)
		}
	}
	refNs := float64(time.Since(start).Nanoseconds()) / refN
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, st := r.Lookup(p.IPv4B); st != Resolved {
				b.Fatal("not resolved")
			}
		}
	})
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(refNs, "routeget-ns")
	b.ReportMetric(refNs/per, "x-faster-than-routeget")
}

// TestCloseLeaksNothing: Close stops the resolver and the notification
// goroutines it started.
func TestCloseLeaksNothing(t *testing.T) {
	ns := testutil.NewNS(t, t.Name())
	before := runtime.NumGoroutine()
	var r *Resolver
	if err := ns.Do(func() error {
		var err error
		r, err = New(Config{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.Lookup(netip.MustParseAddr("192.0.2.9"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	var now int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines before New, %d after Close:\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// TestRouteIntoTUNConstrainedToLinks: transport mode routes the peer's own
// address into the engine's TUN. Without Config.Links the peer is then
// unreachable for the outer packets (a TUN has no MAC); with the veth in
// Config.Links the resolver asks the kernel again with oif set and gets the
// veth's connected route, B's MAC and the veth's MTU, for IPv4 and IPv6.
func TestRouteIntoTUNConstrainedToLinks(t *testing.T) {
	p := testutil.NewVethPair(t)
	p.A.MustRun(t, "ip", "tuntap", "add", "mode", "tun", "xt0")
	p.A.MustRun(t, "ip", "link", "set", "xt0", "up", "mtu", "1400")
	p.A.MustRun(t, "ip", "route", "add", p.IPv4B.String()+"/32", "dev", "xt0")
	p.A.MustRun(t, "ip", "-6", "route", "add", p.IPv6B.String()+"/128", "dev", "xt0")
	start := func(cfg Config) *Resolver {
		var r *Resolver
		if err := p.A.Do(func() (err error) { r, err = New(cfg); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	plain := start(Config{})
	bound := start(Config{Links: []int{p.IndexA}})
	for _, tc := range []struct {
		dst       netip.Addr
		etherType uint16
	}{{p.IPv4B, 0x0800}, {p.IPv6B, 0x86dd}} {
		waitState(t, plain, tc.dst, Unreachable, nil)
		hop := waitState(t, bound, tc.dst, Resolved, nil)
		checkHeader(t, hop, p.MACB, p.MACA, tc.etherType)
		if hop.LinkIndex != p.IndexA || hop.NextHop != tc.dst || hop.MTU != 1500 {
			t.Fatalf("%s: hop %+v, want link %d next hop %s mtu 1500", tc.dst, hop, p.IndexA, tc.dst)
		}
	}
	// The kernel's own answer still points into the TUN: we changed
	// nothing in its tables.
	if out := p.A.MustRun(t, "ip", "route", "get", p.IPv4B.String()); !strings.Contains(out, "dev xt0") {
		t.Fatalf("ip route get %s: %s, want dev xt0", p.IPv4B, out)
	}
}
