// Package bpf holds xdpsec's XDP program (xdpsec.c), the header whose
// structs and enums it shares with Go (xdpsec.h), and the bpf2go bindings
// generated from them (xdpsec_bpfel.go, xdpsec_bpfel.o, committed so that
// building needs no clang). Regenerate with `make generate`.
package bpf

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type xdpsec_sa_key -type xdpsec_sa -type xdpsec_config -type xdpsec_lladdr -type xdpsec_last -type xdpsec_family -type xdpsec_class -type xdpsec_reason -type xdpsec_feature xdpsec xdpsec.c

import "github.com/cilium/ebpf"

// Exported names for the generated bindings. The layouts themselves come
// from xdpsec.h through bpf2go -type; these are aliases, not copies.
type (
	// SAKey is struct xdpsec_sa_key: the SA map key.
	SAKey = xdpsecXdpsecSaKey
	// SA is struct xdpsec_sa: the per-CPU SA map value.
	SA = xdpsecXdpsecSa
	// Config is struct xdpsec_config: entry 0 of the config map.
	Config = xdpsecXdpsecConfig
	// LinkAddr is struct xdpsec_lladdr: entry 0 of the link-address map.
	LinkAddr = xdpsecXdpsecLladdr
	// Last is struct xdpsec_last: what the classify variant records.
	Last = xdpsecXdpsecLast
	// Reason is enum xdpsec_reason: the index of the reason counters.
	Reason = xdpsecXdpsecReason
	// Class is enum xdpsec_class: receive-offload enable bits.
	Class = xdpsecXdpsecClass
	// Family is enum xdpsec_family: the address family of an SA key.
	Family = xdpsecXdpsecFamily
	// Feature is enum xdpsec_feature: packet shapes the program handles.
	Feature = xdpsecXdpsecFeature
	// Objects holds the loaded program, maps and variables.
	Objects = xdpsecObjects
)

// Names of the objects in the ELF, for CollectionSpec lookups.
const (
	ProgClassify        = xdpsecProgXdpsecClassify
	MapSAs              = xdpsecMapXdpsecSas
	MapXSKs             = xdpsecMapXdpsecXsks
	MapConfig           = xdpsecMapXdpsecCfg
	MapCounters         = xdpsecMapXdpsecCounters
	MapLastPacket       = xdpsecMapXdpsecLastpkt
	VarFeatures         = xdpsecVarXdpsecFeatures
	VarRecordLast       = xdpsecVarXdpsecRecordLast
	MaxNATTPorts        = len(Config{}.NattPorts)
	FamilyIPv4          = xdpsecXdpsecFamilyXDPSEC_FAMILY_IPV4
	FamilyIPv6          = xdpsecXdpsecFamilyXDPSEC_FAMILY_IPV6
	ClassESP            = xdpsecXdpsecClassXDPSEC_CLASS_ESP
	ClassAH             = xdpsecXdpsecClassXDPSEC_CLASS_AH
	ClassUDPESP         = xdpsecXdpsecClassXDPSEC_CLASS_UDP_ESP
	ClassIPv4           = xdpsecXdpsecClassXDPSEC_CLASS_IPV4
	ClassIPv6           = xdpsecXdpsecClassXDPSEC_CLASS_IPV6
	ReasonPassOther     = xdpsecXdpsecReasonXDPSEC_REASON_PASS_OTHER
	ReasonPassUnparsed  = xdpsecXdpsecReasonXDPSEC_REASON_PASS_UNPARSED
	ReasonPassIKE       = xdpsecXdpsecReasonXDPSEC_REASON_PASS_IKE
	ReasonPassKeepalive = xdpsecXdpsecReasonXDPSEC_REASON_PASS_KEEPALIVE
	ReasonPassFragment  = xdpsecXdpsecReasonXDPSEC_REASON_PASS_FRAGMENT
	ReasonNoState       = xdpsecXdpsecReasonXDPSEC_REASON_NO_STATE
	ReasonStateMismatch = xdpsecXdpsecReasonXDPSEC_REASON_STATE_MISMATCH
	ReasonDisabledClass = xdpsecXdpsecReasonXDPSEC_REASON_DISABLED_CLASS
	ReasonSteered       = xdpsecXdpsecReasonXDPSEC_REASON_STEERED
	ReasonSteerFallback = xdpsecXdpsecReasonXDPSEC_REASON_STEER_FALLBACK
	ReasonMalformedESP  = xdpsecXdpsecReasonXDPSEC_REASON_MALFORMED_ESP
	ReasonMalformedAH   = xdpsecXdpsecReasonXDPSEC_REASON_MALFORMED_AH
	FeatureVLAN         = xdpsecXdpsecFeatureXDPSEC_FEATURE_VLAN
	FeatureQinQ         = xdpsecXdpsecFeatureXDPSEC_FEATURE_QINQ
	FeatureIPv4         = xdpsecXdpsecFeatureXDPSEC_FEATURE_IPV4
	FeatureIPv4Options  = xdpsecXdpsecFeatureXDPSEC_FEATURE_IPV4OPTIONS
	FeatureIPv6         = xdpsecXdpsecFeatureXDPSEC_FEATURE_IPV6
	FeatureIPv6Ext      = xdpsecXdpsecFeatureXDPSEC_FEATURE_IPV6EXT
	FeatureESP          = xdpsecXdpsecFeatureXDPSEC_FEATURE_ESP
	FeatureAH           = xdpsecXdpsecFeatureXDPSEC_FEATURE_AH
	FeatureAHESP        = xdpsecXdpsecFeatureXDPSEC_FEATURE_AH_ESP
	FeatureUDPESP       = xdpsecXdpsecFeatureXDPSEC_FEATURE_UDP_ESP
	FeatureIKEPass      = xdpsecXdpsecFeatureXDPSEC_FEATURE_IKE_PASS
	FeatureFragmentPass = xdpsecXdpsecFeatureXDPSEC_FEATURE_FRAGMENT_PASS
	FeatureSteerXSK     = xdpsecXdpsecFeatureXDPSEC_FEATURE_STEER_XSK
	ReasonMalformedUDP  = xdpsecXdpsecReasonXDPSEC_REASON_MALFORMED_UDP

	// The link-address check: its map, its reason, its feature bit.
	MapLinkAddr          = xdpsecMapXdpsecLinkaddr
	ReasonPassOtherHost  = xdpsecXdpsecReasonXDPSEC_REASON_PASS_OTHERHOST
	FeatureOtherHostPass = xdpsecXdpsecFeatureXDPSEC_FEATURE_OTHERHOST_PASS
)

// LoadSpec returns the CollectionSpec of the embedded object. Callers
// (loader/) adjust map sizes, pinning and variables before loading.
func LoadSpec() (*ebpf.CollectionSpec, error) { return loadXdpsec() }
