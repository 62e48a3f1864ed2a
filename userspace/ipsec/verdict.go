package ipsec

// Verdict is the outcome of processing one inbound packet. The strings are
// the vocabulary of `xdpsec pcap decrypt --json`, of the engine's per-reason
// counters and of drop captures; they never change once released.
type Verdict uint8

const (
	// VerdictOK: authenticated (and decrypted); the payload is valid.
	VerdictOK Verdict = iota
	// VerdictDummy: authenticated ESP packet with next header 59 (RFC 4303
	// §2.6 TFC dummy), to be discarded silently.
	VerdictDummy
	// VerdictNoState: no SA for (SPI, destination, protocol).
	VerdictNoState
	// VerdictBadICV: integrity check failed (XfrmInStateProtoError).
	VerdictBadICV
	// VerdictBadPadding: ICV good but the padding bytes are not 1, 2, 3...
	// or the pad length exceeds the payload (RFC 4303 §2.4).
	VerdictBadPadding
	// VerdictBadSeq: sequence number 0, which no sender may use.
	VerdictBadSeq
	// VerdictReplay: duplicate or left of the anti-replay window
	// (XfrmInStateSeqError).
	VerdictReplay
	// VerdictMalformed: truncated or inconsistent headers.
	VerdictMalformed
	// VerdictFragment: an IP fragment; IPsec needs the reassembled packet.
	VerdictFragment
	// VerdictIKE: UDP 500, or UDP 4500 with the non-ESP marker (RFC 3948).
	VerdictIKE
	// VerdictNATKeepalive: the one-byte 0xFF NAT-keepalive (RFC 3948 §2.3).
	VerdictNATKeepalive
	// VerdictExpired: the SA reached a hard lifetime limit.
	VerdictExpired
	// VerdictNotIPsec: not ESP, AH, UDP-ESP or IKE; ParseOuter's answer
	// for traffic IPsec leaves alone (the kernel's business).
	VerdictNotIPsec

	// NumVerdicts is the number of verdicts, for counter arrays.
	NumVerdicts
)

var verdictNames = [NumVerdicts]string{
	VerdictOK:           "ok",
	VerdictDummy:        "dummy",
	VerdictNoState:      "no-state",
	VerdictBadICV:       "bad-icv",
	VerdictBadPadding:   "bad-padding",
	VerdictBadSeq:       "bad-seq",
	VerdictReplay:       "replay",
	VerdictMalformed:    "malformed",
	VerdictFragment:     "fragment",
	VerdictIKE:          "ike",
	VerdictNATKeepalive: "nat-keepalive",
	VerdictExpired:      "expired",
	VerdictNotIPsec:     "not-ipsec",
}

func (v Verdict) String() string {
	if v < NumVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// ParseVerdict returns the verdict spelled s, as String prints it.
func ParseVerdict(s string) (Verdict, bool) {
	for i, n := range verdictNames {
		if n == s {
			return Verdict(i), true
		}
	}
	return 0, false
}
