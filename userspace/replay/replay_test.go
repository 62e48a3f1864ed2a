package replay

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func mustNew(t testing.TB, size uint32, esn bool, top uint64) *Window {
	t.Helper()
	w, err := New(size, esn, top)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// recv runs check+accept as a receiver whose ICV always verifies.
func recv(w *Window, low uint32) (uint64, error) {
	seq, err := w.Check(low)
	if err != nil {
		return seq, err
	}
	return seq, w.Accept(seq)
}

func TestWindowBasics(t *testing.T) {
	for _, size := range []uint32{32, 64, 100, 1024, 4096} {
		w := mustNew(t, size, false, 0)
		if _, err := recv(w, 0); !errors.Is(err, ErrZeroSeq) {
			t.Fatalf("size %d: seq 0: got %v, want ErrZeroSeq", size, err)
		}
		for s := uint32(1); s <= 10; s++ {
			if _, err := recv(w, s); err != nil {
				t.Fatalf("size %d: seq %d: %v", size, s, err)
			}
		}
		if _, err := recv(w, 5); !errors.Is(err, ErrReplay) {
			t.Fatalf("size %d: duplicate 5: got %v", size, err)
		}
		// Jump far ahead, then the left edge: top-size+1 is inside, top-size is not.
		top := uint32(10 + 3*size)
		if _, err := recv(w, top); err != nil {
			t.Fatal(err)
		}
		if _, err := recv(w, top-size+1); err != nil {
			t.Fatalf("size %d: left edge inside: %v", size, err)
		}
		if _, err := recv(w, top-size); !errors.Is(err, ErrReplay) {
			t.Fatalf("size %d: just left of window: got %v", size, err)
		}
		// Every number between edge and top is new exactly once.
		for s := top - size + 2; s < top; s++ {
			if _, err := recv(w, s); err != nil {
				t.Fatalf("size %d: seq %d: %v", size, s, err)
			}
			if _, err := recv(w, s); !errors.Is(err, ErrReplay) {
				t.Fatalf("size %d: seq %d twice: %v", size, s, err)
			}
		}
		if w.Top() != uint64(top) {
			t.Fatalf("top %d, want %d", w.Top(), top)
		}
	}
}

// TestCheckDoesNotUpdate: a packet that passed Check but failed its ICV (no
// Accept) leaves the window untouched, and the genuine packet later passes.
func TestCheckDoesNotUpdate(t *testing.T) {
	w := mustNew(t, 64, false, 0)
	for i := 0; i < 3; i++ {
		if _, err := w.Check(1000); err != nil {
			t.Fatal(err)
		}
	}
	if w.Top() != 0 {
		t.Fatalf("Check moved the window to %d", w.Top())
	}
	if _, err := recv(w, 5); err != nil {
		t.Fatalf("genuine packet after forged ones: %v", err)
	}
}

func TestAcceptRechecks(t *testing.T) {
	w := mustNew(t, 64, false, 0)
	s1, err1 := w.Check(7)
	s2, err2 := w.Check(7)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if err := w.Accept(s1); err != nil {
		t.Fatal(err)
	}
	if err := w.Accept(s2); !errors.Is(err, ErrReplay) {
		t.Fatalf("second Accept of 7: got %v, want ErrReplay", err)
	}
}

func TestJumpClearsWholeRing(t *testing.T) {
	w := mustNew(t, 128, false, 0)
	for s := uint32(1); s <= 128; s++ {
		recv(w, s)
	}
	// A jump of many ring lengths: old bits must not alias into the new window.
	if _, err := recv(w, 128+64*100); err != nil {
		t.Fatal(err)
	}
	for s := uint32(128 + 64*100 - 127); s < 128+64*100; s++ {
		if _, err := recv(w, s); err != nil {
			t.Fatalf("seq %d after jump: %v", s, err)
		}
	}
}

func TestESNWrapForward(t *testing.T) {
	const size = 64
	w := mustNew(t, size, true, 1<<32-10)
	// Around the wrap: low numbers belong to the next subspace.
	for _, c := range []struct {
		low  uint32
		want uint64
	}{
		{1<<32 - 5, 1<<32 - 5},
		{2, 1<<32 + 2},
		{0, 1 << 32}, // low 0 is legal with ESN once wrapped
		{1<<32 - 3, 1<<32 - 3},
	} {
		seq, err := recv(w, c.low)
		if err != nil || seq != c.want {
			t.Fatalf("low %#x: seq %#x err %v, want %#x", c.low, seq, err, c.want)
		}
	}
	// The window spans the wrap: a duplicate from before it is caught.
	if seq, err := recv(w, 1<<32-5); !errors.Is(err, ErrReplay) || seq != 1<<32-5 {
		t.Fatalf("duplicate pre-wrap packet: seq %#x err %v", seq, err)
	}
	if _, err := recv(w, 70); err != nil {
		t.Fatal(err)
	}
	// Top 2^32+70 with a 64-packet window lies inside one subspace: per
	// RFC 4303 App. A a low number above the window is read as far ahead.
	if seq := w.Infer(1<<32 - 1); seq != 1<<32|(1<<32-1) {
		t.Fatalf("Infer(0xffffffff) = %#x", seq)
	}
}

func TestESNWrapBackward(t *testing.T) {
	// Top just after a wrap: the window spans it, so high low-numbers are
	// late packets of the previous subspace.
	w := mustNew(t, 64, true, 5<<32|3)
	seq, err := recv(w, 0xfffffff0)
	if err != nil || seq != 4<<32|0xfffffff0 {
		t.Fatalf("late packet before wrap: seq %#x err %v", seq, err)
	}
	if w.Top() != 5<<32|3 {
		t.Fatalf("late packet moved top to %#x", w.Top())
	}
	// Far left of the window: inferred into the next subspace (App. A).
	if seq := w.Infer(0x80000000); seq != 5<<32|0x80000000 {
		t.Fatalf("Infer(0x80000000) = %#x", seq)
	}
}

func TestESNZero(t *testing.T) {
	w := mustNew(t, 32, true, 0)
	if _, err := recv(w, 0); !errors.Is(err, ErrZeroSeq) {
		t.Fatalf("ESN seq 0 before any wrap: %v", err)
	}
}

func TestDisabled(t *testing.T) {
	w := mustNew(t, 0, false, 0)
	for i := 0; i < 3; i++ {
		if _, err := recv(w, 9); err != nil {
			t.Fatalf("replay-window 0 must not reject duplicates: %v", err)
		}
	}
	if _, err := recv(w, 0); !errors.Is(err, ErrZeroSeq) {
		t.Fatalf("seq 0: %v", err)
	}
	// ESN with no window still infers the high word from the top.
	w = mustNew(t, 0, true, 1<<32-2)
	if seq, _ := recv(w, 3); seq != 1<<32+3 {
		t.Fatalf("ESN without window: %#x", seq)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(MaxSize+1, false, 0); err == nil {
		t.Fatal("oversized window accepted")
	}
	if _, err := New(64, false, 1<<32); err == nil {
		t.Fatal("64-bit top without ESN accepted")
	}
}

// TestConcurrent: several goroutines offer overlapping sequence numbers,
// half of them per packet, half in Batches of 8; every number is accepted
// exactly once.
func TestConcurrent(t *testing.T) {
	const n, workers = 20000, 4
	w := mustNew(t, 4096, false, 0)
	var accepted [n + 1]atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g%2 == 1 {
				var b Batch
				for s := uint32(1); s <= n; s += 8 {
					w.Begin(&b)
					for x := s; x < s+8 && x <= n; x++ {
						if seq, err := b.Check(x); err == nil && b.Accept(seq) == nil {
							accepted[x].Add(1)
						}
					}
					b.End()
				}
				return
			}
			for s := uint32(1); s <= n; s++ {
				if _, err := recv(w, s); err == nil {
					accepted[s].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for s := 1; s <= n; s++ {
		if c := accepted[s].Load(); c != 1 {
			t.Fatalf("seq %d accepted %d times", s, c)
		}
	}
}

// reference is a plain model of the window (a set), for the fuzzer.
type reference struct {
	size uint32
	top  uint64
	seen map[uint64]bool
}

func (r *reference) recv(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if r.size > 0 && seq <= r.top && (r.top-seq >= uint64(r.size) || r.seen[seq]) {
		return false
	}
	r.seen[seq] = true
	if seq > r.top {
		r.top = seq
	}
	return true
}

func FuzzWindow(f *testing.F) {
	f.Add(uint16(64), []byte{1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0})
	f.Add(uint16(32), []byte{0xff, 0, 0, 0, 1, 0, 0, 0, 0x40, 0, 0, 0})
	f.Add(uint16(4096), []byte{0, 0x10, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0})
	f.Fuzz(func(t *testing.T, size uint16, ops []byte) {
		sz := uint32(size) % 5000
		w, err := New(sz, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		bw, _ := New(sz, false, 0) // the same packets in Batches of 4
		var b Batch
		ref := &reference{size: sz, seen: map[uint64]bool{}}
		for i := 0; i+4 <= len(ops) && i < 4*512; i += 4 {
			low := uint32(ops[i]) | uint32(ops[i+1])<<8 | uint32(ops[i+2])<<16 | uint32(ops[i+3])<<24
			low %= 1 << 20
			_, err := recv(w, low)
			want := ref.recv(uint64(low))
			if want != (err == nil) {
				t.Fatalf("seq %d: window says %v, reference says accept=%v", low, err, want)
			}
			if i%16 == 0 {
				bw.Begin(&b)
			}
			seq, berr := b.Check(low)
			if berr == nil {
				berr = b.Accept(seq)
			}
			if i%16 == 12 || i+8 > len(ops) || i+4 >= 4*512 {
				b.End()
			}
			if want != (berr == nil) {
				t.Fatalf("seq %d: batch says %v, reference says accept=%v", low, berr, want)
			}
		}
	})
}

func BenchmarkInOrder(b *testing.B) {
	w := mustNew(b, 1024, true, 0)
	b.ReportAllocs()
	s := uint32(0)
	for b.Loop() {
		s++
		seq, _ := w.Check(s)
		w.Accept(seq)
	}
}

// BenchmarkContended: all GOMAXPROCS goroutines share one window, each
// taking distinct sequence numbers from a shared counter (the packets of one
// SA spread over several queues).
func BenchmarkContended(b *testing.B) {
	w := mustNew(b, 1024, true, 0)
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := next.Add(1)
			seq, err := w.Check(s)
			if err == nil {
				w.Accept(seq)
			}
		}
	})
}

// BenchmarkUncontendedParallel: one window per goroutine, the same work as
// BenchmarkContended without sharing; the difference is the contention cost.
func BenchmarkUncontendedParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := mustNew(b, 1024, true, 0)
		s := uint32(0)
		for pb.Next() {
			s++
			seq, _ := w.Check(s)
			w.Accept(seq)
		}
	})
}

