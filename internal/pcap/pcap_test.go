package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPacket is what a test expects to read back.
type testPacket struct {
	ts      time.Time
	lt      LinkType
	data    []byte
	origLen int
}

func readAll(t *testing.T, r *Reader) []testPacket {
	t.Helper()
	var got []testPacket
	for i := 0; ; i++ {
		p, err := r.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if p.Index != i {
			t.Fatalf("packet %d has Index %d", i, p.Index)
		}
		got = append(got, testPacket{p.Timestamp, p.LinkType, append([]byte(nil), p.Data...), p.OrigLen})
	}
}

func comparePackets(t *testing.T, got, want []testPacket) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.ts.Equal(w.ts) {
			t.Errorf("packet %d: timestamp %v, want %v", i, g.ts, w.ts)
		}
		if g.lt != w.lt {
			t.Errorf("packet %d: link type %v, want %v", i, g.lt, w.lt)
		}
		if !bytes.Equal(g.data, w.data) {
			t.Errorf("packet %d: data\n%x\nwant\n%x", i, g.data, w.data)
		}
		if g.origLen != w.origLen {
			t.Errorf("packet %d: original length %d, want %d", i, g.origLen, w.origLen)
		}
	}
}

// samplePackets returns frames of assorted sizes, including an empty one
// and one cut at a snap length.
func samplePackets(lt LinkType, res Resolution) []testPacket {
	base := time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.UTC)
	if res == Microsecond {
		base = base.Truncate(time.Microsecond)
	}
	var ps []testPacket
	for i, n := range []int{0, 1, 60, 1514, 9000, 65535} {
		d := make([]byte, n)
		for j := range d {
			d[j] = byte(i*31 + j)
		}
		ps = append(ps, testPacket{base.Add(time.Duration(i) * time.Second), lt, d, n})
	}
	ps[3].origLen = 4000 // captured 1514 of 4000
	return ps
}

func TestWriteReadRoundTrip(t *testing.T) {
	for _, c := range []struct {
		lt  LinkType
		res Resolution
	}{{LinkTypeEthernet, Microsecond}, {LinkTypeRaw, Nanosecond}, {LinkTypeIPv6, Nanosecond}} {
		t.Run(fmt.Sprintf("%v-%d", c.lt, c.res), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rt.pcap")
			w, err := Create(path, c.lt, c.res)
			if err != nil {
				t.Fatal(err)
			}
			want := samplePackets(c.lt, c.res)
			for _, p := range want {
				if err := w.WritePacketLen(p.ts, p.data, p.origLen); err != nil {
					t.Fatal(err)
				}
			}
			if w.Count() != len(want) {
				t.Fatalf("Count %d, want %d", w.Count(), len(want))
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v (%v), want 0600", st.Mode(), err)
			}
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.LinkType() != c.lt || r.IsPcapng() {
				t.Fatalf("LinkType %v IsPcapng %v", r.LinkType(), r.IsPcapng())
			}
			comparePackets(t, readAll(t, r), want)
			// After EOF the reader keeps saying EOF.
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after EOF: %v", err)
			}
		})
	}
}

func TestWriterRejectsShortOrigLen(t *testing.T) {
	w, err := NewWriter(io.Discard, LinkTypeRaw, Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacketLen(time.Now(), make([]byte, 10), 5); err == nil {
		t.Fatal("origLen < captured length accepted")
	}
}

// classicFile builds a classic pcap file by hand in byte order bo, to
// check the reader independently of the writer.
func classicFile(bo order, nano bool, lt LinkType, ps []testPacket) []byte {
	var b []byte
	magic := magicMicro
	if nano {
		magic = magicNano
	}
	b = bo.AppendUint32(b, magic)
	b = bo.AppendUint16(b, 2)
	b = bo.AppendUint16(b, 4)
	b = bo.AppendUint32(b, 0)
	b = bo.AppendUint32(b, 0)
	b = bo.AppendUint32(b, 65535)
	b = bo.AppendUint32(b, uint32(lt)|0x10000000) // FCS bits set: must be ignored
	for _, p := range ps {
		frac := uint32(p.ts.Nanosecond())
		if !nano {
			frac /= 1000
		}
		b = bo.AppendUint32(b, uint32(p.ts.Unix()))
		b = bo.AppendUint32(b, frac)
		b = bo.AppendUint32(b, uint32(len(p.data)))
		b = bo.AppendUint32(b, uint32(p.origLen))
		b = append(b, p.data...)
	}
	return b
}

func TestClassicByteOrders(t *testing.T) {
	for _, bo := range []order{binary.LittleEndian, binary.BigEndian} {
		for _, nano := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v-nano=%v", bo, nano), func(t *testing.T) {
				res := Microsecond
				if nano {
					res = Nanosecond
				}
				want := samplePackets(LinkTypeLinuxSLL2, res)
				r, err := NewReader(bytes.NewReader(classicFile(bo, nano, LinkTypeLinuxSLL2, want)))
				if err != nil {
					t.Fatal(err)
				}
				comparePackets(t, readAll(t, r), want)
			})
		}
	}
}

