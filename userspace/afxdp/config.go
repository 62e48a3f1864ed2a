package afxdp

import (
	"errors"
	"fmt"
)

// BindMode says how a socket is bound to its queue.
type BindMode int

// Bind modes. BindAuto tries zero-copy and falls back to copy; the bound
// socket reports BindZeroCopy or BindCopy.
const (
	BindAuto     BindMode = iota // zero-copy where the driver has it, copy otherwise
	BindCopy                     // XDP_COPY: the kernel copies packets into the UMEM
	BindZeroCopy                 // XDP_ZEROCOPY: the driver DMAs into the UMEM; fail if it cannot
)

// String returns "auto", "copy" or "zero-copy".
func (m BindMode) String() string {
	switch m {
	case BindAuto:
		return "auto"
	case BindCopy:
		return "copy"
	case BindZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("BindMode(%d)", int(m))
}

// Defaults used for zero fields of Config.
const (
	DefaultFrameSize  = 2048
	DefaultFrameCount = 4096
	DefaultRingSize   = 2048
)

// PacketHeadroom is the headroom the kernel always leaves in front of a
// received packet (XDP_PACKET_HEADROOM), in addition to Config.Headroom.
const PacketHeadroom = 256

// ErrConfig is wrapped by every error Open returns for a bad Config.
var ErrConfig = errors.New("invalid AF_XDP config")

// Config describes one AF_XDP socket bound to one queue of one link, with
// its own UMEM shared by its rx and tx rings. Zero fields take the defaults.
type Config struct {
	// Ifindex and Queue select the link and its rx/tx queue.
	Ifindex int
	Queue   int

	// FrameSize is the size of a UMEM frame: 2048 or 4096 (aligned chunk
	// mode). One frame holds one packet plus its headroom.
	FrameSize int
	// FrameCount is the number of frames in the UMEM (at least 2).
	FrameCount int
	// Headroom is extra UMEM headroom in bytes: received packets start
	// PacketHeadroom+Headroom bytes into their frame, and Alloc hands out
	// frames with the same offset, so the application can prepend that many
	// bytes (an outer IP header, ESP, UDP encapsulation) without copying.
	Headroom int

	// Ring sizes in descriptors, powers of two. The fill ring is filled
	// with min(FillRingSize, FrameCount) frames at Open; the other frames
	// stay on the free list for Alloc.
	RxRingSize, TxRingSize, FillRingSize, CompletionRingSize int

	// Mode chooses copy or zero-copy; see BindMode.
	Mode BindMode

	// Accounting tracks and checks the place of every frame (tests and
	// debugging; it costs a few ns per packet). See FrameAccounting.
	Accounting bool
}

func (c Config) withDefaults() Config {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.FrameCount == 0 {
		c.FrameCount = DefaultFrameCount
	}
	for _, p := range []*int{&c.RxRingSize, &c.TxRingSize, &c.FillRingSize, &c.CompletionRingSize} {
		if *p == 0 {
			*p = DefaultRingSize
		}
	}
	return c
}

func (c Config) validate() error {
	if c.Ifindex <= 0 {
		return fmt.Errorf("%w: ifindex %d: give the index of an existing link", ErrConfig, c.Ifindex)
	}
	if c.Queue < 0 {
		return fmt.Errorf("%w: queue %d: must be >= 0", ErrConfig, c.Queue)
	}
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return fmt.Errorf("%w: frame size %d: must be 2048 or 4096", ErrConfig, c.FrameSize)
	}
	if c.FrameCount < 2 || c.FrameCount > 1<<20 {
		return fmt.Errorf("%w: frame count %d: must be between 2 and %d", ErrConfig, c.FrameCount, 1<<20)
	}
	if c.Headroom < 0 || c.Headroom+PacketHeadroom+64 > c.FrameSize {
		return fmt.Errorf("%w: headroom %d: must be between 0 and %d for %d-byte frames (frame size - %d kernel headroom - 64)",
			ErrConfig, c.Headroom, c.FrameSize-PacketHeadroom-64, c.FrameSize, PacketHeadroom)
	}
	for _, r := range []struct {
		name string
		n    int
	}{{"rx", c.RxRingSize}, {"tx", c.TxRingSize}, {"fill", c.FillRingSize}, {"completion", c.CompletionRingSize}} {
		if r.n < 1 || r.n > 1<<20 || r.n&(r.n-1) != 0 {
			return fmt.Errorf("%w: %s ring size %d: must be a power of two up to %d", ErrConfig, r.name, r.n, 1<<20)
		}
	}
	switch c.Mode {
	case BindAuto, BindCopy, BindZeroCopy:
	default:
		return fmt.Errorf("%w: bind mode %d: use BindAuto, BindCopy or BindZeroCopy", ErrConfig, int(c.Mode))
	}
	return nil
}
