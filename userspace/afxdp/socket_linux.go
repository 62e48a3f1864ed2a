package afxdp

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is an AF_XDP socket bound to one queue of one link, with its own
// UMEM shared by its rx and tx rings. It belongs to one worker goroutine;
// see the package documentation for the concurrency contract.
type Socket struct {
	fd   int
	cfg  Config
	umem []byte

	fill ring[uint64]
	comp ring[uint64]
	rx   ring[Desc]
	tx   ring[Desc]

	frames *frames
	// rxOffset is where a packet starts in its frame: PacketHeadroom plus
	// the UMEM headroom.
	rxOffset uint64

	mode     BindMode
	zcErr    error // why zero-copy was not used (BindAuto fell back), else nil
	txBudget int   // XDP_MAX_TX_SKB_BUDGET in copy mode, 0 if not set

	// inFlight is the number of frames posted on the tx ring and not yet
	// reaped from the completion ring.
	inFlight int

	pollfd [1]unix.PollFd
	ctr    counters
	closed bool
}

// counters are the socket's own ring-level counters. The worker adds to
// them once per batch; Stats reads them from any goroutine.
type counters struct {
	rxPackets, rxBatches   atomic.Uint64
	txPackets, txBatches   atomic.Uint64
	txRingFull             atomic.Uint64
	completed, filled      atomic.Uint64
	released, allocated    atomic.Uint64
	rxKicks, txKicks       atomic.Uint64
	kickErrors, pollWakeup atomic.Uint64
	txKickBusy             atomic.Uint64
}

// Info describes how a socket was set up; it does not change after Open.
type Info struct {
	Ifindex, Queue int
	// Mode is BindCopy or BindZeroCopy, as the kernel reports it
	// (XDP_OPTIONS) after bind.
	Mode BindMode
	// ZeroCopyError says why zero-copy was not used when Config.Mode was
	// BindAuto and the driver refused it; empty otherwise.
	ZeroCopyError string
	// NeedWakeup is true: the socket is bound with XDP_USE_NEED_WAKEUP.
	NeedWakeup bool
	// FrameSize, FrameCount and Headroom are the UMEM's geometry.
	FrameSize, FrameCount, Headroom int
	// RxOffset is the offset of a received (or Alloc'd) packet in its
	// frame: the bytes before it are headroom the application may use.
	RxOffset int
	// RxRingSize, TxRingSize, FillRingSize and CompletionRingSize are the
	// ring sizes in descriptors.
	RxRingSize, TxRingSize, FillRingSize, CompletionRingSize int
	// TxBudget is the number of packets one copy-mode sendto may send
	// (XDP_MAX_TX_SKB_BUDGET, kernel 6.17+); 0 means the kernel default.
	TxBudget int
}

// Stats are the kernel's XDP_STATISTICS for the socket, the package's
// ring-level counters and the ring occupancy at the time of the call.
type Stats struct {
	// From the kernel (XDP_STATISTICS).
	RxDropped            uint64 // dropped for reasons other than invalid descriptors
	RxInvalidDescs       uint64 // invalid fill-ring descriptors
	TxInvalidDescs       uint64 // invalid tx-ring descriptors
	RxRingFull           uint64 // dropped because the rx ring was full
	RxFillRingEmptyDescs uint64 // times the fill ring was empty when the kernel needed a frame
	TxRingEmptyDescs     uint64 // times the kernel found the tx ring empty

	// Counted by this package, per call of the worker.
	RxPackets, RxBatches uint64 // descriptors and non-empty batches taken by Receive
	TxPackets, TxBatches uint64 // descriptors and non-empty batches posted by Transmit
	TxRingFull           uint64 // Transmit calls that could not post every descriptor
	Completed            uint64 // frames reaped from the completion ring
	Filled               uint64 // frames posted on the fill ring (Open, Release, Refill)
	Released             uint64 // frames given back by Release (to the fill ring or free list)
	Allocated            uint64 // frames handed out by Alloc
	RxKicks, TxKicks     uint64 // need_wakeup syscalls: recvfrom for fill/rx, sendto for tx
	KickErrors           uint64 // kicks that failed with an unexpected errno
	// TxKickBusy counts tx kicks the kernel refused as busy (EAGAIN,
	// EBUSY, ENOBUFS, ENETDOWN): each may have left packets on the tx
	// ring for a later kick (see FlushTx).
	TxKickBusy  uint64
	PollWakeups uint64 // Wait calls that returned with the socket readable

	// Ring occupancy now: descriptors posted and not yet consumed.
	FillPending, CompletionPending, RxPending, TxPending uint32
}

