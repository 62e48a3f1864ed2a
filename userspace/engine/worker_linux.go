package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/userspace/afxdp"
	"github.com/xdpsec/xdpsec/userspace/engine/gso"
	"github.com/xdpsec/xdpsec/userspace/engine/neigh"
	"github.com/xdpsec/xdpsec/userspace/engine/pmtu"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

const (
	// batchSize is the most packets a worker moves per ring operation.
	batchSize = 64
	// inBatch is the most frames the inbound path takes from an rx ring at
	// once: more than batchSize, so the fixed costs of a round (the TUN
	// writev and the empty outbound TUN read, two syscalls) are shared by
	// more packets under load.
	inBatch = 2 * batchSize
	// spinRounds is how many rounds without work a worker makes before it
	// sleeps in poll(2): sleeping at once loses packets under load (the
	// rx ring fills while the thread wakes up), spinning forever burns a
	// core when idle.
	spinRounds = 64
	// txRetries bounds the attempts to post a batch on a full tx ring.
	txRetries = 4
	// ethLen is the Ethernet header the outbound path prepends.
	ethLen = 14
	// maxBundle is the most SAs one packet passes through (AH+ESP).
	maxBundle = 2
	// maxTemplates bounds the templates of a policy the workers check.
	maxTemplates = 4
	// outTailroom is left free at a frame's end for the ESP trailer and
	// ICV when the TUN reads a packet into it.
	outTailroom = 128
	// vnetReads bounds the reads from a vnet_hdr TUN per round; a round
	// also ends once a batch of segments is out (two 64 KiB super-packets
	// make ~90), so inbound gets its turn and small packets still share
	// one tx kick per batch.
	vnetReads = batchSize
)

// worker owns queue q: the AF_XDP socket of queue q on every link that has
// one, and TUN queue q. Everything it holds is preallocated in init, so the
// loop allocates nothing.
type worker struct {
	e     *Engine
	q     int
	socks []*afxdp.Socket // by link (nil: the link has fewer queues)
	ctr   *workerCounters
	// tid is the worker's OS thread id once run has locked it (0 before):
	// the benchmarks read the thread's CPU time from it.
	tid atomic.Int32
	// sleeps counts the worker's polls by wait (sleepIdle, sleepRetry),
	// for tests and benchmarks; atomic so they may read it while it runs.
	sleeps [2]atomic.Uint64

	rx      []afxdp.Desc
	inPkts  [][]byte
	outer   ipsec.Outer
	scratch *ipsec.Scratch // the transforms' working memory, this worker's own
	flow    sad.Flow       // the selector fields of the packet at hand
	primary int            // link whose frames the TUN reads into

	rdDesc  []afxdp.Desc // frames allocated for TUN reads, not yet used
	rdBufs  [][]byte
	rdSizes []int
	tx      [][]afxdp.Desc // by link
	spare   [][]afxdp.Desc // by link: app-owned free frames to reuse (only the primary's fill up)
	icmp    []byte
	icmpVec [][]byte
	pfd     []unix.PollFd
	linkIdx map[int]int // ifindex -> link position (read-only after init)

	// With a vnet_hdr TUN (the default, see Config.NoTUNOffload):
	vnet     bool
	gro      *gso.Coalescer // inbound: one TUN write per coalesced flow
	seg      gso.Segmenter  // outbound: super-packet -> segments
	big      [][]byte       // outbound: one 64 KiB read buffer
	bigSize  []int
	icmpVnet [][][]byte // tooBig's write: zero header + ICMP
	accepted []bool     // Writev's per-packet result

	touched byte       // see touch
	memo    policyMemo // see inboundAllowed
	group   inGroup    // see inbound
	okN     uint64     // the rx batch's VerdictOK packets so far
}

// The kinds of sleep, indexes of worker.sleeps.
const (
	sleepIdle  = iota // idleWait: nothing in flight
	sleepRetry        // the retry wait: tx backlog or frames in flight
)

func newWorker(e *Engine, q int) *worker {
	return &worker{e: e, q: q, socks: make([]*afxdp.Socket, len(e.links)), ctr: new(workerCounters)}
}

