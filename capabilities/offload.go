package capabilities

import (
	"reflect"
	"slices"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Offload is one view (hardware capabilities or current configuration) in
// xdpsec's own terms. It is flat on purpose: the datapath has one switch
// per class (AH, ESP, UDP-ESP, IPv4, IPv6), so a view cannot say "AH on
// IPv4 only". V1 and V2 derive the NDIS structures from it; the zero value
// offloads nothing.
type Offload struct {
	// Encapsulation is the set of MAC encapsulations the XDP program parses.
	Encapsulation Encapsulation
	// IPv4 and IPv6 say which outer families are offloaded.
	IPv4, IPv6 bool
	// IPv4Options: IPv4 headers with options (IHL > 5) are handled.
	IPv4Options bool
	// IPv6NonIPsecExtensionHeaders: IPv6 packets with non-IPsec extension
	// headers before AH/ESP are handled.
	IPv6NonIPsecExtensionHeaders bool
	// AH and ESP say which protocols are offloaded.
	AH, ESP bool
	// AhEspCombined: [IP][AH][ESP] bundles are handled.
	AhEspCombined bool
	// Transport, Tunnel: SA modes. TransportTunnelCombined: a transport SA
	// inside a tunnel SA on the same packet.
	Transport, Tunnel, TransportTunnelCombined bool
	// Send and Receive: outbound (encrypt) and inbound (decrypt) offload.
	Send, Receive bool
	// LSO: large sends are segmented after ESP (tx-esp-segmentation).
	LSO bool
	// TxChecksum: inner L4 checksums of sent packets are computed
	// (esp-tx-csum-hw-offload; NDIS has only the coexistence flags).
	TxChecksum bool
	// ESN: 64-bit extended sequence numbers (RFC 4304).
	ESN bool
	// UdpEsp is the set of UDP-ESP (RFC 3948) shapes handled.
	UdpEsp UdpEspV2
	// Algorithms are XFRM names from ipsec.Algorithms, in table order.
	Algorithms []string
	// SaOffloadCapacity is the number of SAs that fit.
	SaOffloadCapacity uint32
}

// Active reports whether the view offloads anything at all.
func (o Offload) Active() bool {
	return (o.IPv4 || o.IPv6) && (o.AH || o.ESP) && (o.Send || o.Receive)
}

// HasAlgorithm reports whether the XFRM-named algorithm is in the view.
func (o Offload) HasAlgorithm(name string) bool { return slices.Contains(o.Algorithms, name) }

// Equal reports whether two views are the same.
func (o Offload) Equal(p Offload) bool {
	if !slices.Equal(o.Algorithms, p.Algorithms) {
		return false
	}
	o.Algorithms, p.Algorithms = nil, nil
	return reflect.DeepEqual(o, p)
}

// Clone returns a copy that shares no slice with o.
func (o Offload) Clone() Offload {
	o.Algorithms = slices.Clone(o.Algorithms)
	return o
}

// keyBits returns the key lengths of a in bits without the salt, which is
// how NDIS names key sizes (AES_CBC_128, AES_GCM_256 ...).
func keyBits(a *ipsec.Algorithm) []int {
	var out []int
	for _, k := range a.KeySizes {
		out = append(out, (k-a.SaltSize)*8)
	}
	return out
}

// ndisBits returns the V2 bits that name the XFRM algorithm a: integrity
// bits for AH/ESP authentication, encryption bits for ESP ciphers. Key
// sizes come from the ipsec table, never retyped here. Algorithms NDIS has
// no bit for (ChaCha20-Poly1305, HMAC-SHA-384/512, AES-CTR) give zero.
func ndisBits(a *ipsec.Algorithm) (AuthenticationV2, EncryptionV2) {
	var auth AuthenticationV2
	var enc EncryptionV2
	aes := func(bits int, b128, b192, b256 uint32) uint32 {
		switch bits {
		case 128:
			return b128
		case 192:
			return b192
		case 256:
			return b256
		}
		return 0
	}
	for _, kb := range keyBits(a) {
		switch a.Name {
		case "hmac(md5)":
			auth |= IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5
		case "hmac(sha1)":
			auth |= IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1
		case "hmac(sha256)":
			auth |= IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256
		case "rfc4543(gcm(aes))": // AES-GMAC: the docs' meaning of AUTHENTICATION_AES_GCM_*
			auth |= AuthenticationV2(aes(kb, uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128),
				uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192), uint32(IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256)))
		case "rfc4106(gcm(aes))": // combined mode: only EncryptionAlgorithm is used (reference §3.9)
			enc |= EncryptionV2(aes(kb, uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128),
				uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192), uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256)))
		case "cbc(aes)":
			enc |= EncryptionV2(aes(kb, uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128),
				uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192), uint32(IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256)))
		case "cbc(des3_ede)":
			enc |= IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC
		case "cbc(des)":
			enc |= IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC
		case "ecb(cipher_null)":
			enc |= IPSEC_OFFLOAD_V2_ENCRYPTION_NONE
		}
	}
	return auth, enc
}

