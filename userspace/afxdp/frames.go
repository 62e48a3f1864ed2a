package afxdp

import (
	"errors"
	"fmt"
)

// FrameState is the place a UMEM frame is in; see the package documentation.
type FrameState uint8

// The places a frame can be.
const (
	FrameFree FrameState = iota // on the socket's free list
	FrameFill                   // on the fill ring or held by the kernel for rx
	FrameApp                    // owned by the application
	FrameTx                     // on the tx ring, in flight, or on the completion ring
	numFrameStates
)

// String returns the state's name.
func (s FrameState) String() string {
	switch s {
	case FrameFree:
		return "free"
	case FrameFill:
		return "fill"
	case FrameApp:
		return "app"
	case FrameTx:
		return "tx"
	}
	return fmt.Sprintf("FrameState(%d)", uint8(s))
}

// ErrFrameAccounting is returned by FrameAccounting when a frame was seen in
// a place it could not be (in two places at once) or frames are missing.
var ErrFrameAccounting = errors.New("frame accounting violated")

// ErrAccountingOff is returned by FrameAccounting on a socket opened without
// Config.Accounting.
var ErrAccountingOff = errors.New("frame accounting is off (set Config.Accounting)")

// FrameCounts is how many frames are in each place, indexed by FrameState.
type FrameCounts [numFrameStates]int

// Total returns the number of frames counted in all places.
func (c FrameCounts) Total() int {
	t := 0
	for _, n := range c {
		t += n
	}
	return t
}

// String renders the counts as "free=.. fill=.. app=.. tx=..".
func (c FrameCounts) String() string {
	return fmt.Sprintf("free=%d fill=%d app=%d tx=%d", c[FrameFree], c[FrameFill], c[FrameApp], c[FrameTx])
}

// frames is the UMEM frame allocator: a stack of free frame addresses, and,
// in accounting mode, the state of every frame.
type frames struct {
	free      []uint64 // len is the number of free frames; cap is the frame count
	count     int
	frameSize uint64
	shift     uint // log2(frameSize)

	state      []FrameState // nil unless accounting
	counts     FrameCounts
	violations int
	first      string // the first violation, for the error message
}

func newFrames(count, frameSize int, accounting bool) *frames {
	f := &frames{
		free:      make([]uint64, count),
		count:     count,
		frameSize: uint64(frameSize),
	}
	for 1<<f.shift < frameSize {
		f.shift++
	}
	// Lowest addresses on top of the stack: the first frames handed out are
	// the first pages of the UMEM.
	for i := range f.free {
		f.free[i] = uint64(count-1-i) << f.shift
	}
	if accounting {
		f.state = make([]FrameState, count)
		f.counts[FrameFree] = count
	}
	return f
}

// base returns the address of the frame that holds UMEM address addr.
func (f *frames) base(addr uint64) uint64 { return addr &^ (f.frameSize - 1) }

// pop takes a free frame; ok is false when the free list is empty.
func (f *frames) pop() (addr uint64, ok bool) {
	n := len(f.free)
	if n == 0 {
		return 0, false
	}
	addr = f.free[n-1]
	f.free = f.free[:n-1]
	return addr, true
}

// push returns the frame at base address addr to the free list. The stack
// can never overflow unless a frame is freed twice; accounting mode reports
// that, and without it the extra entry is dropped rather than written past
// the frame count.
func (f *frames) push(addr uint64) {
	if len(f.free) == cap(f.free) {
		f.violate(addr, FrameFree, FrameFree)
		return
	}
	f.free = append(f.free, addr)
}

// move records that the frame holding addr went from one place to another.
// It is a no-op unless accounting is on.
func (f *frames) move(addr uint64, from, to FrameState) {
	if f.state == nil {
		return
	}
	idx := addr >> f.shift
	if idx >= uint64(len(f.state)) {
		f.violate(addr, from, to)
		return
	}
	if got := f.state[idx]; got != from {
		f.violate(addr, from, to)
		// Keep the counts consistent with the states so later checks
		// still mean something.
		f.counts[got]--
	} else {
		f.counts[from]--
	}
	f.state[idx] = to
	f.counts[to]++
}

func (f *frames) violate(addr uint64, from, to FrameState) {
	f.violations++
	if f.first != "" {
		return
	}
	idx := addr >> f.shift
	got := "outside the UMEM"
	if f.state != nil && idx < uint64(len(f.state)) {
		got = f.state[idx].String()
	}
	f.first = fmt.Sprintf("frame %#x moved %s->%s but was %s", f.base(addr), from, to, got)
}

// check verifies the accounting: no violation, the counts add up to the
// frame count, and the free list holds exactly the FrameFree frames.
func (f *frames) check() (FrameCounts, error) {
	if f.state == nil {
		return FrameCounts{}, ErrAccountingOff
	}
	var recount FrameCounts
	for _, s := range f.state {
		recount[s]++
	}
	switch {
	case f.violations > 0:
		return recount, fmt.Errorf("%w: %d violations, first: %s", ErrFrameAccounting, f.violations, f.first)
	case recount != f.counts:
		return recount, fmt.Errorf("%w: running counts %v, states say %v", ErrFrameAccounting, f.counts, recount)
	case recount.Total() != f.count:
		return recount, fmt.Errorf("%w: %d frames accounted, UMEM has %d", ErrFrameAccounting, recount.Total(), f.count)
	case recount[FrameFree] != len(f.free):
		return recount, fmt.Errorf("%w: %d frames marked free, free list holds %d", ErrFrameAccounting, recount[FrameFree], len(f.free))
	}
	for _, a := range f.free {
		if s := f.state[a>>f.shift]; s != FrameFree {
			return recount, fmt.Errorf("%w: frame %#x on the free list is %s", ErrFrameAccounting, a, s)
		}
	}
	return recount, nil
}
