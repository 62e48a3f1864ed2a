// Package neigh gives the outbound pipeline the Ethernet header for an
// outer destination: the egress link's MAC as source and the next hop's
// MAC as destination, taken from the kernel's route and neighbour tables,
// which stay the single source of truth (`ip route`, `ip neigh` and every
// routing daemon keep working).
//
// # Hot path
//
// Lookup reads an immutable table through an atomic pointer: no lock, no
// syscall, no allocation on a hit, safe from any number of workers. One
// resolver goroutine owns every change and publishes a new table
// (copy-on-write) when the kernel reports one, so a table change costs
// O(entries) once, never per packet. This suits the few hundred peers an
// IPsec host talks to; it would not suit a router with a million
// neighbours.
//
// # Misses: how resolution is triggered
//
// On a miss Lookup returns Pending and hands the address to the resolver
// without blocking (the caller drops or queues the packet and counts it).
// The resolver asks the kernel for the route (RTM_GETROUTE, as `ip route
// get`; again with the egress link fixed, as `ip route get ADDR oif LINK`,
// when the answer names a link outside Config.Links), then for the next
// hop's neighbour entry (one RTM_GETNEIGH, as `ip neigh get`). When there
// is no entry it sends RTM_NEWNEIGH with the NTF_USE flag and
// NLM_F_CREATE|NLM_F_EXCL for the next hop (what `ip neigh add ADDR dev
// LINK use` does): the kernel creates the entry and runs its own ARP /
// neighbour discovery state machine, with its own timers, retries and
// sysctls, exactly as if it were about to send a packet there. No packet
// is sent by us and nothing leaves the namespace's own links. The answer
// arrives as an RTM_NEWNEIGH notification, which resolves the entry;
// NUD_FAILED makes it Unreachable for Config.FailedHold, after which the
// next lookup retries. A dynamic entry the kernel gave up on (FAILED,
// NONE) gets NTF_USE without NLM_F_CREATE; one it is resolving already
// (INCOMPLETE) gets nothing.
//
// # Never rewriting someone else's entry
//
// NTF_USE on an existing entry makes the kernel clear NUD_PERMANENT and
// resolve the address afresh, whatever the nlmsg flags (NLM_F_REPLACE only
// matters for an update that carries an address). So the resolver never
// sends NTF_USE to an entry it has not just read as dynamic. A miss uses
// NLM_F_EXCL: if an operator's `ip neigh replace ... lladdr X` (PERMANENT)
// lands between our read and our request, the kernel answers EEXIST and
// changes nothing, and the resolver reads the entry again and uses it. The
// refresh reads each entry again right before its request and leaves
// static ones alone; what remains is the time between that read's answer
// and the request (two back-to-back syscalls on one thread): the netlink
// API has no "NTF_USE unless PERMANENT". Counted in Stats.TriggersYielded.
//
// # Keeping the kernel's view honest
//
// Our packets bypass the kernel, so it never sees traffic to a neighbour
// and never re-confirms it. Every Config.RefreshInterval the resolver sends
// NTF_USE again for each next hop a worker used since the last round
// (except static entries, PERMANENT or NOARP, as the kernel reports them
// right before the request: see above), so a
// STALE entry goes through DELAY/PROBE like one the kernel itself uses: a
// peer that changed its MAC or vanished is noticed, and the notification
// updates or invalidates the cached header. Neighbour, route and link
// notifications all invalidate what they touch (a route change re-resolves
// every destination: routes change rarely and a change may move any of
// them).
package neigh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// State is the outcome of a Lookup.
type State uint8

const (
	// Resolved: Hop holds a usable Ethernet header.
	Resolved State = iota
	// Pending: resolution is under way; queue or drop the packet (counted).
	Pending
	// Unreachable: no route, a route that is not through an Ethernet link,
	// or the kernel failed to resolve the next hop; drop the packet
	// (counted). The verdict is kept for Config.FailedHold, then retried.
	Unreachable
)

func (s State) String() string {
	switch s {
	case Resolved:
		return "resolved"
	case Pending:
		return "pending"
	case Unreachable:
		return "unreachable"
	}
	return "unknown"
}

