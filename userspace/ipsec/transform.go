package ipsec

import "errors"

var errNotYet = errors.New("not yet implemented")

// SA is one security association with its keys, sequence counters, replay
// window and lifetime counters. It is safe for concurrent use (see the
// package documentation).
type SA struct {
	p SAParams
}

// NewSA validates p against the algorithm table and returns the SA. Errors
// name the offending field and what is allowed, and never contain key bytes.
func NewSA(p SAParams) (*SA, error) { return nil, errNotYet }

// Params returns the SA's parameters without key bytes (Key slices nil).
func (sa *SA) Params() SAParams { return sa.p }

// Overhead returns the most bytes Encrypt adds before and after a packet: the
// headroom and tailroom a frame needs.
func (sa *SA) Overhead() (head, tail int) { return 0, 0 }

// Encrypt protects the IP packet frame[off:off+n] in place and returns the
// bounds of the protected packet. In transport mode the packet's own IP header
// is kept (ESP/AH inserted after it, IPv6 after hop-by-hop, routing and
// fragment headers); in tunnel mode the packet becomes the inner packet of a
// new outer header from the SA's Src and Dst. It uses the next outbound
// sequence number; errors are ErrSeqOverflow, ErrExpired, ErrNoRoom,
// ErrBadPacket (wrapped with context).
func (sa *SA) Encrypt(frame []byte, off, n int) (outOff, outN int, err error) {
	return 0, 0, errNotYet
}

// Decrypt verifies and removes the SA's protection from the IP packet
// frame[off:off+n] in place: replay check, ICV, replay update, padding check,
// decapsulation. The packet must belong to this SA (its SPI and protocol; the
// caller looked the SA up with ParseOuter's answer).
func (sa *SA) Decrypt(frame []byte, off, n int) Result {
	return Result{Verdict: VerdictMalformed}
}

// DecryptParsed is Decrypt for a caller that already has ParseOuter's answer
// for frame[off:], saving the second parse.
func (sa *SA) DecryptParsed(frame []byte, off int, o *Outer) Result {
	return Result{Verdict: VerdictMalformed}
}

// SoftExpired reports whether the SA crossed a soft lifetime limit.
func (sa *SA) SoftExpired() bool { return false }

// HardExpired reports whether the SA reached a hard lifetime limit.
func (sa *SA) HardExpired() bool { return false }

// Stats returns the packets and bytes counted against the lifetimes.
func (sa *SA) Stats() Stats { return Stats{} }

// NextSeq returns the sequence number the next Encrypt will use.
func (sa *SA) NextSeq() uint64 { return 0 }

// SelfTest runs the published known-answer vectors of the algorithm called
// name (an XFRM name) through this package's transforms; nil means the
// algorithm works on this machine.
func SelfTest(name string) error { return errNotYet }
