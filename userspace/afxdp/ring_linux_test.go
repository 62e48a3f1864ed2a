package afxdp

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests need no root: the "kernel" is a test double that plays the
// other side of each ring through the same shared-memory protocol (acquire
// loads of the other side's index, release stores of its own), so the
// package's ring logic, frame accounting and wakeup decisions are checked
// deterministically, and under -race the memory-order argument is too.

var fakeOff = unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

func fakeRingMem(size, descSize int) []byte {
	words := make([]uint64, (192+size*descSize)/8+1)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
}

// fakeSocket is a Socket whose rings live in Go memory and whose fd is -1
// (a kick is counted, and fails with EBADF).
func fakeSocket(frameCount, ringSize int, accounting bool) *Socket {
	cfg := Config{Ifindex: 1, FrameCount: frameCount, FillRingSize: ringSize, CompletionRingSize: ringSize,
		RxRingSize: ringSize, TxRingSize: ringSize, Accounting: accounting}.withDefaults()
	s := &Socket{
		fd:       -1,
		cfg:      cfg,
		umem:     make([]byte, cfg.FrameCount*cfg.FrameSize),
		frames:   newFrames(cfg.FrameCount, cfg.FrameSize, accounting),
		rxOffset: PacketHeadroom,
		mode:     BindCopy,
	}
	initRing(&s.fill, fakeRingMem(ringSize, 8), fakeOff, uint32(ringSize), true)
	initRing(&s.comp, fakeRingMem(ringSize, 8), fakeOff, uint32(ringSize), false)
	initRing(&s.rx, fakeRingMem(ringSize, 16), fakeOff, uint32(ringSize), false)
	initRing(&s.tx, fakeRingMem(ringSize, 16), fakeOff, uint32(ringSize), true)
	s.Refill()
	return s
}

// kernelRx plays the kernel receiving up to n packets of length l: it takes
// frames from the fill ring and posts rx descriptors PacketHeadroom into
// them. It returns how many it posted.
func kernelRx(s *Socket, n int, l uint32) int {
	fp, fc := atomic.LoadUint32(s.fill.producer), atomic.LoadUint32(s.fill.consumer)
	rp, rc := atomic.LoadUint32(s.rx.producer), atomic.LoadUint32(s.rx.consumer)
	k := 0
	for ; k < n && fc != fp && rp-rc < s.rx.size; k++ {
		addr := s.fill.descs[fc&s.fill.mask]
		fc++
		s.rx.descs[rp&s.rx.mask] = Desc{Addr: addr + PacketHeadroom, Len: l}
		rp++
	}
	atomic.StoreUint32(s.fill.consumer, fc)
	atomic.StoreUint32(s.rx.producer, rp)
	return k
}

// kernelTx plays the kernel transmitting: tx descriptors go to the
// completion ring with the address the application gave.
func kernelTx(s *Socket) int {
	tp, tc := atomic.LoadUint32(s.tx.producer), atomic.LoadUint32(s.tx.consumer)
	cp, cc := atomic.LoadUint32(s.comp.producer), atomic.LoadUint32(s.comp.consumer)
	k := 0
	for ; tc != tp && cp-cc < s.comp.size; k++ {
		s.comp.descs[cp&s.comp.mask] = s.tx.descs[tc&s.tx.mask].Addr
		tc++
		cp++
	}
	atomic.StoreUint32(s.tx.consumer, tc)
	atomic.StoreUint32(s.comp.producer, cp)
	return k
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "ifindex 0"},
		{Config{Ifindex: 1, FrameSize: 1024}, "frame size 1024: must be 2048 or 4096"},
		{Config{Ifindex: 1, FrameCount: 1}, "frame count 1"},
		{Config{Ifindex: 1, Headroom: 2000}, "headroom 2000: must be between 0 and 1728"},
		{Config{Ifindex: 1, RxRingSize: 1000}, "rx ring size 1000: must be a power of two"},
		{Config{Ifindex: 1, Queue: -1}, "queue -1"},
		{Config{Ifindex: 1, Mode: 7}, "bind mode 7"},
	} {
		_, err := Open(c.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want ErrConfig saying %q", c.cfg, err, c.want)
		}
	}
}

