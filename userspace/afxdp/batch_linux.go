package afxdp

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInvalidDesc is returned by Transmit for a descriptor the kernel would
// reject: outside the UMEM, empty, crossing its frame's end, or with options.
var ErrInvalidDesc = errors.New("invalid tx descriptor")

// Receive moves up to len(batch) received packets from the rx ring into
// batch and returns how many. The frames now belong to the application:
// each must later go to Transmit or Release. Receive never blocks; when it
// finds nothing and the kernel asked for a wakeup on the fill ring, it kicks
// the kernel with recvfrom (see Wait to block).
func (s *Socket) Receive(batch []Desc) int {
	n := s.rx.consAvail(uint32(len(batch)))
	if n == 0 {
		if s.fill.needWakeup() {
			s.kickRx()
		}
		return 0
	}
	for i := uint32(0); i < n; i++ {
		batch[i] = *s.rx.consSlot(i)
	}
	s.rx.consRelease(n)
	if s.frames.state != nil {
		for i := range batch[:n] {
			s.frames.move(batch[i].Addr, FrameFill, FrameApp)
		}
	}
	s.ctr.rxPackets.Add(uint64(n))
	s.ctr.rxBatches.Add(1)
	return int(n)
}

// Release gives the frames of batch back: to the fill ring for the kernel
// to receive into, or, when the fill ring is full, to the free list. Any
// address inside a frame identifies it.
func (s *Socket) Release(batch []Desc) {
	if len(batch) == 0 {
		return
	}
	n := min(s.fill.prodFree(uint32(len(batch))), uint32(len(batch)))
	for i := uint32(0); i < n; i++ {
		base := s.frames.base(batch[i].Addr)
		s.frames.move(base, FrameApp, FrameFill)
		*s.fill.prodSlot(i) = base
	}
	if n > 0 {
		s.fill.prodSubmit(n)
		s.ctr.filled.Add(uint64(n))
	}
	for i := n; i < uint32(len(batch)); i++ {
		base := s.frames.base(batch[i].Addr)
		s.frames.move(base, FrameApp, FrameFree)
		s.frames.push(base)
	}
	s.ctr.released.Add(uint64(len(batch)))
}

// Transmit posts the packets of batch on the tx ring and returns how many
// it posted (a prefix of batch); the application keeps the rest and may
// retry them after Complete or Release them. Each Desc may point anywhere
// inside its frame (Addr moved back into the headroom to prepend a header,
// Len changed), but must not cross the frame's end. If any descriptor is
// invalid Transmit posts nothing and returns an error wrapping
// ErrInvalidDesc. It kicks the kernel (sendto) only when the tx ring's
// need_wakeup flag is set.
func (s *Socket) Transmit(batch []Desc) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	size, limit := s.frames.frameSize, uint64(len(s.umem))
	for i := range batch {
		d := &batch[i]
		if d.Len == 0 || d.Options != 0 || d.Addr >= limit ||
			d.Addr&(size-1)+uint64(d.Len) > size {
			return 0, fmt.Errorf("%w: batch[%d] addr %#x len %d options %#x (frame size %d, UMEM %d bytes)",
				ErrInvalidDesc, i, d.Addr, d.Len, d.Options, size, limit)
		}
	}
	n := min(s.tx.prodFree(uint32(len(batch))), uint32(len(batch)))
	for i := uint32(0); i < n; i++ {
		s.frames.move(batch[i].Addr, FrameApp, FrameTx)
		*s.tx.prodSlot(i) = batch[i]
	}
	if n > 0 {
		s.tx.prodSubmit(n)
		s.inFlight += int(n)
		s.ctr.txPackets.Add(uint64(n))
		s.ctr.txBatches.Add(1)
	}
	if n < uint32(len(batch)) {
		s.ctr.txRingFull.Add(1)
	}
	if s.tx.needWakeup() {
		s.kickTx()
	}
	return int(n), nil
}

// Complete reaps the completion ring: frames whose transmission finished go
// to the free list. It returns how many. If packets still wait on the tx
// ring and the kernel asked for a wakeup, it kicks the kernel again (copy
// mode sends a bounded number of packets per kick).
func (s *Socket) Complete() int {
	n := s.comp.consAvail(s.comp.size)
	for i := uint32(0); i < n; i++ {
		base := s.frames.base(*s.comp.consSlot(i))
		s.frames.move(base, FrameTx, FrameFree)
		s.frames.push(base)
	}
	if n > 0 {
		s.comp.consRelease(n)
		s.inFlight -= int(n)
		s.ctr.completed.Add(uint64(n))
	}
	if s.tx.pending() != 0 && s.tx.needWakeup() {
		s.kickTx()
	}
	return int(n)
}