// init preallocates the worker's buffers once its sockets are open.
func (w *worker) init() {
	n := len(w.socks)
	w.rx = make([]afxdp.Desc, inBatch)
	w.inPkts = make([][]byte, 0, inBatch)
	w.group = inGroup{
		pkts:   make([]ipsec.Packet, 0, inBatch),
		outers: make([]ipsec.Outer, inBatch),
		res:    make([]ipsec.Result, inBatch),
	}
	w.rdDesc = make([]afxdp.Desc, 0, batchSize)
	w.rdBufs = make([][]byte, batchSize)
	w.rdSizes = make([]int, batchSize)
	w.tx = make([][]afxdp.Desc, n)
	w.spare = make([][]afxdp.Desc, n)
	for i := range n {
		w.tx[i] = make([]afxdp.Desc, 0, batchSize)
		w.spare[i] = make([]afxdp.Desc, 0, 2*batchSize)
	}
	w.scratch = ipsec.NewScratch()
	w.icmp = make([]byte, pmtu.MaxLen6)
	w.icmpVec = make([][]byte, 1)
	w.linkIdx = map[int]int{}
	w.primary = -1
	if w.vnet = w.e.dev.VnetHdr(); w.vnet {
		w.gro = gso.NewCoalescer(inBatch)
		w.big = [][]byte{make([]byte, gso.HdrLen+65535)}
		w.bigSize = make([]int, 1)
		w.icmpVnet = [][][]byte{{make([]byte, gso.HdrLen), nil}}
		w.accepted = make([]bool, inBatch)
	}
	w.pfd = append(w.pfd, unix.PollFd{Fd: int32(w.e.evfd), Events: unix.POLLIN},
		unix.PollFd{Fd: int32(w.e.dev.Queue(w.q).Fd()), Events: unix.POLLIN})
	for i, s := range w.socks {
		w.linkIdx[w.e.links[i].index] = i
		if s == nil {
			continue
		}
		if w.primary < 0 {
			w.primary = i
		}
		w.pfd = append(w.pfd, unix.PollFd{Fd: int32(s.FD()), Events: unix.POLLIN})
	}
}

// run is the worker's loop, on its own locked OS thread.
func (w *worker) run() {
	defer w.e.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w.tid.Store(int32(unix.Gettid()))
	idle, retry := 0, 0
	for !w.e.stopping.Load() {
		work := false
		for li, s := range w.socks {
			if s == nil {
				continue
			}
			if n := s.Receive(w.rx); n > 0 {
				w.inbound(li, s, w.rx[:n])
				work = true
			}
		}
		if w.primary >= 0 && w.outbound() {
			work = true
		}
		for _, s := range w.socks {
			if s != nil {
				s.Complete()
				s.Refill()
			}
		}
		if work {
			idle, retry = 0, 0
			continue
		}
		if idle++; idle < spinRounds {
			continue
		}
		idle = 0
		timeout := w.sleepWait(&retry)
		for i := range w.pfd {
			w.pfd[i].Revents = 0
		}
		unix.Poll(w.pfd, timeout)
	}
	w.flushSpare()
}

// The worker's sleeps in poll, in milliseconds.
const (
	// idleWait is the sleep with nothing in flight: everything that
	// brings work (a received frame, a TUN packet, Stop) wakes poll.
	idleWait = 1000
	// retryWait and maxRetryWait bound the sleep while packets wait on a
	// tx ring or frames are in flight. Nothing wakes poll when the kernel
	// could take the rest of a refused kick, or when completions arrive,
	// so the worker comes back for them; the wait doubles from retryWait
	// up to maxRetryWait while that lasts without other work, so a ring
	// that stays stuck (the link lost its carrier, the peer holds every
	// frame) costs 1000/maxRetryWait wakeups a second, not a spinning core.
	retryWait    = 1
	maxRetryWait = 16
)

// sleepWait returns how long the idle worker may sleep in poll: idleWait
// when its sockets have nothing in flight, else the retry wait (*retry,
// doubled for the next time). Before deciding it kicks every tx ring that
// still holds descriptors (afxdp.Socket.FlushTx): a kick refused as busy
// (copy mode: completion ring full, driver queue stopped) leaves the last
// packets of a burst on the ring, and sleeping idleWait would hold them
// that long. It counts the sleep in w.sleeps.
func (w *worker) sleepWait(retry *int) int {
	busy := false
	for _, s := range w.socks {
		if s != nil && (s.FlushTx() > 0 || s.InFlight() > 0) {
			busy = true
		}
	}
	if !busy {
		*retry = 0
		w.sleeps[sleepIdle].Add(1)
		return idleWait
	}
	t := max(*retry, retryWait)
	*retry = min(2*t, maxRetryWait)
	w.sleeps[sleepRetry].Add(1)
	return t
}

