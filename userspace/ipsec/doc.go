// Package ipsec holds the IPsec wire formats and transforms of xdpsec's fast
// path: ESP (RFC 4303), AH (RFC 4302), UDP encapsulation of ESP (RFC 3948),
// every algorithm of the Algorithms table, extended sequence numbers and the
// anti-replay window (package replay). It does no I/O: callers hand it
// packets in their own buffers.
//
// # The pieces
//
//   - ParseOuter reads an outer IPv4/IPv6 packet up to and including the
//     ESP, AH or UDP-ESP header and returns what an SA lookup needs (proto,
//     SPI, destination, sequence number) or why the packet is not for IPsec
//     (IKE, NAT keepalive, fragment, malformed, not IPsec). Nobody else parses
//     these headers.
//   - NewSA builds an SA from SAParams, validated against the algorithm table
//     with errors that say what is allowed.
//   - SA.Encrypt protects an IP packet in place (ESP or AH, transport or
//     tunnel, with or without UDP encapsulation) and SA.Decrypt checks and
//     removes the protection, returning a Verdict.
//   - SelfTest runs the published known-answer vectors of one algorithm.
//
// # Buffers
//
// Both directions work in place on the caller's frame. A packet is
// frame[off:off+n]; Encrypt grows it towards the front (headers) and the back
// (padding, trailer, ICV), so the frame needs SA.Overhead() bytes of headroom
// before off and of tailroom after off+n (an AF_XDP frame with the packet at
// XDP_PACKET_HEADROOM 256 and at most 1500 bytes of packet in a 2048-byte
// frame has room for every SA). Decrypt returns the decapsulated packet as
// bounds inside the same frame. Neither allocates per packet.
//
// # Concurrency
//
// An SA is safe for concurrent use by several goroutines: the outbound
// sequence number is an atomic counter, the replay window has its own
// contract (package replay), lifetimes are atomic counters, and per-call
// scratch state comes from a per-SA pool. Decrypt takes no lock except the
// replay window's Accept.
//
// # Per-worker scratch (the fast path)
//
// A worker goroutine that processes many packets should own one Scratch
// (NewScratch) and call EncryptWith, DecryptWith and DecryptParsedWith
// instead of Encrypt, Decrypt and DecryptParsed: same contracts, same
// results, but the per-call memory comes from the Scratch instead of the
// SA's sync.Pool, which saves about 8 ns per packet (a sixth of the fixed
// cost at 64 bytes). One Scratch serves every SA; it must never be used by
// two goroutines at once. A nil *Scratch is allowed and means the pool.
// SAs with CBC or HMAC keep keyed per-call state and use their pool either
// way. A caller that already ran ParseOuter for the SA lookup should use
// DecryptParsedWith, which skips the second parse.
//
// # Batches (the fastest path)
//
// A worker that holds several packets of one SA should hand them over
// together: EncryptBatch, DecryptBatch and DecryptParsedBatch take a slice
// of Packet and give, packet for packet, exactly what EncryptWith,
// DecryptWith and DecryptParsedWith would give called in the same order
// (same bytes, sequence numbers, verdicts, counters; tested so, including
// replays, forgeries, ESN wraps and sequence exhaustion inside a batch).
// What a batch saves is what a packet pays for sharing the SA with other
// goroutines: per run of up to BatchMax packets, one sequence number
// reservation (one compare-and-swap), one lifetime add, one pool Get for
// CBC/HMAC SAs, and for decryption one replay-window lock, the in-order
// packets then updating the window without atomic read-modify-writes
// (replay.Batch: ~6 ns a packet instead of ~24). SAs with packet or byte
// lifetime limits are counted packet by packet, so that the hard limit
// stops the same packet it would stop alone. While DecryptBatch holds an
// SA's window, other goroutines' packets of that SA wait for the run to
// end before they are accepted.
//
// # Sequence numbers
//
// Outbound numbers start at SAParams.OutSeq+1 and never wrap: Encrypt fails
// with ErrSeqOverflow after 2^32-1 (2^64-1 with ESN). Inbound numbers are
// checked against the window before the ICV and recorded only after it
// verified, so a forged packet never moves the window.
//
// GCM, GMAC, ChaCha20-Poly1305 and CTR make the IV from the sequence
// number plus a random per-SA offset, so a number must never be used twice
// by one SA. An SA that replaces another in place (same SPI, a rekey or a
// parameter change) is built with NewSAReplacing, which shares the old SA's
// outbound counter and IV offset (and its replay window when size and ESN
// match): goroutines still holding the old SA and those using the new one
// draw from one counter. The offset keeps SA instances that share a key by
// mistake (a restart with manual keys starts again at 1; one key on two
// SAs) on disjoint IV ranges with overwhelming probability; they should not
// exist (sad.SAD.KeyReuse finds them). CBC IVs are the sequence number
// encrypted under a random per-SA key: unpredictable and distinct. Peers
// read the IV from the packet, so none of this affects interoperation.
//
// # What else changes on the way
//
// Tunnel mode copies the inner DSCP and ECN to the outer header (RFC 4301
// §5.1.2, RFC 6040 normal mode) unless NoEncapDSCP / NoECN clear them, and
// on decapsulation a CE mark the outer header picked up is set in an
// ECN-capable inner packet. Transport mode over UDP recomputes the inner
// TCP/UDP checksum, which a NAT on the way invalidated (RFC 3948 §3.1.2).
//
// # Secrets
//
// NewSA keeps no copy of the key slices it was given beyond what the
// transforms need; SA, Scratch and AlgorithmKey print themselves redacted
// with every fmt verb, and AlgorithmKey redacts itself in JSON. Errors
// never contain key bytes. Go's crypto/aes and crypto/cipher keep expanded
// keys in memory they do not let callers wipe, so an SA's key material
// lives until the SA is garbage collected.
package ipsec
