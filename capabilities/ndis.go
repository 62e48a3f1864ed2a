package capabilities

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The constants below keep the spelling of the Windows headers (as
// golang.org/x/sys/unix keeps C spellings) so that every value can be
// checked against ntddndis.h / offloadtypes.h by grep. Sources are the
// sections of shared/reference/ipsec-offload-reference.md named on each
// block.

// Encapsulation is the NDIS_ENCAPSULATION_* bitmask of the V1
// Supported.Encapsulation and V2 Encapsulation members: the MAC
// encapsulations IPsec offload works with (reference §1.4).
type Encapsulation uint32

// NDIS_ENCAPSULATION_* values, SDK shared/ndis/offloadtypes.h.
const (
	// NDIS_ENCAPSULATION_NOT_SUPPORTED: no encapsulation offload.
	NDIS_ENCAPSULATION_NOT_SUPPORTED Encapsulation = 0x00000000
	// NDIS_ENCAPSULATION_NULL: NULL encapsulation.
	NDIS_ENCAPSULATION_NULL Encapsulation = 0x00000001
	// NDIS_ENCAPSULATION_IEEE_802_3: Ethernet, mandatory for IPsec offload.
	NDIS_ENCAPSULATION_IEEE_802_3 Encapsulation = 0x00000002
	// NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q: Ethernet with an 802.1p/Q tag in the frame.
	NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q Encapsulation = 0x00000004
	// NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q_IN_OOB: 802.1p/Q carried out of band.
	NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q_IN_OOB Encapsulation = 0x00000008
	// NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED: LLC/SNAP for routed protocols (RFC 1483).
	NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED Encapsulation = 0x00000010
)

var encapsulationNames = []maskName{
	{uint32(NDIS_ENCAPSULATION_NOT_SUPPORTED), "NDIS_ENCAPSULATION_NOT_SUPPORTED"},
	{uint32(NDIS_ENCAPSULATION_NULL), "NDIS_ENCAPSULATION_NULL"},
	{uint32(NDIS_ENCAPSULATION_IEEE_802_3), "NDIS_ENCAPSULATION_IEEE_802_3"},
	{uint32(NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q), "NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q"},
	{uint32(NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q_IN_OOB), "NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q_IN_OOB"},
	{uint32(NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED), "NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED"},
}

// UdpEspV1 is the bitmask of the V1 Supported.Flags member: the UDP-ESP
// (NAT-T) packet shapes the NIC parses (reference §1.3; the WDK page that
// calls the member Supported.Reserved uses its NDIS 5 name).
type UdpEspV1 uint32

// IPSEC_*_UDPESP_ENCAPTYPE_* values, mingw ddk/ndis.h L1285-1292. The _IKE
// variants are "reserved for internal use"; xdpsec never sets them.
const (
	IPSEC_TPT_UDPESP_ENCAPTYPE_IKE                 UdpEspV1 = 0x00000001 // reserved
	IPSEC_TUN_UDPESP_ENCAPTYPE_IKE                 UdpEspV1 = 0x00000002 // reserved
	IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_IKE          UdpEspV1 = 0x00000004 // reserved
	IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_IKE   UdpEspV1 = 0x00000008 // reserved
	IPSEC_TPT_UDPESP_ENCAPTYPE_OTHER               UdpEspV1 = 0x00000010 // UDP-encapsulated transport
	IPSEC_TUN_UDPESP_ENCAPTYPE_OTHER               UdpEspV1 = 0x00000020 // UDP-encapsulated tunnel
	IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_OTHER        UdpEspV1 = 0x00000040 // transport over UDP-encapsulated tunnel
	IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_OTHER UdpEspV1 = 0x00000080 // UDP-encapsulated transport over plain tunnel
)

var udpEspV1Names = []maskName{
	{uint32(IPSEC_TPT_UDPESP_ENCAPTYPE_IKE), "IPSEC_TPT_UDPESP_ENCAPTYPE_IKE"},
	{uint32(IPSEC_TUN_UDPESP_ENCAPTYPE_IKE), "IPSEC_TUN_UDPESP_ENCAPTYPE_IKE"},
	{uint32(IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_IKE), "IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_IKE"},
	{uint32(IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_IKE), "IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_IKE"},
	{uint32(IPSEC_TPT_UDPESP_ENCAPTYPE_OTHER), "IPSEC_TPT_UDPESP_ENCAPTYPE_OTHER"},
	{uint32(IPSEC_TUN_UDPESP_ENCAPTYPE_OTHER), "IPSEC_TUN_UDPESP_ENCAPTYPE_OTHER"},
	{uint32(IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_OTHER), "IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_OTHER"},
	{uint32(IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_OTHER), "IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_OTHER"},
}

// UdpEspV2 is the bitmask of the V2 UdpEsp member (reference §2.5). xdpsec
// also uses it as its own vocabulary of UDP-ESP shapes.
type UdpEspV2 uint32

// IPSEC_OFFLOAD_V2_*UDP_ESP* values (km ndis.h, via win32metadata and an
// independent Cavium copy).
const (
	// IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE: no UDP-ESP offload.
	IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE UdpEspV2 = 0x0
	// IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT: ESP transport mode in UDP.
	IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT UdpEspV2 = 0x1
	// IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL: ESP tunnel mode in UDP.
	IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL UdpEspV2 = 0x2
	// IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL: ESP transport inside a UDP-encapsulated tunnel.
	IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL UdpEspV2 = 0x4
	// IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL: UDP-encapsulated transport inside a plain tunnel.
	IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL UdpEspV2 = 0x8
)

var udpEspV2Names = []maskName{
	{uint32(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE), "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE"},
	{uint32(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT), "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT"},
	{uint32(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL), "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL"},
	{uint32(IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL), "IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL"},
	{uint32(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL), "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL"},
}

// V1 returns the V1 Supported.Flags bits (the _OTHER variants) for the same
// shapes. The V1 and V2 bits correspond one to one, in the same order.
func (u UdpEspV2) V1() UdpEspV1 {
	return UdpEspV1(uint32(u)&0xf) << 4
}

// AuthenticationV2 is the bitmask of the V2 AuthenticationAlgorithms
// member (reference §2.3). The AES_GCM bits are AES-GMAC (RFC 4543)
// integrity; AES-GCM ESP (RFC 4106) is an EncryptionAlgorithms bit only.
type AuthenticationV2 uint32

// IPSEC_OFFLOAD_V2_AUTHENTICATION_* values, SDK shared/ntddndis.h L3284-3289.
const (
	IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5         AuthenticationV2 = 0x00000001 // HMAC-MD5-96
	IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1       AuthenticationV2 = 0x00000002 // HMAC-SHA1-96
	IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256     AuthenticationV2 = 0x00000004 // HMAC-SHA-256-128
	IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 AuthenticationV2 = 0x00000008 // AES-GMAC 128
	IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192 AuthenticationV2 = 0x00000010 // AES-GMAC 192
	IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256 AuthenticationV2 = 0x00000020 // AES-GMAC 256
)

var authenticationV2Names = []maskName{
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5), "IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5"},
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1), "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1"},
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256), "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256"},
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128), "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128"},
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192), "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192"},
	{uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256), "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256"},
}

