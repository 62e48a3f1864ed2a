// Package sad is xdpsec's security association database (SAD) and
// security policy database (SPD), RFC 4301 §4.4, with the specs that feed
// them: SAs in `ip xfrm state add` syntax (ParseSA) and policies in `ip
// xfrm policy add` syntax (ParsePolicy).
//
// # Concurrency
//
// Both databases publish an immutable snapshot through an atomic.Pointer:
// lookups (the workers' hot path) load the pointer and read, never take a
// lock and never wait for a writer. Writers (the control socket, a config
// reload, Tick) are serialized by a mutex, copy the snapshot, change the
// copy and publish it. A delete therefore takes effect for every lookup
// that starts after Delete returns; a worker that looked the SA up just
// before keeps a valid *Association, but its transform refuses packets
// from the moment Delete invalidates it (a packet already past that check
// completes), and the next lookup misses: both say "no state". Writes cost O(number of
// entries); the databases are built for thousands of SAs changing a few
// times a second, not for millions.
//
// Counters are sharded per worker (Config.Shards): each worker passes its
// own shard index and updates only cache lines no other worker writes.
package sad

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/replay"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrExists: Add of an SA whose (SPI, dst, proto) is already present,
	// or of a policy whose direction and selector are.
	ErrExists = errors.New("already exists")
	// ErrNotFound: Update, Delete or Get of an entry that is not there.
	ErrNotFound = errors.New("not found")
	// ErrFull: the database holds Config.Capacity entries already.
	ErrFull = errors.New("database full")
)

// DefaultCapacity is the SAD and SPD capacity when Config.Capacity is 0.
const DefaultCapacity = 4096

// Config configures a database.
type Config struct {
	// Capacity is the most entries the database holds (DefaultCapacity
	// when 0). Add beyond it fails with ErrFull.
	Capacity int
	// Shards is the number of counter shards per SA, normally the number
	// of workers (1 when 0). Workers pass their index modulo Shards.
	Shards int
	// Now returns the current time (time.Now when nil); tests set it.
	Now func() time.Time
}

// counterShard is one worker's counters of one SA, padded to two cache
// lines so that shards of different workers never share a line.
type counterShard struct {
	packets  atomic.Uint64
	bytes    atomic.Uint64
	verdicts [ipsec.NumVerdicts]atomic.Uint64
	_        [128 - (2+int(ipsec.NumVerdicts))*8%128]byte
}

// Stats is a snapshot of an SA's counters.
type Stats struct {
	// Packets and Bytes count packets that passed (verdict ok or dummy, or
	// sent outbound) and their bytes as the worker reported them.
	Packets, Bytes uint64
	// Verdicts counts packets by verdict (index ipsec.Verdict).
	Verdicts [ipsec.NumVerdicts]uint64
}

// Association is one SA in the database: the spec it was made from, the
// transform that does the work, and its counters. The spec and transform
// never change; Update replaces the Association (see SAD.Update). Methods
// are safe for concurrent use.
type Association struct {
	key    SAKey
	spec   *SASpec
	sa     *ipsec.SA
	added  time.Time
	shards []counterShard
	// firstUse is the UnixNano of the first counted packet, 0 before.
	firstUse atomic.Int64
	// softDone records that Tick reported the soft expiry.
	softDone atomic.Bool
	// seq orders Associations by creation, for "newest wins" choices.
	seq uint64
	// pcpu is spec.PCPU, or -1 when the SA serves every queue.
	pcpu int
	sad  *SAD
}

// Key returns the SA's (SPI, dst, proto).
func (a *Association) Key() SAKey { return a.key }

// Spec returns the spec the SA was made from. It holds key bytes: render
// it with String, never with %+v.
func (a *Association) Spec() *SASpec { return a.spec }

// Transform returns the SA's transform, for Encrypt and Decrypt.
func (a *Association) Transform() *ipsec.SA { return a.sa }

// Added returns when the SA entered the database (for rekeys, when its
// first version did).
func (a *Association) Added() time.Time { return a.added }

