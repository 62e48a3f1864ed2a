package ipsec

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestHardLimitsExactConcurrent: goroutines race past a hard packet or
// byte limit, per packet and in batches. Exactly the packets that fit are
// protected, the counters hold exactly those (refused packets are not
// counted) and HardLimit names the limit.
func TestHardLimitsExactConcurrent(t *testing.T) {
	pkt := udpPacket(false, 10) // 38 bytes, all counted in tunnel mode
	n := uint64(len(pkt))
	for _, tc := range []struct {
		name   string
		lt     Lifetime
		wantPk uint64
		limit  string
	}{
		{"packets", Lifetime{HardPackets: 100}, 100, "packets"},
		{"bytes", Lifetime{HardBytes: 1000}, 1000 / n, "bytes"},
		{"both/packets-first", Lifetime{HardPackets: 20, HardBytes: 100000}, 20, "packets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := gcmParams()
			p.Lifetime = tc.lt
			sa, err := NewSA(p)
			if err != nil {
				t.Fatal(err)
			}
			var ok atomic.Uint64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 5 {
						if g%2 == 0 { // per packet
							for range 8 {
								_, _, err := sa.Encrypt(frameWith(pkt), testHead, len(pkt))
								switch {
								case err == nil:
									ok.Add(1)
								case !errors.Is(err, ErrExpired):
									t.Errorf("encrypt: %v", err)
								}
							}
							continue
						}
						pkts := make([]Packet, 8)
						errs := make([]error, 8)
						for i := range pkts {
							pkts[i] = Packet{Frame: frameWith(pkt), Off: testHead, N: len(pkt)}
						}
						ok.Add(uint64(sa.EncryptBatch(nil, pkts, errs)))
						for _, err := range errs {
							if err != nil && !errors.Is(err, ErrExpired) {
								t.Errorf("batch: %v", err)
							}
						}
					}
				}()
			}
			wg.Wait()
			st := sa.Stats()
			if ok.Load() != tc.wantPk || st.Packets != tc.wantPk || st.Bytes != tc.wantPk*n {
				t.Fatalf("%d packets protected, counted %+v; want %d packets, %d bytes", ok.Load(), st, tc.wantPk, tc.wantPk*n)
			}
			if !sa.HardExpired() || sa.HardLimit() != tc.limit {
				t.Fatalf("hard expired %v by %q, want %q", sa.HardExpired(), sa.HardLimit(), tc.limit)
			}
		})
	}
	sa, _ := NewSA(gcmParams())
	if sa.HardLimit() != "" {
		t.Fatalf("fresh SA: HardLimit %q", sa.HardLimit())
	}
}
