package replay

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// rfcInfer is RFC 4303 Appendix A2.2 written out as the RFC states it, for
// a window of w packets whose highest accepted number is top. In case B
// with Th = 0 the RFC's Th - 1 does not exist; the only number the low bits
// can then stand for is Th's (ahead of the window).
func rfcInfer(top uint64, w uint32, seql uint32) uint64 {
	tl, th := uint32(top), uint32(top>>32)
	var seqh uint32
	if tl >= w-1 { // Case A: window within one sub-space
		if seql >= tl-w+1 {
			seqh = th
		} else {
			seqh = th + 1
		}
	} else { // Case B: window spans two sub-spaces
		if seql >= tl-w+1 { // mod 2^32
			if th == 0 {
				seqh = 0
			} else {
				seqh = th - 1
			}
		} else {
			seqh = th
		}
	}
	return uint64(seqh)<<32 | uint64(seql)
}

// TestESNAgainstRFCModel drives windows of sizes that are and are not
// multiples of 64 across the 2^32 boundary (and at the start of the
// number space) with in-order, reordered, duplicated, old and jumping
// packets, through Check/Accept and through Batches, and compares every
// answer with a model: RFC 4303 Appendix A2.2 inference plus a set of
// received numbers. An ICV only verifies when the inferred high bits are
// the sender's (the high bits are authenticated), so a packet whose number
// was inferred wrongly is dropped and must not move the window.
func TestESNAgainstRFCModel(t *testing.T) {
	for _, size := range []uint32{1, 17, 63, 64, 65, 100, 1000, 4097} {
		for _, start := range []uint64{0, 1<<32 - 3*uint64(size) - 10, 5<<32 - 7} {
			t.Run(fmt.Sprintf("w%d/start%#x", size, start), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(size), start))
				w, _ := New(size, true, start)
				bw, _ := New(size, true, start)
				var b Batch
				ref := &reference{size: size, top: start, seen: map[uint64]bool{}}
				next := start + 1
				var sent []uint64
				k := 0 // packets fed, for the batch boundaries
				var accepted, refused int
				for i := range 4000 {
					var s uint64
					switch r := rng.IntN(100); {
					case r < 70 || len(sent) == 0:
						s = next
						next++
					case r < 80:
						s = sent[len(sent)-1-rng.IntN(min(len(sent), 3*int(size)+5))] // duplicate
					case r < 90:
						s = ref.top - uint64(rng.IntN(int(size)+2)) // around the window's left edge
					case r < 95:
						next += uint64(rng.IntN(2*int(size) + 3)) // a jump
						s = next
						next++
					default:
						s = ref.top - uint64(size) - uint64(rng.IntN(1<<20)) // far too old
					}
					if s == 0 || s > ref.top+1<<31 {
						continue
					}
					sent = append(sent, s)
					low := uint32(s)

					want := rfcInfer(ref.top, size, low)
					accept := want == s && ref.recv(s) // the ICV verifies only with the right high bits

					seq, err := w.Check(low)
					if seq != want {
						t.Fatalf("packet %d (seq %#x, top %#x): Check infers %#x, RFC says %#x", i, s, ref.top, seq, want)
					}
					if err == nil && seq == s {
						err = w.Accept(seq)
					}
					if accept {
						accepted++
					} else {
						refused++
					}
					if got := err == nil && seq == s; got != accept {
						t.Fatalf("packet %d (seq %#x): window accepts %v (%v), model %v", i, s, got, err, accept)
					}

					if k%8 == 0 {
						bw.Begin(&b)
					}
					bseq, berr := b.Check(low)
					if berr == nil && bseq == s {
						berr = b.Accept(bseq)
					}
					if k%8 == 7 {
						b.End()
					}
					k++
					if got := berr == nil && bseq == s; got != accept || bseq != want {
						t.Fatalf("packet %d (seq %#x): batch accepts %v (inferred %#x), model %v (%#x)", i, s, got, bseq, accept, want)
					}
				}
				if k%8 != 0 {
					b.End()
				}
				if accepted < 2000 || refused < 300 || start != 0 && ref.top>>32 == start>>32 {
					t.Fatalf("a weak run: %d accepted, %d refused, top %#x from %#x", accepted, refused, ref.top, start)
				}
				if w.Top() != ref.top || bw.Top() != ref.top {
					t.Fatalf("top %#x / batch %#x, model %#x", w.Top(), bw.Top(), ref.top)
				}
			})
		}
	}
}