// EncryptionV2 is the bitmask of the V2 EncryptionAlgorithms member
// (reference §2.4).
type EncryptionV2 uint32

// IPSEC_OFFLOAD_V2_ENCRYPTION_* values, SDK shared/ntddndis.h L3295-3303.
const (
	IPSEC_OFFLOAD_V2_ENCRYPTION_NONE        EncryptionV2 = 0x00000001 // NULL encryption (RFC 2410)
	IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC     EncryptionV2 = 0x00000002 // DES-CBC
	IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC   EncryptionV2 = 0x00000004 // 3DES-CBC
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 EncryptionV2 = 0x00000008 // AES-GCM-128 combined mode
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192 EncryptionV2 = 0x00000010 // AES-GCM-192 combined mode
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256 EncryptionV2 = 0x00000020 // AES-GCM-256 combined mode
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128 EncryptionV2 = 0x00000040 // AES-CBC-128
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192 EncryptionV2 = 0x00000080 // AES-CBC-192
	IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256 EncryptionV2 = 0x00000100 // AES-CBC-256
)

var encryptionV2Names = []maskName{
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_NONE), "IPSEC_OFFLOAD_V2_ENCRYPTION_NONE"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC), "IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC), "IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192"},
	{uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256), "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256"},
}

// OffloadSupport is the value of one 2-bit field of NDIS_IPSEC_OFFLOAD_V1
// (IPv4AH.*, IPv4ESP.*). Only 0 and 1 are defined for IPsec V1; the decoder
// keeps 2 and 3 as they are so nothing read from a blob is lost.
type OffloadSupport uint8

