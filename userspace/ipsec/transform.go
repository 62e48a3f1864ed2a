package ipsec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/xdpsec/xdpsec/userspace/replay"
)

// suite is how an SA's confidentiality/combined transform works.
type suite uint8

const (
	suiteNone suite = iota // AH, or ESP with ecb(cipher_null)
	suiteAEAD              // rfc4106 GCM, rfc7539esp ChaCha20-Poly1305
	suiteGMAC              // rfc4543: AEAD with nothing encrypted
	suiteCBC               // cbc(aes), cbc(des3_ede), cbc(des)
	suiteCTR               // rfc3686(ctr(aes))
)

// SA is one security association with its keys, sequence counters, replay
// window and lifetime counters. It is safe for concurrent use (see the
// package documentation).
type SA struct {
	p SAParams // keys removed

	suite   suite
	aead    cipher.AEAD
	block   cipher.Block // CBC / CTR cipher
	ivBlock cipher.Block // CBC IV generator: IV = E_ivkey(seq)
	gcm8    *gcm8        // rfc4106 with an 8-byte ICV (see gcm8.go)
	salt    [4]byte      // AEAD salt or CTR nonce
	// ivOffset is added to the sequence number to make a counter-mode IV:
	// unique within the SA (and its in-place replacements, which keep it),
	// while two SA instances that share a key by mistake (a restart with
	// manual keys, one key on two SAs) use disjoint IV ranges unless their
	// random offsets fall within the packets sent of each other: about
	// (n1+n2)/2^64. Linux's seqiv XORs a random salt in for the same
	// reason; an offset keeps the ranges contiguous, which XOR does not.
	ivOffset uint64
	ivLen    int
	blk      int // ESP payload alignment
	icvLen   int // bytes of ICV on the wire (before AH padding)
	ahLen    int // AH header length with padded ICV (AH only)
	newMAC   func() hash.Hash
	macKey   []byte
	udp      bool
	outerV6  bool

	seqMax uint64
	// outSeq is the last sequence number used. It is shared with the SA
	// this one replaced in place, if any (NewSAReplacing), so that the two
	// never hand out one number twice.
	outSeq *atomic.Uint64
	win    *replay.Window

	// use counts what the lifetimes limit; it is shared with the SA this
	// one replaced in place, if any (NewSAReplacing).
	use     *usage
	limited bool // packet or byte limits: count exactly (see count)
	soft    atomic.Bool
	state   atomic.Uint32          // stateHard
	dead    *atomic.Uint32         // stateDead once invalidated; shared with replaced SAs
	hardBy  atomic.Pointer[string] // the limit that set stateHard

	keyed bool      // scratch holds keyed state (HMAC, CBC): use pool, not Scratch
	pool  sync.Pool // *scratch

	// outer is the tunnel-mode outer header with everything but TOS/traffic
	// class, lengths, IPv4 ID and checksum filled in; outerSum is the
	// IPv4 header's one's-complement sum with those fields zero.
	outer    [40]byte
	outerSum uint64
	tosMask  uint8 // inner TOS / traffic class bits copied to the outer header

	head, tail int // Overhead
}

// usage is what an SA (and the SAs that replaced it in place) protected or
// verified. packets and bytes count exactly, one atomic add each, for SAs
// with packet or byte limits; for the others acc counts both in one add
// and is flushed into them (see count).
type usage struct {
	packets, bytes atomic.Uint64
	acc            atomic.Uint64
	mu             sync.Mutex // serialises flushing acc, and Stats
}

// scratch is per-call state; a pool per SA hands one to each call so
// nothing escapes to the heap per packet and no two goroutines share one.
type scratch struct {
	nonce [12]byte
	aad   [12]byte
	ivIn  [16]byte
	ks    [16]byte
	sum   [64]byte
	mac   hash.Hash
	enc   cipher.BlockMode
	dec   cipher.BlockMode
	save  [maxSavedHeader]byte
}

// maxSavedHeader bounds the header bytes AH saves while it zeroes mutable
// fields (IP header, options/extension headers and AH).
const maxSavedHeader = 512