// TestRingsWrapAndFramesAccounted drives frames through every path many
// times around small rings and checks the accounting holds throughout.
func TestRingsWrapAndFramesAccounted(t *testing.T) {
	s := fakeSocket(64, 8, true)
	batch := make([]Desc, 5)
	out := make([]Desc, 0, 5)
	var rx, tx, released, allocated int
	for iter := 0; iter < 5000; iter++ {
		kernelRx(s, 3+iter%5, 100)
		n := s.Receive(batch)
		rx += n
		out = out[:0]
		for i, d := range batch[:n] {
			if i%2 == 0 {
				d.Addr -= 20 // grow at the head, like an encapsulation
				d.Len += 20
				out = append(out, d)
			} else {
				s.Release(batch[i : i+1])
				released++
			}
		}
		k, err := s.Transmit(out)
		if err != nil {
			t.Fatal(err)
		}
		tx += k
		s.Release(out[k:])
		released += len(out) - k
		if iter%3 == 0 {
			// An outbound packet from a fresh frame.
			if s.Alloc(batch[:1]) == 1 {
				allocated++
				batch[0].Len = 60
				k, _ := s.Transmit(batch[:1])
				tx += k
				s.Release(batch[k:1])
				released += 1 - k
			}
		}
		kernelTx(s)
		s.Complete()
		s.Refill()
		if iter%500 == 0 {
			if _, err := s.FrameAccounting(); err != nil {
				t.Fatalf("iteration %d: %v", iter, err)
			}
		}
	}
	kernelTx(s)
	s.Complete()
	counts, err := s.FrameAccounting()
	if err != nil {
		t.Fatal(err)
	}
	if counts[FrameApp] != 0 || counts[FrameTx] != 0 {
		t.Errorf("frames left with the app or in tx: %v", counts)
	}
	st := s.localStats()
	if int(st.RxPackets) != rx || int(st.TxPackets) != tx || int(st.Completed) != tx || int(st.Allocated) != allocated {
		t.Errorf("counters rx %d tx %d completed %d alloc %d; test counted rx %d tx %d alloc %d",
			st.RxPackets, st.TxPackets, st.Completed, st.Allocated, rx, tx, allocated)
	}
	if rx < 10000 || tx < 5000 {
		t.Errorf("too little traffic to mean anything: rx %d tx %d", rx, tx)
	}
	t.Logf("rx %d tx %d released %d allocated %d; frames %v", rx, tx, released, allocated, counts)
}