// flushSpare returns the worker's spare frames to their sockets before
// they close, so frame accounting balances.
func (w *worker) flushSpare() {
	for li, s := range w.socks {
		if s == nil {
			continue
		}
		s.Release(w.spare[li])
		w.spare[li] = w.spare[li][:0]
		if li == w.primary {
			s.Release(w.rdDesc)
			w.rdDesc = w.rdDesc[:0]
		}
	}
}

// l3Offset returns the offset of the IP header in an Ethernet frame (after
// up to two VLAN tags), or -1 when the frame does not carry IPv4/IPv6.
func l3Offset(f []byte) int {
	off := 12
	for range 3 {
		if len(f) < off+2 {
			return -1
		}
		switch binary.BigEndian.Uint16(f[off:]) {
		case 0x0800, 0x86dd:
			return off + 2
		case 0x8100, 0x88a8:
			off += 4
		default:
			return -1
		}
	}
	return -1
}

// touch reads one byte of every cache line of the batch's packets before
// any is parsed. The kernel wrote them on another CPU (copy mode) or the
// NIC did (zero copy), so each packet's first read misses the cache: done
// one packet at a time, every miss stalls the worker on its own (~90 ns,
// measured as 16% of the worker at 64 B); as independent loads in one
// tight loop the CPU keeps many misses in flight at once. Go has no
// prefetch instruction, this is its equivalent.
func (w *worker) touch(s *afxdp.Socket, batch []afxdp.Desc) {
	var x byte
	for _, d := range batch {
		pkt := s.Packet(d)
		for i := 0; i < len(pkt); i += 64 {
			x ^= pkt[i]
		}
	}
	w.touched = x // kept, so the loads are not dead code
}

// verdictEncapMismatch is outerSA's answer for a packet whose SA expects
// another UDP encapsulation (counted as InEncapMismatch, not a verdict).
const verdictEncapMismatch = ipsec.NumVerdicts

// inGroup is a run of consecutive packets of one rx batch whose outermost
// SA is the same: decrypted with one DecryptParsedBatch call and counted on
// the SA once (one replay-window run, one lifetime add, one scratch setup).
// Packets of one SA usually arrive together.
type inGroup struct {
	sa     *sad.Association
	pkts   []ipsec.Packet // the frames; Off is the outer IP header
	outers []ipsec.Outer  // ParseOuter's answer for each, len inBatch
	res    []ipsec.Result
}

// inbound handles one rx batch of link li: decrypt, check, deliver to the
// TUN in one batch, give every frame back to the fill ring.
//
// The outermost SA of consecutive packets is undone a group at a time
// (inGroup); what follows (a second SA of a bundle, the policy check, the
// delivery) goes packet by packet in arrival order, so verdicts, counters,
// policy decisions and the order of delivered and captured packets are
// those of handling each packet alone. (An SA replay window sees its
// packets in arrival order too, except for the pathological bundle of a
// transport SA inside itself, whose inner packets it sees after the
// group's outer ones.)
func (w *worker) inbound(li int, s *afxdp.Socket, batch []afxdp.Desc) {
	c := w.ctr
	c.c[InFrames].Add(uint64(len(batch)))
	w.inPkts = w.inPkts[:0]
	w.touch(s, batch)
	w.memo.valid = false // policies may have changed since the last batch
	w.okN = 0            // VerdictOK, counted once per batch
	g := &w.group
	capture := w.e.cfg.DropCapture != nil
	for _, d := range batch {
		pkt := s.Packet(d)
		l3 := l3Offset(pkt)
		if l3 < 0 {
			c.c[InNotIP].Add(1)
			continue
		}
		n := len(g.pkts)
		a, v := w.outerSA(pkt, l3, len(pkt), 0, &g.outers[n])
		if a == nil {
			if capture {
				w.undoGroup() // keep the captured frames in arrival order
			}
			w.drop(v, pkt)
			continue
		}
		if a != g.sa && n > 0 {
			w.undoGroup()
			g.outers[0] = g.outers[n]
		}
		g.sa = a
		g.pkts = append(g.pkts, ipsec.Packet{Frame: pkt, Off: l3})
	}
	w.undoGroup()
	c.v[ipsec.VerdictOK].Add(w.okN)
	if w.vnet {
		w.deliverCoalesced()
	} else if len(w.inPkts) > 0 {
		n, _ := w.e.dev.Queue(w.q).Write(w.inPkts)
		c.c[InDelivered].Add(uint64(n))
		c.c[InTUNRejected].Add(uint64(len(w.inPkts) - n))
	}
	s.Release(batch)
}

