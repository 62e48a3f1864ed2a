package loader

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
)

// ReferenceTable is the state ReferenceClassify consults in place of the
// datapath's maps.
type ReferenceTable struct {
	// SAs, keyed as PutSA takes them (Dst may be IPv4-mapped).
	SAs map[SAKey]SA
	// Config in force.
	Config Config
	// SocketBound says whether the rx queue has an AF_XDP socket in the XSK
	// map: a steered packet then counts steered, else steer-fallback.
	SocketBound bool
	// LinkAddr is the link's MAC address as SetLinkAddr took it; nil or
	// all zero checks nothing.
	LinkAddr net.HardwareAddr
}

// otherHost says whether dst, a frame's destination MAC, is a unicast
// address that is not the link's: the kernel's PACKET_OTHERHOST.
func (t *ReferenceTable) otherHost(dst []byte) bool {
	if len(t.LinkAddr) != 6 || bytes.Equal(t.LinkAddr, make([]byte, 6)) {
		return false
	}
	return dst[0]&1 == 0 && !bytes.Equal(dst[:6], t.LinkAddr)
}

func (t *ReferenceTable) lookup(k SAKey) (SA, bool) {
	if sa, ok := t.SAs[k]; ok {
		return sa, true
	}
	for key, sa := range t.SAs { // keys given as IPv4-mapped IPv6
		if key.SPI == k.SPI && key.Proto == k.Proto && key.Dst.Unmap() == k.Dst {
			return sa, true
		}
	}
	return SA{}, false
}

// ReferenceClassify applies the XDP program's rules (bpf/xdpsec.c) to an
// Ethernet frame in plain Go. It exists to judge the BPF program: the
// differential fuzz test requires both to agree on verdict, reason and SA.
// It is written from the rules, not translated line by line, and is not
// meant for the data path.
func ReferenceClassify(frame []byte, t *ReferenceTable) Result {
	if len(frame) < 14 {
		return result(ReasonPassUnparsed)
	}
	etype := be16(frame[12:])
	off := 14
	for range 2 { // at most two VLAN tags (802.1ad + 802.1Q)
		if etype != 0x8100 && etype != 0x88a8 {
			break
		}
		if off+4 > len(frame) {
			return result(ReasonPassUnparsed)
		}
		etype = be16(frame[off+2:])
		off += 4
	}
	other := t.otherHost(frame[:6])
	switch etype {
	case 0x0800:
		return refIPv4(frame[off:], other, t)
	case 0x86dd:
		return refIPv6(frame[off:], other, t)
	case 0x8100, 0x88a8:
		return result(ReasonPassUnparsed)
	}
	return result(ReasonPassOther)
}

func result(r Reason) Result { return Result{Verdict: VerdictOf(r), Reason: r} }

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func ipsecOrUDP(proto byte) bool { return proto == 50 || proto == 51 || proto == 17 }

// ipv6Ext: hop-by-hop, routing, fragment, destination options.
func ipv6Ext(nh byte) bool { return nh == 0 || nh == 43 || nh == 44 || nh == 60 }

// steers says whether r hands the packet to a socket.
func steers(r Result) bool { return r.Reason == ReasonSteered || r.Reason == ReasonSteerFallback }

