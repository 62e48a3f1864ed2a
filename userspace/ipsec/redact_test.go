package ipsec

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// leakForms returns ways the 4-byte run k could show up in output: hex
// (both cases), the decimal list fmt prints for bytes, raw bytes, base64.
func leakForms(k []byte) []string {
	var dec []string
	for _, b := range k {
		dec = append(dec, strconv.Itoa(int(b)))
	}
	return []string{hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k)), strings.Join(dec, " "),
		strings.Join(dec, ", "), string(k), base64.StdEncoding.EncodeToString(k)[:4]}
}

// secretKey returns n key bytes none of which is printable ASCII or small,
// so that any rendering of them is unmistakable.
func secretKey(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = 0x90 + seed + byte(i*3)%0x60
	}
	return k
}

// TestNoKeyBytesInOutput prints every type that holds key material, or
// key-derived state, with every fmt verb and as JSON, and looks for any
// 4-byte window of any key in any rendering.
func TestNoKeyBytesInOutput(t *testing.T) {
	gcm := gcmParams()
	gcm.AEAD.Key = secretKey(20, 1)
	cbc := SAParams{Proto: ProtoESP, Mode: ModeTransport, SPI: 0x3004, Src: addr4a, Dst: addr4b,
		Enc:  AlgorithmKey{Name: "cbc(aes)", Key: secretKey(16, 2)},
		Auth: AlgorithmKey{Name: "hmac(sha256)", Key: secretKey(32, 3), ICVBits: 128}}
	gcm8 := gcmParams()
	gcm8.AEAD = AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: secretKey(20, 4), ICVBits: 64}
	var keys [][]byte
	var things []any
	for _, p := range []SAParams{gcm, cbc, gcm8} {
		for _, k := range [][]byte{p.AEAD.Key, p.Enc.Key, p.Auth.Key} {
			if k != nil {
				keys = append(keys, append([]byte(nil), k...))
			}
		}
		sa, err := NewSA(p)
		if err != nil {
			t.Fatal(err)
		}
		seal(t, sa, udpPacket(false, 40)) // fill pools and scratch
		things = append(things, sa, p, &p, p.AEAD, p.Enc, p.Auth, &p.Auth)
	}
	sc := NewScratch()
	sa0, _ := NewSA(gcm)
	f := frameWith(udpPacket(false, 40))
	sa0.EncryptWith(sc, f, testHead, 68)
	things = append(things, sc, *sc)
	// The AES-GCM hash subkey H and the CTR key stream are secrets too:
	// look for the salt (last 4 key bytes) as well, which the SA keeps.
	verbs := []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q", "%o", "%b"}
	for i, th := range things {
		var outs []string
		for _, v := range verbs {
			outs = append(outs, v+": "+fmt.Sprintf(v, th))
		}
		if j, err := json.Marshal(th); err == nil {
			outs = append(outs, "json: "+string(j))
		}
		for _, out := range outs {
			for _, k := range keys {
				for w := 0; w+4 <= len(k); w++ {
					for _, form := range leakForms(k[w : w+4]) {
						if strings.Contains(out, form) {
							t.Fatalf("thing %d (%T) prints key bytes %x as %q in %.200q", i, th, k[w:w+4], form, out)
						}
					}
				}
			}
		}
	}
	// What the redacted forms say.
	if got := fmt.Sprint(gcm.AEAD); got != "{rfc4106(gcm(aes)) <key 160 bits> 128}" {
		t.Errorf("AlgorithmKey prints %q", got)
	}
	if got := fmt.Sprintf("%+v", sa0); got != "esp spi 0x00003003 tunnel 192.0.2.1->198.51.100.2 rfc4106(gcm(aes))/128" {
		t.Errorf("SA prints %q", got)
	}
}
