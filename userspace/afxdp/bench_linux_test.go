package afxdp

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// liveFrameChunk is the Repeat of one BPF_PROG_RUN call of the generator.
// Each live-frames call costs a fixed 20-25 ms on this kernel (the XDP
// dispatcher is re-patched per call: smp_text_poke IPIs), so a chunk of 2^15
// frames capped the offered load near 1.3 Mpps and the receiver was never
// the bottleneck; 2^20 frames (~170 ms at 6 Mpps) keeps that overhead near
// 10% and offers several times what the socket can take.
const liveFrameChunk = 1 << 20

var waitEmpty = os.Getenv("AFXDP_BENCH_WAIT") != ""

// newGeneratorProg returns an XDP program that redirects every frame out of
// ifindex: run with BPF_F_TEST_XDP_LIVE_FRAMES in the namespace of ifindex,
// it transmits its input frame Repeat times through that device's
// ndo_xdp_xmit, which for a veth lands in the peer's XDP receive path.
func newGeneratorProg(tb testing.TB, ifindex int) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "xdp_gen",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(ifindex)),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("load generator program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}

// liveFrames runs gen in ns with live frames, chunk after chunk, until stop
// is set, adding each chunk to offered.
func liveFrames(ns *testutil.NS, gen *ebpf.Program, frame []byte, stop *atomic.Bool, offered *atomic.Uint64) error {
	return ns.Do(func() error {
		for !stop.Load() {
			if err := runLive(gen, frame, liveFrameChunk); err != nil {
				return err
			}
			offered.Add(liveFrameChunk)
		}
		return nil
	})
}

func runLive(gen *ebpf.Program, frame []byte, n uint32) error {
	_, err := gen.Run(&ebpf.RunOptions{Data: frame, Repeat: n, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES})
	return err
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRxOnly measures AF_XDP receive with no processing: frames made
// by BPF_PROG_RUN live frames in the peer namespace cross the veth, the
// test redirect program steers them into the XSK (copy mode), and a worker
// receives and releases them in batches of 64. ns/op is wall time per packet
// received: the "AF_XDP rx-only time" the engine's benchmarks compare
// against. On two CPUs the generator, the veth NAPI, the XDP program and
// the kernel's copy into the UMEM share one CPU (softirq on the sending
// CPU) and the worker has the other. Reported next to it, same run:
//
//	xdpdrop-ns/pkt  the same live-frame load when A's XDP program drops
//	                everything (veth + XDP, no AF_XDP)
//	x-xdpdrop       ns/op divided by xdpdrop-ns/pkt
//	rxcpu-ns/pkt    CPU time of the receiving thread per packet; it spins,
//	                so this is ~ns/op whenever the receiver keeps up
//	rxbusy-ns/pkt   time in Receive+Release calls that returned packets,
//	                per packet: the worker's own cost of the rings
//	offered-Mpps    the generator's rate (completed chunks; lower bound)
//	pkts/batch      mean packets per non-empty Receive (max 64)
//	loss-%          frames offered but not received (ring full / fill empty)
func BenchmarkRxOnly(b *testing.B) {
	testutil.RequireRoot(b)
	p := testutil.NewVethPair(b)
	xsks := newXSKMap(b, 1)
	redirect := newRedirectProg(b, xsks, testPort)
	drop := newReturnProg(b, 1) // XDP_DROP
	l := attachXDP(b, p.A, redirect, p.IndexA)
	s := openIn(b, p.A, Config{Ifindex: p.IndexA, FrameCount: 4096, FillRingSize: 2048, RxRingSize: 2048})
	if err := xsks.Put(uint32(0), uint32(s.FD())); err != nil {
		b.Fatal(err)
	}
	gen := newGeneratorProg(b, p.IndexB)
	b.Logf("socket mode %s, frame %d, rx ring %d, fill ring %d", s.Info().Mode, s.Info().FrameSize, s.Info().RxRingSize, s.Info().FillRingSize)

	for _, size := range []int{64, 1400} {
		frame := udpFrame(p.MACA, p.MACB, p.IPv4B, p.IPv4A, 40000, testPort, make([]byte, size-42))
		b.Run(map[int]string{64: "64B", 1400: "1400B"}[size], func(b *testing.B) {
			// Reference: the same load into an XDP_DROP program.
			if err := l.Update(drop); err != nil {
				b.Fatal(err)
			}
			refN := uint32(min(max(b.N, 1<<16), 1<<21))
			var ref time.Duration
			if err := p.B.Do(func() error {
				start := time.Now()
				err := runLive(gen, frame, refN)
				ref = time.Since(start)
				return err
			}); err != nil {
				b.Fatalf("live frames: %v", err)
			}
			if err := l.Update(redirect); err != nil {
				b.Fatal(err)
			}
			before, err := s.Stats()
			if err != nil {
				b.Fatal(err)
			}

			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var stop atomic.Bool
			var offered atomic.Uint64
			var genErr error
			var wg sync.WaitGroup
			batch := make([]Desc, 64)
			b.ResetTimer()
			cpu0 := threadCPU()
			wg.Add(1)
			go func() {
				defer wg.Done()
				genErr = liveFrames(p.B, gen, frame, &stop, &offered)
			}()
			got, idle := 0, 0
			var busy time.Duration
			deadline := time.Now().Add(60 * time.Second)
			for got < b.N {
				t0 := time.Now()
				n := s.Receive(batch)
				if n == 0 {
					// Reading the clock on every empty poll would cost
					// more than the poll; look every 4096.
					if idle++; idle&4095 == 0 && time.Now().After(deadline) {
						break
					}
					if waitEmpty {
						s.Wait(time.Millisecond)
					}
					continue
				}
				s.Release(batch[:n])
				got += n
				busy += time.Since(t0)
			}
			b.StopTimer()
			cpu := threadCPU() - cpu0
			offeredAtN := offered.Load()
			stop.Store(true)
			wg.Wait()
			if genErr != nil {
				b.Fatalf("live frames: %v", genErr)
			}
			if got < b.N {
				b.Fatalf("received %d of %d packets in 60 s", got, b.N)
			}
			// Drain what the last chunk delivered, so the next run starts
			// with an empty rx ring.
			for i := 0; i < 1000; i++ {
				n := s.Receive(batch)
				if n == 0 {
					break
				}
				s.Release(batch[:n])
				got += n
			}
			after, err := s.Stats()
			if err != nil {
				b.Fatal(err)
			}
			refNs := float64(ref.Nanoseconds()) / float64(refN)
			perPkt := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(refNs, "xdpdrop-ns/pkt")
			b.ReportMetric(perPkt/refNs, "x-xdpdrop")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "rxcpu-ns/pkt")
			b.ReportMetric(float64(busy.Nanoseconds())/float64(b.N), "rxbusy-ns/pkt")
			b.ReportMetric(1e3/perPkt, "Mpps")
			off := float64(offered.Load())
			if off > 0 {
				b.ReportMetric(100*max(0, off-float64(got))/off, "loss-%")
			}
			// Chunks are counted when they finish, so this is a lower
			// bound of the generator's rate while the timer ran.
			b.ReportMetric(float64(offeredAtN)/b.Elapsed().Seconds()/1e6, "offered-Mpps")
			b.ReportMetric(float64(after.RxPackets-before.RxPackets)/float64(after.RxBatches-before.RxBatches), "pkts/batch")
			b.Logf("N=%d offered %.0f received %d; kernel: ring-full +%d fill-empty +%d dropped +%d",
				b.N, off, got, after.RxRingFull-before.RxRingFull,
				after.RxFillRingEmptyDescs-before.RxFillRingEmptyDescs, after.RxDropped-before.RxDropped)
		})
	}
}