// ngBlock appends one pcapng block with its padded body.
func ngBlock(b []byte, bo order, typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body))
	b = bo.AppendUint32(b, typ)
	b = bo.AppendUint32(b, total)
	b = append(b, body...)
	return bo.AppendUint32(b, total)
}

func ngSHB(b []byte, bo order) []byte {
	var body []byte
	body = bo.AppendUint32(body, byteOrderMagic)
	body = bo.AppendUint16(body, 1)
	body = bo.AppendUint16(body, 0)
	body = bo.AppendUint64(body, ^uint64(0))
	// shb_userappl option, then end of options.
	body = bo.AppendUint16(body, 4)
	body = bo.AppendUint16(body, 5)
	body = append(body, "xdpsc\x00\x00\x00"...)
	body = bo.AppendUint32(body, 0)
	return ngBlock(b, bo, blockSHB, body)
}

func ngIDB(b []byte, bo order, lt LinkType, tsresol byte, tsoffset int64) []byte {
	var body []byte
	body = bo.AppendUint16(body, uint16(lt))
	body = bo.AppendUint16(body, 0)
	body = bo.AppendUint32(body, 0)
	body = bo.AppendUint16(body, 2) // if_name
	body = bo.AppendUint16(body, 3)
	body = append(body, "lo\x00\x00"...)
	body = bo.AppendUint16(body, 9) // if_tsresol
	body = bo.AppendUint16(body, 1)
	body = append(body, tsresol, 0, 0, 0)
	if tsoffset != 0 {
		body = bo.AppendUint16(body, 14)
		body = bo.AppendUint16(body, 8)
		body = bo.AppendUint64(body, uint64(tsoffset))
	}
	body = bo.AppendUint32(body, 0)
	return ngBlock(b, bo, blockIDB, body)
}