func TestAccountingCatchesMisuse(t *testing.T) {
	t.Run("double release", func(t *testing.T) {
		s := fakeSocket(16, 8, true)
		kernelRx(s, 1, 60)
		batch := make([]Desc, 1)
		if s.Receive(batch) != 1 {
			t.Fatal("nothing received")
		}
		s.Release(batch)
		s.Release(batch)
		if _, err := s.FrameAccounting(); !errors.Is(err, ErrFrameAccounting) || !strings.Contains(err.Error(), "but was fill") {
			t.Fatalf("double release not caught: %v", err)
		}
	})
	t.Run("transmit a frame the kernel owns", func(t *testing.T) {
		s := fakeSocket(16, 8, true)
		// The first fill-ring frame is at address 0 and belongs to the kernel.
		if _, err := s.Transmit([]Desc{{Addr: PacketHeadroom, Len: 60}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FrameAccounting(); !errors.Is(err, ErrFrameAccounting) {
			t.Fatalf("transmit of a fill-ring frame not caught: %v", err)
		}
	})
	t.Run("kernel completes a frame never sent", func(t *testing.T) {
		s := fakeSocket(16, 8, true)
		s.comp.descs[0] = 5 * 2048
		atomic.StoreUint32(s.comp.producer, 1)
		s.Complete()
		if _, err := s.FrameAccounting(); !errors.Is(err, ErrFrameAccounting) {
			t.Fatalf("completion of an unsent frame not caught: %v", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		s := fakeSocket(16, 8, false)
		if _, err := s.FrameAccounting(); !errors.Is(err, ErrAccountingOff) {
			t.Fatalf("FrameAccounting without Accounting: %v", err)
		}
	})
}

func TestTransmitRejectsInvalidDesc(t *testing.T) {
	s := fakeSocket(16, 8, true)
	n := s.Alloc(make([]Desc, 1))
	if n != 1 {
		t.Fatal("alloc failed")
	}
	for _, d := range []Desc{
		{Addr: 2048 - 10, Len: 20},       // crosses into the next frame
		{Addr: 16 * 2048, Len: 60},       // past the UMEM
		{Addr: 2048 + 256, Len: 0},       // empty
		{Addr: 256, Len: 60, Options: 1}, // multi-buffer
	} {
		if k, err := s.Transmit([]Desc{d}); !errors.Is(err, ErrInvalidDesc) || k != 0 {
			t.Errorf("Transmit(%+v) = %d, %v; want 0, ErrInvalidDesc", d, k, err)
		}
	}
	if s.tx.pending() != 0 {
		t.Error("an invalid batch reached the tx ring")
	}
}

// TestKickOnlyWhenKernelAsks checks the need_wakeup contract: no syscall
// while the flag is clear, one when it is set.
func TestKickOnlyWhenKernelAsks(t *testing.T) {
	s := fakeSocket(16, 8, false)
	batch := make([]Desc, 2)
	s.Alloc(batch)
	batch[0].Len, batch[1].Len = 60, 60
	if _, err := s.Transmit(batch[:1]); err != nil {
		t.Fatal(err)
	}
	s.Receive(batch[:1])
	s.Complete()
	if got := s.ctr.txKicks.Load() + s.ctr.rxKicks.Load(); got != 0 {
		t.Fatalf("%d kicks with need_wakeup clear", got)
	}
	atomic.StoreUint32(s.tx.flags, unix.XDP_RING_NEED_WAKEUP)
	atomic.StoreUint32(s.fill.flags, unix.XDP_RING_NEED_WAKEUP)
	if _, err := s.Transmit(batch[1:2]); err != nil {
		t.Fatal(err)
	}
	if s.ctr.txKicks.Load() != 1 {
		t.Errorf("tx kicks %d after a transmit with need_wakeup set, want 1", s.ctr.txKicks.Load())
	}
	s.Complete() // tx ring still holds 2 unconsumed descriptors: kick again
	if s.ctr.txKicks.Load() != 2 {
		t.Errorf("tx kicks %d after Complete with pending tx and need_wakeup, want 2", s.ctr.txKicks.Load())
	}
	if s.Receive(batch[:1]) != 0 || s.ctr.rxKicks.Load() != 1 {
		t.Errorf("rx kicks %d after an empty Receive with fill need_wakeup, want 1", s.ctr.rxKicks.Load())
	}
	kernelTx(s)
	s.Complete()
	if s.ctr.txKicks.Load() != 2 {
		t.Errorf("Complete kicked with the tx ring empty")
	}
}

// TestRingsAgainstConcurrentKernel runs the simulated kernel in its own
// goroutine, so the race detector checks that the atomics order every
// descriptor access (run with -race).
func TestRingsAgainstConcurrentKernel(t *testing.T) {
	s := fakeSocket(256, 64, true)
	const total = 200000
	var wg sync.WaitGroup
	var stop atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		seq := uint32(0)
		for !stop.Load() {
			// Stamp each frame with a sequence number before posting it.
			fp, fc := atomic.LoadUint32(s.fill.producer), atomic.LoadUint32(s.fill.consumer)
			rp, rc := atomic.LoadUint32(s.rx.producer), atomic.LoadUint32(s.rx.consumer)
			for fc != fp && rp-rc < s.rx.size {
				addr := s.fill.descs[fc&s.fill.mask]
				fc++
				*(*uint32)(unsafe.Pointer(&s.umem[addr+PacketHeadroom])) = seq
				seq++
				s.rx.descs[rp&s.rx.mask] = Desc{Addr: addr + PacketHeadroom, Len: 4}
				rp++
			}
			atomic.StoreUint32(s.fill.consumer, fc)
			atomic.StoreUint32(s.rx.producer, rp)
		}
	}()
	batch := make([]Desc, 32)
	next := uint32(0)
	for next < total {
		n := s.Receive(batch)
		for _, d := range batch[:n] {
			if got := *(*uint32)(unsafe.Pointer(&s.Packet(d)[0])); got != next {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("packet %d carries sequence %d", next, got)
			}
			next++
		}
		s.Release(batch[:n])
	}
	stop.Store(true)
	wg.Wait()
	if _, err := s.FrameAccounting(); err != nil {
		t.Fatal(err)
	}
}