// undoGroup decrypts the pending group with its SA, counts it on the SA
// once, and takes each of its packets on, in order, through the rest of
// the inbound path (inner SAs, policy, delivery). It empties the group.
func (w *worker) undoGroup() {
	g := &w.group
	n := len(g.pkts)
	if n == 0 {
		return
	}
	a := g.sa
	a.Transform().DecryptParsedBatch(w.scratch, g.pkts, g.outers[:n], g.res[:n])
	tunnel := a.Spec().Mode == ipsec.ModeTunnel
	var okP, okB uint64
	for i := range g.pkts {
		pkt, r := g.pkts[i].Frame, &g.res[i]
		if r.Verdict != ipsec.VerdictOK {
			a.Count(w.q, r.Verdict, r.N)
			w.drop(r.Verdict, pkt)
			continue
		}
		okP++
		okB += uint64(r.N)
		w.okN++
		sas := [maxBundle]*sad.Association{a}
		nsa, off, end, ok := 1, r.Off, r.Off+r.N, true
		if !tunnel {
			// After a transport-mode SA the rebuilt packet may carry the
			// next SA of a bundle (ESP inside AH, RFC 4301 §4.5).
			nsa, off, end, ok = w.undoInner(pkt, &sas, nsa, off, end)
		}
		if ok {
			w.deliver(pkt[off:end], sas[:nsa])
		}
	}
	a.CountN(w.q, ipsec.VerdictOK, okP, okB)
	g.pkts, g.sa = g.pkts[:0], nil
}

// undoInner undoes, packet by packet, the SAs that follow the nsa SAs
// (in sas) already undone from pkt, whose payload is now pkt[off:end]. It
// returns the SAs' count and the payload's bounds, and ok false when it
// dropped the packet (counted).
func (w *worker) undoInner(pkt []byte, sas *[maxBundle]*sad.Association, nsa, off, end int) (int, int, int, bool) {
	for {
		a, v := w.outerSA(pkt, off, end, nsa, &w.outer)
		if a == nil {
			if v == ipsec.VerdictOK {
				return nsa, off, end, true // not IPsec: deliver it
			}
			w.drop(v, pkt)
			return nsa, off, end, false
		}
		r := a.Transform().DecryptParsedWith(w.scratch, pkt[:end], off, &w.outer)
		a.Count(w.q, r.Verdict, r.N)
		if r.Verdict != ipsec.VerdictOK {
			w.drop(r.Verdict, pkt)
			return nsa, off, end, false
		}
		w.okN++
		sas[nsa] = a
		nsa++
		off, end = r.Off, r.Off+r.N
		if a.Spec().Mode == ipsec.ModeTunnel {
			return nsa, off, end, true // a new packet begins: not ours to undo further
		}
	}
}

// outerSA parses the IPsec header of pkt[off:end] into o and returns its
// SA, nsa SAs having been undone already. Without one it returns nil and
// why to drop the frame (a verdict or verdictEncapMismatch), or
// VerdictOK when nsa > 0 and the payload is not IPsec: deliver it. It
// counts nothing.
func (w *worker) outerSA(pkt []byte, off, end, nsa int, o *ipsec.Outer) (*sad.Association, ipsec.Verdict) {
	v := ipsec.ParseOuter(pkt[off:end], 0, o)
	if nsa > 0 && v != ipsec.VerdictOK {
		return nil, ipsec.VerdictOK
	}
	if v == ipsec.VerdictNotIPsec && o.DstPort != 0 && w.e.isNATTPort(o.DstPort) {
		// UDP to an SA's extra NAT-T port (the XDP program steered it
		// for that port): parse again with it.
		v = ipsec.ParseOuter(pkt[off:end], o.DstPort, o)
	}
	if v != ipsec.VerdictOK {
		return nil, v
	}
	a := w.e.sad.Lookup(o.SPI, o.Dst, o.Proto)
	if a == nil || nsa == maxBundle {
		return nil, ipsec.VerdictNoState
	}
	if enc := a.Spec().Encap; (enc != nil) != o.UDP || (enc != nil && enc.DstPort != o.DstPort) {
		return nil, verdictEncapMismatch
	}
	return a, ipsec.VerdictOK
}

// drop counts a frame dropped for v (a verdict or verdictEncapMismatch)
// and offers it to the drop capture.
func (w *worker) drop(v ipsec.Verdict, frame []byte) {
	if v == verdictEncapMismatch {
		w.ctr.c[InEncapMismatch].Add(1)
		return
	}
	w.ctr.v[v].Add(1)
	w.dropped(v, frame)
}