// NDIS_OFFLOAD_* values, SDK shared/ndis/offloadtypes.h (reference §1.5).
const (
	NDIS_OFFLOAD_NOT_SUPPORTED OffloadSupport = 0
	NDIS_OFFLOAD_SUPPORTED     OffloadSupport = 1
)

// NDIS_OFFLOAD_SET_* are the tri-state values of NDIS 6 offload parameter
// bit-fields (offloadtypes.h). xdpsec's per-algorithm and UDP-ESP switches
// (Switch) use the same numbers.
const (
	NDIS_OFFLOAD_SET_NO_CHANGE = 0
	NDIS_OFFLOAD_SET_ON        = 1
	NDIS_OFFLOAD_SET_OFF       = 2
)

// supported maps a Go bool onto a 2-bit V1 field.
func supported(b bool) OffloadSupport {
	if b {
		return NDIS_OFFLOAD_SUPPORTED
	}
	return NDIS_OFFLOAD_NOT_SUPPORTED
}

// Sizes of the binary layouts (x64 and x86 alike: no pointers inside).
const (
	// SizeV1 is sizeof(NDIS_IPSEC_OFFLOAD_V1): seven ULONGs.
	SizeV1 = 28
	// SizeV2 is sizeof(NDIS_IPSEC_OFFLOAD_V2): ULONG, eleven BOOLEANs, one
	// byte of padding, four ULONGs.
	SizeV2 = 32
)

// ErrLayout is returned (wrapped) by the decoders for a blob that is not a
// valid V1 or V2 layout: wrong length, a BOOLEAN other than 0 or 1, or
// non-zero padding / unused bit-field bits.
var ErrLayout = errors.New("not a valid NDIS IPsec offload layout")

// IPsecOffloadV1 is NDIS_IPSEC_OFFLOAD_V1 member by member (reference
// §1.1). It covers IPv4 only. Field names are the NDIS member names.
type IPsecOffloadV1 struct {
	Supported IPsecOffloadV1Supported
	IPv4AH    IPsecOffloadV1AH
	IPv4ESP   IPsecOffloadV1ESP
}

// IPsecOffloadV1Supported is the Supported member of NDIS_IPSEC_OFFLOAD_V1:
// five ULONGs at offsets 0, 4, 8, 12, 16. The three plain ULONGs are
// non-zero for "supported".
type IPsecOffloadV1Supported struct {
	Encapsulation           Encapsulation
	AhEspCombined           uint32
	TransportTunnelCombined uint32
	IPv4Options             uint32
	Flags                   UdpEspV1
}

// IPsecOffloadV1AH is the IPv4AH member: one ULONG of 2-bit fields at
// offset 20, allocated from the least significant bit (MSVC rules). Md5 and
// Sha_1 cover ESP integrity too: V1 has no separate ESP integrity field.
type IPsecOffloadV1AH struct {
	Md5       OffloadSupport // bits 0-1
	Sha_1     OffloadSupport // bits 2-3
	Transport OffloadSupport // bits 4-5
	Tunnel    OffloadSupport // bits 6-7
	Send      OffloadSupport // bits 8-9
	Receive   OffloadSupport // bits 10-11
}

// IPsecOffloadV1ESP is the IPv4ESP member: one ULONG of 2-bit fields at
// offset 24.
type IPsecOffloadV1ESP struct {
	Des       OffloadSupport // bits 0-1
	Reserved  OffloadSupport // bits 2-3
	TripleDes OffloadSupport // bits 4-5
	NullEsp   OffloadSupport // bits 6-7
	Transport OffloadSupport // bits 8-9
	Tunnel    OffloadSupport // bits 10-11
	Send      OffloadSupport // bits 12-13
	Receive   OffloadSupport // bits 14-15
}

func (a *IPsecOffloadV1AH) fieldPtrs() []*OffloadSupport {
	return []*OffloadSupport{&a.Md5, &a.Sha_1, &a.Transport, &a.Tunnel, &a.Send, &a.Receive}
}

func (e *IPsecOffloadV1ESP) fieldPtrs() []*OffloadSupport {
	return []*OffloadSupport{&e.Des, &e.Reserved, &e.TripleDes, &e.NullEsp, &e.Transport, &e.Tunnel, &e.Send, &e.Receive}
}