// Hop is where a packet to one destination goes.
type Hop struct {
	// Header is the Ethernet header: next hop MAC, link MAC, and the
	// EtherType of the destination's family (0x0800 or 0x86dd).
	Header [14]byte
	// LinkIndex is the egress link.
	LinkIndex int
	// NextHop is the gateway, or the destination itself when on-link.
	NextHop netip.Addr
	// Src is the route's preferred source address (the kernel's choice,
	// as `ip route get` shows it); it may be the zero Addr.
	Src netip.Addr
	// MTU is the route's MTU (including a path MTU exception) or else the
	// link's.
	MTU int
}

// Config tunes the Resolver. Zero values take the defaults.
type Config struct {
	// FailedHold is how long an Unreachable verdict is kept before the
	// next lookup retries (default 1s).
	FailedHold time.Duration
	// PendingTimeout bounds Pending: a resolution without an answer from
	// the kernel after this long becomes Unreachable (default 5s, longer
	// than the kernel's default 3 probes at 1s).
	PendingTimeout time.Duration
	// RefreshInterval is how often used next hops are re-confirmed with
	// the kernel (default 5s, the kernel's delay_first_probe_time).
	RefreshInterval time.Duration
	// IdleTimeout drops entries no worker used for this long (default 5m).
	IdleTimeout time.Duration
	// MaxEntries bounds the table (default 4096). Lookups of further
	// destinations get Unreachable, counted in Stats.TableFull.
	MaxEntries int
	// Requests is the capacity of the miss queue (default 1024); misses
	// beyond it are counted in Stats.RequestsDropped and retried on the
	// next lookup.
	Requests int
	// Links, when not empty, are the only egress links a Hop may name (the
	// links the caller transmits on). When the kernel's route for a
	// destination leaves through another link — typically the engine's own
	// TUN, into which transport-mode peers are routed so that the local
	// stack hands their packets to the engine — the route is asked again
	// constrained to each of these links in turn, as `ip route get ADDR
	// oif LINK` does: the kernel then skips next hops through other links
	// and falls back to the next most specific route (the link's connected
	// prefix, or a gateway). The first unicast answer wins.
	Links []int

	hooks *testHooks // nil outside tests
}

// testHooks let a test act inside the resolver's windows, on the
// resolver's goroutine.
type testHooks struct {
	// beforeUse runs after the kernel's entry for next was read (or found
	// missing) and before NTF_USE is sent for it.
	beforeUse func(next netip.Addr)
	// beforeRefreshRead runs when the refresh has chosen next (from the
	// table, which may lag the kernel) and before it reads the kernel's
	// entry.
	beforeRefreshRead func(next netip.Addr)
}

func (c *Config) defaults() {
	if c.FailedHold <= 0 {
		c.FailedHold = time.Second
	}
	if c.PendingTimeout <= 0 {
		c.PendingTimeout = 5 * time.Second
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 4096
	}
	if c.Requests <= 0 {
		c.Requests = 1024
	}
}

// Stats are the resolver's counters.
type Stats struct {
	Entries         int    // destinations in the table now
	Resolutions     uint64 // misses the resolver worked on
	Triggers        uint64 // NTF_USE requests sent to the kernel (misses and refreshes)
	Updates         uint64 // table changes published
	RequestsDropped uint64 // misses not queued because the queue was full
	TableFull       uint64 // destinations refused because of MaxEntries
	Resubscribes    uint64 // notification sockets reopened after an error (overflow)
	// NTF_USE requests not sent, or refused by the kernel (EEXIST), because
	// the kernel's entry turned out to be someone else's: created between
	// our read and our request, or static.
	TriggersYielded uint64
}

// entry is immutable once published, except used.
type entry struct {
	hop   Hop
	state State
	used  atomic.Bool // set by Lookup (only when clear), swapped by the resolver
	// Resolver-owned; Lookup never reads these.
	since    time.Time
	lastUsed time.Time
	// static: the kernel's entry is PERMANENT or NOARP. The refresh leaves
	// it alone: there is nothing to re-confirm, and NTF_USE on a PERMANENT
	// entry makes the kernel drop its address and resolve it from scratch.
	static bool
}

type table map[netip.Addr]*entry

