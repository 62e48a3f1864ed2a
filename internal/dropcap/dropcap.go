// Package dropcap captures packets the engine dropped, by reason, for an
// operator to look at with tshark or Wireshark.
//
// A Capture is off by default. While it is off, Record costs one atomic
// load and allocates nothing; the workers can call it for every drop.
// Run switches it on for a set of reasons (ipsec.Verdict: bad-icv, replay,
// ...) and drains it into a Sink until its context ends:
//
//   - a token bucket (Config.Rate packets/s, Config.Burst) limits what is
//     captured, so a flood of forged packets cannot turn the capture into
//     a second flood;
//   - a ring of Config.Slots preallocated slots of Config.SnapLen bytes
//     bounds memory (allocated when Run starts, released when it ends):
//     Record copies the frame into a free slot, or counts it as lost when
//     the ring is full;
//   - Run's goroutine hands each slot to the Sink: PcapSink writes a pcap
//     file; a control-socket stream sends Packet values as JSON events and
//     the client writes them with WritePacket.
//
// Frames are recorded as the worker holds them: Ethernet frames from the
// AF_XDP rx ring (pcap.LinkTypeEthernet). For a packet that failed its ICV
// the decryption may already have overwritten the payload in place (an
// AEAD clears what it failed to open); the outer IP and ESP/AH headers
// (SPI, sequence number) are intact, and they are what a drop is judged by.
package dropcap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Defaults for zero Config fields.
const (
	DefaultSlots   = 256
	DefaultSnapLen = 2048
	DefaultRate    = 100 // packets per second
	DefaultBurst   = 32
)

// ErrBusy: Run was called while another Run is capturing.
var ErrBusy = errors.New("a drop capture is already running")

// Config sizes a Capture. Zero fields take the defaults.
type Config struct {
	// Slots is the ring's size in packets; SnapLen the bytes kept of each
	// (the original length is recorded too).
	Slots, SnapLen int
	// Rate is the most packets per second captured on average, Burst the
	// most captured at once after a quiet period.
	Rate  float64
	Burst int
	// Now returns the time (time.Now when nil); tests set it.
	Now func() time.Time
}

// Reasons is a set of verdicts to capture.
type Reasons uint32

// ReasonSet returns the set holding vs.
func ReasonSet(vs ...ipsec.Verdict) Reasons {
	var r Reasons
	for _, v := range vs {
		r |= 1 << v
	}
	return r
}

// Has reports whether v is in the set.
func (r Reasons) Has(v ipsec.Verdict) bool { return v < ipsec.NumVerdicts && r&(1<<v) != 0 }

// DropReasons are the verdicts that drop a packet: every verdict but ok
// and dummy, and those that hand the packet to the kernel (fragment, ike,
// nat-keepalive, not-ipsec).
var DropReasons = ReasonSet(ipsec.VerdictNoState, ipsec.VerdictBadICV, ipsec.VerdictBadPadding,
	ipsec.VerdictBadSeq, ipsec.VerdictReplay, ipsec.VerdictMalformed, ipsec.VerdictExpired)

// ParseReasons reads a comma-separated list of verdict names ("bad-icv",
// "replay", ...) or "all" (DropReasons). The error names the valid words.
func ParseReasons(s string) (Reasons, error) {
	if s == "" || s == "all" {
		return DropReasons, nil
	}
	var r Reasons
	for _, w := range strings.Split(s, ",") {
		v, ok := ipsec.ParseVerdict(strings.TrimSpace(w))
		if !ok || !DropReasons.Has(v) {
			return 0, fmt.Errorf("unknown drop reason %q: want all or a comma-separated list of %s", w, strings.Join(DropReasons.Names(), ", "))
		}
		r |= 1 << v
	}
	return r, nil
}

// Names lists the set's verdict names.
func (r Reasons) Names() []string {
	var out []string
	for v := ipsec.Verdict(0); v < ipsec.NumVerdicts; v++ {
		if r.Has(v) {
			out = append(out, v.String())
		}
	}
	return out
}

// Stats count what a Capture did since it was made.
type Stats struct {
	Captured    uint64 // copied into the ring
	Written     uint64 // handed to a Sink without error
	RateLimited uint64 // refused by the token bucket
	RingFull    uint64 // refused because every slot was taken
}

// slot is one preallocated packet buffer.
type slot struct {
	ts      time.Time
	reason  ipsec.Verdict
	origLen int
	n       int
	buf     []byte
}

// Capture records dropped packets for Run to drain. Record is safe for
// concurrent use by any number of workers; one Run at a time.
type Capture struct {
	cfg Config

	// reasons is the set being captured; 0 when off. Record's fast path
	// reads only this.
	reasons atomic.Uint32
	running atomic.Bool

	mu     sync.Mutex // guards the bucket and the ring
	tokens float64
	last   time.Time
	slots  []slot
	head   int // next slot to drain
	count  int // slots filled, head included
	notify chan struct{}

	captured, written, rateLimited, ringFull atomic.Uint64
}

