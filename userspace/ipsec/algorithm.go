package ipsec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Kind says which slot of an SA an algorithm fills, as `ip xfrm state` has
// them: aead, enc or auth-trunc.
type Kind uint8

const (
	// KindAEAD is a combined-mode algorithm (`aead NAME KEY ICVBITS`).
	KindAEAD Kind = iota + 1
	// KindCipher is a confidentiality-only algorithm (`enc NAME KEY`).
	KindCipher
	// KindIntegrity is an integrity algorithm (`auth-trunc NAME KEY BITS`).
	KindIntegrity
)

func (k Kind) String() string {
	switch k {
	case KindAEAD:
		return "aead"
	case KindCipher:
		return "enc"
	case KindIntegrity:
		return "auth-trunc"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Algorithm describes one transform by its Linux XFRM name. Algorithms is
// the single source of truth for names, key, salt, IV and ICV sizes; every
// other part of xdpsec (the SA parser, the capabilities model, the CLI)
// looks algorithms up here.
type Algorithm struct {
	// Name is the Linux XFRM name, e.g. "rfc4106(gcm(aes))".
	Name string
	Kind Kind
	// KeySizes lists the allowed key lengths in bytes as XFRM takes the
	// key: for rfc4106/rfc4543/rfc3686/rfc7539esp the 4-byte salt (nonce)
	// is the tail of the key.
	KeySizes []int
	// SaltSize is the number of key bytes that are the salt, not the key.
	SaltSize int
	// IVSize is the explicit per-packet IV carried in ESP, in bytes.
	IVSize int
	// BlockSize is the alignment the ESP payload+trailer must reach (the
	// cipher block size, or 4 for stream and AEAD modes).
	BlockSize int
	// ICVSizes lists the allowed ICV lengths in bytes (AEAD and integrity).
	ICVSizes []int
	// Insecure marks algorithms that exist only because the NDIS V1/V2
	// model has them (DES, 3DES, MD5, NULL encryption): output shows it.
	Insecure bool
	// RFC is the document that defines the algorithm's use in IPsec.
	RFC string
}

// Algorithms is the table of every transform xdpsec implements, in the
// order outputs list them.
var Algorithms = []Algorithm{
	{Name: "rfc4106(gcm(aes))", Kind: KindAEAD, KeySizes: []int{20, 28, 36}, SaltSize: 4, IVSize: 8, BlockSize: 4, ICVSizes: []int{8, 12, 16}, RFC: "RFC 4106"},
	{Name: "rfc4543(gcm(aes))", Kind: KindAEAD, KeySizes: []int{20, 28, 36}, SaltSize: 4, IVSize: 8, BlockSize: 4, ICVSizes: []int{16}, RFC: "RFC 4543"},
	{Name: "rfc7539esp(chacha20,poly1305)", Kind: KindAEAD, KeySizes: []int{36}, SaltSize: 4, IVSize: 8, BlockSize: 4, ICVSizes: []int{16}, RFC: "RFC 7634"},
	{Name: "cbc(aes)", Kind: KindCipher, KeySizes: []int{16, 24, 32}, IVSize: 16, BlockSize: 16, RFC: "RFC 3602"},
	{Name: "rfc3686(ctr(aes))", Kind: KindCipher, KeySizes: []int{20, 28, 36}, SaltSize: 4, IVSize: 8, BlockSize: 4, RFC: "RFC 3686"},
	{Name: "cbc(des3_ede)", Kind: KindCipher, KeySizes: []int{24}, IVSize: 8, BlockSize: 8, Insecure: true, RFC: "RFC 2451"},
	{Name: "cbc(des)", Kind: KindCipher, KeySizes: []int{8}, IVSize: 8, BlockSize: 8, Insecure: true, RFC: "RFC 2405"},
	{Name: "ecb(cipher_null)", Kind: KindCipher, KeySizes: []int{0}, IVSize: 0, BlockSize: 4, Insecure: true, RFC: "RFC 2410"},
	{Name: "hmac(md5)", Kind: KindIntegrity, KeySizes: []int{16}, ICVSizes: []int{12}, Insecure: true, RFC: "RFC 2403"},
	{Name: "hmac(sha1)", Kind: KindIntegrity, KeySizes: []int{20}, ICVSizes: []int{12}, RFC: "RFC 2404"},
	{Name: "hmac(sha256)", Kind: KindIntegrity, KeySizes: []int{32}, ICVSizes: []int{16}, RFC: "RFC 4868"},
	{Name: "hmac(sha384)", Kind: KindIntegrity, KeySizes: []int{48}, ICVSizes: []int{24}, RFC: "RFC 4868"},
	{Name: "hmac(sha512)", Kind: KindIntegrity, KeySizes: []int{64}, ICVSizes: []int{32}, RFC: "RFC 4868"},
}

// LookupAlgorithm returns the algorithm called name (an XFRM name). The
// error lists the names of that kind that exist, so a typo gets a useful
// answer.
func LookupAlgorithm(kind Kind, name string) (*Algorithm, error) {
	for i := range Algorithms {
		a := &Algorithms[i]
		if a.Name == name {
			if a.Kind != kind {
				return nil, fmt.Errorf("algorithm %q is an %s algorithm, not %s", name, a.Kind, kind)
			}
			return a, nil
		}
	}
	return nil, fmt.Errorf("unknown %s algorithm %q (known: %s)", kind, name, strings.Join(AlgorithmNames(kind), ", "))
}

// AlgorithmNames returns the names of every algorithm of kind, in table order.
func AlgorithmNames(kind Kind) []string {
	var names []string
	for _, a := range Algorithms {
		if a.Kind == kind {
			names = append(names, a.Name)
		}
	}
	return names
}

// CheckKey reports whether key has a length this algorithm takes.
func (a *Algorithm) CheckKey(key []byte) error {
	if slices.Contains(a.KeySizes, len(key)) {
		return nil
	}
	return fmt.Errorf("%s takes a key of %s bits, got %d bits", a.Name, joinBits(a.KeySizes), len(key)*8)
}

// CheckICV reports whether an ICV of icvBits bits is allowed.
func (a *Algorithm) CheckICV(icvBits int) error {
	if icvBits%8 == 0 && slices.Contains(a.ICVSizes, icvBits/8) {
		return nil
	}
	return fmt.Errorf("%s allows an ICV of %s bits, got %d", a.Name, joinBits(a.ICVSizes), icvBits)
}

func joinBits(sizes []int) string {
	parts := make([]string, len(sizes))
	for i, s := range sizes {
		parts[i] = strconv.Itoa(s * 8)
	}
	return strings.Join(parts, " or ")
}
