package tun

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// BenchmarkWrite measures Queue.Write per packet (batches of 32) for the
// inbound direction: the packets are to a remote address and the
// namespace does not forward, so the kernel drops them right after its
// route lookup; what is left is the TUN write path itself. The reference,
// in the same run, is a UDP socket send of the same size through the
// TUN route (what the local stack pays to emit one packet).
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			ns, d := newTestDevice(b, 1)
			q := d.Queue(0)
			pkt := buildUDP(remoteIP4, netip.MustParseAddr("203.0.113.99"), 4000, 9, make([]byte, size-28))
			batch := make([][]byte, 32)
			for i := range batch {
				batch[i] = pkt
			}
			var conn *net.UDPConn
			if err := ns.Do(func() error {
				var err error
				conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remoteIP4, 9)))
				return err
			}); err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			payload := make([]byte, size-28)
			// Reference: the stack's own per-packet send cost.
			const refN = 20000
			start := time.Now()
			for i := 0; i < refN; i++ {
				conn.Write(payload)
			}
			refNs := float64(time.Since(start).Nanoseconds()) / refN
			b.ResetTimer()
			var pkts int
			for b.Loop() {
				n, err := q.Write(batch)
				if err != nil {
					b.Fatal(err)
				}
				pkts += n
			}
			b.StopTimer()
			perPkt := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
			b.ReportMetric(perPkt, "ns/pkt")
			b.ReportMetric(1e3/perPkt, "Mpps")
			b.ReportMetric(refNs, "udp-send-ns/pkt")
			b.ReportMetric(perPkt/refNs, "x-udp-send")
		})
	}
}

// BenchmarkRead measures TryRead per packet (batches of 32) for the
// outbound direction. Packets come from a UDP socket in the namespace
// (the local stack sending through the TUN); the same sends without
// reading, measured in the same run, are subtracted to give the read
// cost alone.
func BenchmarkRead(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			ns, d := newTestDevice(b, 1)
			q := d.Queue(0)
			var conn *net.UDPConn
			if err := ns.Do(func() error {
				var err error
				conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remoteIP4, 9)))
				return err
			}); err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			payload := make([]byte, size-28)
			bufs := make([][]byte, 32)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, 32)
			drain := func() {
				for {
					if n, _ := q.TryRead(bufs, sizes); n == 0 {
						return
					}
				}
			}
			// Reference: 32 sends, then drop them unread by draining
			// outside the clock.
			const refRounds = 500
			var refNs time.Duration
			for r := 0; r < refRounds; r++ {
				start := time.Now()
				for i := 0; i < 32; i++ {
					conn.Write(payload)
				}
				refNs += time.Since(start)
				drain()
			}
			sendNs := float64(refNs.Nanoseconds()) / (refRounds * 32)
			drain()
			b.ResetTimer()
			var pkts int
			for b.Loop() {
				for i := 0; i < 32; i++ {
					conn.Write(payload)
				}
				for got := 0; got < 32; {
					n, err := q.TryRead(bufs, sizes)
					if err != nil {
						b.Fatal(err)
					}
					got += n
					pkts += n
				}
			}
			b.StopTimer()
			total := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
			b.ReportMetric(total, "send+read-ns/pkt")
			b.ReportMetric(sendNs, "send-ns/pkt")
			b.ReportMetric(total-sendNs, "read-ns/pkt")
			b.ReportMetric((total-sendNs)/sendNs, "read-x-send")
		})
	}
}