// Resolver caches next hops and their Ethernet headers.
//
// Concurrency: Lookup is safe from any number of goroutines and never
// blocks. Stats and Close are safe from any goroutine. All other work runs
// on the Resolver's own goroutines, which Close stops and waits for.
type Resolver struct {
	cfg   Config
	table atomic.Pointer[table]
	req   chan netip.Addr

	nl     *netlink.Handle
	nsock  *neighSocket
	nsh    netns.NsHandle
	done   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once

	requestsDropped atomic.Uint64
	tableFull       atomic.Uint64
	resolutions     atomic.Uint64
	triggers        atomic.Uint64
	triggersYielded atomic.Uint64
	updates         atomic.Uint64
	resubscribes    atomic.Uint64
}

// New starts a Resolver for the network namespace of the calling thread
// (call it inside the namespace, e.g. from testutil.NS.Do; the Resolver
// keeps working in that namespace from any thread).
func New(cfg Config) (*Resolver, error) {
	cfg.defaults()
	nsh, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("neigh: get current netns: %w", err)
	}
	if processNetns(nsh) {
		// Every thread of the process is in this namespace already: no
		// setns(2) for each socket, which would need CAP_SYS_ADMIN (the
		// daemon runs with CAP_NET_ADMIN, CAP_BPF, ... only).
		nsh.Close()
		nsh = netns.None()
	}
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		nsh.Close()
		return nil, fmt.Errorf("neigh: open netlink: %w", err)
	}
	nsock, err := openNeighSocket(nsh)
	if err != nil {
		h.Close()
		nsh.Close()
		return nil, err
	}
	r := &Resolver{cfg: cfg, req: make(chan netip.Addr, cfg.Requests), nl: h, nsock: nsock, nsh: nsh, done: make(chan struct{})}
	t := table{}
	r.table.Store(&t)
	subs, err := r.subscribe()
	if err != nil {
		nsock.close()
		h.Close()
		nsh.Close()
		return nil, err
	}
	r.wg.Add(1)
	go r.run(subs)
	return r, nil
}

// Lookup returns the next hop for dst. On a hit it makes no syscall and no
// allocation. A miss queues a resolution and returns Pending.
func (r *Resolver) Lookup(dst netip.Addr) (Hop, State) {
	e := (*r.table.Load())[dst]
	if e == nil {
		select {
		case r.req <- dst:
		default:
			r.requestsDropped.Add(1)
		}
		return Hop{}, Pending
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	return e.hop, e.state
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Entries:         len(*r.table.Load()),
		Resolutions:     r.resolutions.Load(),
		Triggers:        r.triggers.Load(),
		TriggersYielded: r.triggersYielded.Load(),
		Updates:         r.updates.Load(),
		RequestsDropped: r.requestsDropped.Load(),
		TableFull:       r.tableFull.Load(),
		Resubscribes:    r.resubscribes.Load(),
	}
}

// Close stops the resolver and its notification sockets and waits for its
// goroutines. Lookup keeps answering from the last table afterwards
// (misses stay Pending). It is idempotent.
func (r *Resolver) Close() error {
	r.closed.Do(func() {
		close(r.done)
		r.wg.Wait()
		r.nsock.close()
		r.nl.Close()
		r.nsh.Close()
	})
	return nil
}

// processNetns reports whether ns is the network namespace of the
// process's main thread (/proc/self/ns/net), i.e. the one every thread
// that did not setns itself is in.
func processNetns(ns netns.NsHandle) bool {
	self, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return false
	}
	defer self.Close()
	return self.Equal(ns)
}

type subscriptions struct {
	neigh chan netlink.NeighUpdate
	route chan netlink.RouteUpdate
	link  chan netlink.LinkUpdate
	stop  chan struct{}
}