type ivSetter interface{ SetIV([]byte) }

// NewSA validates p against the algorithm table and returns the SA. Errors
// name the offending field and what is allowed, and never contain key bytes.
func NewSA(p SAParams) (*SA, error) { return newSA(p, false) }

// newSA is NewSA; encOnly admits encryption-only ESP, which only the
// self-test uses (RFC 3602's published vectors are encryption-only
// packets).
func newSA(p SAParams, encOnly bool) (*SA, error) {
	sa := &SA{p: p}
	if err := sa.init(encOnly); err != nil {
		return nil, fmt.Errorf("SA spi %#x: %w", p.SPI, err)
	}
	sa.p.AEAD.Key, sa.p.Enc.Key, sa.p.Auth.Key = nil, nil, nil
	return sa, nil
}

// NewSAReplacing is NewSA for an SA that replaces prev in place: the same
// SPI, rekeyed or with other parameters, while goroutines that looked prev
// up before the switch may still be using it. The two SAs share one
// outbound sequence counter, raised to p.OutSeq if that is higher, so no
// number is ever used twice, by prev or by the new SA: with unchanged keys a
// repeated number would repeat a counter-mode nonce (GCM, ChaCha20-Poly1305
// and CTR derive the IV from the sequence number; the new SA keeps prev's
// IV offset). When the replay windows have the same size and the same ESN
// setting they share one window as well (raised
// to p.InSeq), so a packet accepted through either SA is a replay for both;
// otherwise the new window starts at the higher of prev's top and p.InSeq
// and the caller copies what else it needs. Invalidating any SA of such a
// chain invalidates all of them. The lifetime counters are shared too:
// p.Lifetime's limits apply to what prev and the new SA counted together,
// so a limit holds across the switch (Stats continues). Errors are
// NewSA's.
func NewSAReplacing(p SAParams, prev *SA) (*SA, error) {
	if prev == nil {
		return nil, fmt.Errorf("SA spi %#x: replacing a nil SA", p.SPI)
	}
	if top := prev.win.Top(); p.InSeq < top && (p.ESN || top <= 1<<32-1) {
		p.InSeq = top
	}
	sa, err := NewSA(p)
	if err != nil {
		return nil, err
	}
	for {
		cur := prev.outSeq.Load()
		if cur >= p.OutSeq || prev.outSeq.CompareAndSwap(cur, p.OutSeq) {
			break
		}
	}
	sa.outSeq = prev.outSeq
	sa.ivOffset = prev.ivOffset
	sa.use = prev.use
	sa.dead = prev.dead
	if prev.win.Size() == sa.win.Size() && prev.p.ESN == sa.p.ESN {
		if p.InSeq > prev.win.Top() {
			prev.win.Accept(p.InSeq) // an error means another packet moved it further
		}
		sa.win = prev.win
	}
	return sa, nil
}