// deliver applies the inbound policies to a decrypted packet and queues
// it for the TUN.
func (w *worker) deliver(inner []byte, sas []*sad.Association) {
	if !w.inboundAllowed(inner, sas) {
		w.ctr.c[InPolicyMismatch].Add(1)
		return
	}
	if w.vnet {
		w.gro.Add(inner) // never full: it holds a batch
		return
	}
	w.inPkts = append(w.inPkts, inner)
}

// deliverCoalesced writes the batch's inner packets into the vnet_hdr TUN,
// TCP segments of one flow coalesced into one write (engine/gso). The
// counters stay per inner packet: a super-packet the kernel accepts counts
// each of its segments as delivered.
func (w *worker) deliverCoalesced() {
	if w.gro.Len() == 0 {
		return
	}
	c := w.ctr
	q := w.e.dev.Queue(w.q)
	out := w.gro.Flush()
	q.Writev(out, w.accepted)
	for i := range out {
		segs := uint64(len(out[i]) - 1) // header, head, one part per merged segment
		if w.accepted[i] {
			c.c[InDelivered].Add(segs)
		} else {
			c.c[InTUNRejected].Add(segs)
		}
		if segs > 1 {
			c.c[InCoalesced].Add(segs - 1)
		}
	}
}

// dropped offers a frame dropped with verdict v to the drop capture, if
// one is configured (one atomic load when no capture runs; dropcap decides
// which verdicts it wants).
func (w *worker) dropped(v ipsec.Verdict, frame []byte) {
	if dc := w.e.cfg.DropCapture; dc != nil {
		dc.Record(v, frame)
	}
}

// inboundAllowed applies the inbound policies (RFC 4301 §5.2) to a
// decrypted packet and the SAs that carried it (outermost first): no policy
// accepts (as Linux without an in policy), a DISCARD refuses, a PROTECT
// needs every SA to fit one of its templates and every required template
// to be fitted, a BYPASS accepts only what transport-mode SAs carried.
//
// A decrypted IP fragment is judged like any packet and delivered to the
// TUN, where the kernel reassembles it (RFC 4301 §7): an initial fragment
// holding its ports by them, one without ports (sad.Flow.Opaque) only by
// the policies whose port selectors are ANY (sad.SPD.LookupFlow).
//
// Within a batch the decision is remembered for the last flow and SAs:
// the packets of a batch mostly belong to a few flows, and a policy change
// is seen from the next batch on.
func (w *worker) inboundAllowed(inner []byte, sas []*sad.Association) bool {
	var err error
	if w.flow, err = sad.FlowOf(inner); err != nil {
		return false
	}
	f := &w.flow
	m := &w.memo
	if m.valid && m.flow.Src == f.Src && m.flow.Dst == f.Dst && m.flow.Proto == f.Proto &&
		m.flow.SrcPort == f.SrcPort && m.flow.DstPort == f.DstPort && m.flow.Opaque == f.Opaque && m.sameSAs(sas) {
		return m.allowed
	}
	allowed := w.policyAllows(f, sas)
	*m = policyMemo{valid: true, flow: *f, nsa: len(sas), allowed: allowed}
	copy(m.sas[:], sas)
	return allowed
}

// policyMemo is inboundAllowed's decision for one flow and SA list.
type policyMemo struct {
	valid   bool
	allowed bool
	flow    sad.Flow
	sas     [maxBundle]*sad.Association
	nsa     int
}

func (m *policyMemo) sameSAs(sas []*sad.Association) bool {
	if len(sas) != m.nsa {
		return false
	}
	for i, a := range sas {
		if m.sas[i] != a {
			return false
		}
	}
	return true
}

// policyAllows is inboundAllowed's decision, from the SPD.
func (w *worker) policyAllows(f *sad.Flow, sas []*sad.Association) bool {
	p := w.e.spd.LookupFlow(sad.DirIn, f)
	if p == nil {
		return true
	}
	switch p.Action() {
	case sad.ActionDiscard:
		return false
	case sad.ActionBypass:
		for _, a := range sas {
			if a.Spec().Mode != ipsec.ModeTransport {
				return false
			}
		}
		return true
	}
	tmpls := p.Templates()
	var used [maxTemplates]bool
	if len(tmpls) > len(used) {
		return false
	}
	for _, a := range sas {
		spec := a.Spec()
		fit := false
		for i := range tmpls {
			t := &tmpls[i]
			if !used[i] && t.Proto == spec.Proto && t.Mode == spec.Mode && (t.SPI == 0 || t.SPI == spec.SPI) &&
				(!t.Dst.IsValid() || t.Dst == spec.Dst) {
				used[i], fit = true, true
				break
			}
		}
		if !fit {
			return false
		}
	}
	for i := range tmpls {
		if !used[i] && tmpls[i].Level != sad.LevelUse {
			return false
		}
	}
	return true
}

