package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Classic pcap magic numbers as read in the file's own byte order.
const (
	magicMicro uint32 = 0xa1b2c3d4
	magicNano  uint32 = 0xa1b23c4d
	// pcapng block types.
	blockSHB uint32 = 0x0a0d0d0a
	blockIDB uint32 = 0x00000001
	blockPB  uint32 = 0x00000002 // obsolete Packet Block, still in old files
	blockSPB uint32 = 0x00000003
	blockEPB uint32 = 0x00000006
	// byteOrderMagic is the SHB's byte-order magic.
	byteOrderMagic uint32 = 0x1a2b3c4d
)

// MaxCaptureLen is the largest captured length of one packet the reader
// accepts (libpcap's MAXIMUM_SNAPLEN). Larger values in a header are
// treated as corruption rather than allocated.
const MaxCaptureLen = 262144

// maxBlockLen bounds a pcapng block the reader loads into memory: a packet
// of MaxCaptureLen plus generous room for options. Blocks the reader skips
// are discarded without being loaded, whatever their size.
const maxBlockLen = MaxCaptureLen + 65536

// Packet is one captured frame.
type Packet struct {
	// Index is the packet's 0-based position among the file's packets.
	Index int
	// Timestamp is when the packet was captured.
	Timestamp time.Time
	// LinkType says which header Data starts with.
	LinkType LinkType
	// Data is the captured bytes. It aliases the Reader's buffer and is
	// valid only until the next call to Next; use Clone to keep it.
	Data []byte
	// OrigLen is the packet's length on the wire; larger than len(Data)
	// when the capture was cut at a snap length.
	OrigLen int
	// Interface is the pcapng interface index (always 0 for classic pcap).
	Interface int
}

// Clone returns a copy of p whose Data no longer aliases the Reader.
func (p Packet) Clone() Packet {
	p.Data = append([]byte(nil), p.Data...)
	return p
}

// Truncated reports whether the packet was cut at a snap length.
func (p Packet) Truncated() bool { return p.OrigLen > len(p.Data) }

type iface struct {
	linkType LinkType
	// tsUnit is the length of one timestamp tick; tsOffset is added in
	// seconds (pcapng if_tsresol and if_tsoffset).
	tsUnit   time.Duration
	tsPerSec uint64 // ticks per second when tsUnit would be below 1ns
	tsOffset int64
}

// Reader streams packets out of a classic pcap or pcapng file. It is not
// safe for concurrent use.
type Reader struct {
	name  string
	r     *bufio.Reader
	close io.Closer
	ng    bool
	order binary.ByteOrder
	// classic
	linkType LinkType
	nano     bool
	snapLen  uint32
	// pcapng
	ifaces []iface
	// index is the number of packets handed out so far; blockIndex counts
	// pcapng blocks, for error messages about non-packet blocks.
	index      int
	blockIndex int
	hdr        [28]byte
	buf        []byte
	err        error
}

