package sad

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// refNsPerOp measures f's cost per call outside the benchmark timer, as
// the reference a benchmark reports its ratio against.
func refNsPerOp(n int, f func(i int)) float64 {
	start := time.Now()
	for i := range n {
		f(i)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// BenchmarkSADLookup: the inbound hot path with 1, 100 and 10000 SAs,
// next to a plain Go map keyed by the whole SAKey (the obvious
// implementation) measured in the same run.
func BenchmarkSADLookup(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := NewSAD(Config{Capacity: n})
			ref := map[SAKey]*Association{}
			keys := make([]SAKey, n)
			for i := range n {
				s := mustSA(b, gcmSpec(0x10000+uint32(i), ""))
				a, err := d.Add(s)
				if err != nil {
					b.Fatal(err)
				}
				keys[i] = s.Key()
				ref[s.Key()] = a
			}
			var sink *Association
			refNs := refNsPerOp(1<<20, func(i int) { sink = ref[keys[i%n]] })
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				k := &keys[i%n]
				sink = d.Lookup(k.SPI, k.Dst, k.Proto)
				i++
			}
			_ = sink
			ns := float64(b.Elapsed().Nanoseconds()) / float64(i)
			b.ReportMetric(ns, "ns/lookup")
			b.ReportMetric(ns/refNs, "x-map[SAKey]")
		})
	}
}

// BenchmarkSPDLookup: outbound policy lookup where the matching policy is
// the last of n (the worst case of the linear scan), next to the cost of
// one Selector.Match measured in the same run.
func BenchmarkSPDLookup(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := NewSPD(Config{})
			for i := range n - 1 {
				p, err := ParsePolicy(mustTokenize(b, fmt.Sprintf("src 198.51.100.0/24 dst 203.0.113.0/24 proto tcp dport %d dir out", 1000+i)))
				if err != nil {
					b.Fatal(err)
				}
				d.Add(p)
			}
			last, _ := ParsePolicy(mustTokenize(b, "src 198.51.100.0/24 dst 203.0.113.0/24 dir out priority 1000 tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel"))
			want, _ := d.Add(last)
			src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
			var hit bool
			refNs := refNsPerOp(1<<20, func(int) { hit = last.Sel.Match(src, dst, 17, 53, 53) })
			_ = hit
			b.ReportAllocs()
			b.ResetTimer()
			var got *Policy
			for b.Loop() {
				got = d.Lookup(DirOut, src, dst, 17, 53, 53)
			}
			if got != want {
				b.Fatal("wrong policy")
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(ns, "ns/lookup")
			b.ReportMetric(ns/refNs, "x-one-match")
		})
	}
}

// BenchmarkCount: all goroutines count packets of one SA, each on its own
// shard, next to a single shared atomic counter pair measured the same
// way in the same run.
func BenchmarkCount(b *testing.B) {
	d := NewSAD(Config{Shards: 64})
	a, err := d.Add(mustSA(b, gcmSpec(0x7000, "")))
	if err != nil {
		b.Fatal(err)
	}
	var shardID atomic.Int64
	var pk, by atomic.Uint64
	start := time.Now()
	var refOps atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pk.Add(1)
			by.Add(1400)
			refOps.Add(0)
		}
	})
	refNs := float64(time.Since(start).Nanoseconds())
	b.ResetTimer()
	start = time.Now()
	b.RunParallel(func(pb *testing.PB) {
		id := int(shardID.Add(1))
		for pb.Next() {
			a.Count(id, ipsec.VerdictOK, 1400)
		}
	})
	ns := float64(time.Since(start).Nanoseconds())
	b.ReportMetric(ns/refNs, "x-shared-atomic")
}

// BenchmarkSADLookupOutbound: a worker's outbound SA choice for one
// template. "1sa": one SA. "rekey": two SAs for the selector (the newer
// wins). "pcpu4": four per-queue SAs (pcpu-num 0-3) and a fallback SA
// added last, looked up from queue 3 (the scan passes the fallback and
// three other queues' SAs). The reference is a plain map lookup of the
// selector, measured in the same run.
func BenchmarkSADLookupOutbound(b *testing.B) {
	for _, c := range []struct {
		name  string
		extra []string
		queue int
	}{
		{"1sa", []string{"reqid 1"}, 0},
		{"rekey", []string{"reqid 1", "reqid 1"}, 0},
		{"pcpu4", []string{"reqid 1 pcpu-num 3", "reqid 1 pcpu-num 2", "reqid 1 pcpu-num 1", "reqid 1 pcpu-num 0", "reqid 1"}, 3},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := NewSAD(Config{})
			for i, e := range c.extra {
				if _, err := d.Add(mustSA(b, gcmSpec(0x10000+uint32(i), e))); err != nil {
					b.Fatal(err)
				}
			}
			tm := Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
				Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
			ref := map[outKey]*Association{{tm.Src, tm.Dst, tm.Proto}: d.List()[0]}
			var sink *Association
			refNs := refNsPerOp(1<<20, func(int) { sink = ref[outKey{tm.Src, tm.Dst, tm.Proto}] })
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				sink = d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, c.queue)
				n++
			}
			if sink == nil {
				b.Fatal("no SA found")
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(n)
			b.ReportMetric(ns, "ns/lookup")
			b.ReportMetric(ns/refNs, "x-map[selector]")
		})
	}
}
