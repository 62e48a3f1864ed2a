package sad

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// espIV returns the sequence number and the explicit IV of an IPv4 tunnel
// ESP packet (the outer header is 20 bytes, no options): for GCM the IV is
// the nonce's per-packet part, which must never repeat under one key (it is
// the sequence number plus a per-SA offset).
func espIV(p esp) (seq uint32, iv uint64) {
	h := p.frame[p.off+20:]
	return binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
}

// TestSADUpdateStaleSenderNoNonceReuse: a worker that looked the SA up
// before an in-place update (same key, new lifetime: a config reload)
// finishes its packet with the old SA, as the package allows. Its sequence
// number, from which the GCM IV is made, must not be one the new SA also
// uses: under an unchanged key that is a repeated nonce.
func TestSADUpdateStaleSenderNoNonceReuse(t *testing.T) {
	d := NewSAD(Config{})
	old, err := d.Add(mustSA(t, gcmSpec(0x2100, "")))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		encrypt(t, old, byte(i))
	}
	cur, err := d.Update(mustSA(t, gcmSpec(0x2100, "limit packet-soft 1000000")))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]string{}
	var ivOffset uint64 // IV = seq + a per-SA offset, kept across the update
	for i, a := range []*Association{old, cur, old, cur} {
		seq, iv := espIV(encrypt(t, a, byte(i)))
		if off := iv - uint64(seq); i == 0 {
			ivOffset = off
		} else if off != ivOffset {
			t.Fatalf("packet %d: IV offset %#x, the chain's is %#x", i, off, ivOffset)
		}
		who := "new SA"
		if a == old {
			who = "old SA"
		}
		if prev, ok := seen[iv]; ok {
			t.Fatalf("IV %d used by the %s and again by the %s: nonce reuse under one key", iv, prev, who)
		}
		seen[iv] = who
	}
	if len(seen) != 4 {
		t.Fatalf("%d distinct IVs, want 4", len(seen))
	}
}

// TestSADUpdateConcurrentSendersUniqueIVs: senders look the SA up for
// every packet while the SA is updated in place again and again (same
// key): every packet's IV (= sequence number) is distinct.
func TestSADUpdateConcurrentSendersUniqueIVs(t *testing.T) {
	d := NewSAD(Config{})
	spec := mustSA(t, gcmSpec(0x2200, ""))
	if _, err := d.Add(spec); err != nil {
		t.Fatal(err)
	}
	const senders, each, updates = 4, 1000, 50
	ivs := make([][]uint64, senders)
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				a := d.Lookup(spec.SPI, spec.Dst, ipsec.ProtoESP)
				f, off, n := innerPacket(byte(i))
				o, on, err := a.Transform().Encrypt(f, off, n)
				if err != nil {
					t.Errorf("encrypt: %v", err)
					return
				}
				_, iv := espIV(esp{f, o, on})
				ivs[g] = append(ivs[g], iv)
			}
		}()
	}
	for i := range updates {
		extra := ""
		if i%2 == 0 {
			extra = "limit packet-soft 1000000"
		}
		if _, err := d.Update(mustSA(t, gcmSpec(0x2200, extra))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, l := range ivs {
		for _, iv := range l {
			if seen[iv] {
				t.Fatalf("IV %d used twice under one key", iv)
			}
			seen[iv] = true
		}
	}
	if len(seen) != senders*each {
		t.Fatalf("%d IVs, want %d", len(seen), senders*each)
	}
}

// TestSADUpdateStaleReceiverNoReplay: a packet that a worker still holding
// the old SA accepts after the update is a replay for the new SA (and the
// other way round): the two share one window.
func TestSADUpdateStaleReceiverNoReplay(t *testing.T) {
	tx, rx := NewSAD(Config{}), NewSAD(Config{})
	spec := mustSA(t, gcmSpec(0x2300, "replay-window 64"))
	txa, err := tx.Add(spec)
	if err != nil {
		t.Fatal(err)
	}
	old, err := rx.Add(spec)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := encrypt(t, txa, 1), encrypt(t, txa, 2)
	cur, err := rx.Update(mustSA(t, gcmSpec(0x2300, "replay-window 64 limit packet-soft 1000000")))
	if err != nil {
		t.Fatal(err)
	}
	open := func(a *Association, p esp) ipsec.Verdict {
		f := append([]byte(nil), p.frame...)
		return a.Transform().Decrypt(f, p.off, p.n).Verdict
	}
	if v := open(old, p1); v != ipsec.VerdictOK {
		t.Fatalf("p1 through the old SA: %v", v)
	}
	if v := open(cur, p1); v != ipsec.VerdictReplay {
		t.Fatalf("p1 again through the new SA: %v, want replay", v)
	}
	if v := open(cur, p2); v != ipsec.VerdictOK {
		t.Fatalf("p2 through the new SA: %v", v)
	}
	if v := open(old, p2); v != ipsec.VerdictReplay {
		t.Fatalf("p2 again through the old SA: %v, want replay", v)
	}
}

// TestSpecPrintsNoKey: an SASpec printed with any verb, or as JSON, shows
// the key as <key N bits> only.
func TestSpecPrintsNoKey(t *testing.T) {
	const k = "0xd1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4"
	s := mustSA(t, "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel aead rfc4106(gcm(aes)) "+k+" 128")
	var outs []string
	for _, v := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		outs = append(outs, fmt.Sprintf(v, s), fmt.Sprintf(v, *s))
	}
	for _, x := range []any{s, *s} {
		j, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(j))
	}
	for _, out := range outs {
		for _, leak := range []string{"d1d2d3d4", "D1D2D3D4", "209 210 211 212", "0dLT1A"} {
			if strings.Contains(out, leak) {
				t.Fatalf("spec output %q contains key bytes (%s)", out, leak)
			}
		}
		if !strings.Contains(out, "key 160 bits") {
			t.Fatalf("spec output %q does not say what the key is", out)
		}
	}
}