// Open opens the capture file name for streaming. Errors name the file.
// Close releases it.
func Open(name string) (*Reader, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	r, err := newReader(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.close = f
	return r, nil
}

// NewReader reads the file header from r and returns a Reader for the
// packets that follow. Errors call the input "input"; use Open to have
// them name a file. A stream that is neither pcap nor pcapng gives an
// error wrapping ErrNotPcap.
func NewReader(r io.Reader) (*Reader, error) {
	return newReader(r, "input")
}

func newReader(r io.Reader, name string) (*Reader, error) {
	rd := &Reader{name: name, r: bufio.NewReaderSize(r, 64<<10)}
	var m [4]byte
	n, err := io.ReadFull(rd.r, m[:])
	if err != nil {
		if n == 0 {
			return nil, fmt.Errorf("%s is %w (empty file)", name, ErrNotPcap)
		}
		return nil, fmt.Errorf("%s is %w (only %d bytes)", name, ErrNotPcap, n)
	}
	le, be := binary.LittleEndian.Uint32(m[:]), binary.BigEndian.Uint32(m[:])
	switch {
	case le == magicMicro || le == magicNano:
		rd.order, rd.nano = binary.LittleEndian, le == magicNano
	case be == magicMicro || be == magicNano:
		rd.order, rd.nano = binary.BigEndian, be == magicNano
	case le == blockSHB:
		rd.ng = true
		var l [4]byte
		if _, err := io.ReadFull(rd.r, l[:]); err != nil {
			return nil, fmt.Errorf("%s: pcapng section header: %w", name, ErrTruncated)
		}
		if err := rd.readSHB(l[:], true); err != nil {
			return nil, err
		}
		return rd, nil
	default:
		return nil, fmt.Errorf("%s is %w (magic 0x%08x)", name, ErrNotPcap, be)
	}
	var h [20]byte
	if _, err := io.ReadFull(rd.r, h[:]); err != nil {
		return nil, fmt.Errorf("%s: file header: %w (%v)", name, ErrTruncated, err)
	}
	// h: version major(2) minor(2) thiszone(4) sigfigs(4) snaplen(4) linktype(4)
	if major := rd.order.Uint16(h[0:]); major != 2 {
		return nil, fmt.Errorf("%s: pcap version %d.%d is not 2.x: %w", name, major, rd.order.Uint16(h[2:]), ErrMalformed)
	}
	rd.snapLen = rd.order.Uint32(h[12:])
	// The low 16 bits are the link type; the upper bits carry FCS
	// information we do not need.
	rd.linkType = LinkType(rd.order.Uint32(h[16:]) & 0xffff)
	return rd, nil
}

// Close closes the file when the Reader came from Open; otherwise it does
// nothing.
func (r *Reader) Close() error {
	if r.close != nil {
		err := r.close.Close()
		r.close = nil
		return err
	}
	return nil
}

// LinkType returns the link type of a classic pcap file, or of the first
// interface of a pcapng file once a packet of it was read (0 before).
// Packet.LinkType is the authoritative per-packet value.
func (r *Reader) LinkType() LinkType {
	if r.ng {
		if len(r.ifaces) > 0 {
			return r.ifaces[0].linkType
		}
		return 0
	}
	return r.linkType
}

// IsPcapng reports whether the file is pcapng (not classic pcap).
func (r *Reader) IsPcapng() bool { return r.ng }

// Next returns the next packet, or io.EOF after the last one. The
// packet's Data aliases a buffer the Reader reuses: it is valid until the
// next call. After an error other than io.EOF the Reader keeps returning
// that error.
func (r *Reader) Next() (Packet, error) {
	if r.err != nil {
		return Packet{}, r.err
	}
	var p Packet
	var err error
	if r.ng {
		p, err = r.nextNG()
	} else {
		p, err = r.nextClassic()
	}
	if err != nil {
		r.err = err
		return Packet{}, err
	}
	r.index++
	return p, nil
}

func (r *Reader) truncated(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: record %d: %s: %w", r.name, r.index, what, ErrTruncated)
	}
	return fmt.Errorf("%s: record %d: %s: %w", r.name, r.index, what, err)
}

func (r *Reader) grow(n int) []byte {
	if cap(r.buf) < n {
		r.buf = make([]byte, n, max(n, 2048))
	}
	return r.buf[:n]
}

func (r *Reader) nextClassic() (Packet, error) {
	h := r.hdr[:16]
	n, err := io.ReadFull(r.r, h)
	if err != nil {
		if n == 0 && err == io.EOF {
			return Packet{}, io.EOF
		}
		return Packet{}, r.truncated(fmt.Sprintf("record header has %d of 16 bytes", n), err)
	}
	sec, frac := r.order.Uint32(h[0:]), r.order.Uint32(h[4:])
	incl, orig := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if incl > MaxCaptureLen {
		return Packet{}, fmt.Errorf("%s: record %d: captured length %d exceeds %d: %w", r.name, r.index, incl, MaxCaptureLen, ErrMalformed)
	}
	data := r.grow(int(incl))
	if n, err := io.ReadFull(r.r, data); err != nil {
		return Packet{}, r.truncated(fmt.Sprintf("has %d of %d captured bytes", n, incl), err)
	}
	if !r.nano {
		frac *= 1000
	}
	return Packet{
		Index:     r.index,
		Timestamp: time.Unix(int64(sec), int64(frac)).UTC(),
		LinkType:  r.linkType,
		Data:      data,
		OrigLen:   int(max(orig, incl)),
	}, nil
}

