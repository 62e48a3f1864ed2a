package sad

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// ErrKeyReuse: an SA would use a counter-mode key that another SA already
// uses (see SAD.KeyReuse).
var ErrKeyReuse = errors.New("counter-mode key already used by another SA")

// KeyReuse reports the SAs in the database, other than the one with
// spec's own key, that use spec's counter-mode key: the same aead key
// (rfc4106, rfc4543, rfc7539esp) or rfc3686(ctr(aes)) key, salt included.
// Those transforms make the IV from the sequence number, and every SA
// starts at 1: without the random per-SA IV offset ipsec adds, two SAs on
// one key would send the same nonces (with GCM that reveals the XOR of
// plaintexts and the authentication key, i.e. forgeries; with CTR the XOR
// of plaintexts). The offset makes a collision improbable, not impossible,
// and one key on two SAs remains a mistake: a manually keyed tunnel that
// uses one key for both directions, or for its IPv4 and IPv6 SAs, makes it.
// The error, nil when there is no reuse, wraps ErrKeyReuse and names the
// SAs, never the key; callers that add SAs from operators should refuse on
// it.
func (d *SAD) KeyReuse(spec *SASpec) error {
	k := counterKey(spec)
	if k == nil {
		return nil
	}
	var with []string
	for _, a := range d.List() {
		if a.key == spec.Key() {
			continue
		}
		if o := counterKey(a.spec); o != nil && subtle.ConstantTimeCompare(k, o) == 1 {
			with = append(with, a.key.String())
		}
	}
	if len(with) == 0 {
		return nil
	}
	return fmt.Errorf("SA %s: %w (%s): give every SA its own key",
		spec.Key(), ErrKeyReuse, strings.Join(with, ", "))
}

// counterKey returns the key (with salt) of spec's counter-mode transform,
// or nil when its IVs do not come from the sequence number alone.
func counterKey(s *SASpec) []byte {
	switch {
	case s.AEAD.Name != "":
		return s.AEAD.Key
	case s.Enc.Name == "rfc3686(ctr(aes))":
		return s.Enc.Key
	}
	return nil
}