// NDISNames returns the NDIS V2 constant names that stand for the
// XFRM-named algorithm, or none when NDIS cannot name it (the algorithm is
// then reported only in the Linux extension). Unknown names give none.
func NDISNames(name string) []string {
	a := algorithm(name)
	if a == nil {
		return nil
	}
	auth, enc := ndisBits(a)
	var out []string
	if auth != 0 {
		out = append(out, auth.Flags()...)
	}
	if enc != 0 {
		out = append(out, enc.Flags()...)
	}
	return out
}

// algorithm looks name up in the ipsec table.
func algorithm(name string) *ipsec.Algorithm {
	for i := range ipsec.Algorithms {
		if ipsec.Algorithms[i].Name == name {
			return &ipsec.Algorithms[i]
		}
	}
	return nil
}

// algorithmBits returns the V1-relevant facts and V2 bits of the view's
// algorithms, keeping integrity bits only when AH or ESP is on and cipher
// bits only when ESP is on.
func (o Offload) algorithmBits() (AuthenticationV2, EncryptionV2) {
	var auth AuthenticationV2
	var enc EncryptionV2
	for _, n := range o.Algorithms {
		a := algorithm(n)
		if a == nil {
			continue
		}
		au, en := ndisBits(a)
		auth |= au
		enc |= en
	}
	if !o.ESP {
		enc = 0
		// Only AH integrity remains: GMAC is ESP-only in xdpsec.
		auth &^= IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 | IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192 | IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256
	}
	if !o.AH && !o.ESP {
		auth = 0
	}
	return auth, enc
}

// V1 returns the view as NDIS_IPSEC_OFFLOAD_V1. V1 is IPv4 only: without
// IPv4 (or with nothing active) every member is zero. IPv4AH.Md5 and Sha_1
// are set when HMAC-MD5/SHA-1 are usable by AH or ESP, as the member
// meaning in reference §1.2 asks.
func (o Offload) V1() IPsecOffloadV1 {
	if !o.IPv4 || !o.Active() {
		return IPsecOffloadV1{}
	}
	auth, enc := o.algorithmBits()
	var v IPsecOffloadV1
	v.Supported.Encapsulation = o.Encapsulation
	if o.AH && o.ESP && o.AhEspCombined {
		v.Supported.AhEspCombined = 1
	}
	if o.Transport && o.Tunnel && o.TransportTunnelCombined {
		v.Supported.TransportTunnelCombined = 1
	}
	if o.IPv4Options {
		v.Supported.IPv4Options = 1
	}
	if o.ESP {
		v.Supported.Flags = o.UdpEsp.V1()
	}
	v.IPv4AH.Md5 = supported(auth&IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5 != 0)
	v.IPv4AH.Sha_1 = supported(auth&IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1 != 0)
	if o.AH {
		v.IPv4AH.Transport = supported(o.Transport)
		v.IPv4AH.Tunnel = supported(o.Tunnel)
		v.IPv4AH.Send = supported(o.Send)
		v.IPv4AH.Receive = supported(o.Receive)
	}
	if o.ESP {
		v.IPv4ESP.Des = supported(enc&IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC != 0)
		v.IPv4ESP.TripleDes = supported(enc&IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC != 0)
		v.IPv4ESP.NullEsp = supported(enc&IPSEC_OFFLOAD_V2_ENCRYPTION_NONE != 0)
		v.IPv4ESP.Transport = supported(o.Transport)
		v.IPv4ESP.Tunnel = supported(o.Tunnel)
		v.IPv4ESP.Send = supported(o.Send)
		v.IPv4ESP.Receive = supported(o.Receive)
	}
	return v
}

