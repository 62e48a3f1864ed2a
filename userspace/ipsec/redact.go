package ipsec

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// Key material never reaches output by accident: every type that holds key
// bytes (or state derived from them) prints itself through fmt.Formatter,
// whatever the verb (%v, %+v, %#v, %s, %d, %x, ...), and AlgorithmKey
// redacts itself in JSON. Without this, fmt prints the fields of a struct,
// unexported ones included: %v of an *SA printed its HMAC key and salt.

// Format prints the slot as {NAME <key N bits> ICVBITS}, never the key
// bytes, for every verb.
func (k AlgorithmKey) Format(f fmt.State, _ rune) {
	io.WriteString(f, k.redacted())
}

func (k AlgorithmKey) redacted() string {
	if k.Name == "" && len(k.Key) == 0 {
		return "{}"
	}
	return "{" + k.Name + " <key " + strconv.Itoa(len(k.Key)*8) + " bits> " + strconv.Itoa(k.ICVBits) + "}"
}

// MarshalJSON renders the slot with its key redacted:
// {"Name":NAME,"Key":"<key N bits>","ICVBits":N}. Keys travel only as
// `ip xfrm` words (sad.SASpec.SecretWords), never as JSON.
func (k AlgorithmKey) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name    string
		Key     string
		ICVBits int
	}{k.Name, "<key " + strconv.Itoa(len(k.Key)*8) + " bits>", k.ICVBits})
}

// String describes the SA without secrets: protocol, SPI, mode, addresses
// and algorithms, e.g. "esp spi 0x00001000 tunnel 192.0.2.1->192.0.2.2
// rfc4106(gcm(aes))/128".
func (sa *SA) String() string {
	p := &sa.p
	s := p.Proto.String() + " spi 0x" + fmt.Sprintf("%08x", p.SPI) + " " + p.Mode.String() + " " +
		p.Src.String() + "->" + p.Dst.String()
	for _, k := range []AlgorithmKey{p.AEAD, p.Enc, p.Auth} {
		if k.Name != "" {
			s += " " + k.Name
			if k.ICVBits != 0 {
				s += "/" + strconv.Itoa(k.ICVBits)
			}
		}
	}
	if sa.udp {
		s += " espinudp " + strconv.Itoa(int(p.EncapSrcPort)) + ":" + strconv.Itoa(int(p.EncapDstPort))
	}
	if p.ESN {
		s += " esn"
	}
	return s
}

// Format prints String for every verb: an SA holds keys and key-derived
// state that fmt would otherwise print field by field.
func (sa *SA) Format(f fmt.State, _ rune) { io.WriteString(f, sa.String()) }

// Format prints "ipsec.Scratch" for every verb: a Scratch holds the last
// packet's key stream block, ICV and saved headers.
func (s Scratch) Format(f fmt.State, _ rune) { io.WriteString(f, "ipsec.Scratch") }
