// Package replay is the IPsec anti-replay window of RFC 4303 §3.4.3, kept as
// an RFC 6479 block bitmap (a ring of 64-bit words: advancing the window
// clears whole words, nothing is shifted), with the extended sequence number
// (ESN) high-word inference of RFC 4303 Appendix A.
//
// A receiver uses it in two steps around the integrity check:
//
//	seq, err := w.Check(seqLow) // cheap: duplicate / too old / zero?
//	... verify the ICV, using seq's high 32 bits for ESN ...
//	err = w.Accept(seq)         // re-checks, then records seq
//
// so a forged packet never moves the window.
//
// Concurrency: a Window is safe for concurrent use by any number of
// goroutines (the packets of one SA may arrive on several queues). Check
// takes no lock: it reads the window with atomic loads and may, while another
// goroutine advances the window, let a duplicate through; Accept therefore
// re-checks under the window's mutex, which it holds for O(words cleared),
// and is the only authority. Check never rejects a packet that Accept would
// accept.
//
// A goroutine with several packets of one SA in hand can take the window
// once for all of them (Begin, then Batch.Check and Batch.Accept, End): the
// same answers, without an atomic read-modify-write per in-order packet.
package replay

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// MaxSize is the largest window this package accepts, in packets.
const MaxSize = 1 << 16

// ErrReplay says the sequence number was already accepted or lies left of
// the window (XfrmInStateSeqError).
var ErrReplay = errors.New("replayed or too old sequence number")

// ErrZeroSeq says the sequence number is 0, which no sender may use
// (RFC 4303 §3.3.3: the first packet carries 1).
var ErrZeroSeq = errors.New("sequence number 0")

// Window is one SA's anti-replay state. The zero value is not usable; call
// New.
type Window struct {
	size uint32 // window width in packets; 0 = no replay protection
	esn  bool
	mask uint64 // number of words in the ring - 1 (power of two - 1)

	top   atomic.Uint64   // highest accepted sequence number (64-bit)
	words []atomic.Uint64 // ring of bitmap words, word i holds seq with (seq>>6)&mask == i

	mu sync.Mutex // serialises Accept
}

// New returns a window of size packets (0 disables replay protection, as
// Linux's replay-window 0; otherwise 1..MaxSize, RFC 4303 asks for at least
// 32 and 64 by default). With esn the window infers the high 32 bits of
// 64-bit sequence numbers. top is the highest sequence number already
// received (xfrm's replay-seq/replay-seq-hi), 0 for a new SA.
func New(size uint32, esn bool, top uint64) (*Window, error) {
	if size > MaxSize {
		return nil, fmt.Errorf("replay window of %d packets is too large (at most %d)", size, MaxSize)
	}
	if !esn && top > 0xffffffff {
		return nil, fmt.Errorf("replay top %#x needs ESN (above 2^32-1)", top)
	}
	w := &Window{size: size, esn: esn}
	if size > 0 {
		// One word more than the window needs, so the word being entered
		// never aliases a word still inside the window (RFC 6479 §2).
		n := uint64(1) << bits.Len64(uint64(size+63)/64)
		w.mask = n - 1
		w.words = make([]atomic.Uint64, n)
	}
	w.top.Store(top)
	return w, nil
}

// Size returns the window width in packets (0: replay protection off).
func (w *Window) Size() uint32 { return w.size }

// Top returns the highest sequence number accepted so far.
func (w *Window) Top() uint64 { return w.top.Load() }

// Infer returns the full sequence number for the low 32 bits seqLow as
// received: seqLow itself without ESN, otherwise the 64-bit value RFC 4303
// Appendix A infers from the window's position (with the window off, the
// candidate nearest to the top).
func (w *Window) Infer(seqLow uint32) uint64 {
	return w.infer(seqLow, w.top.Load())
}

func (w *Window) infer(seqLow uint32, top uint64) uint64 {
	if !w.esn {
		return uint64(seqLow)
	}
	tl, th := uint32(top), uint32(top>>32)
	win := w.size
	if win == 0 {
		win = 1 << 31
	}
	bottom := tl - win + 1 // mod 2^32
	hi := th
	if tl >= win-1 {
		// The window lies within one 2^32 subspace.
		if seqLow < bottom {
			hi = th + 1
		}
	} else if seqLow >= bottom && th > 0 {
		// The window spans a wrap; seqLow is in its older part.
		hi = th - 1
	}
	return uint64(hi)<<32 | uint64(seqLow)
}

// Check infers the full sequence number of seqLow and reports whether it
// may be new: ErrZeroSeq for 0, ErrReplay for a duplicate or a number left
// of the window. It changes nothing; call Accept once the ICV verified.
func (w *Window) Check(seqLow uint32) (uint64, error) {
	top := w.top.Load()
	seq := w.infer(seqLow, top)
	return seq, w.check(seq, top)
}

func (w *Window) check(seq, top uint64) error {
	if seq == 0 {
		return ErrZeroSeq
	}
	if w.size == 0 || seq > top {
		return nil
	}
	if top-seq >= uint64(w.size) {
		return ErrReplay
	}
	if w.words[(seq>>6)&w.mask].Load()&(1<<(seq&63)) != 0 {
		return ErrReplay
	}
	return nil
}

