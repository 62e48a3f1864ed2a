package capabilities

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// IPsecV1Parameter is the value of NDIS_OFFLOAD_PARAMETERS.IPsecV1
// (reference §3.6).
type IPsecV1Parameter uint8

// IPsecV2Parameter is the value of NDIS_OFFLOAD_PARAMETERS.IPsecV2 and
// .IPsecV2IPv4 (reference §3.6).
type IPsecV2Parameter uint8

// NDIS_OFFLOAD_PARAMETERS_NO_CHANGE leaves a member as it is (value 0 of
// both IPsecV1Parameter and IPsecV2Parameter).
const NDIS_OFFLOAD_PARAMETERS_NO_CHANGE = 0

// NDIS_OFFLOAD_PARAMETERS_IPSECV1_* values, SDK shared/ntddndis.h.
const (
	NDIS_OFFLOAD_PARAMETERS_IPSECV1_DISABLED           IPsecV1Parameter = 1
	NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_ENABLED         IPsecV1Parameter = 2
	NDIS_OFFLOAD_PARAMETERS_IPSECV1_ESP_ENABLED        IPsecV1Parameter = 3
	NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_AND_ESP_ENABLED IPsecV1Parameter = 4
	NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED           IPsecV2Parameter = 1
	NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_ENABLED         IPsecV2Parameter = 2
	NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED        IPsecV2Parameter = 3
	NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED IPsecV2Parameter = 4
	maxIPsecParameter                                                   = 4
	ipsecV1Prefix                                                       = "NDIS_OFFLOAD_PARAMETERS_IPSECV1_"
	ipsecV2Prefix                                                       = "NDIS_OFFLOAD_PARAMETERS_IPSECV2_"
	paramNoChangeName                                                   = "NDIS_OFFLOAD_PARAMETERS_NO_CHANGE"
)

var paramSuffixes = [...]string{1: "DISABLED", 2: "AH_ENABLED", 3: "ESP_ENABLED", 4: "AH_AND_ESP_ENABLED"}

// classes says which protocols a parameter value enables.
func classes(v uint8) (ah, esp bool) {
	return v == 2 || v == 4, v == 3 || v == 4
}

func paramName(prefix string, v uint8) string {
	switch {
	case v == 0:
		return paramNoChangeName
	case int(v) < len(paramSuffixes):
		return prefix + paramSuffixes[v]
	}
	return fmt.Sprintf("invalid(%d)", v)
}

// String returns the NDIS constant name.
func (p IPsecV1Parameter) String() string { return paramName(ipsecV1Prefix, uint8(p)) }

// String returns the NDIS constant name.
func (p IPsecV2Parameter) String() string { return paramName(ipsecV2Prefix, uint8(p)) }