func (r *Reader) nextNG() (Packet, error) {
	for {
		h := r.hdr[:8]
		n, err := io.ReadFull(r.r, h)
		if err != nil {
			if n == 0 && err == io.EOF {
				return Packet{}, io.EOF
			}
			return Packet{}, r.truncated(fmt.Sprintf("block header has %d of 8 bytes", n), err)
		}
		r.blockIndex++
		typ := r.order.Uint32(h[0:])
		if typ == blockSHB {
			// A new section may switch byte order; its type reads the same
			// either way. Re-read its length in the new order.
			if err := r.readSHB(h[4:], false); err != nil {
				return Packet{}, err
			}
			continue
		}
		total := r.order.Uint32(h[4:])
		if total < 12 || total%4 != 0 {
			return Packet{}, fmt.Errorf("%s: record %d: pcapng block type 0x%x has length %d (must be a multiple of 4, at least 12): %w", r.name, r.index, typ, total, ErrMalformed)
		}
		bodyLen := int64(total) - 12
		switch typ {
		case blockIDB, blockEPB, blockSPB, blockPB:
		default:
			// Name resolution, statistics, decryption secrets, custom
			// blocks: not needed to read packets.
			if _, err := io.CopyN(io.Discard, r.r, bodyLen+4); err != nil {
				return Packet{}, r.truncated(fmt.Sprintf("pcapng block type 0x%x of %d bytes", typ, total), err)
			}
			continue
		}
		if total > maxBlockLen {
			return Packet{}, fmt.Errorf("%s: record %d: pcapng block of %d bytes exceeds %d: %w", r.name, r.index, total, maxBlockLen, ErrMalformed)
		}
		// Body plus the trailing copy of the length.
		body := r.grow(int(bodyLen) + 4)
		if n, err := io.ReadFull(r.r, body); err != nil {
			return Packet{}, r.truncated(fmt.Sprintf("pcapng block has %d of %d bytes", n+8, total), err)
		}
		if trail := r.order.Uint32(body[bodyLen:]); trail != total {
			return Packet{}, fmt.Errorf("%s: record %d: pcapng block length %d but trailer says %d: %w", r.name, r.index, total, trail, ErrMalformed)
		}
		body = body[:bodyLen]
		switch typ {
		case blockIDB:
			if err := r.addInterface(body); err != nil {
				return Packet{}, err
			}
			continue
		case blockEPB, blockPB:
			return r.packetFromEPB(typ, body)
		case blockSPB:
			return r.packetFromSPB(body)
		}
	}
}

// readSHB reads the rest of a section header block whose type and length
// (lenBytes, still in unknown byte order) were just read. It fixes the
// byte order of the section and forgets the previous section's
// interfaces. first is true for the block that opens the file, where a
// bad byte-order magic means the input is not pcapng at all.
func (r *Reader) readSHB(lenBytes []byte, first bool) error {
	var rest [4]byte
	if _, err := io.ReadFull(r.r, rest[:]); err != nil {
		return r.truncated("section header", err)
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint32(rest[:]) == byteOrderMagic:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint32(rest[:]) == byteOrderMagic:
		bo = binary.BigEndian
	default:
		if first {
			return fmt.Errorf("%s is %w (pcapng section header with byte-order magic 0x%08x)", r.name, ErrNotPcap, binary.BigEndian.Uint32(rest[:]))
		}
		return fmt.Errorf("%s: record %d: pcapng section header with byte-order magic 0x%08x: %w", r.name, r.index, binary.BigEndian.Uint32(rest[:]), ErrMalformed)
	}
	total := bo.Uint32(lenBytes)
	if total < 28 || total%4 != 0 || total > maxBlockLen {
		return fmt.Errorf("%s: record %d: pcapng section header length %d: %w", r.name, r.index, total, ErrMalformed)
	}
	if _, err := io.CopyN(io.Discard, r.r, int64(total-12)); err != nil {
		return r.truncated("section header", err)
	}
	r.order = bo
	r.ifaces = r.ifaces[:0]
	return nil
}