func (sa *SA) init(encOnly bool) error {
	p := &sa.p
	switch p.Proto {
	case ProtoESP, ProtoAH:
	default:
		return fmt.Errorf("proto must be esp or ah, got %d", uint8(p.Proto))
	}
	switch p.Mode {
	case ModeTransport, ModeTunnel:
	default:
		return fmt.Errorf("mode must be transport or tunnel, got %d", uint8(p.Mode))
	}
	if p.SPI < 256 {
		return fmt.Errorf("spi %#x is reserved (0 is local use, 1..255 IANA): use 0x100 or above", p.SPI)
	}
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return errors.New("src and dst addresses are required")
	}
	if p.Src.Is4() != p.Dst.Is4() || p.Src.Is4In6() || p.Dst.Is4In6() {
		return fmt.Errorf("src %s and dst %s must be of one family (no IPv4-mapped IPv6)", p.Src, p.Dst)
	}
	sa.outerV6 = p.Src.Is6()
	if p.ReplayWindow > replay.MaxSize {
		return fmt.Errorf("replay-window %d is too large (at most %d)", p.ReplayWindow, replay.MaxSize)
	}
	sa.seqMax = 1<<32 - 1
	if p.ESN {
		sa.seqMax = 1<<64 - 1
	}
	if p.OutSeq > sa.seqMax || p.InSeq > sa.seqMax {
		return fmt.Errorf("initial sequence numbers above 2^32-1 need flag esn")
	}
	sa.outSeq = new(atomic.Uint64)
	sa.use = new(usage)
	sa.dead = new(atomic.Uint32)
	sa.outSeq.Store(p.OutSeq)
	w, err := replay.New(p.ReplayWindow, p.ESN, p.InSeq)
	if err != nil {
		return err
	}
	sa.win = w
	if p.EncapSrcPort != 0 || p.EncapDstPort != 0 {
		if p.Proto != ProtoESP {
			return errors.New("UDP encapsulation (encap espinudp) applies to esp only")
		}
		if p.EncapSrcPort == 0 || p.EncapDstPort == 0 {
			return errors.New("encap espinudp needs both ports non-zero")
		}
		sa.udp = true
	}

	hasAEAD, hasEnc, hasAuth := p.AEAD.Name != "", p.Enc.Name != "", p.Auth.Name != ""
	switch {
	case p.Proto == ProtoAH && (hasAEAD || hasEnc):
		return errors.New("ah takes auth-trunc only (no aead, no enc)")
	case p.Proto == ProtoAH && !hasAuth:
		return errors.New("ah needs an auth-trunc algorithm")
	case hasAEAD && (hasEnc || hasAuth):
		return errors.New("aead excludes enc and auth-trunc")
	case p.Proto == ProtoESP && !hasAEAD && !hasEnc:
		return errors.New("esp needs aead, or enc (ecb(cipher_null) for integrity only) with auth-trunc")
	}
	sa.blk = 4
	if hasAEAD {
		if err := sa.initAEAD(); err != nil {
			return err
		}
	}
	if hasEnc {
		if err := sa.initEnc(); err != nil {
			return err
		}
	}
	if hasAuth {
		if err := sa.initAuth(); err != nil {
			return err
		}
	}
	if sa.blk&(sa.blk-1) != 0 {
		// Padding and length checks mask with blk-1 instead of dividing.
		return fmt.Errorf("ESP alignment %d is not a power of two", sa.blk)
	}
	if p.Proto == ProtoESP && sa.suite == suiteNone && !hasAuth {
		return errors.New("esp with ecb(cipher_null) needs auth-trunc (no protection at all otherwise)")
	}
	if p.Proto == ProtoESP && hasEnc && !hasAuth && !encOnly {
		// Encryption-only ESP: an active attacker flips plaintext bits
		// (CTR) or, with CBC in tunnel mode, recovers plaintext through the
		// receiver's reaction to altered inner headers (Paterson and Yau
		// 2006; Degabriele and Paterson 2007). RFC 8221 §5 discourages it.
		return fmt.Errorf("esp with enc %s needs auth-trunc: encryption without integrity lets an attacker alter and, with CBC, decrypt traffic; add auth-trunc or use an aead", p.Enc.Name)
	}
	if p.Proto == ProtoAH {
		align := 4
		if sa.outerV6 {
			align = 8
		}
		sa.ahLen = (12 + sa.icvLen + align - 1) / align * align
	}
	sa.keyed = sa.newMAC != nil || sa.suite == suiteCBC
	switch sa.suite {
	case suiteAEAD, suiteGMAC, suiteCTR:
		var m [8]byte
		if _, err := rand.Read(m[:]); err != nil {
			return fmt.Errorf("IV offset: %w", err)
		}
		sa.ivOffset = binary.BigEndian.Uint64(m[:])
	}
	sa.limited = p.Lifetime != Lifetime{}
	sa.tosMask = 0xff
	if p.NoECN {
		sa.tosMask &^= ecnMask
	}
	if p.NoEncapDSCP {
		sa.tosMask &= ecnMask
	}
	sa.initOuter()
	sa.head, sa.tail = sa.overhead()
	sa.pool.New = sa.newScratch
	// Build one scratch now so that key schedule errors surface here.
	sa.pool.Put(sa.newScratch())
	return nil
}

