package metrics

import (
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// XfrmStatNames are the counters of the kernel's /proc/net/xfrm_stat, in
// the kernel's order (net/xfrm/xfrm_proc.c). The xdpsec_xfrm_stat family
// reports every one of them, zero where xdpsec has no such event, as the
// kernel does, so that a dashboard built for kernel IPsec finds each
// series it expects.
var XfrmStatNames = [...]string{
	"XfrmInError",
	"XfrmInBufferError",
	"XfrmInHdrError",
	"XfrmInNoStates",
	"XfrmInStateProtoError",
	"XfrmInStateModeError",
	"XfrmInStateSeqError",
	"XfrmInStateExpired",
	"XfrmInStateMismatch",
	"XfrmInStateInvalid",
	"XfrmInTmplMismatch",
	"XfrmInNoPols",
	"XfrmInPolBlock",
	"XfrmInPolError",
	"XfrmOutError",
	"XfrmOutBundleGenError",
	"XfrmOutBundleCheckError",
	"XfrmOutNoStates",
	"XfrmOutStateProtoError",
	"XfrmOutStateModeError",
	"XfrmOutStateSeqError",
	"XfrmOutStateExpired",
	"XfrmOutPolBlock",
	"XfrmOutPolDead",
	"XfrmOutPolError",
	"XfrmFwdHdrError",
	"XfrmOutStateInvalid",
	"XfrmAcquireError",
	"XfrmOutStateDirError",
	"XfrmInStateDirError",
	"XfrmInIptfsError",
	"XfrmOutNoQueueSpace",
}

// xfrmIndex maps a counter name to its place in XfrmStatNames.
var xfrmIndex = func() map[string]int {
	m := make(map[string]int, len(XfrmStatNames))
	for i, n := range XfrmStatNames {
		m[n] = i
	}
	return m
}()

// verdictXfrm is where the kernel counts the event an inbound verdict
// stands for (net/xfrm/xfrm_input.c): a failed ICV and bad ESP padding
// both make esp_input fail, which xfrm_input counts as
// XfrmInStateProtoError; sequence number 0 and a replay both fail
// xfrm_replay_check (XfrmInStateSeqError). Verdicts that are not errors
// (ok, dummy) or that the kernel hands elsewhere (IKE, keepalives,
// fragments, not IPsec) have no counter.
var verdictXfrm = [ipsec.NumVerdicts]string{
	ipsec.VerdictNoState:    "XfrmInNoStates",
	ipsec.VerdictBadICV:     "XfrmInStateProtoError",
	ipsec.VerdictBadPadding: "XfrmInStateProtoError",
	ipsec.VerdictBadSeq:     "XfrmInStateSeqError",
	ipsec.VerdictReplay:     "XfrmInStateSeqError",
	ipsec.VerdictMalformed:  "XfrmInHdrError",
	ipsec.VerdictExpired:    "XfrmInStateExpired",
}

// VerdictXfrmStat returns the /proc/net/xfrm_stat counter that counts the
// event inbound verdict v stands for, or "" when the kernel counts none.
func VerdictXfrmStat(v ipsec.Verdict) string {
	if v < ipsec.NumVerdicts {
		return verdictXfrm[v]
	}
	return ""
}

// engineXfrm maps the engine's stable counter names (engine.CounterName)
// to kernel counters. An outbound packet no SA can protect is the
// kernel's XfrmOutNoStates; a DISCARD policy is a policy block; Encrypt
// failing (sequence overflow, hard expiry, no room) is the catch-all
// XfrmOutError because the engine counts those causes together; a
// decrypted packet the inbound policy refuses matched no template.
var engineXfrm = map[string]string{
	"out-no-sa":         "XfrmOutNoStates",
	"out-discard":       "XfrmOutPolBlock",
	"out-encrypt-error": "XfrmOutError",
	// A fragment offered to a transport-mode SA (RFC 4303 §3.1.1); Linux
	// transforms before it fragments, so it has no counter of its own.
	"out-transport-fragment": "XfrmOutError",
	"in-policy-mismatch":     "XfrmInTmplMismatch",
}

// EngineCounterXfrmStat returns the /proc/net/xfrm_stat counter for the
// engine counter named name ("out-no-sa", ...), or "" for none.
func EngineCounterXfrmStat(name string) string { return engineXfrm[name] }

// xfrmStat accumulates the family's values.
type xfrmStat [len(XfrmStatNames)]uint64

func (x *xfrmStat) add(name string, n uint64) {
	if i, ok := xfrmIndex[name]; ok && name != "" {
		x[i] += n
	}
}

// addReasons adds one link's XDP reason counters.
func (x *xfrmStat) addReasons(c *loader.Counters) {
	for r, n := range c {
		x.add(loader.ReasonXfrmStat(loader.Reason(r)), n)
	}
}

// addVerdicts adds inbound verdict counts.
func (x *xfrmStat) addVerdicts(v *[ipsec.NumVerdicts]uint64) {
	for i, n := range v {
		x.add(verdictXfrm[i], n)
	}
}
