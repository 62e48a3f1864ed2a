package ipsec

import (
	"errors"
	"net/netip"
)

// Proto is the IPsec protocol of an SA, by its IP protocol number.
type Proto uint8

const (
	// ProtoESP is the Encapsulating Security Payload (RFC 4303), IP protocol 50.
	ProtoESP Proto = 50
	// ProtoAH is the Authentication Header (RFC 4302), IP protocol 51.
	ProtoAH Proto = 51
)

func (p Proto) String() string {
	switch p {
	case ProtoESP:
		return "esp"
	case ProtoAH:
		return "ah"
	}
	return "proto(" + itoa(int(p)) + ")"
}

// Mode is the IPsec mode of an SA.
type Mode uint8

const (
	// ModeTransport protects the payload of the packet, keeping its IP header.
	ModeTransport Mode = iota + 1
	// ModeTunnel protects a whole inner IP packet inside a new outer header.
	ModeTunnel
)

func (m Mode) String() string {
	switch m {
	case ModeTransport:
		return "transport"
	case ModeTunnel:
		return "tunnel"
	}
	return "mode(" + itoa(int(m)) + ")"
}

// AlgorithmKey names one algorithm of the Algorithms table with its key, as
// one slot of `ip xfrm state` has it. ICVBits is the ICV (truncation) length
// for aead and auth-trunc slots and 0 for enc. A zero Name means the slot is
// empty.
type AlgorithmKey struct {
	Name    string
	Key     []byte
	ICVBits int
}

// Lifetime holds an SA's soft and hard limits on the bytes and packets it
// protects or verifies (both directions count; bytes are IP payload bytes as
// Linux counts them: the packet before encryption / after decryption). Zero
// means no limit. Time limits belong to the engine.
type Lifetime struct {
	SoftBytes, HardBytes     uint64
	SoftPackets, HardPackets uint64
}

// SAParams are the parameters of one SA, as `ip xfrm state add` takes them.
// NewSA validates them.
type SAParams struct {
	Proto Proto
	Mode  Mode
	// SPI must not be 0 (reserved); 1..255 are reserved by IANA and refused.
	SPI uint32
	// Src and Dst are the SA's addresses: the outer header of tunnel mode,
	// and the peers of transport mode. Both of one family.
	Src, Dst netip.Addr

	// AEAD (ESP only) excludes Enc and Auth. ESP without AEAD needs Enc
	// (ecb(cipher_null) for integrity only) and Auth: encryption-only ESP
	// is refused (it is malleable, and CBC in tunnel mode is decryptable
	// by an active attacker). AH takes Auth only.
	AEAD AlgorithmKey
	Enc  AlgorithmKey
	Auth AlgorithmKey

	// ESN enables 64-bit extended sequence numbers (`flag esn`).
	ESN bool
	// ReplayWindow is the anti-replay window in packets (`replay-window N`),
	// 0 to disable replay protection, at most replay.MaxSize.
	ReplayWindow uint32
	// EncapSrcPort and EncapDstPort, when not both 0, put ESP in UDP
	// (`encap espinudp SPORT DPORT 0.0.0.0`, RFC 3948). ESP only.
	EncapSrcPort, EncapDstPort uint16

	// OutSeq is the last outbound sequence number already used (xfrm's
	// replay-oseq/oseq-hi): the next packet carries OutSeq+1. InSeq is the
	// highest inbound number already received (replay-seq/seq-hi).
	OutSeq, InSeq uint64

	Lifetime Lifetime
	// OnSoftExpire, if not nil, is called once, from the goroutine whose
	// packet crossed a soft limit; it must not block. SA.SoftExpired reports
	// the same fact for owners that poll.
	OnSoftExpire func(*SA)
	// TTL is the outer TTL / hop limit of tunnel mode; 0 means 64.
	TTL uint8
	// NoECN is `flag noecn` (Linux XFRM_STATE_NOECN): tunnel mode clears
	// the outer header's ECN field instead of copying the inner one, and
	// does not propagate a Congestion Experienced mark into the inner
	// header on decapsulation (which it otherwise does, RFC 6040).
	NoECN bool
	// NoEncapDSCP is `flag dont-encap-dscp`: tunnel mode clears the outer
	// header's DSCP instead of copying the inner one (which would show
	// observers the inner traffic's class).
	NoEncapDSCP bool
}

// Sentinel errors of Encrypt, for callers that count or react per case.
var (
	// ErrSeqOverflow: the outbound sequence number space is used up
	// (XfrmOutStateSeqError); the SA must be rekeyed. Never wraps.
	ErrSeqOverflow = errors.New("outbound sequence number exhausted, rekey the SA")
	// ErrExpired: the SA reached a hard lifetime limit.
	ErrExpired = errors.New("SA reached its hard lifetime")
	// ErrDeleted: the SA was deleted (Invalidate) after the caller looked
	// it up.
	ErrDeleted = errors.New("SA was deleted")
	// ErrNoRoom: the frame lacks the headroom or tailroom Overhead reports.
	ErrNoRoom = errors.New("frame lacks headroom or tailroom for the IPsec headers")
	// ErrBadPacket: the packet to protect is not a well-formed IP packet of
	// the family the mode needs (a fragment under transport mode is ErrFragment).
	ErrBadPacket = errors.New("packet to protect is not a well-formed IP packet")
)

// Result is the outcome of SA.Decrypt. Only Verdict is meaningful unless
// Verdict is VerdictOK (or VerdictDummy, which sets Seq).
type Result struct {
	Verdict Verdict
	// Seq is the full (ESN-inferred) sequence number of the packet.
	Seq uint64
	// Off and N bound the decapsulated IP packet inside the frame: the
	// inner packet in tunnel mode; in transport mode the original IP
	// header (protocol / next header and lengths restored, IPv4 checksum
	// recomputed) followed by the payload, whose TCP/UDP checksum is
	// recomputed for UDP-encapsulated SAs (a NAT rewrote the addresses it
	// covers, RFC 3948 §3.1.2).
	Off, N int
	// PayloadOff and PayloadN bound what the next header sees: the inner IP
	// packet in tunnel mode, the upper-layer segment in transport mode.
	PayloadOff, PayloadN int
	// NextHeader is the protocol of the payload (4, 41, 6, 17, ...).
	NextHeader uint8
}

// Stats are the counts an SA keeps for its lifetimes.
type Stats struct {
	Packets, Bytes uint64
}

func itoa(v int) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := v < 0
	if neg {
		v = -v
	}
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