func ngEPB(b []byte, bo order, ifc uint32, ticks uint64, data []byte, origLen int) []byte {
	var body []byte
	body = bo.AppendUint32(body, ifc)
	body = bo.AppendUint32(body, uint32(ticks>>32))
	body = bo.AppendUint32(body, uint32(ticks))
	body = bo.AppendUint32(body, uint32(len(data)))
	body = bo.AppendUint32(body, uint32(origLen))
	body = append(body, data...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	body = bo.AppendUint16(body, 1) // opt_comment
	body = bo.AppendUint16(body, 2)
	body = append(body, "hi\x00\x00"...)
	body = bo.AppendUint32(body, 0)
	return ngBlock(b, bo, blockEPB, body)
}

func TestPcapngHandBuilt(t *testing.T) {
	ts := time.Date(2023, 7, 1, 12, 0, 0, 987654321, time.UTC)
	d1, d2, d3 := []byte{0x45, 1, 2, 3, 4}, bytes.Repeat([]byte{0x60}, 41), []byte{9, 8, 7}
	for _, bo := range []order{binary.LittleEndian, binary.BigEndian} {
		t.Run(fmt.Sprint(bo), func(t *testing.T) {
			var f []byte
			f = ngSHB(f, bo)
			f = ngIDB(f, bo, LinkTypeEthernet, 6, 0)  // microseconds
			f = ngIDB(f, bo, LinkTypeRaw, 9, 0)       // nanoseconds
			f = ngBlock(f, bo, 4, []byte{0, 0, 0, 0}) // name resolution: skipped
			f = ngEPB(f, bo, 1, uint64(ts.UnixNano()), d1, len(d1))
			f = ngEPB(f, bo, 0, uint64(ts.UnixMicro()), d2, 100)
			f = ngBlock(f, bo, 5, make([]byte, 20))     // interface statistics: skipped
			f = ngBlock(f, bo, 0x0bad, make([]byte, 4)) // custom: skipped
			// A second section in the other byte order, with binary
			// (2^-10 s) resolution and an offset of 100 s.
			other := order(binary.BigEndian)
			if bo == binary.BigEndian {
				other = binary.LittleEndian
			}
			f = ngSHB(f, other)
			f = ngIDB(f, other, LinkTypeLinuxSLL, 0x80|10, 100)
			f = ngEPB(f, other, 0, 5*1024+512, d3, len(d3))
			var spb []byte
			spb = other.AppendUint32(spb, 3)
			spb = append(spb, d3...)
			f = ngBlock(f, other, blockSPB, spb)

			r, err := NewReader(bytes.NewReader(f))
			if err != nil {
				t.Fatal(err)
			}
			if !r.IsPcapng() {
				t.Fatal("IsPcapng false")
			}
			want := []testPacket{
				{ts, LinkTypeRaw, d1, len(d1)},
				{ts.Truncate(time.Microsecond), LinkTypeEthernet, d2, 100},
				{time.Unix(105, 500_000_000).UTC(), LinkTypeLinuxSLL, d3, 3},
				{time.Time{}, LinkTypeLinuxSLL, d3, 3},
			}
			comparePackets(t, readAll(t, r), want)
		})
	}
}

func TestNotPcap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("hello, this is text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if !errors.Is(err, ErrNotPcap) {
		t.Fatalf("got %v, want ErrNotPcap", err)
	}
	want := path + " is not a pcap or pcapng file (magic 0x68656c6c)"
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	for _, in := range [][]byte{nil, {0xd4, 0xc3}, []byte("\x0a\x0d\x0d\x0a\x1c\x00\x00\x00XXXX")} {
		if _, err := NewReader(bytes.NewReader(in)); !errors.Is(err, ErrNotPcap) {
			t.Errorf("%q: got %v, want ErrNotPcap", in, err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.pcap")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestTruncatedRecords(t *testing.T) {
	ps := samplePackets(LinkTypeEthernet, Microsecond)[:4]
	full := classicFile(binary.LittleEndian, false, LinkTypeEthernet, ps)
	// Record 2 starts after the file header and records 0 and 1.
	rec2 := 24 + 16 + 0 + 16 + 1
	for _, cut := range []int{rec2 + 3, rec2 + 16, rec2 + 16 + 59} {
		r, err := NewReader(bytes.NewReader(full[:cut]))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for ; ; n++ {
			if _, err = r.Next(); err != nil {
				break
			}
		}
		if n != 2 || !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "record 2") {
			t.Errorf("cut at %d: %d packets then %v; want 2 then a truncation of record 2", cut, n, err)
		}
		if _, err2 := r.Next(); err2 != err {
			t.Errorf("error is not sticky: %v then %v", err, err2)
		}
	}
	// pcapng: cut inside the second packet block.
	var f []byte
	f = ngSHB(f, binary.LittleEndian)
	f = ngIDB(f, binary.LittleEndian, LinkTypeRaw, 6, 0)
	f = ngEPB(f, binary.LittleEndian, 0, 1, []byte{0x45}, 1)
	f = ngEPB(f, binary.LittleEndian, 0, 2, make([]byte, 40), 40)
	r, err := NewReader(bytes.NewReader(f[:len(f)-10]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "record 1") {
		t.Fatalf("got %v, want truncation of record 1", err)
	}
}

func TestMalformed(t *testing.T) {
	le := binary.LittleEndian
	huge := classicFile(le, false, LinkTypeRaw, []testPacket{{time.Unix(1, 0), LinkTypeRaw, []byte{0x45}, 1}})
	le.PutUint32(huge[24+8:], MaxCaptureLen+1)
	var badLen, noIface, badTrailer []byte
	badLen = ngSHB(badLen, le)
	badLen = append(badLen, 6, 0, 0, 0, 13, 0, 0, 0)
	noIface = ngSHB(noIface, le)
	noIface = ngEPB(noIface, le, 0, 1, []byte{1}, 1)
	badTrailer = ngSHB(badTrailer, le)
	badTrailer = ngIDB(badTrailer, le, LinkTypeRaw, 6, 0)
	badTrailer[len(badTrailer)-1] = 0x7f
	for name, in := range map[string][]byte{"caplen": huge, "blocklen": badLen, "iface": noIface, "trailer": badTrailer} {
		r, err := NewReader(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := r.Next(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestL3Offset(t *testing.T) {
	ip4 := []byte{0x45, 0, 0, 20}
	ip6 := []byte{0x60, 0, 0, 0}
	eth := func(types ...uint16) []byte {
		b := make([]byte, 12)
		for _, et := range types {
			b = binary.BigEndian.AppendUint16(b, et)
			if et == 0x8100 || et == 0x88a8 || et == 0x9100 {
				b = append(b, 0, 1)
			}
		}
		return b
	}
	sll := func(et uint16) []byte {
		b := make([]byte, 14)
		return binary.BigEndian.AppendUint16(b, et)
	}
	sll2 := func(et uint16) []byte {
		b := binary.BigEndian.AppendUint16(nil, et)
		return append(b, make([]byte, 18)...)
	}
	cat := func(a, b []byte) []byte { return append(append([]byte(nil), a...), b...) }
	for _, c := range []struct {
		name  string
		lt    LinkType
		frame []byte
		off   int
		et    uint16
	}{
		{"eth4", LinkTypeEthernet, cat(eth(0x0800), ip4), 14, EtherTypeIPv4},
		{"eth6", LinkTypeEthernet, cat(eth(0x86dd), ip6), 14, EtherTypeIPv6},
		{"dot1q", LinkTypeEthernet, cat(eth(0x8100, 0x0800), ip4), 18, EtherTypeIPv4},
		{"qinq", LinkTypeEthernet, cat(eth(0x88a8, 0x8100, 0x86dd), ip6), 22, EtherTypeIPv6},
		{"three-tags", LinkTypeEthernet, cat(eth(0x88a8, 0x8100, 0x8100, 0x0800), ip4), 0, 0},
		{"arp", LinkTypeEthernet, cat(eth(0x0806), ip4), 0, 0},
		{"eth-short", LinkTypeEthernet, make([]byte, 13), 0, 0},
		{"eth-no-payload", LinkTypeEthernet, eth(0x0800), 0, 0},
		{"raw4", LinkTypeRaw, ip4, 0, EtherTypeIPv4},
		{"raw6", LinkTypeRaw, ip6, 0, EtherTypeIPv6},
		{"raw5", LinkTypeRaw, []byte{0x50}, 0, 0},
		{"raw-empty", LinkTypeRaw, nil, 0, 0},
		{"ipv4", LinkTypeIPv4, ip4, 0, EtherTypeIPv4},
		{"ipv6", LinkTypeIPv6, ip6, 0, EtherTypeIPv6},
		{"sll", LinkTypeLinuxSLL, cat(sll(0x0800), ip4), 16, EtherTypeIPv4},
		{"sll2", LinkTypeLinuxSLL2, cat(sll2(0x86dd), ip6), 20, EtherTypeIPv6},
		{"sll2-short", LinkTypeLinuxSLL2, make([]byte, 19), 0, 0},
		{"unknown", LinkType(147), ip4, 0, 0},
	} {
		off, et, err := L3Offset(c.lt, c.frame)
		if c.et == 0 {
			if !errors.Is(err, ErrNoL3) {
				t.Errorf("%s: got (%d, %#x, %v), want ErrNoL3", c.name, off, et, err)
			}
			continue
		}
		if err != nil || off != c.off || et != c.et {
			t.Errorf("%s: got (%d, %#x, %v), want (%d, %#x)", c.name, off, et, err, c.off, c.et)
		}
		eframe, err := EthernetFrame(nil, c.lt, c.frame)
		if err != nil {
			t.Errorf("%s: EthernetFrame: %v", c.name, err)
			continue
		}
		eoff, eet, err := L3Offset(LinkTypeEthernet, eframe)
		if err != nil || eet != c.et || !bytes.Equal(eframe[eoff:], c.frame[c.off:]) {
			t.Errorf("%s: EthernetFrame %x does not carry the same L3 packet", c.name, eframe)
		}
	}
}

// order is a byte order that can also append, as both binary.LittleEndian
// and binary.BigEndian do.
type order interface {
	binary.ByteOrder
	binary.AppendByteOrder
}