// addInterface parses an interface description block body: link type(2),
// reserved(2), snaplen(4), options. Only if_tsresol (9) and if_tsoffset
// (14) matter here.
func (r *Reader) addInterface(body []byte) error {
	if len(body) < 8 {
		return fmt.Errorf("%s: record %d: pcapng interface block of %d bytes: %w", r.name, r.index, len(body), ErrMalformed)
	}
	ifc := iface{linkType: LinkType(r.order.Uint16(body[0:])), tsUnit: time.Microsecond}
	opts := body[8:]
	for len(opts) >= 4 {
		code, olen := r.order.Uint16(opts[0:]), int(r.order.Uint16(opts[2:]))
		if code == 0 { // opt_endofopt
			break
		}
		padded := (olen + 3) &^ 3
		if len(opts) < 4+padded {
			return fmt.Errorf("%s: record %d: pcapng interface option %d overruns its block: %w", r.name, r.index, code, ErrMalformed)
		}
		val := opts[4 : 4+olen]
		switch {
		case code == 9 && olen == 1: // if_tsresol
			v := val[0]
			ifc.tsUnit, ifc.tsPerSec = 0, 0
			if v&0x80 == 0 {
				if v > 19 {
					return fmt.Errorf("%s: record %d: pcapng if_tsresol 10^-%d: %w", r.name, r.index, v, ErrMalformed)
				}
				if v <= 9 {
					d := time.Second
					for range v {
						d /= 10
					}
					ifc.tsUnit = d
				} else {
					ifc.tsPerSec = 1
					for range v {
						ifc.tsPerSec *= 10
					}
				}
			} else {
				e := v & 0x7f
				if e > 63 {
					return fmt.Errorf("%s: record %d: pcapng if_tsresol 2^-%d: %w", r.name, r.index, e, ErrMalformed)
				}
				ifc.tsPerSec = 1 << e
			}
		case code == 14 && olen == 8: // if_tsoffset, seconds
			ifc.tsOffset = int64(r.order.Uint64(val))
		}
		opts = opts[4+padded:]
	}
	if len(r.ifaces) >= 1<<16 {
		return fmt.Errorf("%s: record %d: more than 65536 pcapng interfaces: %w", r.name, r.index, ErrMalformed)
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

func (r *Reader) iface(id uint32) (*iface, error) {
	if int64(id) >= int64(len(r.ifaces)) {
		return nil, fmt.Errorf("%s: record %d: packet of interface %d but %d interfaces are described: %w", r.name, r.index, id, len(r.ifaces), ErrMalformed)
	}
	return &r.ifaces[id], nil
}

func (ifc *iface) timestamp(ticks uint64) time.Time {
	var sec, nsec int64
	switch {
	case ifc.tsUnit > 0:
		perSec := uint64(time.Second / ifc.tsUnit)
		sec = int64(ticks / perSec)
		nsec = int64(ticks%perSec) * int64(ifc.tsUnit)
	default:
		sec = int64(ticks / ifc.tsPerSec)
		rem := ticks % ifc.tsPerSec
		// rem < tsPerSec <= 2^63; scale to nanoseconds without overflow.
		nsec = int64(float64(rem) * 1e9 / float64(ifc.tsPerSec))
	}
	return time.Unix(sec+ifc.tsOffset, nsec).UTC()
}

// packetFromEPB: interface id(4), ts high(4), ts low(4), captured len(4),
// original len(4), data, options. The obsolete PB has a 2-byte interface
// id and 2-byte drops count instead of the 4-byte id.
func (r *Reader) packetFromEPB(typ uint32, body []byte) (Packet, error) {
	if len(body) < 20 {
		return Packet{}, fmt.Errorf("%s: record %d: pcapng packet block of %d bytes: %w", r.name, r.index, len(body)+12, ErrTruncated)
	}
	id := r.order.Uint32(body[0:])
	if typ == blockPB {
		id = uint32(r.order.Uint16(body[0:]))
	}
	ifc, err := r.iface(id)
	if err != nil {
		return Packet{}, err
	}
	ticks := uint64(r.order.Uint32(body[4:]))<<32 | uint64(r.order.Uint32(body[8:]))
	capLen, origLen := r.order.Uint32(body[12:]), r.order.Uint32(body[16:])
	if capLen > MaxCaptureLen {
		return Packet{}, fmt.Errorf("%s: record %d: captured length %d exceeds %d: %w", r.name, r.index, capLen, MaxCaptureLen, ErrMalformed)
	}
	if uint64(capLen) > uint64(len(body)-20) {
		return Packet{}, fmt.Errorf("%s: record %d: captured length %d overruns its %d-byte block: %w", r.name, r.index, capLen, len(body)+12, ErrTruncated)
	}
	return Packet{
		Index:     r.index,
		Timestamp: ifc.timestamp(ticks),
		LinkType:  ifc.linkType,
		Data:      body[20 : 20+capLen],
		OrigLen:   int(max(origLen, capLen)),
		Interface: int(id),
	}, nil
}

// packetFromSPB: original len(4), data (padded). The captured length is
// the smaller of the original length and what the block holds; SPBs carry
// no timestamp and belong to interface 0.
func (r *Reader) packetFromSPB(body []byte) (Packet, error) {
	if len(body) < 4 {
		return Packet{}, fmt.Errorf("%s: record %d: pcapng simple packet block of %d bytes: %w", r.name, r.index, len(body)+12, ErrTruncated)
	}
	ifc, err := r.iface(0)
	if err != nil {
		return Packet{}, err
	}
	origLen := r.order.Uint32(body[0:])
	capLen := min(uint64(origLen), uint64(len(body)-4), MaxCaptureLen)
	return Packet{
		Index:    r.index,
		LinkType: ifc.linkType,
		Data:     body[4 : 4+capLen],
		OrigLen:  int(origLen),
	}, nil
}