// TestBatchMatchesAccept: a Batch's Check and Accept give the answers that
// the Window's Check and Accept per packet give, for a sequence with
// duplicates, a jump past the window, numbers left of it and the ESN wrap;
// with the window off too.
func TestBatchMatchesAccept(t *testing.T) {
	lows := []uint32{0xfffffffe, 0xffffffff, 0xffffffff, 0, 1, 2, 0xfffffff0, 1, 300, 3, 299, 236, 237, 300, 0x80000000, 301, 0}
	for _, size := range []uint32{0, 64, 1024} {
		for _, esn := range []bool{false, true} {
			one := mustNew(t, size, esn, 0xfffffff0)
			batch := mustNew(t, size, esn, 0xfffffff0)
			var b Batch
			batch.Begin(&b)
			for i, low := range lows {
				s1, e1 := recv(one, low)
				s2, e2 := b.Check(low)
				if e2 == nil {
					e2 = b.Accept(s2)
				}
				if s1 != s2 || !errors.Is(e2, e1) || (e1 == nil) != (e2 == nil) {
					t.Fatalf("size %d esn %v packet %d (%#x): per packet %#x %v, locked %#x %v", size, esn, i, low, s1, e1, s2, e2)
				}
			}
			b.End()
			if one.Top() != batch.Top() {
				t.Fatalf("size %d esn %v: tops %#x and %#x", size, esn, one.Top(), batch.Top())
			}
		}
	}
}