func (r *Resolver) subscribe() (*subscriptions, error) {
	s := &subscriptions{
		neigh: make(chan netlink.NeighUpdate, 256),
		route: make(chan netlink.RouteUpdate, 256),
		link:  make(chan netlink.LinkUpdate, 64),
		stop:  make(chan struct{}),
	}
	var ns *netns.NsHandle // nil: the process's namespace, no setns
	if r.nsh.IsOpen() {
		ns = &r.nsh
	}
	// The library closes a channel when its socket fails (ENOBUFS on
	// overflow); run notices and resubscribes. Errors need no callback.
	if err := netlink.NeighSubscribeWithOptions(s.neigh, s.stop, netlink.NeighSubscribeOptions{Namespace: ns}); err != nil {
		close(s.stop)
		return nil, fmt.Errorf("neigh: subscribe to neighbour changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(s.route, s.stop, netlink.RouteSubscribeOptions{Namespace: ns}); err != nil {
		close(s.stop)
		return nil, fmt.Errorf("neigh: subscribe to route changes: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(s.link, s.stop, netlink.LinkSubscribeOptions{Namespace: ns}); err != nil {
		close(s.stop)
		return nil, fmt.Errorf("neigh: subscribe to link changes: %w", err)
	}
	return s, nil
}

func (s *subscriptions) close() {
	close(s.stop)
	// Closing stop closes the sockets, which wakes the library's receive
	// goroutines (their fds are in Go's netpoller); each then closes its
	// channel. Draining waits for them, so Close leaks no goroutine.
	for range s.neigh {
	}
	for range s.route {
	}
	for range s.link {
	}
}

// run is the only writer of the table.
func (r *Resolver) run(subs *subscriptions) {
	defer r.wg.Done()
	tick := time.NewTicker(min(r.cfg.FailedHold, r.cfg.RefreshInterval, 250*time.Millisecond))
	defer tick.Stop()
	lastRefresh := time.Now()
	w := &writer{r: r}
	defer func() {
		if subs != nil {
			subs.close()
		}
	}()
	for {
		w.begin()
		var broken bool
		select {
		case <-r.done:
			return
		case dst := <-r.req:
			w.request(dst)
			// Take the whole burst of misses in one table update.
			for more := true; more; {
				select {
				case dst := <-r.req:
					w.request(dst)
				default:
					more = false
				}
			}
		case u, ok := <-subs.neigh:
			if broken = !ok; ok {
				w.neighbour(u)
			}
		case u, ok := <-subs.route:
			if broken = !ok; ok && u.Table != unix.RT_TABLE_LOCAL {
				w.reresolve(func(*entry) bool { return true })
			}
		case u, ok := <-subs.link:
			if broken = !ok; ok {
				idx := int(u.Index)
				w.reresolve(func(e *entry) bool { return e.hop.LinkIndex == idx })
			}
		case now := <-tick.C:
			w.housekeep(now, now.Sub(lastRefresh) >= r.cfg.RefreshInterval)
			if now.Sub(lastRefresh) >= r.cfg.RefreshInterval {
				lastRefresh = now
			}
		}
		if broken {
			// Lost notifications: start over with fresh sockets and
			// re-resolve everything, since any change may have been missed.
			subs.close()
			subs = nil
			for subs == nil {
				subs, _ = r.subscribe()
				if subs != nil {
					break
				}
				select {
				case <-r.done:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			r.resubscribes.Add(1)
			w.reresolve(func(*entry) bool { return true })
		}
		w.commit()
	}
}

// writer batches changes to the table into one copy-on-write publish.
type writer struct {
	r    *Resolver
	next table // nil until the first change in this round
}

func (w *writer) begin() { w.next = nil }

func (w *writer) cur() table {
	if w.next != nil {
		return w.next
	}
	return *w.r.table.Load()
}

func (w *writer) set(dst netip.Addr, e *entry) {
	if w.next == nil {
		old := *w.r.table.Load()
		w.next = make(table, len(old)+1)
		for k, v := range old {
			w.next[k] = v
		}
	}
	if e == nil {
		delete(w.next, dst)
	} else {
		w.next[dst] = e
	}
}

func (w *writer) commit() {
	if w.next != nil {
		t := w.next
		w.r.table.Store(&t)
		w.r.updates.Add(1)
		w.next = nil
	}
}

func (w *writer) request(dst netip.Addr) {
	if w.cur()[dst] != nil {
		return // already known or under way (duplicate miss)
	}
	if len(w.cur()) >= w.r.cfg.MaxEntries {
		w.r.tableFull.Add(1)
		return
	}
	w.r.resolutions.Add(1)
	w.set(dst, w.resolve(dst, nil))
}

// resolve asks the kernel for dst's route and neighbour and returns the
// new entry; prev (may be nil) carries the usage marks over.
func (w *writer) resolve(dst netip.Addr, prev *entry) *entry {
	now := time.Now()
	e := &entry{state: Unreachable, since: now, lastUsed: now}
	if prev != nil {
		e.lastUsed = prev.lastUsed
		e.used.Store(prev.used.Load())
	}
	rt, ok := w.route(dst)
	if !ok {
		return e
	}
	link, err := w.r.nl.LinkByIndex(rt.LinkIndex)
	if err != nil {
		return e
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return e // not an Ethernet link (loopback, TUN...): AF_XDP cannot send there
	}
	next := dst
	if a, ok := netip.AddrFromSlice(rt.Gw); ok {
		next = a.Unmap()
	} else if v, ok := rt.Via.(*netlink.Via); ok {
		if a, ok := netip.AddrFromSlice(v.Addr); ok {
			next = a.Unmap()
		}
	}
	e.hop.LinkIndex = rt.LinkIndex
	e.hop.NextHop = next
	if a, ok := netip.AddrFromSlice(rt.Src); ok {
		e.hop.Src = a.Unmap()
	}
	e.hop.MTU = rt.MTU
	if e.hop.MTU == 0 {
		e.hop.MTU = link.Attrs().MTU
	}
	copy(e.hop.Header[6:12], mac)
	if dst.Is4() {
		binary.BigEndian.PutUint16(e.hop.Header[12:], unix.ETH_P_IP)
	} else {
		binary.BigEndian.PutUint16(e.hop.Header[12:], unix.ETH_P_IPV6)
	}
	w.nextHopMAC(e, rt.LinkIndex, next)
	return e
}

// nextHopMAC sets e's destination MAC and state from the kernel's entry
// for next on link, and makes the kernel resolve next when it has no
// usable entry, never touching an entry that is not dynamic (see "Never
// rewriting someone else's entry" in the package doc).
func (w *writer) nextHopMAC(e *entry, link int, next netip.Addr) {
	// Each retry follows an entry that appeared or vanished between two
	// requests; three in a row means someone keeps changing it: Pending
	// then leaves the verdict to its notifications or PendingTimeout.
	e.state = Pending
	for range 3 {
		n, err := w.r.nsock.get(link, next)
		switch {
		case err == nil && usable(n.State) && len(n.HardwareAddr) == 6:
			copy(e.hop.Header[0:6], n.HardwareAddr)
			e.state = Resolved
			e.static = static(n.State)
			return
		case err == nil && static(n.State):
			// Someone's static entry without an Ethernet address: not
			// ours to change, and nothing we can send to.
			e.state = Unreachable
			return
		case err == nil && n.State&netlink.NUD_INCOMPLETE != 0:
			return // the kernel is resolving it already: its notification answers
		case err == nil:
			// A dynamic entry the kernel gave up on (FAILED) or never
			// resolved (NONE): resolve it again. No NLM_F_CREATE: if it
			// was deleted meanwhile, ENOENT sends us round to create it.
			err = w.use(link, next, 0)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
		case errors.Is(err, unix.ENOENT):
			// No entry: create one and resolve it, unless one appeared
			// since the read (EEXIST): then it is someone else's, which we
			// read again and take as it is.
			err = w.use(link, next, unix.NLM_F_CREATE|unix.NLM_F_EXCL)
			if errors.Is(err, unix.EEXIST) {
				w.r.triggersYielded.Add(1)
				continue
			}
		}
		if err != nil {
			// Link gone, family disabled on it...: held for FailedHold,
			// then retried.
			e.state = Unreachable
		}
		return
	}
}

// route asks the kernel for dst's route, constrained to Config.Links when
// the plain answer leaves through another link (see Config.Links). It
// reports false for no route or a non-unicast one (local, blackhole,
// unreachable, prohibit...).
func (w *writer) route(dst netip.Addr) (netlink.Route, bool) {
	unicast := func(routes []netlink.Route, err error) (netlink.Route, bool) {
		if err != nil || len(routes) == 0 {
			return netlink.Route{}, false
		}
		rt := routes[0]
		return rt, rt.Type == unix.RTN_UNICAST || rt.Type == 0
	}
	rt, ok := unicast(w.r.nl.RouteGet(dst.AsSlice()))
	if len(w.r.cfg.Links) == 0 || (ok && slices.Contains(w.r.cfg.Links, rt.LinkIndex)) {
		return rt, ok
	}
	if !ok && rt.Type != 0 && rt.Type != unix.RTN_UNICAST {
		return rt, false // the kernel refuses dst outright: so do we
	}
	for _, l := range w.r.cfg.Links {
		if rt, ok := unicast(w.r.nl.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{OifIndex: l})); ok {
			return rt, true
		}
	}
	return netlink.Route{}, false
}

// usable: the kernel has a link-layer address it would send to.
func usable(state int) bool {
	return state&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
}

// static: an entry the kernel never re-confirms (set by hand, or on a
// link without ARP/NDP).
func static(state int) bool {
	return state&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
}

// use makes the kernel resolve (or re-confirm) next on link, as if it
// were about to send a packet there: RTM_NEWNEIGH with NTF_USE and flags
// (see neighSocket.use).
func (w *writer) use(link int, next netip.Addr, flags int) error {
	if h := w.r.cfg.hooks; h != nil && h.beforeUse != nil {
		h.beforeUse(next)
	}
	w.r.triggers.Add(1)
	return w.r.nsock.use(link, next, flags)
}

// refresh re-confirms next on link with the kernel, as a packet sent there
// would, if the kernel's entry is dynamic. The table's view may lag the
// kernel's (the notification of an operator's change may still be queued),
// so the entry is read again right before the request; the window left is
// that read's answer to the request (see the package doc).
func (w *writer) refresh(link int, next netip.Addr) {
	if h := w.r.cfg.hooks; h != nil && h.beforeRefreshRead != nil {
		h.beforeRefreshRead(next)
	}
	n, err := w.r.nsock.get(link, next)
	if err != nil {
		return // gone (its RTM_DELNEIGH drops our entry) or link gone
	}
	if static(n.State) {
		w.r.triggersYielded.Add(1) // its notification updates our entry
		return
	}
	// No NLM_F_CREATE: an entry deleted since the read stays deleted.
	// Errors need no handling: a change shows up as a notification.
	_ = w.use(link, next, 0)
}

// neighbour applies a neighbour notification to every destination whose
// next hop it is.
func (w *writer) neighbour(u netlink.NeighUpdate) {
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return
	}
	a = a.Unmap()
	for dst, e := range w.cur() {
		if e.hop.NextHop != a || e.hop.LinkIndex != u.LinkIndex {
			continue
		}
		n := &entry{hop: e.hop, since: time.Now(), lastUsed: e.lastUsed}
		n.used.Store(e.used.Load())
		switch {
		case u.Type == unix.RTM_DELNEIGH:
			w.set(dst, nil) // the next lookup resolves again
			continue
		case usable(u.State) && len(u.HardwareAddr) == 6:
			if e.state == Resolved && [6]byte(e.hop.Header[0:6]) == [6]byte(u.HardwareAddr) && e.static == static(u.State) {
				continue // confirmation, nothing changed
			}
			copy(n.hop.Header[0:6], u.HardwareAddr)
			n.state = Resolved
			n.static = static(u.State)
		case u.State&netlink.NUD_FAILED != 0:
			n.state = Unreachable
		case u.State&netlink.NUD_INCOMPLETE != 0:
			if e.state == Pending {
				continue
			}
			n.state = Pending
		default:
			continue
		}
		w.set(dst, n)
	}
}

// reresolve resolves again every destination match selects.
func (w *writer) reresolve(match func(*entry) bool) {
	for dst, e := range w.cur() {
		if !match(e) {
			continue
		}
		n := w.resolve(dst, e)
		if n.state == e.state && n.hop == e.hop && n.static == e.static {
			continue
		}
		w.set(dst, n)
	}
}

// housekeep expires Unreachable and overdue Pending entries, drops idle
// ones and, when refresh is set, re-confirms the next hops in use.
func (w *writer) housekeep(now time.Time, refresh bool) {
	confirmed := map[netip.Addr]bool{}
	for dst, e := range w.cur() {
		if refresh {
			if e.used.Swap(false) {
				e.lastUsed = now
				if e.state == Resolved && !e.static && !confirmed[e.hop.NextHop] {
					confirmed[e.hop.NextHop] = true
					w.refresh(e.hop.LinkIndex, e.hop.NextHop)
				}
			} else if now.Sub(e.lastUsed) > w.r.cfg.IdleTimeout {
				w.set(dst, nil)
				continue
			}
		}
		switch {
		case e.state == Unreachable && now.Sub(e.since) >= w.r.cfg.FailedHold:
			w.set(dst, nil)
		case e.state == Pending && now.Sub(e.since) >= w.r.cfg.PendingTimeout:
			n := &entry{hop: e.hop, state: Unreachable, since: now, lastUsed: e.lastUsed}
			w.set(dst, n)
		}
	}
}