// ParseIPsecParameter reads a parameter value as the CLI and JSON give it:
// the NDIS number (0-4), the full NDIS name of either family, or the short
// words no-change, disabled, ah, esp, ah-esp. It returns the number.
func ParseIPsecParameter(s string) (uint8, error) {
	short := map[string]uint8{"no-change": 0, "disabled": 1, "off": 1, "ah": 2, "esp": 3, "ah-esp": 4, "ah+esp": 4, "on": 4}
	if v, ok := short[strings.ToLower(s)]; ok {
		return v, nil
	}
	for v := uint8(0); v <= maxIPsecParameter; v++ {
		if s == fmt.Sprint(v) || s == paramName(ipsecV1Prefix, v) || s == paramName(ipsecV2Prefix, v) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("IPsec offload parameter %q: want disabled, ah, esp, ah-esp, no-change, 0-4 or an NDIS_OFFLOAD_PARAMETERS_IPSECV1/V2_* name", s)
}

// Switch is a per-feature operator switch with the NDIS_OFFLOAD_SET_*
// numbers: 0 no change (in an update), 1 on, 2 off.
type Switch uint8

// Switch values.
const (
	SwitchNoChange Switch = NDIS_OFFLOAD_SET_NO_CHANGE
	SwitchOn       Switch = NDIS_OFFLOAD_SET_ON
	SwitchOff      Switch = NDIS_OFFLOAD_SET_OFF
)

func (s Switch) String() string {
	switch s {
	case SwitchNoChange:
		return "no-change"
	case SwitchOn:
		return "on"
	case SwitchOff:
		return "off"
	}
	return fmt.Sprintf("invalid(%d)", uint8(s))
}

// Parameters is what the operator asked for: the IPsec members of
// NDIS_OFFLOAD_PARAMETERS plus switches NDIS lacks. As a stored setting
// (State.Parameters) no member is NO_CHANGE; as an update (Update's
// argument) NO_CHANGE members and missing algorithms keep their value.
//
// Semantics on xdpsec's single datapath: IPsecV2 governs IPv6, and IPv4
// when the hardware view has IPv6; IPsecV2IPv4 governs IPv4 when the
// hardware is IPv4-only (as NDIS defines it); IPsecV1, when it disables a
// class, also removes it from IPv4 — every parameter is a restriction, so
// the current view never claims more than any one of them allows. Because
// the datapath's AH/ESP switches are not per family, a class is on only if
// every family that is on allows it.
type Parameters struct {
	IPsecV1     IPsecV1Parameter
	IPsecV2     IPsecV2Parameter
	IPsecV2IPv4 IPsecV2Parameter
	// UdpEsp switches ESP-in-UDP (NAT-T) offload as a whole.
	UdpEsp Switch
	// Algorithms switches algorithms by XFRM name.
	Algorithms map[string]Switch
}

// DefaultParameters is the setting before any operator change: AH and ESP
// on for every family (the registry default of *IPsecOffloadV2), UDP-ESP
// on, every algorithm on except those ipsec marks Insecure (DES, 3DES,
// MD5, NULL encryption), which an operator must switch on by name.
func DefaultParameters() Parameters {
	p := Parameters{
		IPsecV1:     NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_AND_ESP_ENABLED,
		IPsecV2:     NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED,
		IPsecV2IPv4: NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED,
		UdpEsp:      SwitchOn,
		Algorithms:  map[string]Switch{},
	}
	for _, a := range ipsec.Algorithms {
		if a.Insecure {
			p.Algorithms[a.Name] = SwitchOff
		} else {
			p.Algorithms[a.Name] = SwitchOn
		}
	}
	return p
}

// Clone returns a copy that shares no map with p.
func (p Parameters) Clone() Parameters {
	p.Algorithms = maps.Clone(p.Algorithms)
	return p
}

// Equal reports whether two settings are the same.
func (p Parameters) Equal(q Parameters) bool {
	return p.IPsecV1 == q.IPsecV1 && p.IPsecV2 == q.IPsecV2 && p.IPsecV2IPv4 == q.IPsecV2IPv4 &&
		p.UdpEsp == q.UdpEsp && maps.Equal(p.Algorithms, q.Algorithms)
}

// ErrBadParameter is wrapped by Update for a value or algorithm name that
// does not exist.
var ErrBadParameter = errors.New("invalid offload parameter")

// Update returns p with the members of u applied: NO_CHANGE members and
// algorithms u does not name stay as they are. An out-of-range value or
// an algorithm name not in ipsec.Algorithms is an error wrapping
// ErrBadParameter and changes nothing.
func (p Parameters) Update(u Parameters) (Parameters, error) {
	if u.IPsecV1 > maxIPsecParameter {
		return p, fmt.Errorf("IPsecV1 = %d: want 0-4 (no change, disabled, AH, ESP, AH and ESP): %w", u.IPsecV1, ErrBadParameter)
	}
	if u.IPsecV2 > maxIPsecParameter {
		return p, fmt.Errorf("IPsecV2 = %d: want 0-4 (no change, disabled, AH, ESP, AH and ESP): %w", u.IPsecV2, ErrBadParameter)
	}
	if u.IPsecV2IPv4 > maxIPsecParameter {
		return p, fmt.Errorf("IPsecV2IPv4 = %d: want 0-4 (no change, disabled, AH, ESP, AH and ESP): %w", u.IPsecV2IPv4, ErrBadParameter)
	}
	if u.UdpEsp > SwitchOff {
		return p, fmt.Errorf("UdpEsp = %d: want 0 (no change), 1 (on) or 2 (off): %w", u.UdpEsp, ErrBadParameter)
	}
	for name, s := range u.Algorithms {
		if algorithm(name) == nil {
			var all []string
			for _, a := range ipsec.Algorithms {
				all = append(all, a.Name)
			}
			return p, fmt.Errorf("algorithm %q: unknown (known: %s): %w", name, strings.Join(all, ", "), ErrBadParameter)
		}
		if s > SwitchOff {
			return p, fmt.Errorf("algorithm %s = %d: want 0 (no change), 1 (on) or 2 (off): %w", name, s, ErrBadParameter)
		}
	}
	out := p.Clone()
	if out.Algorithms == nil {
		out.Algorithms = map[string]Switch{}
	}
	if u.IPsecV1 != NDIS_OFFLOAD_PARAMETERS_NO_CHANGE {
		out.IPsecV1 = u.IPsecV1
	}
	if u.IPsecV2 != NDIS_OFFLOAD_PARAMETERS_NO_CHANGE {
		out.IPsecV2 = u.IPsecV2
	}
	if u.IPsecV2IPv4 != NDIS_OFFLOAD_PARAMETERS_NO_CHANGE {
		out.IPsecV2IPv4 = u.IPsecV2IPv4
	}
	if u.UdpEsp != SwitchNoChange {
		out.UdpEsp = u.UdpEsp
	}
	for name, s := range u.Algorithms {
		if s != SwitchNoChange {
			out.Algorithms[name] = s
		}
	}
	return out, nil
}

// governingV4 returns the name and value of the V2 parameter that governs
// IPv4 for a hardware view (IPsecV2IPv4 for IPv4-only hardware).
func (p Parameters) governingV4(hw Offload) (string, uint8) {
	if hw.IPv6 {
		return "IPsecV2", uint8(p.IPsecV2)
	}
	return "IPsecV2IPv4", uint8(p.IPsecV2IPv4)
}

// familyRule is one parameter that restricts one family.
type familyRule struct {
	member string // NDIS_OFFLOAD_PARAMETERS member
	value  uint8
	prefix string
}

func (r familyRule) String() string {
	return fmt.Sprintf("%s = %s", r.member, paramName(r.prefix, r.value))
}

// rules returns the parameters that apply to IPv4 and to IPv6.
func (p Parameters) rules(hw Offload) (v4, v6 []familyRule) {
	m, v := p.governingV4(hw)
	v4 = []familyRule{{m, v, ipsecV2Prefix}, {"IPsecV1", uint8(p.IPsecV1), ipsecV1Prefix}}
	v6 = []familyRule{{"IPsecV2", uint8(p.IPsecV2), ipsecV2Prefix}}
	return v4, v6
}

// familyOn: no rule disables the family (NO_CHANGE is treated as enabled:
// a stored setting never holds it).
func familyOn(rules []familyRule) bool {
	for _, r := range rules {
		if r.value == 1 {
			return false
		}
	}
	return true
}

func classAllowed(rules []familyRule, ah bool) bool {
	for _, r := range rules {
		if r.value == 0 {
			continue
		}
		a, e := classes(r.value)
		if (ah && !a) || (!ah && !e) {
			return false
		}
	}
	return true
}

// State is everything capabilities knows at one moment: the hardware view,
// the operator's parameters and the Linux-native facts. The current view
// is computed, never stored, so it cannot drift from the other two.
type State struct {
	Hardware   Offload
	Parameters Parameters
	Linux      Linux
}

// Clone returns a deep copy.
func (s State) Clone() State {
	s.Hardware = s.Hardware.Clone()
	s.Parameters = s.Parameters.Clone()
	s.Linux = s.Linux.Clone()
	return s
}

// Current returns hardware ∩ parameters: the only view the datapath obeys.
func (s State) Current() Offload {
	hw, p := s.Hardware, s.Parameters
	v4rules, v6rules := p.rules(hw)
	cur := hw.Clone()
	cur.IPv4 = hw.IPv4 && familyOn(v4rules)
	cur.IPv6 = hw.IPv6 && familyOn(v6rules)
	var on []familyRule
	if cur.IPv4 {
		on = append(on, v4rules...)
	}
	if cur.IPv6 {
		on = append(on, v6rules...)
	}
	cur.AH = hw.AH && classAllowed(on, true)
	cur.ESP = hw.ESP && classAllowed(on, false)
	if p.UdpEsp != SwitchOn || !cur.ESP {
		cur.UdpEsp = 0
	}
	cur.Algorithms = nil
	for _, n := range hw.Algorithms {
		if p.Algorithms[n] == SwitchOn && algorithmUsable(n, cur) {
			cur.Algorithms = append(cur.Algorithms, n)
		}
	}
	if !cur.Active() {
		return Offload{}
	}
	return cur
}

// algorithmUsable: ciphers and AEADs need ESP; integrity needs AH or ESP.
func algorithmUsable(name string, o Offload) bool {
	a := algorithm(name)
	if a == nil {
		return false
	}
	if a.Kind == ipsec.KindIntegrity {
		return o.AH || o.ESP
	}
	return o.ESP
}

// XDPConfig is what the XDP program needs to know of the current view:
// which classes it steers to the engine. A class that is off is passed to
// the kernel (XDP_PASS), never steered. The loader copies it into its
// config map.
type XDPConfig struct {
	ESP, AH, UDPESP, IPv4, IPv6 bool
}

// XDPConfig returns the receive-enable bits of the view. Nothing is steered
// unless the view offloads receive.
func (o Offload) XDPConfig() XDPConfig {
	if !o.Active() || !o.Receive {
		return XDPConfig{}
	}
	return XDPConfig{ESP: o.ESP, AH: o.AH, UDPESP: o.ESP && o.UdpEsp != 0, IPv4: o.IPv4, IPv6: o.IPv6}
}

// ErrNotOffloadable is wrapped by every error of State.Allows.
var ErrNotOffloadable = errors.New("outside the current offload configuration")

// BlockedError says why an SA cannot be offloaded: Member is the NDIS
// member (or Linux extension key) that lacks it; Parameter, when set, is
// the operator parameter that switched it off (the hardware has it); when
// empty the hardware view itself lacks it and Reason says why.
type BlockedError struct {
	What      string
	Member    string
	Parameter string
	Reason    string
}

func (e *BlockedError) Error() string {
	if e.Parameter != "" {
		return fmt.Sprintf("%s is not offloaded: parameter %s switches off %s (change it with `xdpsec caps set`, or for good with the config's `offload` line)", e.What, e.Parameter, e.Member)
	}
	return fmt.Sprintf("%s is not offloaded: hardware capability %s lacks it (%s)", e.What, e.Member, e.Reason)
}

// Unwrap returns ErrNotOffloadable.
func (e *BlockedError) Unwrap() error { return ErrNotOffloadable }

// SADirection says whether an SA protects outbound or verifies inbound
// traffic (ipsec.SAParams has no direction; the SAD knows it).
type SADirection uint8

// SA directions.
const (
	SAOutbound SADirection = iota + 1
	SAInbound
)

// Allows returns nil if an SA with parameters sa, used in direction dir,
// is inside the current view, and otherwise a *BlockedError naming the
// member and, when the operator switched it off, the parameter that blocks
// it. It checks the shape (protocol, family, mode, UDP-ESP, ESN, replay
// window, direction) and every algorithm; it does not validate keys.
func (s State) Allows(sa *ipsec.SAParams, dir SADirection) error {
	hw, cur := s.Hardware, s.Current()
	v4rules, v6rules := s.Parameters.rules(hw)
	blocked := func(what, member string, hwHas bool, param, reason string) error {
		if hwHas {
			return &BlockedError{What: what, Member: member, Parameter: param}
		}
		return &BlockedError{What: what, Member: member, Reason: reason}
	}
	firstRule := func(rules []familyRule, bad func(familyRule) bool) string {
		for _, r := range rules {
			if bad(r) {
				return r.String()
			}
		}
		// The class is off because the other family is on and does not
		// allow it (flat datapath switches).
		var all []string
		for _, r := range append(append([]familyRule{}, v4rules...), v6rules...) {
			all = append(all, r.String())
		}
		return strings.Join(all, ", ")
	}
	if !hw.Active() {
		reason := "nothing is offloadable"
		if len(s.Linux.Limits) > 0 {
			reason = strings.Join(s.Linux.Limits, "; ")
		}
		return &BlockedError{What: "an SA", Member: "hardware capabilities", Reason: reason}
	}

	// Family.
	v6 := sa.Dst.Is6() && !sa.Dst.Is4In6()
	if v6 && !cur.IPv6 {
		return blocked("an IPv6 SA", "IPv6Supported", hw.IPv6, firstRule(v6rules, func(r familyRule) bool { return r.value == 1 }),
			"the loaded XDP program does not steer IPv6 IPsec")
	}
	if !v6 && !cur.IPv4 {
		return blocked("an IPv4 SA", "IPv4 (V1 and V2 offload of IPv4)", hw.IPv4, firstRule(v4rules, func(r familyRule) bool { return r.value == 1 }),
			"the loaded XDP program does not steer IPv4 IPsec")
	}
	rules := v4rules
	if v6 {
		rules = v6rules
	}
	// Protocol.
	switch sa.Proto {
	case ipsec.ProtoESP:
		if !cur.ESP {
			return blocked("an ESP SA", "Esp", hw.ESP, firstRule(rules, func(r familyRule) bool { _, e := classes(r.value); return r.value != 0 && !e }),
				"ESP is not steered by the XDP program or not handled by the engine")
		}
	case ipsec.ProtoAH:
		if !cur.AH {
			return blocked("an AH SA", "Ah", hw.AH, firstRule(rules, func(r familyRule) bool { a, _ := classes(r.value); return r.value != 0 && !a }),
				"AH is not steered by the XDP program or not handled by the engine")
		}
	default:
		return &BlockedError{What: fmt.Sprintf("an SA of %v", sa.Proto), Member: "Ah/Esp", Reason: "only AH (51) and ESP (50) exist"}
	}
	// Mode.
	switch sa.Mode {
	case ipsec.ModeTransport:
		if !cur.Transport {
			return &BlockedError{What: "a transport-mode SA", Member: "Transport", Reason: "the engine does not handle transport mode"}
		}
	case ipsec.ModeTunnel:
		if !cur.Tunnel {
			return &BlockedError{What: "a tunnel-mode SA", Member: "Tunnel", Reason: "the engine does not handle tunnel mode"}
		}
	}
	// Direction.
	if dir == SAInbound && !cur.Receive {
		return &BlockedError{What: "an inbound SA", Member: "IPv4ESP.Receive/IPv4AH.Receive", Reason: "receive offload is not running"}
	}
	if dir == SAOutbound && !cur.Send {
		return &BlockedError{What: "an outbound SA", Member: "IPv4ESP.Send/IPv4AH.Send", Reason: "send offload is not running"}
	}
	// UDP-ESP.
	if sa.EncapSrcPort != 0 || sa.EncapDstPort != 0 {
		shape := IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT
		if sa.Mode == ipsec.ModeTunnel {
			shape = IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL
		}
		if cur.UdpEsp&shape == 0 {
			return blocked("a UDP-encapsulated ("+shape.Flags()[0]+") SA", "UdpEsp", hw.UdpEsp&shape != 0,
				"UdpEsp = "+s.Parameters.UdpEsp.String(), "the loaded XDP program does not parse this UDP-ESP shape")
		}
	}
	// ESN.
	if sa.ESN && !cur.ESN {
		return &BlockedError{What: "an SA with extended sequence numbers", Member: "ExtendedSequenceNumbers", Reason: "the engine does not handle ESN"}
	}
	if max := s.Linux.MaxReplayWindow; sa.ReplayWindow > max {
		return &BlockedError{What: fmt.Sprintf("a replay window of %d packets", sa.ReplayWindow), Member: "maxReplayWindow",
			Reason: fmt.Sprintf("at most %d", max)}
	}
	// Algorithms.
	for _, slot := range []ipsec.AlgorithmKey{sa.AEAD, sa.Enc, sa.Auth} {
		if slot.Name == "" || cur.HasAlgorithm(slot.Name) {
			continue
		}
		member := "algorithms (Linux extension)"
		if names := NDISNames(slot.Name); len(names) > 0 {
			member = strings.Join(names, "|")
		}
		what := "algorithm " + slot.Name
		if !hw.HasAlgorithm(slot.Name) {
			reason := "not in the transforms library"
			if r, ok := s.Linux.SelfTest[slot.Name]; ok && r != "" {
				reason = "self-test failed: " + r
			}
			return &BlockedError{What: what, Member: member, Reason: reason}
		}
		if sw := s.Parameters.Algorithms[slot.Name]; sw != SwitchOn {
			return &BlockedError{What: what, Member: member, Parameter: fmt.Sprintf("Algorithms[%s] = %v", slot.Name, sw)}
		}
		return &BlockedError{What: what, Member: member, Reason: "a cipher or AEAD needs ESP; this SA's protocol cannot use it"}
	}
	return nil
}

// CheckCapacity returns an error wrapping ErrNotOffloadable when inUse SAs
// already fill SaOffloadCapacity, so `sa add` can refuse one more.
func (s State) CheckCapacity(inUse uint32) error {
	c := s.Current().SaOffloadCapacity
	if inUse >= c {
		return &BlockedError{What: "one more SA", Member: "SaOffloadCapacity",
			Reason: fmt.Sprintf("%d of %d SA slots in use; delete an SA or load the datapath with a larger SA map", inUse, c)}
	}
	return nil
}