// TestBatchRunsMatchAccept: runs of 5 packets through Batches leave the
// window exactly as per-packet Accepts do (every Check around the top
// agrees after each run), over in-order traffic crossing many bitmap
// words, reordering, duplicates, gaps and jumps larger than the ring.
func TestBatchRunsMatchAccept(t *testing.T) {
	var lows []uint32
	x := uint32(1)
	for i := 0; i < 3000; i++ {
		switch {
		case i%97 == 0:
			x += 5000 // past any window: clears the whole ring
		case i%13 == 0:
			lows = append(lows, x-20, x) // late packet, then a duplicate
		case i%7 == 0:
			x += 70 // skips a word
		}
		x++
		lows = append(lows, x)
		if i%5 == 0 {
			lows = append(lows, x+3, x+1, x+2) // reordered
			x += 3
		}
	}
	for _, size := range []uint32{32, 64, 1024} {
		one := mustNew(t, size, true, 0)
		batch := mustNew(t, size, true, 0)
		var b Batch
		for start := 0; start < len(lows); start += 5 {
			batch.Begin(&b)
			for i := start; i < min(start+5, len(lows)); i++ {
				s1, e1 := recv(one, lows[i])
				s2, e2 := b.Check(lows[i])
				if e2 == nil {
					e2 = b.Accept(s2)
				}
				if s1 != s2 || e1 != e2 {
					t.Fatalf("size %d packet %d (%d): per packet %d %v, batch %d %v", size, i, lows[i], s1, e1, s2, e2)
				}
			}
			b.End()
			top := one.Top()
			if batch.Top() != top {
				t.Fatalf("size %d after packet %d: tops %d and %d", size, start, top, batch.Top())
			}
			for s := top - uint64(size) - 70; s <= top+1; s++ {
				_, e1 := one.Check(uint32(s))
				_, e2 := batch.Check(uint32(s))
				if e1 != e2 {
					t.Fatalf("size %d after packet %d: Check(%d) per packet %v, batch %v", size, start, s, e1, e2)
				}
			}
		}
	}
}

// BenchmarkBatchInOrder: in-order packets through Batches of 64, one op
// per packet; compare with BenchmarkInOrder's per-packet Check+Accept.
func BenchmarkBatchInOrder(b *testing.B) {
	w := mustNew(b, 1024, true, 0)
	b.ReportAllocs()
	s := uint32(0)
	var bt Batch
	w.Begin(&bt)
	for b.Loop() {
		s++
		if s%64 == 0 {
			bt.End()
			w.Begin(&bt)
		}
		seq, _ := bt.Check(s)
		bt.Accept(seq)
	}
	bt.End()
}