// TestKeyReuse: a second SA on the same counter-mode key is reported,
// naming the SAs and not the key; other keys, CBC keys and the SA's own
// entry (an update) are not.
func TestKeyReuse(t *testing.T) {
	d := NewSAD(Config{})
	if _, err := d.Add(mustSA(t, gcmSpec(0x2400, ""))); err != nil {
		t.Fatal(err)
	}
	same := mustSA(t, gcmSpec(0x2401, ""))
	err := d.KeyReuse(same)
	if !errors.Is(err, ErrKeyReuse) || !strings.Contains(err.Error(), "spi 0x00002400") || strings.Contains(err.Error(), gcm128[2:10]) {
		t.Fatalf("same key on a second SA: %v", err)
	}
	if err := d.KeyReuse(mustSA(t, gcmSpec(0x2400, "limit packet-soft 10"))); err != nil {
		t.Fatalf("the SA's own update: %v", err)
	}
	other := mustSA(t, strings.Replace(gcmSpec(0x2402, ""), gcm128, "0x"+strings.Repeat("5a", 20), 1))
	if err := d.KeyReuse(other); err != nil {
		t.Fatalf("another key: %v", err)
	}
	// The same bytes as a CTR key are reuse too; as a CBC key (random IVs) not.
	const k20 = "0x0102030405060708090a0b0c0d0e0f1011121314"
	ctr := "src 192.0.2.1 dst 192.0.2.2 proto esp spi %#x mode tunnel enc rfc3686(ctr(aes)) " + k20 +
		" auth-trunc hmac(sha256) 0x" + strings.Repeat("77", 32) + " 128"
	if _, err := d.Add(mustSA(t, fmt.Sprintf(ctr, 0x2403))); err != nil {
		t.Fatal(err)
	}
	if err := d.KeyReuse(mustSA(t, fmt.Sprintf(ctr, 0x2404))); !errors.Is(err, ErrKeyReuse) {
		t.Fatalf("same CTR key: %v", err)
	}
	cbc := "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2405 mode tunnel enc cbc(aes) 0x" + strings.Repeat("66", 16) +
		" auth-trunc hmac(sha256) 0x" + strings.Repeat("77", 32) + " 128"
	if _, err := d.Add(mustSA(t, cbc)); err != nil {
		t.Fatal(err)
	}
	if err := d.KeyReuse(mustSA(t, strings.Replace(cbc, "0x2405", "0x2406", 1))); err != nil {
		t.Fatalf("same CBC key: %v", err)
	}
}

// TestSpecFlagsReachTransform: flag noecn and dont-encap-dscp are not just
// parsed: they reach the transform's parameters.
func TestSpecFlagsReachTransform(t *testing.T) {
	p := mustSA(t, gcmSpec(0x2500, "flag noecn dont-encap-dscp")).Params()
	if !p.NoECN || !p.NoEncapDSCP {
		t.Fatalf("flags noecn dont-encap-dscp: NoECN %v NoEncapDSCP %v", p.NoECN, p.NoEncapDSCP)
	}
	if p := mustSA(t, gcmSpec(0x2500, "")).Params(); p.NoECN || p.NoEncapDSCP {
		t.Fatal("no flags, yet NoECN or NoEncapDSCP")
	}
}

