package sad

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// Policy is one policy in the SPD. Its spec never changes; Update
// replaces the Policy.
type Policy struct {
	spec *PolicySpec
	// seq orders policies of equal priority: the earlier added first.
	seq uint64
	m   matcher
}

// addr128 is an address as two 64-bit words (IPv4 as ::ffff:a.b.c.d), so
// that a prefix test is two masked compares.
type addr128 [2]uint64

func toAddr128(a netip.Addr) addr128 {
	b := a.As16()
	return addr128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// matcher is a Selector compiled for the lookup loop: the cheap integer
// tests first, no netip calls.
type matcher struct {
	proto                  uint8
	sport, smask           uint16
	dport, dmask           uint16
	src, srcMask           addr128
	dst, dstMask           addr128
	anySrc, anyDst, family uint8 // family: 0 any, 4, 6
}

func prefixMask(p netip.Prefix) (addr128, addr128) {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var m addr128
	switch {
	case bits >= 128:
		m = addr128{^uint64(0), ^uint64(0)}
	case bits > 64:
		m = addr128{^uint64(0), ^uint64(0) << (128 - bits)}
	case bits > 0:
		m = addr128{^uint64(0) << (64 - bits), 0}
	}
	a := toAddr128(p.Addr())
	return addr128{a[0] & m[0], a[1] & m[1]}, m
}

func compile(s *Selector) matcher {
	m := matcher{proto: s.Proto, sport: s.SrcPort & s.SrcPortMask, smask: s.SrcPortMask,
		dport: s.DstPort & s.DstPortMask, dmask: s.DstPortMask, family: uint8(s.Family())}
	if s.Src.IsValid() {
		m.src, m.srcMask = prefixMask(s.Src)
	} else {
		m.anySrc = 1
	}
	if s.Dst.IsValid() {
		m.dst, m.dstMask = prefixMask(s.Dst)
	} else {
		m.anyDst = 1
	}
	return m
}

// match is Selector.Match on precomputed addresses; fam is 4 or 6.
func (m *matcher) match(src, dst addr128, fam uint8, proto uint8, sport, dport uint16) bool {
	return (m.proto == 0 || m.proto == proto) &&
		sport&m.smask == m.sport && dport&m.dmask == m.dport &&
		(m.family == 0 || m.family == fam) &&
		(m.anySrc != 0 || src[0]&m.srcMask[0] == m.src[0] && src[1]&m.srcMask[1] == m.src[1]) &&
		(m.anyDst != 0 || dst[0]&m.dstMask[0] == m.dst[0] && dst[1]&m.dstMask[1] == m.dst[1])
}

// Spec returns the policy's spec.
func (p *Policy) Spec() *PolicySpec { return p.spec }

// Action returns the RFC 4301 action: protect, bypass or discard.
func (p *Policy) Action() Action { return p.spec.Action }

// Templates returns the SAs a PROTECT policy applies, in order.
func (p *Policy) Templates() []Template { return p.spec.Templates }

func (p *Policy) String() string { return p.spec.String() }

// policyID is what makes two policies the same policy, as in the kernel:
// direction, selector, interface id and mark.
type policyID struct {
	dir  Dir
	sel  Selector
	ifID uint32
	mark Mark
}

func idOf(s *PolicySpec) policyID {
	id := policyID{dir: s.Dir, sel: s.Sel, ifID: s.IfID}
	if s.Mark != nil {
		id.mark = *s.Mark
	}
	return id
}

// spdTable is one immutable snapshot: per direction, the policies in
// lookup order (priority ascending, then insertion).
type spdTable struct {
	byDir [DirFwd + 1][]*Policy
	n     int
}

// SPD is the security policy database. Lookups never block; see the
// package documentation for the concurrency contract.
type SPD struct {
	mu  sync.Mutex
	cur atomic.Pointer[spdTable]
	cap int
	seq uint64
}

// NewSPD returns an empty database; cfg.Capacity bounds it (Shards and Now
// are not used).
func NewSPD(cfg Config) *SPD {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	d := &SPD{cap: cfg.Capacity}
	d.cur.Store(&spdTable{})
	return d
}

// Lookup returns the first policy of direction dir, in priority order
// (lower Priority first, as Linux; ties in the order added), whose
// selector matches the packet, or nil. For ICMP pass the type and code as
// sport and dport. It takes no lock and allocates nothing; its cost grows
// with the number of policies tried before the match.
func (d *SPD) Lookup(dir Dir, src, dst netip.Addr, proto uint8, sport, dport uint16) *Policy {
	if dir > DirFwd || !src.IsValid() || !dst.IsValid() {
		return nil
	}
	fam := uint8(6)
	if src.Is4() {
		fam = 4
	}
	s, t := toAddr128(src), toAddr128(dst)
	for _, p := range d.cur.Load().byDir[dir] {
		if p.m.match(s, t, fam, proto, sport, dport) {
			return p
		}
	}
	return nil
}

// lookupOpaque is Lookup for a flow whose ports are unknown (Flow.Opaque):
// only policies whose port selectors are both ANY can match. It is a loop
// of its own so that Lookup's stays as it was (an extra test there cost
// 5-10% with 16-256 policies).
func (d *SPD) lookupOpaque(dir Dir, src, dst netip.Addr, proto uint8) *Policy {
	if dir > DirFwd || !src.IsValid() || !dst.IsValid() {
		return nil
	}
	fam := uint8(6)
	if src.Is4() {
		fam = 4
	}
	s, t := toAddr128(src), toAddr128(dst)
	for _, p := range d.cur.Load().byDir[dir] {
		if p.m.smask|p.m.dmask == 0 && p.m.match(s, t, fam, proto, 0, 0) {
			return p
		}
	}
	return nil
}

// Len returns the number of policies.
func (d *SPD) Len() int { return d.cur.Load().n }

// List returns every policy: in, out, fwd, each in lookup order.
func (d *SPD) List() []*Policy {
	t := d.cur.Load()
	l := make([]*Policy, 0, t.n)
	for _, ps := range t.byDir {
		l = append(l, ps...)
	}
	return l
}

// Add inserts spec. It fails with ErrExists when a policy of the same
// direction, selector, if_id and mark exists, and ErrFull at capacity.
func (d *SPD) Add(spec *PolicySpec) (*Policy, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	if find(t, idOf(spec)) != nil {
		return nil, fmt.Errorf("add policy %s: %w (use update to replace it)", spec, ErrExists)
	}
	if t.n >= d.cap {
		return nil, fmt.Errorf("add policy %s: %w: it holds %d policies, its capacity; delete policies or raise the capacity", spec, ErrFull, t.n)
	}
	d.seq++
	p := &Policy{spec: spec, seq: d.seq, m: compile(&spec.Sel)}
	d.publish(t, nil, p)
	return p, nil
}

// Update replaces the policy with spec's direction, selector, if_id and
// mark; it keeps its place among policies of equal priority.
func (d *SPD) Update(spec *PolicySpec) (*Policy, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	old := find(t, idOf(spec))
	if old == nil {
		return nil, fmt.Errorf("update policy %s: %w", spec, ErrNotFound)
	}
	p := &Policy{spec: spec, seq: old.seq, m: compile(&spec.Sel)}
	d.publish(t, old, p)
	return p, nil
}

// Delete removes the policy with spec's direction, selector, if_id and
// mark (the rest of spec is ignored, as `ip xfrm policy delete` takes only
// those).
func (d *SPD) Delete(spec *PolicySpec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	old := find(t, idOf(spec))
	if old == nil {
		return fmt.Errorf("delete policy %s: %w", spec, ErrNotFound)
	}
	d.publish(t, old, nil)
	return nil
}

func find(t *spdTable, id policyID) *Policy {
	if id.dir > DirFwd {
		return nil
	}
	for _, p := range t.byDir[id.dir] {
		if idOf(p.spec) == id {
			return p
		}
	}
	return nil
}

func (d *SPD) publish(t *spdTable, old, add *Policy) {
	n := &spdTable{byDir: t.byDir, n: t.n}
	var dir Dir
	if old != nil {
		dir = old.spec.Dir
	} else {
		dir = add.spec.Dir
	}
	l := make([]*Policy, 0, len(t.byDir[dir])+1)
	for _, p := range t.byDir[dir] {
		if p != old {
			l = append(l, p)
		}
	}
	if old != nil {
		n.n--
	}
	if add != nil {
		l = append(l, add)
		n.n++
	}
	slices.SortStableFunc(l, func(x, y *Policy) int {
		return cmp.Or(cmp.Compare(x.spec.Priority, y.spec.Priority), cmp.Compare(x.seq, y.seq))
	})
	n.byDir[dir] = l
	d.cur.Store(n)
}
