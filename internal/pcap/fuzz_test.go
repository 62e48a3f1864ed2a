package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// FuzzReader feeds arbitrary bytes to the reader: it must never panic or
// allocate beyond its limits, every packet it hands out must satisfy the
// documented invariants, and whatever it reads must survive a write and a
// re-read unchanged. Seeds: testdata/fuzz/FuzzReader (files made by
// text2pcap, tcpdump and dumpcap) plus the hand-built files below.
func FuzzReader(f *testing.F) {
	le, be := binary.LittleEndian, binary.BigEndian
	ps := samplePackets(LinkTypeEthernet, Nanosecond)[:3]
	f.Add(classicFile(le, false, LinkTypeEthernet, ps))
	f.Add(classicFile(be, true, LinkTypeRaw, ps))
	var ng []byte
	ng = ngSHB(ng, be)
	ng = ngIDB(ng, be, LinkTypeLinuxSLL2, 0x80|20, 7)
	ng = ngEPB(ng, be, 0, 12345, []byte{0, 8, 0, 0, 0x45}, 60)
	ng = ngBlock(ng, be, blockSPB, []byte{0, 0, 0, 2, 0x60, 0})
	f.Add(ng)
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := NewReader(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrNotPcap) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("header error without a sentinel: %v", err)
			}
			return
		}
		var got []Packet
		var out bytes.Buffer
		w, err := NewWriter(&out, LinkTypeRaw, Nanosecond)
		if err != nil {
			t.Fatal(err)
		}
		var frame []byte
		for i := 0; i < 1000; i++ {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("record %d: error without a sentinel: %v", i, err)
				}
				break
			}
			if p.Index != i || len(p.Data) > MaxCaptureLen || p.OrigLen < len(p.Data) {
				t.Fatalf("packet %d: Index %d, %d bytes, original length %d", i, p.Index, len(p.Data), p.OrigLen)
			}
			if off, _, err := L3Offset(p.LinkType, p.Data); err == nil && off >= len(p.Data) {
				t.Fatalf("packet %d: L3 offset %d beyond %d bytes", i, off, len(p.Data))
			}
			frame, _ = EthernetFrame(frame, p.LinkType, p.Data)
			got = append(got, p.Clone())
			// Timestamps before 1970 or after 2106 do not fit classic
			// pcap; the re-read check skips them.
			if err := w.WritePacketLen(p.Timestamp, p.Data, p.OrigLen); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		r2, err := NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range got {
			p, err := r2.Next()
			if err != nil {
				t.Fatalf("re-read packet %d: %v", i, err)
			}
			if !bytes.Equal(p.Data, want.Data) || p.OrigLen != want.OrigLen {
				t.Fatalf("re-read packet %d differs", i)
			}
			if fits(want.Timestamp) && !p.Timestamp.Equal(want.Timestamp) {
				t.Fatalf("re-read packet %d: timestamp %v, want %v", i, p.Timestamp, want.Timestamp)
			}
		}
		if _, err := r2.Next(); err != io.EOF {
			t.Fatalf("re-read: extra packet or error %v", err)
		}
	})
}

func fits(ts time.Time) bool {
	return ts.Unix() >= 0 && ts.Unix() < 1<<32
}
