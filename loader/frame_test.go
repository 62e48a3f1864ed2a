package loader

import (
	"encoding/binary"
	"github.com/cilium/ebpf"
	"github.com/xdpsec/xdpsec/bpf"
	"net/netip"
)

// Frame builders for crafted test packets. They write exactly the bytes
// asked for, so tests can also build broken headers on purpose.

var (
	macDst = []byte{0x02, 0, 0, 0, 0, 0x01}
	macSrc = []byte{0x02, 0, 0, 0, 0, 0x02}
)

// ether wraps l3 in an Ethernet header, with one VLAN tag per TPID given
// (outermost first).
func ether(etype uint16, l3 []byte, tpids ...uint16) []byte {
	b := append(append([]byte{}, macDst...), macSrc...)
	for i, tpid := range tpids {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // TCI: VLAN 100, 101
	}
	b = binary.BigEndian.AppendUint16(b, etype)
	return append(b, l3...)
}

type v4 struct {
	dst      string
	proto    byte
	payload  []byte
	options  int    // option bytes (multiple of 4)
	frag     uint16 // flags+offset field
	totDelta int    // added to the correct total length
	ihl      int    // overrides IHL when non-zero
	version  byte   // overrides 4 when non-zero
}

func (p v4) bytes() []byte {
	hl := 20 + p.options
	b := make([]byte, hl, hl+len(p.payload))
	ver, ihl := byte(4), byte(hl/4)
	if p.version != 0 {
		ver = p.version
	}
	if p.ihl != 0 {
		ihl = byte(p.ihl)
	}
	b[0] = ver<<4 | ihl
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(p.payload)+p.totDelta))
	binary.BigEndian.PutUint16(b[6:], p.frag)
	b[8], b[9] = 64, p.proto
	copy(b[12:], netip.MustParseAddr("198.51.100.7").AsSlice())
	copy(b[16:], netip.MustParseAddr(p.dst).AsSlice())
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP options
	}
	return append(b, p.payload...)
}

func (p v4) frame(tpids ...uint16) []byte { return ether(0x0800, p.bytes(), tpids...) }

// ext is one IPv6 extension header: type and length in 8-byte units
// beyond the first 8.
type ext struct {
	typ byte
	len byte
}

type v6 struct {
	dst      string
	proto    byte // after the extension headers
	payload  []byte
	exts     []ext
	plDelta  int // added to the correct payload length
	fragment bool
}

func (p v6) bytes() []byte {
	var chain []byte
	types := []byte{}
	for _, e := range p.exts {
		types = append(types, e.typ)
	}
	if p.fragment {
		types = append(types, 44)
	}
	types = append(types, p.proto)
	i := 0
	for _, e := range p.exts {
		h := make([]byte, (int(e.len)+1)*8)
		h[0], h[1] = types[i+1], e.len
		if e.typ != 44 {
			h[2], h[3] = 1, byte(len(h)-4) // PadN filling the rest
		}
		chain = append(chain, h...)
		i++
	}
	if p.fragment {
		h := make([]byte, 8)
		h[0] = types[i+1]
		binary.BigEndian.PutUint16(h[2:], 1) // offset 0, M=1
		chain = append(chain, h...)
	}
	b := make([]byte, 40)
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(p.payload)+p.plDelta))
	b[6], b[7] = types[0], 64
	copy(b[8:], netip.MustParseAddr("2001:db8::99").AsSlice())
	copy(b[24:], netip.MustParseAddr(p.dst).AsSlice())
	return append(append(b, chain...), p.payload...)
}

func (p v6) frame(tpids ...uint16) []byte { return ether(0x86dd, p.bytes(), tpids...) }

// esp is an ESP header with SPI and sequence number 1, then n bytes of
// "ciphertext" (n may be negative to truncate the header itself).
func esp(spi uint32, n int) []byte {
	b := binary.BigEndian.AppendUint32(nil, spi)
	b = binary.BigEndian.AppendUint32(b, 1)
	for i := range max(n, 0) {
		b = append(b, byte(i))
	}
	if n < 0 {
		b = b[:8+n]
	}
	return b
}

// ah is an AH header with the given next header, SPI and ICV length;
// hdrlen is computed unless override >= 0.
func ah(next byte, spi uint32, icv int, override int, rest []byte) []byte {
	b := []byte{next, byte((12+icv)/4 - 2), 0, 0}
	if override >= 0 {
		b[1] = byte(override)
	}
	b = binary.BigEndian.AppendUint32(b, spi)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, make([]byte, icv)...)
	return append(b, rest...)
}

// udp is a UDP header to dport (source 4500) with the given payload;
// lenDelta is added to the correct length field.
func udp(dport uint16, payload []byte, lenDelta int) []byte {
	b := binary.BigEndian.AppendUint16(nil, 4500)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)+lenDelta))
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, payload...)
}

func tcp(dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = 0x02 // SYN
	return b
}

func loadSpecForTest() (*ebpf.CollectionSpec, error) { return bpf.LoadSpec() }
