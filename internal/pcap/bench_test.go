package pcap

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// BenchmarkReader reads a classic pcap of 1400-byte packets from memory
// and reports ns/packet next to the floor: copying the same bytes with
// io.ReadFull in record-sized pieces, measured in the same run.
func BenchmarkReader(b *testing.B) {
	const n = 1000
	ps := make([]testPacket, n)
	for i := range ps {
		ps[i] = testPacket{time.Unix(int64(i), 0), LinkTypeRaw, make([]byte, 1400), 1400}
	}
	file := classicFile(binary.LittleEndian, false, LinkTypeRaw, ps)
	var floor float64
	{
		buf := make([]byte, 16+1400)
		start := time.Now()
		for range 200 {
			br := bytes.NewReader(file[24:])
			for range n {
				io.ReadFull(br, buf)
			}
		}
		floor = float64(time.Since(start).Nanoseconds()) / (200 * n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var pkts int
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(file))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			pkts++
		}
	}
	perPkt := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
	b.ReportMetric(perPkt, "ns/packet")
	b.ReportMetric(perPkt/floor, "x-readfull")
}