// FirstUse returns when the SA counted its first packet, or the zero time.
func (a *Association) FirstUse() time.Time {
	if ns := a.firstUse.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Count records one packet handled by worker shard with verdict v; n is
// its length in bytes, counted in Packets/Bytes only for VerdictOK and
// VerdictDummy (use VerdictOK for packets sent outbound). It takes no lock
// and allocates nothing.
func (a *Association) Count(shard int, v ipsec.Verdict, n int) {
	s := &a.shards[uint(shard)%uint(len(a.shards))]
	if v < ipsec.NumVerdicts {
		s.verdicts[v].Add(1)
	}
	if v == ipsec.VerdictOK || v == ipsec.VerdictDummy {
		s.packets.Add(1)
		s.bytes.Add(uint64(n))
		if a.firstUse.Load() == 0 {
			a.firstUse.CompareAndSwap(0, a.sad.now().UnixNano())
		}
	}
}

// CountN records packets packets handled by worker shard with verdict v,
// bytes being their total length: exactly what as many Count calls would
// record, with one add per counter (a worker that handled a run of packets
// of one SA counts the run once). packets 0 records nothing. It takes no
// lock and allocates nothing.
func (a *Association) CountN(shard int, v ipsec.Verdict, packets, bytes uint64) {
	if packets == 0 {
		return
	}
	s := &a.shards[uint(shard)%uint(len(a.shards))]
	if v < ipsec.NumVerdicts {
		s.verdicts[v].Add(packets)
	}
	if v == ipsec.VerdictOK || v == ipsec.VerdictDummy {
		s.packets.Add(packets)
		s.bytes.Add(bytes)
		if a.firstUse.Load() == 0 {
			a.firstUse.CompareAndSwap(0, a.sad.now().UnixNano())
		}
	}
}

// Stats sums the SA's counter shards. The sum is not atomic across
// shards: a packet counted meanwhile may or may not be in it.
func (a *Association) Stats() Stats {
	var st Stats
	for i := range a.shards {
		s := &a.shards[i]
		st.Packets += s.packets.Load()
		st.Bytes += s.bytes.Load()
		for v := range st.Verdicts {
			st.Verdicts[v] += s.verdicts[v].Load()
		}
	}
	return st
}

func (a *Association) String() string { return a.spec.String() }

// outKey indexes outbound SAs by what a policy template names.
type outKey struct {
	src, dst netip.Addr
	proto    ipsec.Proto
}

// saTable is one immutable snapshot of the SAD.
type saTable struct {
	// bySPI: SPIs are nearly unique, so a uint32-keyed map and a short
	// slice beat hashing the whole (SPI, dst, proto) key.
	bySPI map[uint32][]*Association
	// out lists SAs by (src, dst, proto), newest first.
	out map[outKey][]*Association
	n   int
}

// Expiry reports an SA that reached a lifetime limit.
type Expiry struct {
	Key SAKey
	// Spec is the SA's redacted spec (String), for logs.
	Spec string
	// Hard is true when the SA was removed; false for a soft expiry (the
	// SA stays, its owner should rekey).
	Hard bool
	// Limit names the limit: "bytes", "packets", "time" or "use-time".
	Limit string
}

// SAD is the security association database. Lookups never block; see the
// package documentation for the concurrency contract.
type SAD struct {
	mu   sync.Mutex // serializes writers
	cur  atomic.Pointer[saTable]
	cfg  Config
	seq  uint64
	wake chan struct{}
}

// NewSAD returns an empty database.
func NewSAD(cfg Config) *SAD {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.Shards <= 0 {
		cfg.Shards = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &SAD{cfg: cfg, wake: make(chan struct{}, 1)}
	d.cur.Store(&saTable{bySPI: map[uint32][]*Association{}, out: map[outKey][]*Association{}})
	return d
}

func (d *SAD) now() time.Time { return d.cfg.Now() }

// Wake returns a channel that receives (without blocking the data path)
// when a packet makes an SA cross a byte or packet lifetime limit, so the
// owner can call Tick at once instead of at its next period.
func (d *SAD) Wake() <-chan struct{} { return d.wake }

// Lookup returns the SA for an inbound packet, or nil. It is the hot
// path: one atomic load, one map lookup, no lock, no allocation.
func (d *SAD) Lookup(spi uint32, dst netip.Addr, proto ipsec.Proto) *Association {
	for _, a := range d.cur.Load().bySPI[spi] {
		if a.key.Dst == dst && a.key.Proto == proto {
			return a
		}
	}
	return nil
}

// Get returns the SA with key k.
func (d *SAD) Get(k SAKey) (*Association, error) {
	if a := d.Lookup(k.SPI, k.Dst, k.Proto); a != nil {
		return a, nil
	}
	return nil, fmt.Errorf("SA %s: %w", k, ErrNotFound)
}

// LookupOutbound returns the SA that a policy template t selects for a
// packet from src to dst (used when t has no addresses, as transport-mode
// templates may), sent by the worker of engine queue queue, or nil.
//
// Per-queue SAs (RFC 9611, `pcpu-num`) come first: the newest matching SA
// whose PCPU is queue wins; without one, the newest matching SA without
// PCPU (the fallback SA, as in Linux 6.13+). An SA whose PCPU names
// another queue is never returned, so queue -1 selects fallback SAs only.
// Among several candidates of one kind (a rekey overlap) the newest wins,
// as in Linux. Hard-expired SAs are skipped. It takes no lock and
// allocates nothing.
func (d *SAD) LookupOutbound(t *Template, src, dst netip.Addr, queue int) *Association {
	if t.Src.IsValid() {
		src, dst = t.Src, t.Dst
	}
	var fallback *Association
	for _, a := range d.cur.Load().out[outKey{src, dst, t.Proto}] {
		if a.pcpu != queue && (a.pcpu >= 0 || fallback != nil) {
			continue // another queue's SA, or an older fallback
		}
		if (t.SPI == 0 || t.SPI == a.key.SPI) && (t.ReqID == 0 || t.ReqID == a.spec.ReqID) &&
			t.Mode == a.spec.Mode && !a.sa.HardExpired() {
			if a.pcpu == queue {
				return a
			}
			fallback = a
		}
	}
	return fallback
}

// Len returns the number of SAs.
func (d *SAD) Len() int { return d.cur.Load().n }

// List returns every SA, ordered by destination, protocol and SPI.
func (d *SAD) List() []*Association {
	t := d.cur.Load()
	l := make([]*Association, 0, t.n)
	for _, as := range t.bySPI {
		l = append(l, as...)
	}
	slices.SortFunc(l, func(x, y *Association) int {
		return cmp.Or(x.key.Dst.Compare(y.key.Dst), cmp.Compare(x.key.Proto, y.key.Proto), cmp.Compare(x.key.SPI, y.key.SPI))
	})
	return l
}

// Add builds the SA of spec and inserts it. It fails with ErrExists when
// the key is taken, ErrFull at capacity, or the transform's error.
func (d *SAD) Add(spec *SASpec) (*Association, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	k := spec.Key()
	if d.find(t, k) != nil {
		return nil, fmt.Errorf("add SA %s: %w (use update to replace it)", k, ErrExists)
	}
	if t.n >= d.cfg.Capacity {
		return nil, fmt.Errorf("add SA %s: %w: it holds %d SAs, its capacity; delete SAs or raise the capacity", k, ErrFull, t.n)
	}
	a, err := d.build(spec, nil)
	if err != nil {
		return nil, fmt.Errorf("add SA %s: %w", k, err)
	}
	d.publish(t, nil, a)
	return a, nil
}

// Update replaces the SA with spec's key by one built from spec (new
// keys, algorithms, lifetimes...), keeping its state, so that traffic
// flowing through a rekey of the same SPI is neither replayable nor
// renumbered:
//
//   - the outbound sequence number continues from the old SA's (or from
//     spec's replay-oseq if that is higher): both SAs draw from one shared
//     counter (ipsec.NewSAReplacing), so a worker still encrypting with
//     the old SA after the switch never takes a number the new SA takes
//     (with unchanged keys that would repeat a GCM/ChaCha20/CTR nonce);
//   - the inbound replay window carries over (see below); spec's
//     replay-seq raises its highest number if it is higher;
//   - byte and packet lifetimes keep counting: both SAs count into one
//     usage, against which the new SA checks spec's limits (packets the
//     old SA still handles after the switch count too), and Added (time
//     limits) and FirstUse (use-time limits) carry over;
//   - counters (Stats) carry over.
//
// The window is carried whole. When the new spec keeps the window size
// and the ESN setting, both SAs share one window, so a packet accepted
// through either is a replay for both, whenever it arrives. Otherwise the
// new SA starts at the old one's highest number and every number the old
// window holds as received is recorded in the new window (copied through
// replay.Window's Check and Accept, O(window size)), before and again
// right after the new SA is published; only a packet accepted by the old
// SA after the second copy (a worker still in the middle of it) escapes,
// and then only if the keys did not change.
//
// A worker that looked up the old SA before Update finishes its packet
// with it; the counters it updates are the same shared counters.
func (d *SAD) Update(spec *SASpec) (*Association, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	k := spec.Key()
	old := d.find(t, k)
	if old == nil {
		return nil, fmt.Errorf("update SA %s: %w", k, ErrNotFound)
	}
	a, err := d.build(spec, old)
	if err != nil {
		return nil, fmt.Errorf("update SA %s: %w", k, err)
	}
	copyWindow(old.sa, a.sa)
	d.publish(t, old, a)
	copyWindow(old.sa, a.sa)
	return a, nil
}

// copyWindow records in to's replay window every sequence number that
// from's window holds as received.
func copyWindow(from, to *ipsec.SA) {
	fw, tw := from.Window(), to.Window()
	if fw == nil || tw == nil || fw == tw || fw.Size() == 0 || tw.Size() == 0 {
		return
	}
	top := fw.Top()
	lo := uint64(1)
	if n := uint64(min(fw.Size(), tw.Size())); top > n {
		lo = top - n + 1
	}
	for s := lo; s <= top && s != 0; s++ {
		if seq, err := fw.Check(uint32(s)); seq == s && errors.Is(err, replay.ErrReplay) {
			tw.Accept(s) // ErrReplay here means to knows s already
		}
	}
}

// Set adds spec's SA or, when its key exists, updates it (config reload).
// It reports whether an SA was replaced.
func (d *SAD) Set(spec *SASpec) (a *Association, replaced bool, err error) {
	a, err = d.Update(spec)
	if errors.Is(err, ErrNotFound) {
		a, err = d.Add(spec)
		return a, false, err
	}
	return a, err == nil, err
}

// Delete removes the SA with key k. Lookups that start after Delete
// returns miss it, and a worker that looked it up before gets no further
// use of it: its transform is invalidated (ipsec.SA.Invalidate: Encrypt
// fails with ipsec.ErrDeleted, Decrypt says no-state), as Linux drops
// packets of a dead state. A packet already being processed completes.
func (d *SAD) Delete(k SAKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	old := d.find(t, k)
	if old == nil {
		return fmt.Errorf("delete SA %s: %w", k, ErrNotFound)
	}
	d.publish(t, old, nil)
	old.sa.Invalidate()
	return nil
}

func (d *SAD) find(t *saTable, k SAKey) *Association {
	for _, a := range t.bySPI[k.SPI] {
		if a.key == k {
			return a
		}
	}
	return nil
}

// build makes the Association for spec, carrying old's state when old is
// not nil (see Update).
func (d *SAD) build(spec *SASpec, old *Association) (*Association, error) {
	p := spec.Params()
	a := &Association{key: spec.Key(), spec: spec, sad: d, pcpu: -1}
	if spec.PCPU != nil {
		a.pcpu = int(*spec.PCPU)
	}
	if old != nil {
		a.added = old.added
		a.firstUse.Store(old.firstUse.Load())
		a.shards = old.shards
		a.softDone.Store(old.softDone.Load() && sameLimits(old.spec, spec))
	} else {
		a.added = d.now()
		a.shards = make([]counterShard, d.cfg.Shards)
	}
	p.OnSoftExpire = func(*ipsec.SA) { d.signal() }
	var sa *ipsec.SA
	var err error
	if old != nil {
		// One outbound sequence counter for both (and one replay window
		// when they match): the old SA stays in use by workers that
		// looked it up before the switch.
		sa, err = ipsec.NewSAReplacing(p, old.sa)
	} else {
		sa, err = ipsec.NewSA(p)
	}
	if err != nil {
		return nil, err
	}
	a.sa = sa
	d.seq++
	a.seq = d.seq
	return a, nil
}

func sameLimits(a, b *SASpec) bool { return a.Limits == b.Limits }

func (d *SAD) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// publish copies t without old and with add (either may be nil) and
// makes the copy current.
func (d *SAD) publish(t *saTable, old, add *Association) {
	n := &saTable{bySPI: maps.Clone(t.bySPI), out: maps.Clone(t.out), n: t.n}
	if old != nil {
		n.bySPI[old.key.SPI] = without(n.bySPI[old.key.SPI], old)
		if len(n.bySPI[old.key.SPI]) == 0 {
			delete(n.bySPI, old.key.SPI)
		}
		ok := outKey{old.spec.Src, old.spec.Dst, old.spec.Proto}
		n.out[ok] = without(n.out[ok], old)
		if len(n.out[ok]) == 0 {
			delete(n.out, ok)
		}
		n.n--
	}
	if add != nil {
		n.bySPI[add.key.SPI] = append(slices.Clip(n.bySPI[add.key.SPI]), add)
		ok := outKey{add.spec.Src, add.spec.Dst, add.spec.Proto}
		l := append([]*Association{add}, n.out[ok]...)
		slices.SortStableFunc(l, func(x, y *Association) int { return cmp.Compare(y.seq, x.seq) })
		n.out[ok] = l
		n.n++
	}
	d.cur.Store(n)
}

// without returns a new slice of l without a (l itself is shared with
// readers and never modified).
func without(l []*Association, a *Association) []*Association {
	r := make([]*Association, 0, len(l))
	for _, x := range l {
		if x != a {
			r = append(r, x)
		}
	}
	return r
}

// Tick checks every SA's lifetimes at now: the four time limits of its
// spec, and the byte and packet limits its transform enforces. A soft
// limit is reported once per SA (the SA stays); a hard limit removes the
// SA and is reported. The engine calls Tick periodically (about once a
// second) and when Wake fires.
func (d *SAD) Tick(now time.Time) []Expiry {
	var ex []Expiry
	var dead []*Association
	for _, a := range d.List() {
		l := &a.spec.Limits
		age := now.Sub(a.added)
		var useAge time.Duration
		if fu := a.firstUse.Load(); fu != 0 {
			useAge = now.Sub(time.Unix(0, fu))
		}
		lt, used := a.sa.Params().Lifetime, a.sa.Stats()
		hard := ""
		switch {
		case a.sa.HardExpired():
			hard = a.sa.HardLimit()
		case l.TimeHard != 0 && age >= l.TimeHard:
			hard = "time"
		case l.TimeUseHard != 0 && useAge >= l.TimeUseHard:
			hard = "use-time"
		}
		if hard != "" {
			dead = append(dead, a)
			ex = append(ex, Expiry{Key: a.key, Spec: a.spec.String(), Hard: true, Limit: hard})
			continue
		}
		soft := ""
		switch {
		case a.sa.SoftExpired() && lt.SoftBytes != 0 && used.Bytes >= lt.SoftBytes:
			soft = "bytes"
		case a.sa.SoftExpired():
			soft = "packets"
		case l.TimeSoft != 0 && age >= l.TimeSoft:
			soft = "time"
		case l.TimeUseSoft != 0 && useAge >= l.TimeUseSoft:
			soft = "use-time"
		}
		if soft != "" && a.softDone.CompareAndSwap(false, true) {
			ex = append(ex, Expiry{Key: a.key, Spec: a.spec.String(), Limit: soft})
		}
	}
	if len(dead) > 0 {
		d.mu.Lock()
		for _, a := range dead {
			// Remove only the very Association found expired: an Update
			// in between installed a new SA that is not expired.
			if t := d.cur.Load(); d.find(t, a.key) == a {
				d.publish(t, a, nil)
				a.sa.Invalidate()
			}
		}
		d.mu.Unlock()
	}
	return ex
}
