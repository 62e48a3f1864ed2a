package ipsec

import (
	"crypto/subtle"
	"encoding/binary"
)

// Go's crypto/cipher GCM refuses tags shorter than 12 bytes, but RFC 4106
// allows an 8-byte ICV (MAY). A GCM tag of t bytes is the leftmost t bytes
// of the full tag (NIST SP 800-38D §7.1), so sealing uses the 16-byte-tag
// AEAD and keeps 8 bytes (Overhead's tailroom covers the other 8 it writes).
// Opening cannot hand crypto/cipher a short tag, so it recomputes the full
// tag here: GHASH (SP 800-38D Algorithm 1, bitwise, slow but only for this
// rarely used ICV length) and CTR with the AES block.

// gcm8 is the state of an rfc4106 SA with an 8-byte ICV.
type gcm8 struct {
	hHi, hLo uint64 // hash subkey H = E_K(0^128)
}

// gfMul sets (x) to x·H in GF(2^128) with GCM's bit order.
func (g *gcm8) gfMul(xHi, xLo uint64) (uint64, uint64) {
	var zHi, zLo uint64
	vHi, vLo := g.hHi, g.hLo
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = xHi >> (63 - i) & 1
		} else {
			bit = xLo >> (127 - i) & 1
		}
		m := -bit
		zHi ^= vHi & m
		zLo ^= vLo & m
		lsb := vLo & 1
		vLo = vLo>>1 | vHi<<63
		vHi = vHi>>1 ^ (0xe1<<56)&-lsb
	}
	return zHi, zLo
}

func (g *gcm8) ghashBlocks(yHi, yLo uint64, data []byte) (uint64, uint64) {
	for len(data) > 0 {
		var blk [16]byte
		n := copy(blk[:], data)
		data = data[n:]
		yHi ^= binary.BigEndian.Uint64(blk[:8])
		yLo ^= binary.BigEndian.Uint64(blk[8:])
		yHi, yLo = g.gfMul(yHi, yLo)
	}
	return yHi, yLo
}

// open8 verifies the 8-byte ICV of b[ct:end] (ciphertext then ICV) with the
// nonce in s.nonce and aad, and decrypts in place when it verifies.
func (sa *SA) open8(s *scratch, b []byte, ct, end int, aad []byte) bool {
	g := sa.gcm8
	icv := end - 8
	c := b[ct:icv]
	yHi, yLo := g.ghashBlocks(0, 0, aad)
	yHi, yLo = g.ghashBlocks(yHi, yLo, c)
	yHi ^= uint64(len(aad)) * 8
	yLo ^= uint64(len(c)) * 8
	yHi, _ = g.gfMul(yHi, yLo) // an 8-byte ICV is the tag's first half
	// Tag = GHASH ⊕ E_K(J0), J0 = nonce‖1.
	copy(s.ivIn[:12], s.nonce[:])
	binary.BigEndian.PutUint32(s.ivIn[12:], 1)
	sa.block.Encrypt(s.ks[:], s.ivIn[:])
	binary.BigEndian.PutUint64(s.sum[:], yHi^binary.BigEndian.Uint64(s.ks[:8]))
	if subtle.ConstantTimeCompare(s.sum[:8], b[icv:end]) != 1 {
		return false
	}
	for ctr := uint32(2); len(c) > 0; ctr++ {
		binary.BigEndian.PutUint32(s.ivIn[12:], ctr)
		sa.block.Encrypt(s.ks[:], s.ivIn[:])
		n := subtle.XORBytes(c, c, s.ks[:])
		c = c[n:]
	}
	return true
}
