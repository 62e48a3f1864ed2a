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
	src      string // 198.51.100.7 when empty
	dst      string
	proto    byte
	payload  []byte
	options  int    // option bytes (multiple of 4)
	frag     uint16 // flags+offset field
	totDelta int    // added to the correct total length
	ihl      int    // overrides IHL when non-zero
	version  byte   // overrides 4 when non-zero
	badCsum  bool   // header checksum off by one (correct otherwise)
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
	src := p.src
	if src == "" {
		src = "198.51.100.7"
	}
	copy(b[12:], netip.MustParseAddr(src).AsSlice())
	copy(b[16:], netip.MustParseAddr(p.dst).AsSlice())
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP options
	}
	if ihl := int(b[0]&0x0f) * 4; ihl >= 20 && ihl <= hl {
		binary.BigEndian.PutUint16(b[10:], ipv4Checksum(b[:ihl]))
	}
	if p.badCsum {
		b[11]++
	}
	return append(b, p.payload...)
}

func (p v4) frame(tpids ...uint16) []byte { return ether(0x0800, p.bytes(), tpids...) }

// ipv4Checksum is the RFC 791 header checksum of h (its checksum field
// counted as zero), written here from the RFC, independently of the C.
func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i != 10 {
			sum += uint32(binary.BigEndian.Uint16(h[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ext is one IPv6 extension header: type and length in 8-byte units
// beyond the first 8. A routing header (43) has routing type 4 and
// segleft segments left; other types are filled with PadN.
type ext struct {
	typ     byte
	len     byte
	segleft byte
}

type v6 struct {
	dst      string
	proto    byte // after the extension headers
	payload  []byte
	exts     []ext
	plDelta  int // added to the correct payload length
	fragment bool
	// fragField is the fragment header's offset+flags field when fragment
	// is set: 0 is an atomic fragment (RFC 6946); fragFirst (offset 0,
	// M=1) the first of several.
	fragField uint16
}

// fragFirst is the first fragment of several: offset 0, M set.
const fragFirst = 1

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
		switch e.typ {
		case 43:
			h[2], h[3] = 4, e.segleft
		case 44:
		default:
			h[2], h[3] = 1, byte(len(h)-4) // PadN filling the rest
		}
		chain = append(chain, h...)
		i++
	}
	if p.fragment {
		h := make([]byte, 8)
		h[0] = types[i+1]
		binary.BigEndian.PutUint16(h[2:], p.fragField)
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

// withCsum puts a non-zero checksum in the UDP header u (IPv6 requires
// one; the program reads only whether it is zero, ESP's ICV covers the
// payload).
func withCsum(u []byte) []byte {
	binary.BigEndian.PutUint16(u[6:], 0x5a5a)
	return u
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
