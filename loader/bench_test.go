package loader

import (
	"math"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/bpf"
	"github.com/xdpsec/xdpsec/internal/testutil"
)

// BenchmarkClassify measures the attached variant of the program (no
// classify recording) through BPF_PROG_TEST_RUN with Repeat, next to an
// empty XDP_PASS program run on the same frame in alternating rounds of
// 100000 runs; each metric is the best round.
//
//	ns/pkt, empty-ns/pkt  wall clock per run of the whole test_run loop
//	x-empty               their ratio
//	body-ns/pkt, empty-body-ns/pkt
//	                      the kernel's BPF run-time statistics (program
//	                      body plus two clock reads), enabled for the run
//	net-ns/pkt            body minus empty body: what classifying adds
//
// On a VM with retpolines test_run's per-run overhead (~150 ns) drowns the
// difference in the wall-clock numbers; net-ns/pkt is the one to read.
func BenchmarkClassify(b *testing.B) {
	testutil.RequireRoot(b)
	coll, err := loadCollection(loadParams{maxSAs: DefaultMaxSAs, queues: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer coll.Close()
	maps, err := mapsFrom(coll.Maps)
	if err != nil {
		b.Fatal(err)
	}
	for k, sa := range testSAs {
		if err := maps.PutSA(k, sa); err != nil {
			b.Fatal(err)
		}
	}
	if err := maps.SetConfig(testConfig()); err != nil {
		b.Fatal(err)
	}
	// The frames go to macDst: the link-address check runs in full and
	// passes, as for every frame a NIC not in promiscuous mode delivers.
	if err := maps.SetLinkAddr(macDst); err != nil {
		b.Fatal(err)
	}
	ours := coll.Programs[bpf.ProgClassify]
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "empty_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()

	hbh, rt, dopt := ext{typ: 0}, ext{typ: 43, len: 1}, ext{typ: 60}
	cases := []struct {
		name   string
		frame  []byte
		reason Reason
	}{
		{"ESP-hit", v4{dst: dst4, proto: 50, payload: esp(0x1001, 1400)}.frame(), ReasonSteerFallback},
		{"ESP-miss", v4{dst: dst4, proto: 50, payload: esp(0x9999, 1400)}.frame(), ReasonNoState},
		{"AH", v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 1400))}.frame(), ReasonSteerFallback},
		{"NAT-T-ESP", v4{dst: dst4, proto: 17, payload: udp(4500, esp(0x3001, 1400), 0)}.frame(), ReasonSteerFallback},
		{"IPv6-ext-headers", v6{dst: dst6, proto: 50, exts: []ext{hbh, rt, dopt}, payload: esp(0x1002, 1400)}.frame(), ReasonSteerFallback},
		{"plain-TCP", v4{dst: dst4, proto: 6, payload: append(tcp(443), make([]byte, 1400)...)}.frame(), ReasonPassOther},
	}
	const repeat = 100000
	// BPF run-time statistics time the program body alone (two clock
	// reads around each run), without test_run's per-repeat overhead.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	runtime := func(p *ebpf.Program) (time.Duration, uint64) {
		st, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return st.Runtime, st.RunCount
	}
	// run returns the wall time and the body run time per run, over repeat
	// runs (more when test_run was interrupted and restarted).
	run := func(p *ebpf.Program, frame []byte) (float64, float64) {
		rt0, n0 := runtime(p)
		start := time.Now()
		if _, err := p.Run(&ebpf.RunOptions{Data: frame, Repeat: repeat}); err != nil {
			b.Fatal(err)
		}
		wall := time.Since(start)
		rt1, n1 := runtime(p)
		if n1-n0 < repeat {
			b.Fatalf("stats counted %d runs, want at least %d", n1-n0, repeat)
		}
		return float64(wall.Nanoseconds()) / float64(n1-n0), float64((rt1 - rt0).Nanoseconds()) / float64(n1-n0)
	}
	for _, tc := range cases {
		if got := ReferenceClassify(tc.frame, &ReferenceTable{SAs: testSAs, Config: testConfig()}); got.Reason != tc.reason {
			b.Fatalf("%s frame classifies as %v, want %s", tc.name, got, ReasonName(tc.reason))
		}
		b.Run(tc.name, func(b *testing.B) {
			// Rounds alternate the two programs; the minimum over rounds
			// is the least disturbed (2 shared, noisy cores).
			inf := math.Inf(1)
			wallOurs, wallEmpty, bodyOurs, bodyEmpty := inf, inf, inf, inf
			for b.Loop() {
				w, r := run(empty, tc.frame)
				wallEmpty, bodyEmpty = min(wallEmpty, w), min(bodyEmpty, r)
				w, r = run(ours, tc.frame)
				wallOurs, bodyOurs = min(wallOurs, w), min(bodyOurs, r)
			}
			per := func(d float64) float64 { return d }
			b.ReportMetric(per(wallOurs), "ns/pkt")
			b.ReportMetric(per(wallEmpty), "empty-ns/pkt")
			b.ReportMetric(per(wallOurs)/per(wallEmpty), "x-empty")
			b.ReportMetric(per(bodyOurs), "body-ns/pkt")
			b.ReportMetric(per(bodyEmpty), "empty-body-ns/pkt")
			b.ReportMetric(per(bodyOurs)-per(bodyEmpty), "net-ns/pkt")
			b.ReportMetric(0, "ns/op") // one op is 2x100000 runs: not meaningful
		})
	}
}
