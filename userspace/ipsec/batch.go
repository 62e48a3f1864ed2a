package ipsec

import "github.com/xdpsec/xdpsec/userspace/replay"

// Batches: the packets of one SA handled in one call, so that the costs a
// packet pays for sharing the SA with other goroutines are paid once per
// batch (as wireguard-go moves packets in vectors): one sequence number
// reservation and one lifetime add for EncryptBatch, one replay-window lock
// and one lifetime add for DecryptBatch (whose in-order packets then update
// the window without atomic read-modify-write instructions, see
// replay.Batch), and one scratch (pool Get/Put for SAs with keyed per-call
// state) for either.

// BatchMax is the most packets EncryptBatch and DecryptBatch handle under
// one sequence reservation, window lock and lifetime add; longer slices are
// handled in runs of BatchMax (same results, one more of each per run).
const BatchMax = 64

// Packet is one packet of a batch: the IP packet Frame[Off:Off+N].
// EncryptBatch replaces Off and N with the protected packet's bounds; for
// DecryptBatch it is the received outer packet (the Result gives the
// decapsulated bounds).
type Packet struct {
	Frame  []byte
	Off, N int
}

// batchState is what a batch defers: the lifetime counts of an SA without
// packet or byte limits, and the scratch it took once.
type batchState struct {
	s              *scratch
	packets, bytes uint64
	win            replay.Batch
}

// check is the replay window's Check, within the batch when bs is not nil.
func (sa *SA) check(bs *batchState, seqLow uint32) (uint64, error) {
	if bs != nil {
		return bs.win.Check(seqLow)
	}
	return sa.win.Check(seqLow)
}

// accept records seq in the replay window, within the batch when bs is not
// nil.
func (sa *SA) accept(bs *batchState, seq uint64) error {
	if bs != nil {
		return bs.win.Accept(seq)
	}
	return sa.win.Accept(seq)
}

// countIn charges a verified packet of n bytes to the lifetimes, deferring
// it to bs for SAs without limits (nothing to cross). It reports false when
// the packet crosses a hard limit.
func (sa *SA) countIn(bs *batchState, n int) bool {
	if bs != nil && !sa.limited {
		bs.packets++
		bs.bytes += uint64(n)
		return true
	}
	return sa.count(n)
}

// countBatch adds a batch's deferred counts with one atomic add. A run of
// BatchMax packets of at most 2^16 bytes stays far below acc's flush
// thresholds, so the packed fields cannot overflow.
func (sa *SA) countBatch(packets, bytes uint64) {
	if packets == 0 {
		return
	}
	if v := sa.use.acc.Add(packets<<accPkShift | bytes); v>>accPkShift >= accFlushPk || v&accByMask >= accFlushBy {
		sa.flushAcc()
	}
}

// reserveSeq reserves up to k consecutive outbound sequence numbers with one
// atomic operation and returns the first and how many it got (fewer than k
// when the sequence space runs out; never wraps).
func (sa *SA) reserveSeq(k int) (first uint64, got int) {
	for {
		cur := sa.outSeq.Load()
		avail := sa.seqMax - cur
		got = k
		if uint64(got) > avail {
			got = int(avail)
		}
		if got == 0 {
			return 0, 0
		}
		if sa.outSeq.CompareAndSwap(cur, cur+uint64(got)) {
			return cur + 1, got
		}
	}
}

// EncryptBatch protects each packet of pkts in place, in order, exactly as
// EncryptWith(s, ...) would one after the other: same checks, same bytes
// written, same sequence numbers (consecutive over the packets that pass
// the checks), same errors. errs must be at least as long as pkts; errs[i]
// is nil and pkts[i].Off, pkts[i].N bound the protected packet, or errs[i]
// is the error EncryptWith would return and pkts[i] and its frame are
// unchanged. It returns how many packets it protected. s may be nil (the
// SA's pool). SAs with packet or byte lifetime limits count every packet
// on its own, as EncryptWith does, so that the hard limit falls on the same
// packet. It does not allocate.
func (sa *SA) EncryptBatch(s *Scratch, pkts []Packet, errs []error) int {
	errs = errs[:len(pkts)]
	done := 0
	for len(pkts) > 0 {
		k := min(len(pkts), BatchMax)
		done += sa.encryptRun(s, pkts[:k], errs[:k])
		pkts, errs = pkts[k:], errs[k:]
	}
	return done
}