// Refill moves frames from the free list to the fill ring, as many as both
// allow, and returns how many.
func (s *Socket) Refill() int {
	n := min(s.fill.prodFree(uint32(len(s.frames.free))), uint32(len(s.frames.free)))
	for i := uint32(0); i < n; i++ {
		base, _ := s.frames.pop()
		s.frames.move(base, FrameFree, FrameFill)
		*s.fill.prodSlot(i) = base
	}
	if n > 0 {
		s.fill.prodSubmit(n)
		s.ctr.filled.Add(uint64(n))
	}
	return int(n)
}

// Alloc takes up to len(batch) frames from the free list for packets the
// application builds itself, and returns how many. Each Desc points
// Info().RxOffset bytes into its frame (the same headroom as a received
// packet) with Len 0; set Len (and Addr, within the frame) before Transmit.
func (s *Socket) Alloc(batch []Desc) int {
	n := min(len(batch), len(s.frames.free))
	for i := range batch[:n] {
		base, _ := s.frames.pop()
		s.frames.move(base, FrameFree, FrameApp)
		batch[i] = Desc{Addr: base + s.rxOffset}
	}
	if n > 0 {
		s.ctr.allocated.Add(uint64(n))
	}
	return n
}

// Free returns the number of frames on the free list.
func (s *Socket) Free() int { return len(s.frames.free) }

// Packet returns the bytes of d's packet, in place in the UMEM. The slice's
// capacity runs to the end of the frame, so the packet can grow at the tail
// with append; to grow at the head, move d.Addr back (at most Headroom(d)
// bytes) and call Packet again.
func (s *Socket) Packet(d Desc) []byte {
	end := s.frames.base(d.Addr) + s.frames.frameSize
	return s.umem[d.Addr : d.Addr+uint64(d.Len) : end]
}

// Headroom returns how many bytes lie in d's frame before the packet.
func (s *Socket) Headroom(d Desc) int { return int(d.Addr & (s.frames.frameSize - 1)) }

// Frame returns the whole UMEM frame that holds address addr.
func (s *Socket) Frame(addr uint64) []byte {
	base := s.frames.base(addr)
	return s.umem[base : base+s.frames.frameSize : base+s.frames.frameSize]
}

// Wait blocks in poll until the rx ring has packets or timeout passes
// (negative: forever). poll also wakes the kernel for the fill and tx
// rings. An interrupted poll returns nil.
func (s *Socket) Wait(timeout time.Duration) error {
	if s.rx.consAvail(1) > 0 {
		return nil
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	s.pollfd[0].Revents = 0
	n, err := unix.Poll(s.pollfd[:], ms)
	if err != nil && err != unix.EINTR {
		return fmt.Errorf("poll AF_XDP socket of ifindex %d queue %d: %w", s.cfg.Ifindex, s.cfg.Queue, err)
	}
	if n > 0 {
		s.ctr.pollWakeup.Add(1)
	}
	return nil
}

// kickTx asks the kernel to process the tx ring. EAGAIN, EBUSY, ENOBUFS
// and ENETDOWN mean "busy, try again later", as in libbpf: counted as
// TxKickBusy, since descriptors may be left on the ring (copy mode stops
// at the first it cannot send: completion ring full, driver queue
// stopped, budget spent). Anything else is counted as a KickError.
func (s *Socket) kickTx() {
	s.ctr.txKicks.Add(1)
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0:
	case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		s.ctr.txKickBusy.Add(1)
	default:
		s.ctr.kickErrors.Add(1)
	}
}

// TxBacklog returns how many descriptors wait on the tx ring for the
// kernel to take them: posted by Transmit, not yet consumed. In copy mode
// the kernel consumes the ring only inside a kick (sendto or poll), so a
// non-zero backlog after a kick means the kick was refused or partial and
// those packets leave only with another kick; nothing else wakes the
// application when the kernel could take them. Safe from any goroutine.
func (s *Socket) TxBacklog() int { return int(s.tx.pending()) }

// InFlight returns how many frames Transmit posted that Complete has not
// reaped yet: on the tx ring, being sent, or on the completion ring. Only
// the socket's owner may call it.
func (s *Socket) InFlight() int { return s.inFlight }

// FlushTx kicks the kernel (sendto) if descriptors still wait on the tx
// ring, and returns how many still wait afterwards. Call it before
// sleeping: a kick that was refused as busy or sent only part of the ring
// leaves packets that no wakeup will send. In zero-copy mode it kicks only
// when the driver asked for it (need_wakeup); copy mode sends only from a
// kick, so there it always kicks.
func (s *Socket) FlushTx() int {
	if s.tx.pending() == 0 {
		return 0
	}
	if s.mode == BindCopy || s.tx.needWakeup() {
		s.kickTx()
	}
	return int(s.tx.pending())
}

// kickRx asks the kernel to process the fill ring.
func (s *Socket) kickRx() {
	s.ctr.rxKicks.Add(1)
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
	default:
		s.ctr.kickErrors.Add(1)
	}
}