// packBitfields packs 2-bit values from bit 0 upward. Values above 3 are an
// error: they do not fit the field.
func packBitfields(member string, names []string, vals []*OffloadSupport) (uint32, error) {
	var w uint32
	for i, v := range vals {
		if *v > 3 {
			return 0, fmt.Errorf("encode %s.%s: value %d does not fit a 2-bit field (0..3): %w", member, names[i], *v, ErrLayout)
		}
		w |= uint32(*v) << (2 * i)
	}
	return w, nil
}

func unpackBitfields(member string, w uint32, vals []*OffloadSupport) error {
	used := uint(2 * len(vals))
	if rest := w >> used; rest != 0 {
		return fmt.Errorf("decode %s: bits %d-31 are not members but hold %#x: %w", member, used, rest<<used, ErrLayout)
	}
	for i, v := range vals {
		*v = OffloadSupport(w >> (2 * i) & 3)
	}
	return nil
}

var (
	v1AHNames  = []string{"Md5", "Sha_1", "Transport", "Tunnel", "Send", "Receive"}
	v1ESPNames = []string{"Des", "Reserved", "TripleDes", "NullEsp", "Transport", "Tunnel", "Send", "Receive"}
)

// MarshalBinary encodes v as the 28-byte little-endian NDIS_IPSEC_OFFLOAD_V1.
// It fails only for a 2-bit field holding a value above 3.
func (v IPsecOffloadV1) MarshalBinary() ([]byte, error) {
	ah, err := packBitfields("IPv4AH", v1AHNames, v.IPv4AH.fieldPtrs())
	if err != nil {
		return nil, err
	}
	esp, err := packBitfields("IPv4ESP", v1ESPNames, v.IPv4ESP.fieldPtrs())
	if err != nil {
		return nil, err
	}
	b := make([]byte, SizeV1)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(v.Supported.Encapsulation))
	le.PutUint32(b[4:], v.Supported.AhEspCombined)
	le.PutUint32(b[8:], v.Supported.TransportTunnelCombined)
	le.PutUint32(b[12:], v.Supported.IPv4Options)
	le.PutUint32(b[16:], uint32(v.Supported.Flags))
	le.PutUint32(b[20:], ah)
	le.PutUint32(b[24:], esp)
	return b, nil
}

// UnmarshalBinary decodes a 28-byte NDIS_IPSEC_OFFLOAD_V1. Unknown bits of
// the bitmask members are kept; set bits above the last 2-bit field of
// IPv4AH (12-31) or IPv4ESP (16-31) are an error wrapping ErrLayout, so
// every accepted blob encodes back to the same bytes.
func (v *IPsecOffloadV1) UnmarshalBinary(b []byte) error {
	if len(b) != SizeV1 {
		return fmt.Errorf("decode NDIS_IPSEC_OFFLOAD_V1: %d bytes, want %d: %w", len(b), SizeV1, ErrLayout)
	}
	le := binary.LittleEndian
	var out IPsecOffloadV1
	out.Supported.Encapsulation = Encapsulation(le.Uint32(b[0:]))
	out.Supported.AhEspCombined = le.Uint32(b[4:])
	out.Supported.TransportTunnelCombined = le.Uint32(b[8:])
	out.Supported.IPv4Options = le.Uint32(b[12:])
	out.Supported.Flags = UdpEspV1(le.Uint32(b[16:]))
	if err := unpackBitfields("NDIS_IPSEC_OFFLOAD_V1.IPv4AH", le.Uint32(b[20:]), out.IPv4AH.fieldPtrs()); err != nil {
		return err
	}
	if err := unpackBitfields("NDIS_IPSEC_OFFLOAD_V1.IPv4ESP", le.Uint32(b[24:]), out.IPv4ESP.fieldPtrs()); err != nil {
		return err
	}
	*v = out
	return nil
}

// IPsecOffloadV2 is NDIS_IPSEC_OFFLOAD_V2 member by member (reference
// §2.1). The BOOLEAN members are one byte each (TRUE = 1).
type IPsecOffloadV2 struct {
	Encapsulation                Encapsulation
	IPv6Supported                bool
	IPv4Options                  bool
	IPv6NonIPsecExtensionHeaders bool
	Ah                           bool
	Esp                          bool
	AhEspCombined                bool
	Transport                    bool
	Tunnel                       bool
	TransportTunnelCombined      bool
	LsoSupported                 bool
	ExtendedSequenceNumbers      bool
	UdpEsp                       UdpEspV2
	AuthenticationAlgorithms     AuthenticationV2
	EncryptionAlgorithms         EncryptionV2
	SaOffloadCapacity            uint32
}