func (sa *SA) initAEAD() error {
	k := &sa.p.AEAD
	a, err := LookupAlgorithm(KindAEAD, k.Name)
	if err != nil {
		return err
	}
	if err := a.CheckKey(k.Key); err != nil {
		return err
	}
	if err := a.CheckICV(k.ICVBits); err != nil {
		return err
	}
	key, salt := k.Key[:len(k.Key)-a.SaltSize], k.Key[len(k.Key)-a.SaltSize:]
	copy(sa.salt[:], salt)
	sa.ivLen, sa.blk, sa.icvLen = a.IVSize, a.BlockSize, k.ICVBits/8
	switch a.Name {
	case "rfc4106(gcm(aes))", "rfc4543(gcm(aes))":
		b, err := aes.NewCipher(key)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		tag := sa.icvLen
		if tag == 8 {
			tag = 16
			sa.block = b
			var h [16]byte
			b.Encrypt(h[:], h[:])
			sa.gcm8 = &gcm8{hHi: binary.BigEndian.Uint64(h[:8]), hLo: binary.BigEndian.Uint64(h[8:])}
		}
		if sa.aead, err = cipher.NewGCMWithTagSize(b, tag); err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		sa.suite = suiteAEAD
		if a.Name == "rfc4543(gcm(aes))" {
			sa.suite = suiteGMAC
		}
	case "rfc7539esp(chacha20,poly1305)":
		if sa.aead, err = chacha20poly1305.New(key); err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		sa.suite = suiteAEAD
	default:
		return fmt.Errorf("aead %s is in the table but not implemented", a.Name)
	}
	return nil
}

func (sa *SA) initEnc() error {
	k := &sa.p.Enc
	a, err := LookupAlgorithm(KindCipher, k.Name)
	if err != nil {
		return err
	}
	if err := a.CheckKey(k.Key); err != nil {
		return err
	}
	sa.ivLen, sa.blk = a.IVSize, a.BlockSize
	key := k.Key[:len(k.Key)-a.SaltSize]
	copy(sa.salt[:], k.Key[len(k.Key)-a.SaltSize:])
	switch a.Name {
	case "cbc(aes)", "rfc3686(ctr(aes))":
		sa.block, err = aes.NewCipher(key)
	case "cbc(des3_ede)":
		sa.block, err = des.NewTripleDESCipher(key)
	case "cbc(des)":
		sa.block, err = des.NewCipher(key)
	case "ecb(cipher_null)":
		sa.suite = suiteNone
		return nil
	default:
		return fmt.Errorf("enc %s is in the table but not implemented", a.Name)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", a.Name, err)
	}
	if a.Name == "rfc3686(ctr(aes))" {
		sa.suite = suiteCTR
		return nil
	}
	sa.suite = suiteCBC
	// Unpredictable CBC IVs without a per-packet syscall: the IV is the
	// sequence number encrypted under a random per-SA key (RFC 3602 §2.3
	// asks for unpredictable IVs; distinct seqs give distinct IVs).
	var ivKey [16]byte
	if _, err := rand.Read(ivKey[:]); err != nil {
		return fmt.Errorf("CBC IV key: %w", err)
	}
	sa.ivBlock, _ = aes.NewCipher(ivKey[:])
	return nil
}

func (sa *SA) initAuth() error {
	a, err := LookupAlgorithm(KindIntegrity, sa.p.Auth.Name)
	if err != nil {
		return err
	}
	return sa.initAuthWith(a)
}

func (sa *SA) initAuthWith(a *Algorithm) error {
	k := &sa.p.Auth
	if err := a.CheckKey(k.Key); err != nil {
		return err
	}
	if err := a.CheckICV(k.ICVBits); err != nil {
		return err
	}
	switch a.Name {
	case "hmac(md5)":
		sa.newMAC = md5.New
	case "hmac(sha1)":
		sa.newMAC = sha1.New
	case "hmac(sha256)":
		sa.newMAC = sha256.New
	case "hmac(sha384)":
		sa.newMAC = sha512.New384
	case "hmac(sha512)":
		sa.newMAC = sha512.New
	default:
		return fmt.Errorf("auth-trunc %s is in the table but not implemented", a.Name)
	}
	sa.macKey = append([]byte(nil), k.Key...)
	sa.icvLen = k.ICVBits / 8
	return nil
}