// TestSADDeleteInvalidatesInFlight: a worker that looked an SA up before
// Delete cannot use it after: inbound packets are no-state, outbound
// encryption fails with ipsec.ErrDeleted (as Linux drops packets of a
// dead state). An Update, by contrast, leaves the old SA usable.
func TestSADDeleteInvalidatesInFlight(t *testing.T) {
	tx, rx := NewSAD(Config{}), NewSAD(Config{})
	spec := mustSA(t, gcmSpec(0x2600, ""))
	txa, _ := tx.Add(spec)
	rxa, err := rx.Add(spec)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := encrypt(t, txa, 1), encrypt(t, txa, 2)
	f := append([]byte(nil), p1.frame...)
	if r := rxa.Transform().Decrypt(f, p1.off, p1.n); r.Verdict != ipsec.VerdictOK {
		t.Fatalf("before delete: %v", r.Verdict)
	}
	if _, err := rx.Update(mustSA(t, gcmSpec(0x2600, "limit packet-soft 100"))); err != nil {
		t.Fatal(err)
	}
	cur := rx.Lookup(spec.SPI, spec.Dst, ipsec.ProtoESP)
	if cur.Transform().Invalid() || rxa.Transform().Invalid() {
		t.Fatal("an update invalidated an SA")
	}
	if err := rx.Delete(spec.Key()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete(spec.Key()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*Association{rxa, cur} {
		f := append([]byte(nil), p2.frame...)
		if r := a.Transform().Decrypt(f, p2.off, p2.n); r.Verdict != ipsec.VerdictNoState {
			t.Fatalf("inbound packet on a deleted SA: %v, want no-state", r.Verdict)
		}
	}
	fr, off, n := innerPacket(3)
	if _, _, err := txa.Transform().Encrypt(fr, off, n); !errors.Is(err, ipsec.ErrDeleted) {
		t.Fatalf("outbound packet on a deleted SA: %v, want ErrDeleted", err)
	}
	pk := []ipsec.Packet{{Frame: fr, Off: off, N: n}}
	errs := make([]error, 1)
	if txa.Transform().EncryptBatch(nil, pk, errs) != 0 || !errors.Is(errs[0], ipsec.ErrDeleted) {
		t.Fatalf("EncryptBatch on a deleted SA: %v", errs[0])
	}
}

// TestSADUpdateLimitHoldsAcrossSwitch: a hard packet limit holds across an
// in-place update although a worker still holding the old SA sends after
// the switch: both count into one usage, so the SA pair protects exactly
// the limit, no more.
func TestSADUpdateLimitHoldsAcrossSwitch(t *testing.T) {
	d := NewSAD(Config{})
	old, err := d.Add(mustSA(t, gcmSpec(0x2700, "limit packet-hard 10")))
	if err != nil {
		t.Fatal(err)
	}
	send := func(a *Association, k int) (sent int) {
		for range k {
			f, off, n := innerPacket(1)
			if _, _, err := a.Transform().Encrypt(f, off, n); err == nil {
				sent++
			} else if !errors.Is(err, ipsec.ErrExpired) {
				t.Fatalf("encrypt: %v", err)
			}
		}
		return sent
	}
	total := send(old, 5)
	cur, err := d.Update(mustSA(t, gcmSpec(0x2700, "limit packet-hard 10 limit packet-soft 8")))
	if err != nil {
		t.Fatal(err)
	}
	total += send(old, 3) // a worker that looked the old SA up before the switch
	total += send(cur, 10)
	if total != 10 {
		t.Fatalf("%d packets protected under a hard limit of 10", total)
	}
	if st := cur.Transform().Stats(); st.Packets != 10 {
		t.Fatalf("new SA counts %d packets, want 10 (5+3 by the old SA, 2 by itself)", st.Packets)
	}
	if !cur.Transform().HardExpired() || cur.Transform().HardLimit() != "packets" || !cur.Transform().SoftExpired() {
		t.Fatalf("hard %v (%q) soft %v", cur.Transform().HardExpired(), cur.Transform().HardLimit(), cur.Transform().SoftExpired())
	}
}
