package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/xdpsec/xdpsec/bpf"
)

// Sentinel errors. Wrapped errors carry the context; compare with errors.Is.
var (
	// ErrLinkNotFound: no network interface has the given name.
	ErrLinkNotFound = errors.New("link not found")
	// ErrForeignProgram: the link already runs an XDP program that is not
	// xdpsec's; Attach refuses unless Options.Force is set.
	ErrForeignProgram = errors.New("link already has a foreign XDP program")
	// ErrNotAttached: xdpsec has nothing pinned for the link.
	ErrNotAttached = errors.New("xdpsec is not attached")
	// ErrPermission: the caller lacks CAP_BPF/CAP_NET_ADMIN (or CAP_SYS_ADMIN).
	ErrPermission = errors.New("not permitted (needs root or CAP_BPF+CAP_NET_ADMIN)")
	// ErrNoBPF: the kernel lacks BPF, XDP, or the bpf filesystem.
	ErrNoBPF = errors.New("kernel lacks the needed BPF support")
	// ErrInvalidSA: an SA key or value the datapath cannot hold.
	ErrInvalidSA = errors.New("invalid SA")
	// ErrSANotFound: no SA with that key.
	ErrSANotFound = errors.New("SA not found")
	// ErrInvalidConfig: a Config the datapath cannot hold.
	ErrInvalidConfig = errors.New("invalid config")
)

// Proto is the IPsec protocol of an SA: ESP (including ESP-in-UDP) or AH.
type Proto uint8

// IP protocol numbers (IANA).
const (
	ProtoESP Proto = 50
	ProtoAH  Proto = 51
)

