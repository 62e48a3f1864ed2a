// Package pcap reads classic pcap and pcapng capture files and writes
// classic pcap, as streams: a Reader holds one record in a reused buffer,
// never the whole file, so a multi-gigabyte capture costs a few hundred
// kilobytes.
//
// The reader understands both byte orders and the microsecond and
// nanosecond classic formats, and the pcapng blocks tcpdump, tshark and
// dumpcap write (section header, interface description, enhanced and
// simple packet blocks; everything else is skipped). The link types xdpsec
// meets are named below; L3Offset finds the network header inside a frame
// of any of them, and EthernetFrame turns any of them into the Ethernet
// frame an XDP program expects.
//
// File format references: draft-ietf-opsawg-pcap and
// draft-ietf-opsawg-pcapng (the IETF versions of the libpcap formats).
package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// LinkType is a LINKTYPE_ value from the tcpdump.org link-layer header
// type registry: it says what header a captured frame starts with.
type LinkType uint32

// The link types the reader resolves to an L3 header.
const (
	// LinkTypeEthernet frames start with an Ethernet II header (possibly
	// with 802.1Q/802.1ad tags).
	LinkTypeEthernet LinkType = 1
	// LinkTypeRaw frames start with an IPv4 or IPv6 header (version nibble).
	LinkTypeRaw LinkType = 101
	// LinkTypeLinuxSLL frames start with the 16-byte Linux "cooked" header
	// (tcpdump -i any before libpcap 1.10).
	LinkTypeLinuxSLL LinkType = 113
	// LinkTypeIPv4 frames are IPv4 packets.
	LinkTypeIPv4 LinkType = 228
	// LinkTypeIPv6 frames are IPv6 packets.
	LinkTypeIPv6 LinkType = 229
	// LinkTypeLinuxSLL2 frames start with the 20-byte Linux cooked v2
	// header (tcpdump -i any with libpcap 1.10+).
	LinkTypeLinuxSLL2 LinkType = 276
)

func (l LinkType) String() string {
	switch l {
	case LinkTypeEthernet:
		return "ethernet"
	case LinkTypeRaw:
		return "raw"
	case LinkTypeLinuxSLL:
		return "linux-sll"
	case LinkTypeIPv4:
		return "ipv4"
	case LinkTypeIPv6:
		return "ipv6"
	case LinkTypeLinuxSLL2:
		return "linux-sll2"
	}
	return "linktype(" + strconv.FormatUint(uint64(l), 10) + ")"
}

// EtherType values L3Offset reports.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeIPv6 uint16 = 0x86dd
)

// Errors callers tell apart with errors.Is.
var (
	// ErrNotPcap: the input does not start with a pcap or pcapng magic
	// number. The error text carries the file name and the magic found.
	ErrNotPcap = errors.New("not a pcap or pcapng file")
	// ErrTruncated: a record or block ends before its header says it does.
	// The error text carries the record index (0-based).
	ErrTruncated = errors.New("truncated")
	// ErrMalformed: a header field is impossible (block length not a
	// multiple of 4, captured length larger than the limit, a packet
	// referring to an interface that was never described...).
	ErrMalformed = errors.New("malformed")
	// ErrNoL3: L3Offset found no IPv4/IPv6 header in the frame (another
	// EtherType, an unknown link type, or a frame too short).
	ErrNoL3 = errors.New("no IPv4 or IPv6 header")
)

// L3Offset returns where the IPv4 or IPv6 header starts inside frame, a
// frame of link type lt, and its EtherType (EtherTypeIPv4 or
// EtherTypeIPv6). Ethernet frames may carry up to two VLAN tags (802.1Q
// 0x8100, 802.1ad 0x88a8, or the old QinQ 0x9100). Frames without an IP
// header give ErrNoL3.
func L3Offset(lt LinkType, frame []byte) (off int, etherType uint16, err error) {
	switch lt {
	case LinkTypeEthernet:
		if len(frame) < 14 {
			return 0, 0, fmt.Errorf("ethernet frame of %d bytes: %w", len(frame), ErrNoL3)
		}
		off = 12
		et := binary.BigEndian.Uint16(frame[off:])
		for tags := 0; tags < 2 && (et == 0x8100 || et == 0x88a8 || et == 0x9100); tags++ {
			off += 4
			if len(frame) < off+2 {
				return 0, 0, fmt.Errorf("vlan-tagged frame of %d bytes: %w", len(frame), ErrNoL3)
			}
			et = binary.BigEndian.Uint16(frame[off:])
		}
		off += 2
		return checkL3(frame, off, et)
	case LinkTypeRaw:
		if len(frame) < 1 {
			return 0, 0, fmt.Errorf("empty raw frame: %w", ErrNoL3)
		}
		switch frame[0] >> 4 {
		case 4:
			return checkL3(frame, 0, EtherTypeIPv4)
		case 6:
			return checkL3(frame, 0, EtherTypeIPv6)
		}
		return 0, 0, fmt.Errorf("raw frame with IP version %d: %w", frame[0]>>4, ErrNoL3)
	case LinkTypeIPv4:
		return checkL3(frame, 0, EtherTypeIPv4)
	case LinkTypeIPv6:
		return checkL3(frame, 0, EtherTypeIPv6)
	case LinkTypeLinuxSLL:
		if len(frame) < 16 {
			return 0, 0, fmt.Errorf("linux-sll frame of %d bytes: %w", len(frame), ErrNoL3)
		}
		return checkL3(frame, 16, binary.BigEndian.Uint16(frame[14:]))
	case LinkTypeLinuxSLL2:
		if len(frame) < 20 {
			return 0, 0, fmt.Errorf("linux-sll2 frame of %d bytes: %w", len(frame), ErrNoL3)
		}
		return checkL3(frame, 20, binary.BigEndian.Uint16(frame[0:]))
	}
	return 0, 0, fmt.Errorf("link type %s: %w", lt, ErrNoL3)
}

func checkL3(frame []byte, off int, et uint16) (int, uint16, error) {
	if et != EtherTypeIPv4 && et != EtherTypeIPv6 {
		return 0, 0, fmt.Errorf("ethertype 0x%04x: %w", et, ErrNoL3)
	}
	if len(frame) <= off {
		return 0, 0, fmt.Errorf("frame of %d bytes ends before the IP header at %d: %w", len(frame), off, ErrNoL3)
	}
	return off, et, nil
}

// SyntheticSrcMAC and SyntheticDstMAC are the locally administered
// addresses EthernetFrame puts in the headers it makes up.
var (
	SyntheticSrcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	SyntheticDstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// EthernetFrame appends to dst[:0] frame as an Ethernet frame: an Ethernet
// frame is copied as it is; any other link type L3Offset knows gets its
// link header replaced by a 14-byte Ethernet header from SyntheticSrcMAC
// to SyntheticDstMAC with the right EtherType. It returns the extended
// dst, so a caller that passes the same buffer each time allocates
// nothing once the buffer has grown.
func EthernetFrame(dst []byte, lt LinkType, frame []byte) ([]byte, error) {
	if lt == LinkTypeEthernet {
		return append(dst[:0], frame...), nil
	}
	off, et, err := L3Offset(lt, frame)
	if err != nil {
		return dst[:0], err
	}
	dst = append(dst[:0], SyntheticDstMAC[:]...)
	dst = append(dst, SyntheticSrcMAC[:]...)
	dst = binary.BigEndian.AppendUint16(dst, et)
	return append(dst, frame[off:]...), nil
}