// v2BoolNames lists the BOOLEAN members in layout order (offsets 4..14).
var v2BoolNames = []string{"IPv6Supported", "IPv4Options", "IPv6NonIPsecExtensionHeaders", "Ah", "Esp",
	"AhEspCombined", "Transport", "Tunnel", "TransportTunnelCombined", "LsoSupported", "ExtendedSequenceNumbers"}

func (v *IPsecOffloadV2) boolPtrs() []*bool {
	return []*bool{&v.IPv6Supported, &v.IPv4Options, &v.IPv6NonIPsecExtensionHeaders, &v.Ah, &v.Esp,
		&v.AhEspCombined, &v.Transport, &v.Tunnel, &v.TransportTunnelCombined, &v.LsoSupported, &v.ExtendedSequenceNumbers}
}

// MarshalBinary encodes v as the 32-byte little-endian NDIS_IPSEC_OFFLOAD_V2
// (padding byte 15 is zero). It never fails.
func (v IPsecOffloadV2) MarshalBinary() ([]byte, error) {
	b := make([]byte, SizeV2)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(v.Encapsulation))
	for i, p := range v.boolPtrs() {
		if *p {
			b[4+i] = 1
		}
	}
	le.PutUint32(b[16:], uint32(v.UdpEsp))
	le.PutUint32(b[20:], uint32(v.AuthenticationAlgorithms))
	le.PutUint32(b[24:], uint32(v.EncryptionAlgorithms))
	le.PutUint32(b[28:], v.SaOffloadCapacity)
	return b, nil
}

// UnmarshalBinary decodes a 32-byte NDIS_IPSEC_OFFLOAD_V2, such as one
// captured from a Windows driver. A BOOLEAN byte other than 0 or 1, or a
// non-zero padding byte, is an error wrapping ErrLayout that names the
// offset; unknown bits of the bitmask members are kept.
func (v *IPsecOffloadV2) UnmarshalBinary(b []byte) error {
	if len(b) != SizeV2 {
		return fmt.Errorf("decode NDIS_IPSEC_OFFLOAD_V2: %d bytes, want %d: %w", len(b), SizeV2, ErrLayout)
	}
	var out IPsecOffloadV2
	le := binary.LittleEndian
	out.Encapsulation = Encapsulation(le.Uint32(b[0:]))
	for i, p := range out.boolPtrs() {
		switch b[4+i] {
		case 0:
		case 1:
			*p = true
		default:
			return fmt.Errorf("decode NDIS_IPSEC_OFFLOAD_V2.%s (offset %d): BOOLEAN holds %#02x, want 0 or 1: %w", v2BoolNames[i], 4+i, b[4+i], ErrLayout)
		}
	}
	if b[15] != 0 {
		return fmt.Errorf("decode NDIS_IPSEC_OFFLOAD_V2: padding byte 15 holds %#02x, want 0: %w", b[15], ErrLayout)
	}
	out.UdpEsp = UdpEspV2(le.Uint32(b[16:]))
	out.AuthenticationAlgorithms = AuthenticationV2(le.Uint32(b[20:]))
	out.EncryptionAlgorithms = EncryptionV2(le.Uint32(b[24:]))
	out.SaOffloadCapacity = le.Uint32(b[28:])
	*v = out
	return nil
}

// maskName names one bit of a bitmask (or its zero value).
type maskName struct {
	bit  uint32
	name string
}

// maskFlags lists the NDIS names of the bits set in v, in table order; a
// zero v gives the table's zero name if it has one; bits no constant names
// are listed as one hex number so nothing is hidden.
func maskFlags(v uint32, table []maskName) []string {
	names := []string{}
	var known uint32
	for _, m := range table {
		known |= m.bit
		if m.bit == 0 {
			if v == 0 {
				names = append(names, m.name)
			}
			continue
		}
		if v&m.bit != 0 {
			names = append(names, m.name)
		}
	}
	if rest := v &^ known; rest != 0 {
		names = append(names, fmt.Sprintf("0x%08x", rest))
	}
	return names
}