func (sa *SA) newScratch() any {
	s := new(scratch)
	if sa.newMAC != nil {
		s.mac = hmac.New(sa.newMAC, sa.macKey)
	}
	if sa.suite == suiteCBC {
		iv := make([]byte, sa.block.BlockSize())
		s.enc = cipher.NewCBCEncrypter(sa.block, iv)
		s.dec = cipher.NewCBCDecrypter(sa.block, iv)
	}
	return s
}

func (sa *SA) getScratch() *scratch  { return sa.pool.Get().(*scratch) }
func (sa *SA) putScratch(s *scratch) { sa.pool.Put(s) }

// Scratch is one goroutine's working memory for the transforms of any
// number of SAs. A worker that owns one and passes it to EncryptWith,
// DecryptWith or DecryptParsedWith spares each packet the SA's sync.Pool
// (about 8 ns of Get and Put). The zero value is not usable; call
// NewScratch. A Scratch must not be used by two goroutines at once; it holds
// no key material (keys stay in the SA).
//
// SAs whose transform keeps keyed per-call state (CBC ciphers, HMAC) still
// take that state from their own pool; for them a Scratch changes nothing.
type Scratch struct {
	s scratch
}

// NewScratch returns a Scratch for one goroutine.
func NewScratch() *Scratch { return new(Scratch) }

// scratchFor returns the scratch to use with sc, or nil when the SA needs
// its pooled, keyed scratch.
func (sa *SA) scratchFor(sc *Scratch) *scratch {
	if sc == nil || sa.keyed {
		return nil
	}
	return &sc.s
}

// Params returns the SA's parameters without key bytes (Key slices nil).
func (sa *SA) Params() SAParams { return sa.p }

// SPI returns the SA's SPI.
func (sa *SA) SPI() uint32 { return sa.p.SPI }

// Window returns the SA's anti-replay window.
func (sa *SA) Window() *replay.Window { return sa.win }

// Overhead returns the most bytes Encrypt adds before and after a packet: the
// headroom and tailroom a frame needs.
func (sa *SA) Overhead() (head, tail int) { return sa.head, sa.tail }

// overhead computes what Overhead reports, once, in init.
func (sa *SA) overhead() (head, tail int) {
	if sa.p.Mode == ModeTunnel {
		head = 20
		if sa.outerV6 {
			head = 40
		}
	}
	if sa.p.Proto == ProtoAH {
		return head + sa.ahLen, 0
	}
	if sa.udp {
		head += 8
	}
	tail = sa.blk - 1 + 2 + sa.icvLen
	if sa.gcm8 != nil {
		tail += 8 // sealing writes the full 16-byte tag and keeps 8
	}
	return head + 8 + sa.ivLen, tail
}

// nextSeq reserves the next outbound sequence number, refusing to wrap.
func (sa *SA) nextSeq() (uint64, error) {
	for {
		cur := sa.outSeq.Load()
		if cur >= sa.seqMax {
			return 0, ErrSeqOverflow
		}
		if sa.outSeq.CompareAndSwap(cur, cur+1) {
			return cur + 1, nil
		}
	}
}

// NextSeq returns the sequence number the next Encrypt will use (it may be
// above the limit, in which case Encrypt fails with ErrSeqOverflow).
func (sa *SA) NextSeq() uint64 { return sa.outSeq.Load() + 1 }

// Packed counting for SAs without packet or byte limits: one atomic add per
// packet instead of two. acc holds packets in its top 24 bits and bytes in
// its low 40; whoever sees either field past half its range moves acc into
// packets/bytes under accMu, long before it could overflow (a packet adds
// at most 2^16 bytes).
const (
	accPkShift = 40
	accByMask  = 1<<accPkShift - 1
	accFlushPk = 1 << 23
	accFlushBy = 1 << 39
)

