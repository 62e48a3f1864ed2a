package ipsec

import (
	"encoding/binary"
	"testing"
)

// TestCounterIVsOfKeySharingSAs: two SA instances on one key and one SPI
// (a daemon restarted with the same manual keys, which starts again at
// sequence number 1; or one key given to two SAs) must not send the same
// counter-mode IVs. Each instance adds its own random offset to the
// sequence number; within an instance the IVs stay distinct, and a peer
// that reads the IV from the packet (every receiver: RFC 4106 §3, RFC 7634
// §2, RFC 3686 §3) opens them all.
func TestCounterIVsOfKeySharingSAs(t *testing.T) {
	for _, c := range []struct {
		name       string
		aead, enc  AlgorithmKey
		auth       AlgorithmKey
		ivAt, ivOf int // IV offset in an IPv4 tunnel ESP packet, and its length
	}{
		{name: "gcm", aead: AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: key(20, 1), ICVBits: 128}},
		{name: "gmac", aead: AlgorithmKey{Name: "rfc4543(gcm(aes))", Key: key(20, 1), ICVBits: 128}},
		{name: "chacha", aead: AlgorithmKey{Name: "rfc7539esp(chacha20,poly1305)", Key: key(36, 1), ICVBits: 128}},
		{name: "ctr", enc: AlgorithmKey{Name: "rfc3686(ctr(aes))", Key: key(20, 1)},
			auth: AlgorithmKey{Name: "hmac(sha256)", Key: key(32, 2), ICVBits: 128}},
	} {
		p := gcmParams()
		p.AEAD, p.Enc, p.Auth = c.aead, c.enc, c.auth
		before, after, rx := mustSA(t, p), mustSA(t, p), mustSA(t, p) // "after" is the restart
		p.ReplayWindow = 0
		rx2 := mustSA(t, p)
		seen := map[uint64]string{}
		for i := range 200 {
			for _, sa := range []*SA{before, after} {
				pkt := seal(t, sa, udpPacket(false, 20+i%7))
				seq := binary.BigEndian.Uint32(pkt[24:])
				iv := binary.BigEndian.Uint64(pkt[28:])
				who := "before"
				if sa == after {
					who = "after"
				}
				if uint64(seq) != uint64(i+1) {
					t.Fatalf("%s %s: seq %d, want %d", c.name, who, seq, i+1)
				}
				if prev, dup := seen[iv]; dup {
					t.Fatalf("%s: IV %#x of seq %d sent %s and %s the restart: nonce reuse under one key", c.name, iv, seq, prev, who)
				}
				seen[iv] = who
				r := rx.Decrypt(frameWith(pkt), testHead, len(pkt))
				if sa == after {
					r = rx2.Decrypt(frameWith(pkt), testHead, len(pkt)) // the same numbers again
				}
				if r.Verdict != VerdictOK {
					t.Fatalf("%s %s seq %d: %v", c.name, who, seq, r.Verdict)
				}
			}
		}
	}
}