// V2 returns the view as NDIS_IPSEC_OFFLOAD_V2. V2 cannot say "IPv6 but not
// IPv4"; such a view still reports its IPv6 offload here and the Linux
// extension (families) tells the truth. With nothing active every member is
// zero. V2 has no send/receive split: it is reported when either works.
func (o Offload) V2() IPsecOffloadV2 {
	if !o.Active() {
		return IPsecOffloadV2{}
	}
	auth, enc := o.algorithmBits()
	v := IPsecOffloadV2{
		Encapsulation:                o.Encapsulation,
		IPv6Supported:                o.IPv6,
		IPv4Options:                  o.IPv4 && o.IPv4Options,
		IPv6NonIPsecExtensionHeaders: o.IPv6 && o.IPv6NonIPsecExtensionHeaders,
		Ah:                           o.AH,
		Esp:                          o.ESP,
		AhEspCombined:                o.AH && o.ESP && o.AhEspCombined,
		Transport:                    o.Transport,
		Tunnel:                       o.Tunnel,
		TransportTunnelCombined:      o.Transport && o.Tunnel && o.TransportTunnelCombined,
		LsoSupported:                 o.LSO,
		ExtendedSequenceNumbers:      o.ESN,
		AuthenticationAlgorithms:     auth,
		EncryptionAlgorithms:         enc,
		SaOffloadCapacity:            o.SaOffloadCapacity,
	}
	if o.ESP {
		v.UdpEsp = o.UdpEsp
	}
	return v
}

// BeyondNDIS returns the view's algorithms that NDIS has no bit for, by
// XFRM name (ChaCha20-Poly1305, HMAC-SHA-384/512, AES-CTR ...). GMAC has
// bits but is also listed by name in the Linux extension.
func (o Offload) BeyondNDIS() []string {
	var out []string
	for _, n := range o.Algorithms {
		if len(NDISNames(n)) == 0 {
			out = append(out, n)
		}
	}
	return out
}

// EthtoolFeatures maps the view onto the Linux netdev features an
// ESP-offloading NIC shows in `ethtool -k` (reference §4.4).
func (o Offload) EthtoolFeatures() map[string]bool {
	esp := o.Active() && o.ESP
	return map[string]bool{
		"esp-hw-offload":         esp,
		"esp-tx-csum-hw-offload": esp && o.Send && o.TxChecksum,
		"tx-esp-segmentation":    esp && o.Send && o.LSO,
	}
}

// XFRMOffloadType is the Linux XFRM offload type the view corresponds to
// (include/net/xfrm.h XFRM_DEV_OFFLOAD_*).
type XFRMOffloadType uint8

// XFRM_DEV_OFFLOAD_* values (reference §4.3).
const (
	XFRM_DEV_OFFLOAD_UNSPECIFIED XFRMOffloadType = 0
	XFRM_DEV_OFFLOAD_CRYPTO      XFRMOffloadType = 1
	XFRM_DEV_OFFLOAD_PACKET      XFRMOffloadType = 2
)

func (t XFRMOffloadType) String() string {
	switch t {
	case XFRM_DEV_OFFLOAD_CRYPTO:
		return "crypto"
	case XFRM_DEV_OFFLOAD_PACKET:
		return "packet"
	}
	return "unspecified"
}

// XFRMOffload returns the XFRM offload type of the view: packet offload
// whenever anything is offloaded, because xdpsec builds ESP/AH headers and
// trailers, owns sequence numbers, the replay window and lifetimes — what
// XFRM_DEV_OFFLOAD_PACKET asks of a NIC — not just the cipher.
func (o Offload) XFRMOffload() XFRMOffloadType {
	if o.Active() {
		return XFRM_DEV_OFFLOAD_PACKET
	}
	return XFRM_DEV_OFFLOAD_UNSPECIFIED
}
