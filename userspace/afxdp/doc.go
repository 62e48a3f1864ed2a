// Package afxdp is xdpsec's AF_XDP socket: one socket per NIC queue, its UMEM,
// the four rings it shares with the kernel, and batch receive and transmit on
// vectors of descriptors. It is built on golang.org/x/sys/unix only and knows
// nothing about IPsec.
//
// # The packet's way through a socket
//
// The XDP program redirects a frame into the XSKMAP slot of its rx queue; the
// kernel takes a free frame the application put on the fill ring, copies (copy
// mode) or DMAs (zero-copy) the packet into it and posts a descriptor on the rx
// ring. A worker that owns the socket then
//
//	n := s.Receive(batch)            // rx ring -> application
//	... rewrite batch[:n] in place, using the headroom in front of each packet ...
//	sent, err := s.Transmit(out)     // application -> tx ring (same frames)
//	s.Release(drop)                  // application -> fill ring (frames not sent)
//	s.Complete()                     // completion ring -> free list (tx done)
//	s.Refill()                       // free list -> fill ring
//
// Frames for packets that did not arrive on the socket (the outbound path) come
// from Alloc and leave through Transmit like any other.
//
// # Frame ownership
//
// Every UMEM frame is, at any instant, in exactly one of these places:
//
//	FrameFree  the socket's free list (a stack of frame addresses)
//	FrameFill  the fill ring or the kernel's rx side (taken from the fill
//	           ring, not yet posted on the rx ring): the kernel owns it
//	FrameApp   the application: returned by Receive or Alloc
//	FrameTx    the tx ring, the driver, or the completion ring: the kernel
//	           owns it until Complete reaps it
//
// The fill ring and the kernel's rx side are one state, and so are the tx ring
// and the completion ring, because the application cannot observe the moment
// the kernel moves a frame from one to the other: the only transitions the
// application sees are the ones its own calls make. With Config.Accounting set
// the socket keeps the state of every frame and checks every transition
// (Receive must find a FrameFill frame, Transmit and Release a FrameApp frame,
// Complete a FrameTx frame); a frame that turns up in the wrong state is a
// violation that FrameAccounting reports. Tests use this to prove that no frame
// is ever in two places and none is lost. Without Accounting the checks cost
// nothing.
//
// # Memory order on the rings
//
// Each ring is a single-producer single-consumer queue in memory shared with
// the kernel: a producer word, a consumer word, a flags word and a
// power-of-two array of descriptors. The kernel's side (net/xdp/xsk_queue.h)
// pairs its accesses like this:
//
//   - When it produces (rx, completion) it writes descriptors, then publishes
//     them with smp_store_release(producer). We consume: an acquire load of the
//     producer word happens before we read the descriptors it covers, so we
//     never read a descriptor the kernel has not finished writing.
//   - When it consumes (fill, tx) it reads descriptors after
//     smp_load_acquire(producer) and gives the slots back with
//     smp_store_release(consumer). We produce: we write descriptors, then store
//     the producer word with release semantics, so the kernel sees the
//     descriptors no later than the index that covers them; and we overwrite a
//     slot only after an acquire load of the consumer word shows the kernel is
//     done with it.
//
// Go's sync/atomic operations are sequentially consistent (the Go memory
// model), which includes acquire on loads and release on stores; on amd64 a
// load is a plain MOV and a store an XCHG, on arm64 LDAR and STLR. Only the
// producer and consumer words are accessed atomically; descriptors are plain
// memory ordered by them. Each side keeps a cached copy of the other side's
// index and reloads it only when the cached value does not allow the batch, so
// a batch costs at most one atomic load and one atomic store per ring.
//
// # Wakeups
//
// Sockets are bound with XDP_USE_NEED_WAKEUP. The kernel sets
// XDP_RING_NEED_WAKEUP in a ring's flags word when it will not look at that
// ring again without a syscall: then, and only then, Transmit and Complete kick
// the tx side with sendto(MSG_DONTWAIT) and Receive kicks the fill side with
// recvfrom(MSG_DONTWAIT). In copy mode the tx flag stays set (transmission
// happens inside sendto), so every Transmit kicks; on a zero-copy driver the
// flag is mostly clear and the hot path makes no syscall. A kick that fails
// with EAGAIN, EBUSY, ENOBUFS or ENETDOWN means "busy, try again" (as libbpf
// treats them); other errors are counted (Stats.KickErrors). A link without
// carrier makes copy mode drop one descriptor per kick (EBUSY), so the tx
// ring fills and Transmit posts less than asked: the caller keeps the rest
// (Release them or retry after Complete). Wait blocks in poll
// when there is nothing to do.
//
// A busy kick can leave descriptors on the tx ring (Stats.TxKickBusy):
// copy mode stops at the first packet it cannot send (completion ring
// full, driver queue stopped, budget spent) and nothing wakes the
// application when the kernel could take the rest; poll(POLLIN) retries
// once at entry and then sleeps. An application about to sleep must
// therefore call FlushTx and, while TxBacklog (or InFlight, frames not yet
// reaped) is not zero, sleep only briefly and kick again.
//
// # Frame size and multi-buffer
//
// Sockets are bound without XDP_USE_SG: one packet is one frame, and
// Receive never sees a descriptor with XDP_PKT_CONTD. A packet longer than
// a frame less its headroom (FrameSize - PacketHeadroom - Headroom) cannot
// be redirected into the socket: the kernel drops it and counts it in
// XDP_STATISTICS rx_dropped (Stats.RxDropped). Transmit refuses options
// (ErrInvalidDesc), so a multi-buffer descriptor is never posted either.
// The application sizes its packets to the frame (the engine caps its TUN
// MTU so).
//
// # Concurrency
//
// A Socket belongs to one worker goroutine: Receive, Release, Transmit,
// Complete, Refill, Alloc, Wait, FrameAccounting and Close must not be called
// concurrently with each other. Stats and Info may be called from any
// goroutine while the worker runs (they read atomics and the kernel), but not
// concurrently with Close. The hot-path calls allocate nothing and send
// nothing on channels.
package afxdp