// outbound reads one batch from the TUN straight into frames of the
// primary link and sends what the policies allow. It reports whether it
// found packets.
func (w *worker) outbound() bool {
	if w.vnet {
		return w.outboundVnet()
	}
	s := w.socks[w.primary]
	// Top the read frames up to a batch: spare frames first, then Alloc.
	for len(w.rdDesc) < batchSize && len(w.spare[w.primary]) > 0 {
		sp := w.spare[w.primary]
		w.rdDesc = append(w.rdDesc, sp[len(sp)-1])
		w.spare[w.primary] = sp[:len(sp)-1]
	}
	if k := len(w.rdDesc); k < batchSize {
		w.rdDesc = w.rdDesc[:k+s.Alloc(w.rdDesc[k:batchSize])]
	}
	if len(w.rdDesc) == 0 {
		return false
	}
	off := s.Info().RxOffset
	for i, d := range w.rdDesc {
		fr := s.Frame(d.Addr)
		w.rdBufs[i] = fr[off : len(fr)-outTailroom]
	}
	n, err := w.e.dev.Queue(w.q).TryRead(w.rdBufs[:len(w.rdDesc)], w.rdSizes)
	if err != nil || n == 0 {
		return false
	}
	w.ctr.c[OutPackets].Add(uint64(n))
	for i := 0; i < n; i++ {
		m := w.rdSizes[i]
		if pkt := w.rdBufs[i]; m == len(pkt) && ipLen(pkt) > m {
			// read(2) cut it to the frame (the TUN MTU was raised
			// past TUNMTULimit): never send a cut packet.
			w.oversize(pkt)
			w.recycle(w.rdDesc[i])
			continue
		}
		w.send(s, w.rdDesc[i], off, m)
	}
	// Shift the unused frames to the front for the next read.
	k := copy(w.rdDesc, w.rdDesc[n:])
	w.rdDesc = w.rdDesc[:k]
	for li, ss := range w.socks {
		if ss == nil || len(w.tx[li]) == 0 {
			continue
		}
		w.transmit(li, ss)
	}
	return true
}

// outboundVnet reads up to vnetReads packets from the vnet_hdr TUN, each
// possibly a TCP/UDP super-packet, cuts each into segments (engine/gso)
// written straight into frames of the primary link, and sends every
// segment as outbound() sends a packet. OutPackets counts segments.
func (w *worker) outboundVnet() bool {
	s := w.socks[w.primary]
	q := w.e.dev.Queue(w.q)
	off := s.Info().RxOffset
	c := w.ctr
	work := false
	for r, segs := 0, 0; r < vnetReads && segs < batchSize; r++ {
		n, err := q.TryRead(w.big, w.bigSize)
		if err != nil || n == 0 {
			break
		}
		work = true
		segs0 := segs
		var h gso.Hdr
		buf := w.big[0][:w.bigSize[0]]
		if h.Decode(buf) != nil || w.seg.Reset(buf[gso.HdrLen:], h) != nil {
			c.c[OutGSOMalformed].Add(1)
			continue
		}
		for {
			d, ok := w.frame()
			if !ok {
				// Every frame is in flight: the rest of the super-packet
				// has nowhere to go (TCP retransmits it).
				c.c[OutTxDropped].Add(1)
				break
			}
			fr := s.Frame(d.Addr)
			m, err := w.seg.Next(fr[off : len(fr)-outTailroom])
			if m == 0 {
				switch {
				case errors.Is(err, gso.ErrShortBuffer):
					w.oversize(buf[gso.HdrLen:])
				case err != nil:
					c.c[OutGSOMalformed].Add(1)
				}
				w.recycle(d)
				break
			}
			segs++
			w.send(s, d, off, m)
		}
		c.c[OutPackets].Add(uint64(segs - segs0))
	}
	for li, ss := range w.socks {
		if ss != nil && len(w.tx[li]) > 0 {
			w.transmit(li, ss)
		}
	}
	return work
}

