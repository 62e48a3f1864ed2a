package pcap

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

// Resolution selects the timestamp unit of a classic pcap file.
type Resolution uint8

const (
	// Microsecond writes the classic 0xa1b2c3d4 format every tool reads.
	Microsecond Resolution = iota
	// Nanosecond writes the 0xa1b23c4d format (tcpdump
	// --time-stamp-precision=nano, editcap -F nsecpcap).
	Nanosecond
)

// Writer writes a classic pcap file in little-endian byte order. Writes
// are buffered: call Flush (or Close for a Writer from Create) before the
// file is read. It is not safe for concurrent use.
type Writer struct {
	w        *bufio.Writer
	f        *os.File
	name     string
	linkType LinkType
	nano     bool
	snapLen  uint32
	hdr      [16]byte
	count    int
}

// NewWriter writes the file header for frames of link type lt to w.
// Any link type is accepted; xdpsec writes LinkTypeEthernet and
// LinkTypeRaw. Packets longer than MaxCaptureLen are cut there and keep
// their original length.
func NewWriter(w io.Writer, lt LinkType, res Resolution) (*Writer, error) {
	return newWriter(w, "output", lt, res)
}

func newWriter(w io.Writer, name string, lt LinkType, res Resolution) (*Writer, error) {
	pw := &Writer{w: bufio.NewWriterSize(w, 64<<10), name: name, linkType: lt, nano: res == Nanosecond, snapLen: MaxCaptureLen}
	var h [24]byte
	magic := magicMicro
	if pw.nano {
		magic = magicNano
	}
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], pw.snapLen)
	binary.LittleEndian.PutUint32(h[20:], uint32(lt))
	if _, err := pw.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("%s: write pcap header: %w", name, err)
	}
	return pw, nil
}

// Create creates (or truncates) the file name and writes a pcap header
// to it. The file gets mode 0600: a capture may hold decrypted traffic.
func Create(name string, lt LinkType, res Resolution) (*Writer, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create capture: %w", err)
	}
	w, err := newWriter(f, name, lt, res)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f = f
	return w, nil
}

// LinkType returns the link type the Writer was created with.
func (w *Writer) LinkType() LinkType { return w.linkType }

// Count returns the number of packets written so far.
func (w *Writer) Count() int { return w.count }

// WritePacket appends one packet captured at ts whose bytes are data (the
// whole packet: its original length is len(data)).
func (w *Writer) WritePacket(ts time.Time, data []byte) error {
	return w.WritePacketLen(ts, data, len(data))
}

// WritePacketLen appends one packet of which data are the captured bytes
// and origLen the length on the wire (origLen >= len(data)).
func (w *Writer) WritePacketLen(ts time.Time, data []byte, origLen int) error {
	if origLen < len(data) {
		return fmt.Errorf("%s: packet %d: original length %d is less than the %d captured bytes", w.name, w.count, origLen, len(data))
	}
	if len(data) > int(w.snapLen) {
		data = data[:w.snapLen]
	}
	ns := ts.UnixNano()
	sec, frac := ns/1e9, ns%1e9
	if frac < 0 {
		sec, frac = sec-1, frac+1e9
	}
	if !w.nano {
		frac /= 1000
	}
	binary.LittleEndian.PutUint32(w.hdr[0:], uint32(sec))
	binary.LittleEndian.PutUint32(w.hdr[4:], uint32(frac))
	binary.LittleEndian.PutUint32(w.hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(w.hdr[12:], uint32(min(origLen, 1<<32-1)))
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("%s: packet %d: %w", w.name, w.count, err)
	}
	if _, err := w.w.Write(data); err != nil {
		return fmt.Errorf("%s: packet %d: %w", w.name, w.count, err)
	}
	w.count++
	return nil
}

// Flush writes buffered packets to the underlying writer.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("%s: flush: %w", w.name, err)
	}
	return nil
}

// Close flushes and, for a Writer from Create, closes the file.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.f != nil {
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: close: %w", w.name, cerr)
		}
		w.f = nil
	}
	return err
}
