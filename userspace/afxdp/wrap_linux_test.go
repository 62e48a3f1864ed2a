package afxdp

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
)

// fakeSocketAt is fakeSocket with every ring's producer and consumer words
// starting at start, as the kernel's would be after start descriptors.
func fakeSocketAt(frameCount, ringSize int, start uint32) *Socket {
	cfg := Config{Ifindex: 1, FrameCount: frameCount, FillRingSize: ringSize, CompletionRingSize: ringSize,
		RxRingSize: ringSize, TxRingSize: ringSize, Accounting: true}.withDefaults()
	s := &Socket{
		fd:       -1,
		cfg:      cfg,
		umem:     make([]byte, cfg.FrameCount*cfg.FrameSize),
		frames:   newFrames(cfg.FrameCount, cfg.FrameSize, true),
		rxOffset: PacketHeadroom,
		mode:     BindCopy,
	}
	mem := func(descSize int) []byte {
		m := fakeRingMem(ringSize, descSize)
		binary.NativeEndian.PutUint32(m[fakeOff.Producer:], start)
		binary.NativeEndian.PutUint32(m[fakeOff.Consumer:], start)
		return m
	}
	initRing(&s.fill, mem(8), fakeOff, uint32(ringSize), true)
	initRing(&s.comp, mem(8), fakeOff, uint32(ringSize), false)
	initRing(&s.rx, mem(16), fakeOff, uint32(ringSize), false)
	initRing(&s.tx, mem(16), fakeOff, uint32(ringSize), true)
	s.Refill()
	return s
}

// TestRingIndicesWrapAt2p32: the kernel's ring indices are free-running
// uint32 counters that wrap after 2^32 descriptors (under 30 s at 150 Mpps),
// not at the ring size. Starting every ring just below 2^32, packets stamped
// with a sequence number must come out of Receive in order and intact, every
// ring must cross the wrap, and the frame accounting must hold throughout.
func TestRingIndicesWrapAt2p32(t *testing.T) {
	const start = 1<<32 - 100
	s := fakeSocketAt(64, 16, start)
	batch := make([]Desc, 8)
	var seq, next uint32
	for iter := 0; iter < 200; iter++ {
		// The kernel receives up to 7 packets, each stamped.
		fp, fc := atomic.LoadUint32(s.fill.producer), atomic.LoadUint32(s.fill.consumer)
		rp, rc := atomic.LoadUint32(s.rx.producer), atomic.LoadUint32(s.rx.consumer)
		for k := 0; k < 7 && fc != fp && rp-rc < s.rx.size; k++ {
			addr := s.fill.descs[fc&s.fill.mask]
			fc++
			binary.LittleEndian.PutUint32(s.umem[addr+PacketHeadroom:], seq)
			seq++
			s.rx.descs[rp&s.rx.mask] = Desc{Addr: addr + PacketHeadroom, Len: 60}
			rp++
		}
		atomic.StoreUint32(s.fill.consumer, fc)
		atomic.StoreUint32(s.rx.producer, rp)

		n := s.Receive(batch)
		for _, d := range batch[:n] {
			if got := binary.LittleEndian.Uint32(s.Packet(d)); got != next {
				t.Fatalf("iteration %d: packet %d carries %d (rx consumer %#x)", iter, next, got, s.rx.cachedCons)
			}
			next++
		}
		// Every other packet is sent back out, the rest released.
		k, err := s.Transmit(batch[:n/2])
		if err != nil {
			t.Fatal(err)
		}
		s.Release(batch[k:n])
		kernelTx(s)
		s.Complete()
		s.Refill()
		if _, err := s.FrameAccounting(); err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
	}
	if next < 1000 {
		t.Fatalf("only %d packets received", next)
	}
	for name, r := range map[string][2]uint32{
		"fill": {atomic.LoadUint32(s.fill.producer), atomic.LoadUint32(s.fill.consumer)},
		"rx":   {atomic.LoadUint32(s.rx.producer), atomic.LoadUint32(s.rx.consumer)},
		"tx":   {atomic.LoadUint32(s.tx.producer), atomic.LoadUint32(s.tx.consumer)},
		"comp": {atomic.LoadUint32(s.comp.producer), atomic.LoadUint32(s.comp.consumer)},
	} {
		if r[0] >= start || r[1] >= start {
			t.Errorf("%s ring did not wrap: producer %#x consumer %#x", name, r[0], r[1])
		}
	}
	st := s.localStats()
	if st.RxPackets != uint64(next) || st.TxPackets != st.Completed {
		t.Errorf("counters: rx %d (want %d), tx %d, completed %d", st.RxPackets, next, st.TxPackets, st.Completed)
	}
}