// frame returns a free frame of the primary link: a spare one, else a new
// one, else (all in flight) one reaped from the completion ring after
// posting what waits for transmit.
func (w *worker) frame() (afxdp.Desc, bool) {
	for try := 0; try < 2; try++ {
		if sp := w.spare[w.primary]; len(sp) > 0 {
			d := sp[len(sp)-1]
			w.spare[w.primary] = sp[:len(sp)-1]
			return d, true
		}
		if len(w.rdDesc) > 0 { // frames the non-vnet path allocated
			d := w.rdDesc[len(w.rdDesc)-1]
			w.rdDesc = w.rdDesc[:len(w.rdDesc)-1]
			return d, true
		}
		var one [1]afxdp.Desc
		if w.socks[w.primary].Alloc(one[:]) == 1 {
			return one[0], true
		}
		for li, ss := range w.socks {
			if ss != nil && len(w.tx[li]) > 0 {
				w.transmit(li, ss)
			}
		}
		w.socks[w.primary].Complete()
	}
	return afxdp.Desc{}, false
}

// transmit posts link li's pending frames, reaping completions when the
// ring is full, and drops (counts) what still does not fit.
func (w *worker) transmit(li int, s *afxdp.Socket) {
	tx := w.tx[li]
	for try := 0; len(tx) > 0 && try < txRetries; try++ {
		n, err := s.Transmit(tx)
		if err != nil {
			break
		}
		w.ctr.c[OutTransmitted].Add(uint64(n))
		tx = tx[n:]
		if len(tx) > 0 {
			s.Complete()
		}
	}
	if len(tx) > 0 {
		w.ctr.c[OutTxDropped].Add(uint64(len(tx)))
		if li == w.primary {
			w.spare[li] = append(w.spare[li], tx...) // the next TUN reads take them
		} else {
			// Only the primary's frames are reused from the spare list:
			// another link's go back to its socket (send Allocs them).
			s.Release(tx)
		}
	}
	w.tx[li] = w.tx[li][:0]
}

// recycle keeps an unsent frame of the primary link for the next read.
func (w *worker) recycle(d afxdp.Desc) {
	if len(w.spare[w.primary]) < cap(w.spare[w.primary]) {
		w.spare[w.primary] = append(w.spare[w.primary], d)
		return
	}
	w.socks[w.primary].Release([]afxdp.Desc{d}) // slow path: spare list full
}

// send applies the outbound policy to the packet of n bytes at offset off in
// d's frame and queues the result for transmit.
func (w *worker) send(s *afxdp.Socket, d afxdp.Desc, off, n int) {
	c := w.ctr
	fr := s.Frame(d.Addr)
	pkt := fr[off : off+n]
	var err error
	if w.flow, err = sad.FlowOf(pkt); err != nil {
		c.c[OutNotIP].Add(1)
		w.recycle(d)
		return
	}
	f := &w.flow
	p := w.e.spd.LookupFlow(sad.DirOut, f) // a fragment without ports: ANY-port policies only
	if p == nil {
		c.c[OutNoPolicy].Add(1)
		w.recycle(d)
		return
	}
	outerDst := f.Dst
	var sas [2]*sad.Association
	var nsa, overhead int
	switch p.Action() {
	case sad.ActionDiscard:
		c.c[OutDiscard].Add(1)
		w.recycle(d)
		return
	case sad.ActionProtect:
		tmpls := p.Templates()
		if len(tmpls) > len(sas) {
			c.c[OutNoSA].Add(1)
			w.recycle(d)
			return
		}
		for i := range tmpls {
			t := &tmpls[i]
			a := w.e.sad.LookupOutbound(t, f.Src, f.Dst, w.q)
			if a == nil {
				if t.Level == sad.LevelUse {
					continue
				}
				c.c[OutNoSA].Add(1)
				w.recycle(d)
				return
			}
			sas[nsa] = a
			nsa++
			h, tl := a.Transform().Overhead()
			overhead += h + tl
			if a.Spec().Mode == ipsec.ModeTunnel {
				outerDst = a.Spec().Dst
			}
		}
	}
	hop, st := w.e.nr.Lookup(outerDst.Unmap())
	switch st {
	case neigh.Pending:
		c.c[OutNeighPending].Add(1)
		w.recycle(d)
		return
	case neigh.Unreachable:
		c.c[OutUnreachable].Add(1)
		w.recycle(d)
		return
	}
	li, ok := w.linkIdx[hop.LinkIndex]
	if !ok || w.socks[li] == nil {
		c.c[OutUnreachable].Add(1)
		w.recycle(d)
		return
	}
	if hop.MTU > 0 && n+overhead > hop.MTU {
		w.tooBig(pkt, hop.MTU-overhead)
		w.recycle(d)
		return
	}
	for i := 0; i < nsa; i++ {
		inLen := n
		var err error
		if off, n, err = sas[i].Transform().EncryptWith(w.scratch, fr, off, n); err != nil {
			if errors.Is(err, ipsec.ErrFragment) {
				// The kernel fragmented a packet without DF at the TUN's
				// MTU; only tunnel mode carries fragments.
				c.c[OutTransportFragment].Add(1)
			} else {
				c.c[OutEncryptError].Add(1)
			}
			w.recycle(d)
			return
		}
		sas[i].Count(w.q, ipsec.VerdictOK, inLen)
	}
	if nsa > 0 {
		c.c[OutProtected].Add(1)
	} else {
		c.c[OutBypass].Add(1)
	}
	copy(fr[off-ethLen:off], hop.Header[:])
	base := d.Addr &^ uint64(len(fr)-1)
	out := afxdp.Desc{Addr: base + uint64(off-ethLen), Len: uint32(n + ethLen)}
	if li != w.primary {
		// Another link: copy into one of its frames (multi-link hosts only).
		nd, ok := copyToLink(w.socks[li], fr[off-ethLen:off+n])
		w.recycle(d)
		if !ok {
			c.c[OutTxDropped].Add(1)
			return
		}
		out = nd
	}
	w.tx[li] = append(w.tx[li], out)
	if len(w.tx[li]) == cap(w.tx[li]) {
		w.transmit(li, w.socks[li])
	}
}