// Accept records seq (as Check returned it, after its ICV verified),
// re-checking it under the window's lock: it returns ErrReplay if another
// packet with the same number got there first or the window moved past it.
func (w *Window) Accept(seq uint64) error {
	if w.size == 0 {
		if seq == 0 {
			return ErrZeroSeq
		}
		// Keep the top for ESN inference only.
		for {
			top := w.top.Load()
			if seq <= top || w.top.CompareAndSwap(top, seq) {
				return nil
			}
		}
	}
	w.mu.Lock()
	err := w.acceptLocked(seq) // cannot panic: no defer (~5 ns a packet)
	w.mu.Unlock()
	return err
}

// Batch is a Window held by one goroutine for a run of packets of its SA
// (Begin ... End): Check and Accept give exactly the answers the Window's
// Check and Accept would give for the same packets in the same order, but
// the run takes the window's lock once, and the bitmap word the top lies
// in and the top itself are kept in the Batch and published when the run
// leaves that word and at End, so an in-order packet costs no atomic
// read-modify-write. Until End, other goroutines' Check may miss the run's
// packets (it may always let a duplicate through) and their Accept waits
// for the lock; hold a Batch for one batch of packets, never across I/O.
// The zero value is not usable; a Batch must not be copied while in use.
type Batch struct {
	w      *Window
	top    uint64 // highest accepted so far, this run included
	idx    uint64 // word number (seq>>6) whose bits are cached in bits
	bits   uint64
	dirty  bool // bits differ from the ring's copy
	moved  bool // top differs from w.top
	locked bool
}

// Begin starts a run of packets on w in b, taking the window's lock (a
// window of size 0 has no bitmap and needs no lock). Call End when done.
func (w *Window) Begin(b *Batch) {
	*b = Batch{w: w}
	if w.size != 0 {
		w.mu.Lock()
		b.locked = true
	}
	b.top = w.top.Load()
	if w.size != 0 {
		b.idx = b.top >> 6
		b.bits = w.words[b.idx&w.mask].Load()
	}
}

// Check is Window.Check as of the packets accepted in this run so far.
func (b *Batch) Check(seqLow uint32) (uint64, error) {
	seq := b.w.infer(seqLow, b.top)
	return seq, b.check(seq)
}

func (b *Batch) check(seq uint64) error {
	w := b.w
	if seq == 0 {
		return ErrZeroSeq
	}
	if w.size == 0 || seq > b.top {
		return nil
	}
	if b.top-seq >= uint64(w.size) {
		return ErrReplay
	}
	word := b.bits
	if seq>>6 != b.idx {
		word = w.words[(seq>>6)&w.mask].Load()
	}
	if word&(1<<(seq&63)) != 0 {
		return ErrReplay
	}
	return nil
}

// Accept is Window.Accept within the run: it records seq (as Check
// returned it, after its ICV verified) or returns why not.
func (b *Batch) Accept(seq uint64) error {
	w := b.w
	if err := b.check(seq); err != nil {
		return err
	}
	if seq > b.top {
		b.top, b.moved = seq, true
		if w.size == 0 {
			return nil
		}
		if newWord := seq >> 6; newWord != b.idx {
			// Publish the word being left, then clear the words entered
			// (the new top is published at End, after them).
			if b.dirty {
				w.words[b.idx&w.mask].Store(b.bits)
			}
			if newWord-b.idx > w.mask {
				for i := range w.words {
					w.words[i].Store(0)
				}
			} else {
				for i := b.idx + 1; i <= newWord; i++ {
					w.words[i&w.mask].Store(0)
				}
			}
			b.idx, b.bits, b.dirty = newWord, 0, false
		}
	}
	if w.size == 0 {
		return nil
	}
	if seq>>6 == b.idx {
		b.bits |= 1 << (seq & 63)
		b.dirty = true
		return nil
	}
	w.words[(seq>>6)&w.mask].Or(1 << (seq & 63))
	return nil
}

// End publishes the run's top word and top and releases the window.
func (b *Batch) End() {
	w := b.w
	if b.dirty {
		w.words[b.idx&w.mask].Store(b.bits)
	}
	if b.moved {
		if b.locked {
			w.top.Store(b.top)
		} else {
			// Window of size 0: other goroutines move the top without the
			// lock; only ever raise it.
			for {
				top := w.top.Load()
				if b.top <= top || w.top.CompareAndSwap(top, b.top) {
					break
				}
			}
		}
	}
	if b.locked {
		w.mu.Unlock()
	}
	*b = Batch{}
}

func (w *Window) acceptLocked(seq uint64) error {
	top := w.top.Load()
	if err := w.check(seq, top); err != nil {
		return err
	}
	if seq > top {
		// Clear the words entered between the old and the new top before
		// publishing the new top, so a concurrent Check never reads a stale
		// word as part of the new window.
		oldWord, newWord := top>>6, seq>>6
		if n := newWord - oldWord; n > w.mask {
			for i := range w.words {
				w.words[i].Store(0)
			}
		} else {
			for i := oldWord + 1; i <= newWord; i++ {
				w.words[i&w.mask].Store(0)
			}
		}
	}
	w.words[(seq>>6)&w.mask].Or(1 << (seq & 63))
	if seq > top {
		w.top.Store(seq)
	}
	return nil
}