// Open creates an AF_XDP socket for cfg: it maps the UMEM, sets up the four
// rings, binds to cfg.Queue of cfg.Ifindex (zero-copy or copy per cfg.Mode)
// and posts min(FillRingSize, FrameCount) frames on the fill ring. The caller
// then puts FD into the XDP program's XSKMAP at index cfg.Queue. Open must
// run in the network namespace of the link. Close releases everything.
func Open(cfg Config) (*Socket, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	umem, err := unix.Mmap(-1, 0, cfg.FrameCount*cfg.FrameSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("map %d-byte UMEM: %w", cfg.FrameCount*cfg.FrameSize, err)
	}
	s := &Socket{
		fd:       -1,
		cfg:      cfg,
		umem:     umem,
		frames:   newFrames(cfg.FrameCount, cfg.FrameSize, cfg.Accounting),
		rxOffset: uint64(PacketHeadroom + cfg.Headroom),
	}
	switch cfg.Mode {
	case BindCopy:
		err = s.setup(unix.XDP_COPY)
	case BindZeroCopy:
		err = s.setup(unix.XDP_ZEROCOPY)
	case BindAuto:
		if err = s.setup(unix.XDP_ZEROCOPY); err != nil {
			s.zcErr = err
			err = s.setup(unix.XDP_COPY)
		}
	}
	if err != nil {
		unix.Munmap(umem)
		return nil, err
	}
	s.pollfd[0] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
	s.Refill()
	return s, nil
}

// setup creates the socket, registers the UMEM, creates and maps the rings
// and binds with bindFlags. On failure it leaves nothing open.
func (s *Socket) setup(bindFlags uint16) (err error) {
	cfg := s.cfg
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create AF_XDP socket: %w", err)
	}
	s.fd = fd
	defer func() {
		if err != nil {
			s.closeRings()
			unix.Close(fd)
			s.fd = -1
		}
	}()

	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&s.umem[0]))),
		Len:      uint64(len(s.umem)),
		Size:     uint32(cfg.FrameSize),
		Headroom: uint32(cfg.Headroom),
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("register UMEM (%d frames of %d bytes): %w", cfg.FrameCount, cfg.FrameSize, err)
	}
	for _, r := range []struct {
		opt  int
		name string
		n    int
	}{
		{unix.XDP_UMEM_FILL_RING, "fill", cfg.FillRingSize},
		{unix.XDP_UMEM_COMPLETION_RING, "completion", cfg.CompletionRingSize},
		{unix.XDP_RX_RING, "rx", cfg.RxRingSize},
		{unix.XDP_TX_RING, "tx", cfg.TxRingSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.n); err != nil {
			return fmt.Errorf("size %s ring to %d: %w", r.name, r.n, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("read ring mmap offsets: %w", err)
	}
	const addrSize, descSize = 8, uint64(unsafe.Sizeof(Desc{}))
	maps := []struct {
		name  string
		pgoff int64
		size  uint64
		init  func(mem []byte)
	}{
		{"fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr.Desc + uint64(cfg.FillRingSize)*addrSize,
			func(m []byte) { initRing(&s.fill, m, off.Fr, uint32(cfg.FillRingSize), true) }},
		{"completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr.Desc + uint64(cfg.CompletionRingSize)*addrSize,
			func(m []byte) { initRing(&s.comp, m, off.Cr, uint32(cfg.CompletionRingSize), false) }},
		{"rx", unix.XDP_PGOFF_RX_RING, off.Rx.Desc + uint64(cfg.RxRingSize)*descSize,
			func(m []byte) { initRing(&s.rx, m, off.Rx, uint32(cfg.RxRingSize), false) }},
		{"tx", unix.XDP_PGOFF_TX_RING, off.Tx.Desc + uint64(cfg.TxRingSize)*descSize,
			func(m []byte) { initRing(&s.tx, m, off.Tx, uint32(cfg.TxRingSize), true) }},
	}
	for _, m := range maps {
		mem, err := unix.Mmap(fd, m.pgoff, int(m.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("map %s ring: %w", m.name, err)
		}
		m.init(mem)
	}

	sa := &unix.SockaddrXDP{
		Flags:   bindFlags | unix.XDP_USE_NEED_WAKEUP,
		Ifindex: uint32(cfg.Ifindex),
		QueueID: uint32(cfg.Queue),
	}
	mode := BindCopy
	if bindFlags&unix.XDP_ZEROCOPY != 0 {
		mode = BindZeroCopy
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("bind AF_XDP socket to ifindex %d queue %d (%s): the queue has a socket already, or one closed moments ago (retry): %w",
				cfg.Ifindex, cfg.Queue, mode, err)
		}
		return fmt.Errorf("bind AF_XDP socket to ifindex %d queue %d (%s): %w", cfg.Ifindex, cfg.Queue, mode, err)
	}
	// Trust the kernel's word on what it did, not the flag we asked for.
	opts, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return fmt.Errorf("read XDP_OPTIONS: %w", err)
	}
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = BindZeroCopy
	} else {
		s.mode = BindCopy
	}
	if s.mode == BindCopy {
		// Let one sendto push the whole tx ring instead of the kernel's
		// default of 32 packets; kernels before 6.17 refuse, which only
		// costs more kicks.
		if unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, cfg.TxRingSize) == nil {
			s.txBudget = cfg.TxRingSize
		}
	}
	return nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	if uintptr(l) != size {
		return fmt.Errorf("kernel returned %d bytes, want %d", l, size)
	}
	return nil
}