func (sa *SA) encryptRun(sc *Scratch, pkts []Packet, errs []error) int {
	if sa.limited {
		done := 0
		for i := range pkts {
			p := &pkts[i]
			off, n, err := sa.encrypt(sc, p.Frame, p.Off, p.N)
			if err == nil {
				p.Off, p.N = off, n
				done++
			}
			errs[i] = err
		}
		return done
	}
	var ins [BatchMax]inner
	valid := 0
	for i := range pkts {
		p := &pkts[i]
		errs[i] = sa.checkOut(p.Frame, p.Off, p.N, &ins[i])
		if errs[i] == nil {
			valid++
		}
	}
	if valid == 0 {
		return 0
	}
	var seq uint64
	var got int
	st := sa.refused()
	if st == 0 {
		seq, got = sa.reserveSeq(valid)
	}
	s := sa.scratchFor(sc)
	if s == nil {
		s = sa.getScratch()
		defer sa.putScratch(s)
	}
	var bytes uint64
	done := 0
	for i := range pkts {
		if errs[i] != nil {
			continue
		}
		switch {
		case st != 0:
			errs[i] = refusal(st)
			continue
		case done == got:
			errs[i] = ErrSeqOverflow
			continue
		}
		p := &pkts[i]
		bytes += uint64(ins[i].payload(sa.p.Mode, p.N))
		p.Off, p.N = sa.protect(s, p.Frame, p.Off, p.N, &ins[i], seq)
		seq++
		done++
	}
	sa.countBatch(uint64(done), bytes)
	return done
}

// DecryptBatch verifies and removes the SA's protection from each packet of
// pkts in place, in order, filling res[i] exactly as DecryptWith(s, ...)
// would one after the other: same verdicts (the replay window sees each
// packet accepted before the next is checked, ESN inference included), same
// decapsulated bounds. res must be at least as long as pkts. The replay
// window is held for a run of up to BatchMax packets (see replay.Batch):
// other goroutines accepting packets of this SA wait for the run, and an
// OnSoftExpire callback that runs meanwhile must not use the SA's window. s may be nil (the SA's pool). It does not allocate.
func (sa *SA) DecryptBatch(s *Scratch, pkts []Packet, res []Result) {
	res = res[:len(pkts)]
	for len(pkts) > 0 {
		k := min(len(pkts), BatchMax)
		sa.decryptRun(s, pkts[:k], nil, res[:k])
		pkts, res = pkts[k:], res[k:]
	}
}

// DecryptParsedBatch is DecryptBatch for a caller that already has
// ParseOuter's VerdictOK answer outers[i] for each packet (pkts[i].N is then
// not read), saving the second parse. outers must be at least as long as
// pkts.
func (sa *SA) DecryptParsedBatch(s *Scratch, pkts []Packet, outers []Outer, res []Result) {
	res, outers = res[:len(pkts)], outers[:len(pkts)]
	for len(pkts) > 0 {
		k := min(len(pkts), BatchMax)
		sa.decryptRun(s, pkts[:k], outers[:k], res[:k])
		pkts, outers, res = pkts[k:], outers[k:], res[k:]
	}
}

func (sa *SA) decryptRun(sc *Scratch, pkts []Packet, outers []Outer, res []Result) {
	bs := batchState{s: sa.scratchFor(sc)}
	if bs.s == nil {
		bs.s = sa.getScratch()
		defer sa.putScratch(bs.s)
	}
	var o Outer
	sa.win.Begin(&bs.win)
	for i := range pkts {
		p, r := &pkts[i], &res[i]
		*r = Result{}
		if outers != nil {
			sa.decryptParsed(sc, p.Frame, p.Off, &outers[i], r, &bs)
			continue
		}
		if p.Off < 0 || p.N < 0 || p.Off+p.N > len(p.Frame) {
			r.Verdict = VerdictMalformed
			continue
		}
		if v := ParseOuter(p.Frame[p.Off:p.Off+p.N], sa.p.EncapDstPort, &o); v != VerdictOK {
			r.Verdict = v
			continue
		}
		sa.decryptParsed(sc, p.Frame, p.Off, &o, r, &bs)
	}
	bs.win.End()
	sa.countBatch(bs.packets, bs.bytes)
}
