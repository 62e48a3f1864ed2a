package engine

import (
	"sync/atomic"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Counter names one of the engine's own per-reason counters. Inbound packets
// are also counted by ipsec.Verdict (Stats.InVerdicts).
type Counter int

// The engine's counters. Their names (CounterName) are stable: they appear
// in `xdpsec stats -j`.
const (
	InFrames             Counter = iota // frames taken from the AF_XDP rx rings
	InDelivered                         // inner packets the TUN accepted
	InNotIP                             // frames that are not IPv4/IPv6 over Ethernet
	InPolicyMismatch                    // decrypted packets an inbound policy refuses
	InTUNRejected                       // inner packets the TUN refused
	InEncapMismatch                     // ESP whose UDP encapsulation (or its absence, or its port) differs from its SA's (dropped)
	OutPackets                          // packets read from the TUN
	OutNotIP                            // TUN packets that are not IPv4/IPv6
	OutProtected                        // packets encrypted and queued for transmit
	OutBypass                           // packets sent in the clear (BYPASS)
	OutDiscard                          // packets dropped by a DISCARD policy
	OutNoPolicy                         // packets no outbound policy selects (dropped)
	OutNoSA                             // PROTECT policy without a usable SA (dropped)
	OutNeighPending                     // next hop not resolved yet (dropped)
	OutUnreachable                      // no route/neighbour over an Ethernet link (dropped)
	OutTooBig                           // ICMP too-big written back to the local sender
	OutTooBigDropped                    // too big, and no ICMP error allowed (dropped)
	OutEncryptError                     // Encrypt failed: sequence overflow, expired, no room
	OutTxDropped                        // tx ring stayed full (dropped)
	OutTransmitted                      // frames posted on an AF_XDP tx ring
	OutGSOMalformed                     // TUN packets whose virtio_net_hdr does not fit them (dropped)
	InCoalesced                         // inner TCP segments merged into another's TUN write (GRO)
	OutTransportFragment                // IP fragments a transport-mode SA may not protect (RFC 4303 §3.1.1; dropped)
	numCounters
)

var counterNames = [numCounters]string{
	InFrames:         "in-frames",
	InDelivered:      "in-delivered",
	InNotIP:          "in-not-ip",
	InPolicyMismatch: "in-policy-mismatch",
	InTUNRejected:    "in-tun-rejected",
	InEncapMismatch:  "in-encap-mismatch",
	OutPackets:       "out-packets",
	OutNotIP:         "out-not-ip",
	OutProtected:     "out-protected",
	OutBypass:        "out-bypass",
	OutDiscard:       "out-discard",
	OutNoPolicy:      "out-no-policy",
	OutNoSA:          "out-no-sa",
	OutNeighPending:  "out-neigh-pending",
	OutUnreachable:   "out-unreachable",
	OutTooBig:        "out-too-big",
	OutTooBigDropped: "out-too-big-dropped",
	OutEncryptError:  "out-encrypt-error",
	OutTxDropped:     "out-tx-dropped",
	OutTransmitted:   "out-transmitted",
	OutGSOMalformed:  "out-gso-malformed",
	InCoalesced:      "in-coalesced",

	OutTransportFragment: "out-transport-fragment",
}

// CounterName returns the stable name of c ("in-delivered", ...).
func CounterName(c Counter) string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return counterNames[c]
}

// workerCounters belong to one worker: only it writes them (atomic adds so
// that Stats may read from any goroutine); the padding keeps two workers'
// counters off one cache line.
type workerCounters struct {
	c [numCounters]atomic.Uint64
	v [ipsec.NumVerdicts]atomic.Uint64
	_ [64]byte
}