// maskJSON is the JSON shape of every bitmask member.
type maskJSON struct {
	Value uint32   `json:"value"`
	Flags []string `json:"flags"`
}

func marshalMask(v uint32, table []maskName) ([]byte, error) {
	return json.Marshal(maskJSON{Value: v, Flags: maskFlags(v, table)})
}

// unmarshalMask reads {"value":N,"flags":[...]}; value wins, and flags, if
// given, must agree with it so a hand-edited document cannot say two things.
func unmarshalMask(data []byte, table []maskName, what string) (uint32, error) {
	var m struct {
		Value *uint32  `json:"value"`
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return 0, fmt.Errorf("%s: want {\"value\":N,\"flags\":[...]}: %w", what, err)
	}
	if m.Value == nil {
		return 0, fmt.Errorf("%s: missing \"value\"", what)
	}
	if m.Flags != nil {
		want := maskFlags(*m.Value, table)
		if fmt.Sprint(want) != fmt.Sprint(m.Flags) {
			return 0, fmt.Errorf("%s: flags %v do not match value %#x (%v)", what, m.Flags, *m.Value, want)
		}
	}
	return *m.Value, nil
}

// Flags lists the NDIS constant names set in e.
func (e Encapsulation) Flags() []string { return maskFlags(uint32(e), encapsulationNames) }

// Flags lists the NDIS constant names set in u.
func (u UdpEspV1) Flags() []string { return maskFlags(uint32(u), udpEspV1Names) }

// Flags lists the NDIS constant names set in u.
func (u UdpEspV2) Flags() []string { return maskFlags(uint32(u), udpEspV2Names) }

// Flags lists the NDIS constant names set in a.
func (a AuthenticationV2) Flags() []string { return maskFlags(uint32(a), authenticationV2Names) }

// Flags lists the NDIS constant names set in e.
func (e EncryptionV2) Flags() []string { return maskFlags(uint32(e), encryptionV2Names) }

// MarshalJSON renders e as {"value":N,"flags":[names]}.
func (e Encapsulation) MarshalJSON() ([]byte, error) {
	return marshalMask(uint32(e), encapsulationNames)
}

// MarshalJSON renders u as {"value":N,"flags":[names]}.
func (u UdpEspV1) MarshalJSON() ([]byte, error) { return marshalMask(uint32(u), udpEspV1Names) }

// MarshalJSON renders u as {"value":N,"flags":[names]}.
func (u UdpEspV2) MarshalJSON() ([]byte, error) { return marshalMask(uint32(u), udpEspV2Names) }

// MarshalJSON renders a as {"value":N,"flags":[names]}.
func (a AuthenticationV2) MarshalJSON() ([]byte, error) {
	return marshalMask(uint32(a), authenticationV2Names)
}

// MarshalJSON renders e as {"value":N,"flags":[names]}.
func (e EncryptionV2) MarshalJSON() ([]byte, error) {
	return marshalMask(uint32(e), encryptionV2Names)
}

// UnmarshalJSON reads the shape MarshalJSON writes.
func (e *Encapsulation) UnmarshalJSON(b []byte) error {
	v, err := unmarshalMask(b, encapsulationNames, "Encapsulation")
	*e = Encapsulation(v)
	return err
}

// UnmarshalJSON reads the shape MarshalJSON writes.
func (u *UdpEspV1) UnmarshalJSON(b []byte) error {
	v, err := unmarshalMask(b, udpEspV1Names, "Flags")
	*u = UdpEspV1(v)
	return err
}

// UnmarshalJSON reads the shape MarshalJSON writes.
func (u *UdpEspV2) UnmarshalJSON(b []byte) error {
	v, err := unmarshalMask(b, udpEspV2Names, "UdpEsp")
	*u = UdpEspV2(v)
	return err
}

// UnmarshalJSON reads the shape MarshalJSON writes.
func (a *AuthenticationV2) UnmarshalJSON(b []byte) error {
	v, err := unmarshalMask(b, authenticationV2Names, "AuthenticationAlgorithms")
	*a = AuthenticationV2(v)
	return err
}

// UnmarshalJSON reads the shape MarshalJSON writes.
func (e *EncryptionV2) UnmarshalJSON(b []byte) error {
	v, err := unmarshalMask(b, encryptionV2Names, "EncryptionAlgorithms")
	*e = EncryptionV2(v)
	return err
}