func (s *Socket) closeRings() {
	for _, m := range [][]byte{s.fill.mem, s.comp.mem, s.rx.mem, s.tx.mem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	s.fill, s.comp, s.rx, s.tx = ring[uint64]{}, ring[uint64]{}, ring[Desc]{}, ring[Desc]{}
}

// Close unbinds the socket (the kernel removes it from every XSKMAP), unmaps
// the rings and the UMEM and closes the fd. Every Desc and every slice from
// Packet or Frame is invalid afterwards. Calling Close again does nothing.
// The kernel releases the queue from a work item after the last reference
// is gone, so an Open of the same queue right after Close may briefly fail
// with an error wrapping unix.EBUSY; retry it.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeRings()
	var errs []error
	if err := unix.Close(s.fd); err != nil {
		errs = append(errs, fmt.Errorf("close AF_XDP socket: %w", err))
	}
	s.fd = -1
	if err := unix.Munmap(s.umem); err != nil {
		errs = append(errs, fmt.Errorf("unmap UMEM: %w", err))
	}
	s.umem = nil
	return errors.Join(errs...)
}

// FD returns the socket's file descriptor, the value to store in the XDP
// program's XSKMAP at index Info().Queue.
func (s *Socket) FD() int { return s.fd }

// Info returns how the socket was set up.
func (s *Socket) Info() Info {
	i := Info{
		Ifindex:            s.cfg.Ifindex,
		Queue:              s.cfg.Queue,
		Mode:               s.mode,
		NeedWakeup:         true,
		FrameSize:          s.cfg.FrameSize,
		FrameCount:         s.cfg.FrameCount,
		Headroom:           s.cfg.Headroom,
		RxOffset:           int(s.rxOffset),
		RxRingSize:         s.cfg.RxRingSize,
		TxRingSize:         s.cfg.TxRingSize,
		FillRingSize:       s.cfg.FillRingSize,
		CompletionRingSize: s.cfg.CompletionRingSize,
		TxBudget:           s.txBudget,
	}
	if s.zcErr != nil {
		i.ZeroCopyError = s.zcErr.Error()
	}
	return i
}

// Stats reads the kernel's XDP_STATISTICS and returns them with the
// socket's counters and ring occupancy.
func (s *Socket) Stats() (Stats, error) {
	var ks unix.XDPStatistics
	if err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)); err != nil {
		return Stats{}, fmt.Errorf("read XDP_STATISTICS of ifindex %d queue %d: %w", s.cfg.Ifindex, s.cfg.Queue, err)
	}
	st := s.localStats()
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}

// localStats returns the package's counters and the ring occupancy.
func (s *Socket) localStats() Stats {
	c := &s.ctr
	return Stats{
		RxPackets:   c.rxPackets.Load(),
		RxBatches:   c.rxBatches.Load(),
		TxPackets:   c.txPackets.Load(),
		TxBatches:   c.txBatches.Load(),
		TxRingFull:  c.txRingFull.Load(),
		Completed:   c.completed.Load(),
		Filled:      c.filled.Load(),
		Released:    c.released.Load(),
		Allocated:   c.allocated.Load(),
		RxKicks:     c.rxKicks.Load(),
		TxKicks:     c.txKicks.Load(),
		KickErrors:  c.kickErrors.Load(),
		TxKickBusy:  c.txKickBusy.Load(),
		PollWakeups: c.pollWakeup.Load(),

		FillPending:       s.fill.pending(),
		CompletionPending: s.comp.pending(),
		RxPending:         s.rx.pending(),
		TxPending:         s.tx.pending(),
	}
}

// FrameAccounting checks the place of every frame (Config.Accounting must be
// set) and returns how many frames are in each place. It returns an error
// wrapping ErrFrameAccounting if any frame was ever seen in a place it could
// not be, or if frames are missing or counted twice.
func (s *Socket) FrameAccounting() (FrameCounts, error) {
	return s.frames.check()
}