// ipLen returns the length an IPv4 or IPv6 header declares for its packet
// (0 for anything else, or too short to tell).
func ipLen(pkt []byte) int {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(pkt[2:]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	}
	return 0
}

// oversize handles a TUN packet (or a segment of it) longer than a frame
// carries, of which pkt holds at least the headers: ICMP too-big naming
// TUNMTULimit of the engine's frame size when the sender allows it, else a
// counted drop.
func (w *worker) oversize(pkt []byte) {
	var err error
	if w.flow, err = sad.FlowOf(pkt); err != nil {
		w.ctr.c[OutNotIP].Add(1)
		return
	}
	w.tooBig(pkt, TUNMTULimit(w.e.cfg.FrameSize))
}

// copyToLink copies the frame f (Ethernet header on) into a frame of
// socket o and returns its descriptor, or false when o has no free frame.
// f was built in a frame of the same size and may have grown into its
// headroom, so it is placed earlier than Alloc's offset when it must be.
func copyToLink(o *afxdp.Socket, f []byte) (afxdp.Desc, bool) {
	var nd [1]afxdp.Desc
	if o.Alloc(nd[:]) == 0 {
		return afxdp.Desc{}, false
	}
	d := afxdp.Desc{Addr: nd[0].Addr, Len: uint32(len(f))}
	if fr := o.Frame(d.Addr); len(f) > len(fr) {
		o.Release(nd[:]) // cannot happen: f came from a frame of this size
		return afxdp.Desc{}, false
	} else if room := len(fr) - o.Headroom(d); len(f) > room {
		d.Addr -= uint64(len(f) - room)
	}
	copy(o.Packet(d), f)
	return d, true
}

// tooBig answers a packet that does not fit the tunnel with an ICMP error
// written back into the TUN (RFC 4301 §8.2 via engine/pmtu). w.flow holds
// the packet's flow.
func (w *worker) tooBig(pkt []byte, mtu int) {
	if !w.flow.DF {
		w.ctr.c[OutTooBigDropped].Add(1)
		return
	}
	n, err := pmtu.TooBig(w.icmp, pkt, mtu, netip.Addr{})
	if err != nil {
		w.ctr.c[OutTooBigDropped].Add(1)
		return
	}
	w.icmpVec[0] = w.icmp[:n]
	var k int
	if w.vnet {
		w.icmpVnet[0][1] = w.icmp[:n] // behind a zero virtio_net_hdr
		k, _ = w.e.dev.Queue(w.q).Writev(w.icmpVnet, nil)
	} else {
		k, _ = w.e.dev.Queue(w.q).Write(w.icmpVec)
	}
	if k == 1 {
		w.ctr.c[OutTooBig].Add(1)
	} else {
		w.ctr.c[OutTooBigDropped].Add(1)
	}
}
