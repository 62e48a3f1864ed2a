package ipsec

import (
	"sync"
	"testing"
)

// TestPackedCounts: an SA without packet/byte limits counts in one packed
// word; Stats must still be exact, across the flush into the wide counters
// and under concurrent use.
func TestPackedCounts(t *testing.T) {
	sa := mustSA(t, gcmParams())
	if sa.limited {
		t.Fatal("SA without lifetimes counts as limited")
	}
	pkt := udpPacket(false, 100)
	const workers, each = 2, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := NewScratch()
			f := frameWith(pkt)
			for range each {
				copy(f[testHead:], pkt)
				if _, _, err := sa.EncryptWith(sc, f, testHead, len(pkt)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := Stats{Packets: workers * each, Bytes: workers * each * uint64(len(pkt))}
	if got := sa.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	// Push the packed packet field to its flush point: the next packet
	// must move everything into the wide counters and lose nothing.
	sa.use.acc.Add((accFlushPk - 1 - workers*each) << accPkShift)
	want.Packets = accFlushPk - 1
	if got := sa.Stats(); got != want {
		t.Fatalf("before flush: Stats = %+v, want %+v", got, want)
	}
	f := frameWith(pkt)
	if _, _, err := sa.Encrypt(f, testHead, len(pkt)); err != nil {
		t.Fatal(err)
	}
	want.Packets++
	want.Bytes += uint64(len(pkt))
	if got := sa.Stats(); got != want {
		t.Fatalf("after flush: Stats = %+v, want %+v", got, want)
	}
	if sa.use.acc.Load() != 0 || sa.use.packets.Load() != want.Packets {
		t.Fatalf("flush left acc %#x, packets %d", sa.use.acc.Load(), sa.use.packets.Load())
	}
	// Same for the byte field.
	sa.use.acc.Add(accFlushBy - 1)
	want.Bytes += accFlushBy - 1
	copy(f[testHead:], pkt)
	if _, _, err := sa.Encrypt(f, testHead, len(pkt)); err != nil {
		t.Fatal(err)
	}
	want.Packets++
	want.Bytes += uint64(len(pkt))
	if got := sa.Stats(); got != want || sa.use.acc.Load() != 0 {
		t.Fatalf("after byte flush: Stats = %+v (acc %#x), want %+v", got, sa.use.acc.Load(), want)
	}
}