// New returns a Capture, off.
func New(cfg Config) *Capture {
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultSlots
	}
	if cfg.SnapLen <= 0 {
		cfg.SnapLen = DefaultSnapLen
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Capture{cfg: cfg, notify: make(chan struct{}, 1)}
}

// Record offers frame, dropped with verdict reason, to the capture. It
// returns whether the frame was copied. When the capture is off or the
// reason not selected it returns false at once without allocating.
func (c *Capture) Record(reason ipsec.Verdict, frame []byte) bool {
	r := c.reasons.Load()
	if r == 0 || !Reasons(r).Has(reason) {
		return false
	}
	return c.record(reason, frame)
}

func (c *Capture) record(reason ipsec.Verdict, frame []byte) bool {
	c.mu.Lock()
	if c.slots == nil { // Run ended between the load and the lock
		c.mu.Unlock()
		return false
	}
	now := c.cfg.Now()
	c.tokens = min(float64(c.cfg.Burst), c.tokens+now.Sub(c.last).Seconds()*c.cfg.Rate)
	c.last = now
	if c.tokens < 1 {
		c.mu.Unlock()
		c.rateLimited.Add(1)
		return false
	}
	if c.count == len(c.slots) {
		c.mu.Unlock()
		c.ringFull.Add(1)
		return false
	}
	c.tokens--
	s := &c.slots[(c.head+c.count)%len(c.slots)]
	s.ts, s.reason, s.origLen = now, reason, len(frame)
	s.n = copy(s.buf, frame)
	c.count++
	c.mu.Unlock()
	c.captured.Add(1)
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return true
}

// Stats returns the counters.
func (c *Capture) Stats() Stats {
	return Stats{Captured: c.captured.Load(), Written: c.written.Load(), RateLimited: c.rateLimited.Load(), RingFull: c.ringFull.Load()}
}

// Enabled returns the reasons being captured (0 when off).
func (c *Capture) Enabled() Reasons { return Reasons(c.reasons.Load()) }

// Packet is one captured packet as a Sink receives it. Data is valid only
// during the Sink's WritePacket call. As JSON (a control-socket event) it
// is {"time":..., "reason":"bad-icv", "orig_len":N, "data":"<base64>"}.
type Packet struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	OrigLen int       `json:"orig_len"`
	Data    []byte    `json:"data"`
}

// Sink receives captured packets from Run's goroutine.
type Sink interface {
	WritePacket(p Packet) error
	// Flush is called when the ring has been drained, so that a
	// buffered file is readable while the capture runs.
	Flush() error
}

// Run captures reasons (which must not be empty) until ctx ends, handing
// every captured packet to sink from the calling goroutine, then turns
// the capture off, drains what is left and returns. It returns ErrBusy
// when another Run is active, and the sink's first error (the capture is
// then off).
func (c *Capture) Run(ctx context.Context, reasons Reasons, sink Sink) error {
	if reasons == 0 {
		return fmt.Errorf("drop capture: no reason selected; want one of %s", strings.Join(DropReasons.Names(), ", "))
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrBusy
	}
	defer c.running.Store(false)

	c.mu.Lock()
	mem := make([]byte, c.cfg.Slots*c.cfg.SnapLen)
	c.slots = make([]slot, c.cfg.Slots)
	for i := range c.slots {
		c.slots[i].buf = mem[i*c.cfg.SnapLen : (i+1)*c.cfg.SnapLen : (i+1)*c.cfg.SnapLen]
	}
	c.head, c.count = 0, 0
	c.tokens, c.last = float64(c.cfg.Burst), c.cfg.Now()
	c.mu.Unlock()
	c.reasons.Store(uint32(reasons))

	stop := func() {
		c.reasons.Store(0)
		c.mu.Lock()
		c.slots = nil
		c.count = 0
		c.mu.Unlock()
	}
	for {
		select {
		case <-ctx.Done():
			c.reasons.Store(0)
			err := c.drain(sink)
			stop()
			return err
		case <-c.notify:
			if err := c.drain(sink); err != nil {
				stop()
				return err
			}
		}
	}
}

// drain hands every filled slot to sink, then flushes it. Slots are
// written outside the lock: Record only writes slots past head+count.
func (c *Capture) drain(sink Sink) error {
	for {
		c.mu.Lock()
		if c.count == 0 {
			c.mu.Unlock()
			break
		}
		s := &c.slots[c.head]
		c.mu.Unlock()
		err := sink.WritePacket(Packet{Time: s.ts, Reason: s.reason.String(), OrigLen: s.origLen, Data: s.buf[:s.n]})
		c.mu.Lock()
		c.head = (c.head + 1) % len(c.slots)
		c.count--
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("drop capture: %w", err)
		}
		c.written.Add(1)
	}
	if err := sink.Flush(); err != nil {
		return fmt.Errorf("drop capture: %w", err)
	}
	return nil
}