// ipv4HeaderValid: the one's-complement sum of the header, checksum
// included, is 0xffff (RFC 1071).
func ipv4HeaderValid(h []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(be16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// refIPv4 classifies the IPv4 packet p; otherHost: its frame is unicast to
// another MAC than the link's.
func refIPv4(p []byte, otherHost bool, t *ReferenceTable) Result {
	if len(p) < 20 {
		return result(ReasonPassUnparsed)
	}
	proto := p[9]
	// Not for this host: the kernel drops it before anything else, so
	// nothing else (a fragment, a malformed header, an SA) is looked at.
	if ipsecOrUDP(proto) && otherHost {
		return result(ReasonPassOtherHost)
	}
	if be16(p[6:])&0x3fff != 0 { // MF or a fragment offset
		return result(ReasonPassFragment)
	}
	if !ipsecOrUDP(proto) {
		return result(ReasonPassOther)
	}
	hlen, total := int(p[0]&0x0f)*4, int(be16(p[2:]))
	if p[0]>>4 != 4 || hlen < 20 || total < hlen || total > len(p) {
		return result(ReasonPassUnparsed)
	}
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	r := refL4(proto, p[hlen:total], dst, t)
	// Checked last, on what would bypass the kernel's own check only: the
	// SA already counted the packet.
	if steers(r) && !ipv4HeaderValid(p[:hlen]) {
		r.Verdict, r.Reason = VerdictOf(ReasonPassUnparsed), ReasonPassUnparsed
	}
	return r
}

func refIPv6(p []byte, otherHost bool, t *ReferenceTable) Result {
	if len(p) < 40 {
		return result(ReasonPassUnparsed)
	}
	nh := p[6]
	if !ipsecOrUDP(nh) && !ipv6Ext(nh) {
		return result(ReasonPassOther)
	}
	if otherHost {
		return result(ReasonPassOtherHost)
	}
	total := 40 + int(be16(p[4:]))
	if total > len(p) {
		return result(ReasonPassUnparsed)
	}
	off := 40
	for i := range 6 {
		if !ipv6Ext(nh) {
			break
		}
		if nh == 0 && i > 0 { // hop-by-hop only first (RFC 8200 §4.1)
			return result(ReasonPassUnparsed)
		}
		if off+8 > total {
			return result(ReasonPassUnparsed)
		}
		switch nh {
		case 44: // fragment: only an atomic one (offset 0, M 0) is crossed
			if be16(p[off+2:])&0xfff9 != 0 {
				return result(ReasonPassFragment)
			}
			nh, off = p[off], off+8
			continue
		case 43: // routing: segments left means in transit
			if p[off+3] != 0 {
				return result(ReasonPassOther)
			}
		}
		nh = p[off]
		off += (int(p[off+1]) + 1) * 8
	}
	if ipv6Ext(nh) || off > total {
		return result(ReasonPassUnparsed)
	}
	if !ipsecOrUDP(nh) {
		return result(ReasonPassOther)
	}
	dst := netip.AddrFrom16([16]byte(p[24:40]))
	return refL4(nh, p[off:total], dst, t)
}

// refL4 classifies seg, the bytes from the protocol header to the end of
// the IP datagram.
func refL4(proto byte, seg []byte, dst netip.Addr, t *ReferenceTable) Result {
	spiAt := func(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
	switch proto {
	case 50:
		if len(seg) < 8 || spiAt(seg) == 0 {
			return result(ReasonMalformedESP)
		}
		return refSteer(SAKey{SPI: spiAt(seg), Dst: dst, Proto: ProtoESP}, t.Config.ESP, 0, t)
	case 51:
		if len(seg) < 12 {
			return result(ReasonMalformedAH)
		}
		ahLen := (int(seg[1]) + 2) * 4
		if ahLen < 12 || ahLen > len(seg) || (dst.Is6() && ahLen%8 != 0) || spiAt(seg[4:]) == 0 {
			return result(ReasonMalformedAH)
		}
		if seg[0] == 50 && (len(seg)-ahLen < 8 || spiAt(seg[ahLen:]) == 0) {
			return result(ReasonMalformedESP)
		}
		return refSteer(SAKey{SPI: spiAt(seg[4:]), Dst: dst, Proto: ProtoAH}, t.Config.AH, 0, t)
	case 17:
		if len(seg) < 4 {
			return result(ReasonPassUnparsed)
		}
		dport := be16(seg[2:])
		if dport == 500 {
			return result(ReasonPassIKE)
		}
		if !t.Config.isNATTPort(dport) {
			return result(ReasonPassOther)
		}
		if len(seg) < 8 {
			return result(ReasonMalformedUDP)
		}
		ulen := int(be16(seg[4:]))
		if ulen < 8 || ulen > len(seg) {
			return result(ReasonMalformedUDP)
		}
		payload := seg[8:ulen]
		switch {
		case len(payload) == 1 && payload[0] == 0xff:
			return result(ReasonPassKeepalive)
		case len(payload) <= 8 || spiAt(payload) == 0:
			// Non-ESP marker, or too short for ESP: the kernel gives it
			// to the IKE socket (RFC 3948 §2.2, xfrm4_udp_encap_rcv).
			return result(ReasonPassIKE)
		case dst.Is6() && be16(seg[6:]) == 0:
			// Zero UDP checksum over IPv6 (RFC 8200 §8.1): the kernel's
			// UDP layer decides.
			return result(ReasonPassUnparsed)
		}
		return refSteer(SAKey{SPI: spiAt(payload), Dst: dst, Proto: ProtoESP}, t.Config.UDPESP, dport, t)
	}
	return result(ReasonPassOther)
}

func refSteer(k SAKey, classOn bool, encap uint16, t *ReferenceTable) Result {
	sa, ok := t.lookup(k)
	if !ok {
		out := result(ReasonNoState)
		out.LookedUp, out.Key = true, k
		return out
	}
	res := func(r Reason) Result {
		out := result(r)
		out.LookedUp, out.Matched, out.Key, out.SAID = true, true, k, sa.ID
		return out
	}
	if sa.EncapPort != encap {
		return res(ReasonStateMismatch)
	}
	famOn := t.Config.IPv6
	if k.Dst.Is4() {
		famOn = t.Config.IPv4
	}
	if !classOn || !famOn {
		return res(ReasonDisabledClass)
	}
	if t.SocketBound {
		return res(ReasonSteered)
	}
	return res(ReasonSteerFallback)
}