func (p Proto) String() string {
	switch p {
	case ProtoESP:
		return "esp"
	case ProtoAH:
		return "ah"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// SAKey identifies an inbound SA as the kernel's xfrm_state_lookup does.
// Dst is the outer destination address; an IPv4-mapped IPv6 address is
// taken as the IPv4 address it maps.
type SAKey struct {
	SPI   uint32
	Dst   netip.Addr
	Proto Proto
}

func (k SAKey) String() string {
	return fmt.Sprintf("%s spi 0x%08x dst %s", k.Proto, k.SPI, k.Dst)
}

// SA is what the datapath keeps about an SA besides its key.
type SA struct {
	// ID is an opaque handle chosen by the caller (the engine's SA id);
	// Classify reports it for the matched SA.
	ID uint32
	// EncapPort is 0 for ESP/AH directly over IP, and for ESP-in-UDP
	// (RFC 3948) the UDP destination port the SA receives on: 4500 or a
	// port in Config.NATTPorts. A packet whose encapsulation differs is
	// passed as state-mismatch.
	EncapPort uint16
}

// SACounters are the packets and bytes (IP datagram, outer header
// included) that matched an SA in XDP, whatever the decision, summed over
// CPUs.
type SACounters struct {
	Packets uint64
	Bytes   uint64
}

// SAEntry is one SA as listed by SAs.
type SAEntry struct {
	Key      SAKey
	SA       SA
	Counters SACounters
}

func (k SAKey) validate() error {
	if k.SPI == 0 {
		return fmt.Errorf("%w: SPI 0 is reserved and never on the wire (RFC 4303 §2.1)", ErrInvalidSA)
	}
	if k.Proto != ProtoESP && k.Proto != ProtoAH {
		return fmt.Errorf("%w: protocol %s: want esp or ah", ErrInvalidSA, k.Proto)
	}
	if !k.Dst.IsValid() {
		return fmt.Errorf("%w: missing destination address", ErrInvalidSA)
	}
	if k.Dst.Zone() != "" {
		return fmt.Errorf("%w: destination %s has a zone; SAs match on the address alone", ErrInvalidSA, k.Dst)
	}
	return nil
}

func (k SAKey) marshal() (bpf.SAKey, error) {
	var out bpf.SAKey
	if err := k.validate(); err != nil {
		return out, err
	}
	out.SpiBe = swap32(k.SPI)
	out.Proto = uint8(k.Proto)
	dst := k.Dst.Unmap()
	if dst.Is4() {
		a := dst.As4()
		copy(out.Daddr[:], a[:])
		out.Family = uint8(bpf.FamilyIPv4)
	} else {
		out.Daddr = dst.As16()
		out.Family = uint8(bpf.FamilyIPv6)
	}
	return out, nil
}

func unmarshalKey(k bpf.SAKey) SAKey {
	out := SAKey{SPI: swap32(k.SpiBe), Proto: Proto(k.Proto)}
	if bpf.Family(k.Family) == bpf.FamilyIPv4 {
		out.Dst = netip.AddrFrom4([4]byte(k.Daddr[:4]))
	} else {
		out.Dst = netip.AddrFrom16(k.Daddr)
	}
	return out
}

// swap32 converts between host order and the network-order bytes the map
// holds (the map stores the SPI exactly as it sits in the packet).
func swap32(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

func (sa SA) validate(k SAKey) error {
	if k.Proto == ProtoAH && sa.EncapPort != 0 {
		return fmt.Errorf("%w: %s: AH cannot be UDP-encapsulated (RFC 3948 covers ESP only)", ErrInvalidSA, k)
	}
	if sa.EncapPort == 500 {
		return fmt.Errorf("%w: %s: UDP port 500 carries IKE without a non-ESP marker; use 4500", ErrInvalidSA, k)
	}
	return nil
}

// Config is the receive-offload configuration the capabilities module
// switches. A packet of a known SA is steered only when both its protocol
// class (ESP, AH or UDPESP) and its address family are enabled.
type Config struct {
	ESP    bool // ESP directly over IP
	AH     bool // AH, possibly followed by ESP
	UDPESP bool // ESP in UDP (RFC 3948)
	IPv4   bool
	IPv6   bool
	// NATTPorts are UDP destination ports carrying ESP-in-UDP besides
	// 4500 (always on), at most MaxNATTPorts, none 0 or 500.
	NATTPorts []uint16
}

// MaxNATTPorts is how many extra NAT-T ports the config map holds.
const MaxNATTPorts = bpf.MaxNATTPorts

// DefaultConfig enables every class and family, with no extra NAT-T port.
// Attach writes it when it creates the maps and Options.Config is nil.
func DefaultConfig() Config {
	return Config{ESP: true, AH: true, UDPESP: true, IPv4: true, IPv6: true}
}

func (c Config) marshal() (bpf.Config, error) {
	var out bpf.Config
	if len(c.NATTPorts) > MaxNATTPorts {
		return out, fmt.Errorf("%w: %d NAT-T ports, at most %d besides 4500", ErrInvalidConfig, len(c.NATTPorts), MaxNATTPorts)
	}
	for i, p := range c.NATTPorts {
		if p == 0 || p == 500 {
			return out, fmt.Errorf("%w: NAT-T port %d: must be 1-65535 and not 500 (IKE)", ErrInvalidConfig, p)
		}
		out.NattPorts[i] = p
	}
	bits := []struct {
		on  bool
		bit bpf.Class
	}{{c.ESP, bpf.ClassESP}, {c.AH, bpf.ClassAH}, {c.UDPESP, bpf.ClassUDPESP}, {c.IPv4, bpf.ClassIPv4}, {c.IPv6, bpf.ClassIPv6}}
	for _, b := range bits {
		if b.on {
			out.Enabled |= uint32(b.bit)
		}
	}
	return out, nil
}

func unmarshalConfig(in bpf.Config) Config {
	c := Config{
		ESP:    in.Enabled&uint32(bpf.ClassESP) != 0,
		AH:     in.Enabled&uint32(bpf.ClassAH) != 0,
		UDPESP: in.Enabled&uint32(bpf.ClassUDPESP) != 0,
		IPv4:   in.Enabled&uint32(bpf.ClassIPv4) != 0,
		IPv6:   in.Enabled&uint32(bpf.ClassIPv6) != 0,
	}
	for _, p := range in.NattPorts {
		if p != 0 {
			c.NATTPorts = append(c.NATTPorts, p)
		}
	}
	return c
}

// isNATTPort reports whether UDP destination port p carries ESP-in-UDP.
func (c Config) isNATTPort(p uint16) bool {
	return p == 4500 || (p != 0 && slices.Contains(c.NATTPorts, p))
}

// Reason says why the datapath decided what it did; one counter each.
type Reason = bpf.Reason

// The reasons, in counter order (enum xdpsec_reason in bpf/xdpsec.h).
const (
	ReasonPassOther     = bpf.ReasonPassOther
	ReasonPassUnparsed  = bpf.ReasonPassUnparsed
	ReasonPassIKE       = bpf.ReasonPassIKE
	ReasonPassKeepalive = bpf.ReasonPassKeepalive
	ReasonPassFragment  = bpf.ReasonPassFragment
	ReasonNoState       = bpf.ReasonNoState
	ReasonStateMismatch = bpf.ReasonStateMismatch
	ReasonDisabledClass = bpf.ReasonDisabledClass
	ReasonSteered       = bpf.ReasonSteered
	ReasonSteerFallback = bpf.ReasonSteerFallback
	ReasonMalformedESP  = bpf.ReasonMalformedESP
	ReasonMalformedAH   = bpf.ReasonMalformedAH
	ReasonMalformedUDP  = bpf.ReasonMalformedUDP
	ReasonPassOtherHost = bpf.ReasonPassOtherHost
)

// NumReasons is the number of reason counters.
const NumReasons = int(ReasonPassOtherHost) + 1

type reasonInfo struct {
	name     string // stable, used in CLI output and JSON
	xfrmStat string // the /proc/net/xfrm_stat counter for the same event, if any
	verdict  Verdict
}

var reasons = [NumReasons]reasonInfo{
	ReasonPassOther:     {"pass-other", "", VerdictPass},
	ReasonPassUnparsed:  {"pass-unparsed", "", VerdictPass},
	ReasonPassIKE:       {"pass-ike", "", VerdictPass},
	ReasonPassKeepalive: {"pass-keepalive", "", VerdictPass},
	ReasonPassFragment:  {"pass-fragment", "", VerdictPass},
	ReasonNoState:       {"no-state", "XfrmInNoStates", VerdictPass},
	ReasonStateMismatch: {"state-mismatch", "XfrmInStateMismatch", VerdictPass},
	ReasonDisabledClass: {"disabled-class", "", VerdictPass},
	ReasonSteered:       {"steered", "", VerdictSteer},
	ReasonSteerFallback: {"steer-fallback", "", VerdictSteer},
	ReasonMalformedESP:  {"malformed-esp", "XfrmInHdrError", VerdictDrop},
	ReasonMalformedAH:   {"malformed-ah", "XfrmInHdrError", VerdictDrop},
	ReasonMalformedUDP:  {"malformed-udp", "XfrmInHdrError", VerdictDrop},
	ReasonPassOtherHost: {"pass-otherhost", "", VerdictPass},
}

// ReasonName returns the stable name of r ("no-state", "steered", ...).
func ReasonName(r Reason) string {
	if int(r) < NumReasons {
		return reasons[r].name
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

// ReasonXfrmStat returns the /proc/net/xfrm_stat counter that counts the
// same event in the kernel, or "" when the kernel has none.
func ReasonXfrmStat(r Reason) string {
	if int(r) < NumReasons {
		return reasons[r].xfrmStat
	}
	return ""
}

// ParseReason returns the reason named s, as ReasonName spells it.
func ParseReason(s string) (Reason, error) {
	for i, r := range reasons {
		if r.name == s {
			return Reason(i), nil
		}
	}
	names := make([]string, 0, NumReasons)
	for _, r := range reasons {
		names = append(names, r.name)
	}
	return 0, fmt.Errorf("unknown reason %q: want one of %s", s, strings.Join(names, ", "))
}

// Counters are the reason counters summed over CPUs, indexed by Reason.
type Counters [NumReasons]uint64

// Verdict is what the datapath does with a packet.
type Verdict uint8

// Verdicts. VerdictSteer covers both steered and steer-fallback: the
// program chose the AF_XDP socket of the rx queue; with no socket bound the
// packet reaches the kernel (XDP_PASS) instead of being lost.
const (
	VerdictPass Verdict = iota
	VerdictSteer
	VerdictDrop
)

func (v Verdict) String() string {
	switch v {
	case VerdictPass:
		return "pass"
	case VerdictSteer:
		return "steer"
	case VerdictDrop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// VerdictOf returns the verdict a reason implies.
func VerdictOf(r Reason) Verdict {
	if int(r) < NumReasons {
		return reasons[r].verdict
	}
	return VerdictPass
}

// Feature is a packet shape the XDP program handles (enum xdpsec_feature).
type Feature = bpf.Feature

var featureNames = []struct {
	f    Feature
	name string
}{
	{bpf.FeatureVLAN, "vlan"},
	{bpf.FeatureQinQ, "qinq"},
	{bpf.FeatureIPv4, "ipv4"},
	{bpf.FeatureIPv4Options, "ipv4-options"},
	{bpf.FeatureIPv6, "ipv6"},
	{bpf.FeatureIPv6Ext, "ipv6-ext-headers"},
	{bpf.FeatureESP, "esp"},
	{bpf.FeatureAH, "ah"},
	{bpf.FeatureAHESP, "ah-esp"},
	{bpf.FeatureUDPESP, "udp-esp"},
	{bpf.FeatureIKEPass, "ike-pass"},
	{bpf.FeatureFragmentPass, "fragment-pass"},
	{bpf.FeatureSteerXSK, "steer-xsk"},
	{bpf.FeatureOtherHostPass, "otherhost-pass"},
}

// Features is the set of packet shapes a program handles, as published in
// its .rodata (xdpsec_features).
type Features uint32

// Has reports whether f is in the set.
func (fs Features) Has(f Feature) bool { return uint32(fs)&uint32(f) != 0 }

// Names lists the features in the set by stable name ("vlan", "ah-esp", ...).
func (fs Features) Names() []string {
	var out []string
	for _, n := range featureNames {
		if fs.Has(n.f) {
			out = append(out, n.name)
		}
	}
	return out
}