// count charges one packet of n bytes to the lifetimes. It reports false
// when the packet crosses a hard limit (the SA is then hard-expired).
func (sa *SA) count(n int) bool {
	if !sa.limited {
		if v := sa.use.acc.Add(1<<accPkShift | uint64(n)); v>>accPkShift >= accFlushPk || v&accByMask >= accFlushBy {
			sa.flushAcc()
		}
		return true
	}
	u := sa.use
	if u.acc.Load() != 0 {
		// An SA without limits that this one replaced counted packed.
		sa.flushAcc()
	}
	// A packet that does not fit under a hard limit takes its counts back:
	// the counters hold exactly what the SA protected or verified, and
	// never more than a limit, however many goroutines race at it.
	lt := &sa.p.Lifetime
	pk := u.packets.Add(1)
	if lt.HardPackets != 0 && pk > lt.HardPackets {
		u.packets.Add(^uint64(0))
		sa.expire("packets")
		return false
	}
	by := u.bytes.Add(uint64(n))
	if lt.HardBytes != 0 && by > lt.HardBytes {
		u.bytes.Add(-uint64(n))
		u.packets.Add(^uint64(0))
		sa.expire("bytes")
		return false
	}
	if (lt.SoftPackets != 0 && pk >= lt.SoftPackets) || (lt.SoftBytes != 0 && by >= lt.SoftBytes) {
		if sa.soft.CompareAndSwap(false, true) && sa.p.OnSoftExpire != nil {
			sa.p.OnSoftExpire(sa)
		}
	}
	return true
}

// expire marks the SA hard-expired by limit ("packets" or "bytes"); the
// first limit reached is the one HardLimit reports.
func (sa *SA) expire(limit string) {
	sa.hardBy.CompareAndSwap(nil, &limit)
	sa.state.Or(stateHard)
}

// SA states (SA.state bits).
const (
	stateHard = 1 << iota // a hard lifetime limit was reached
	stateDead             // Invalidate was called
)

// Invalidate marks the SA deleted, irreversibly, together with every SA it
// replaced or that replaced it (NewSAReplacing): from then on Encrypt and
// EncryptBatch fail with ErrDeleted and Decrypt answers VerdictNoState, so
// a worker that looked the SA up just before its database removed it does
// not go on using it (Linux's XFRM_STATE_DEAD). A packet already past the
// check when Invalidate runs completes.
func (sa *SA) Invalidate() { sa.dead.Store(stateDead) }

// Invalid reports whether Invalidate was called.
func (sa *SA) Invalid() bool { return sa.dead.Load() != 0 }

// refused returns the SA's state bits; non-zero refuses packets.
func (sa *SA) refused() uint32 { return sa.state.Load() | sa.dead.Load() }

// refusal is the error Encrypt returns for a non-zero state st.
func refusal(st uint32) error {
	if st&stateDead != 0 {
		return ErrDeleted
	}
	return ErrExpired
}

// HardLimit names the hard lifetime limit the SA reached: "packets",
// "bytes", or "" while it has reached none.
func (sa *SA) HardLimit() string {
	if l := sa.hardBy.Load(); l != nil {
		return *l
	}
	return ""
}

// flushAcc moves the packed counts into packets and bytes.
func (sa *SA) flushAcc() {
	u := sa.use
	u.mu.Lock()
	v := u.acc.Swap(0)
	u.packets.Add(v >> accPkShift)
	u.bytes.Add(v & accByMask)
	u.mu.Unlock()
}

// SoftExpired reports whether the SA crossed a soft lifetime limit.
func (sa *SA) SoftExpired() bool { return sa.soft.Load() }

// HardExpired reports whether the SA reached a hard lifetime limit.
func (sa *SA) HardExpired() bool { return sa.state.Load()&stateHard != 0 }

// Stats returns the packets and bytes counted against the lifetimes.
func (sa *SA) Stats() Stats {
	u := sa.use
	u.mu.Lock()
	defer u.mu.Unlock()
	v := u.acc.Load()
	return Stats{Packets: u.packets.Load() + v>>accPkShift, Bytes: u.bytes.Load() + v&accByMask}
}
