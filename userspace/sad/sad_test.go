package sad

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

func mustSA(t testing.TB, line string) *SASpec {
	t.Helper()
	s, err := ParseSA(mustTokenize(t, line))
	if err != nil {
		t.Fatalf("ParseSA: %v", err)
	}
	return s
}

func gcmSpec(spi uint32, extra string) string {
	return fmt.Sprintf("src 192.0.2.1 dst 192.0.2.2 proto esp spi %#x mode tunnel aead rfc4106(gcm(aes)) %s 128 %s", spi, gcm128, extra)
}

// innerPacket returns a frame with room around it holding an IPv4/UDP
// packet from 198.51.100.1 to 203.0.113.1, and the packet's bounds.
func innerPacket(payload byte) (frame []byte, off, n int) {
	frame = make([]byte, 512)
	off = 128
	n = testutil.InnerUDP4(frame, off, bytes.Repeat([]byte{payload}, 32))
	return frame, off, n
}

// esp is one ESP packet as a sender made it.
type esp struct {
	frame  []byte
	off, n int
}

func encrypt(t *testing.T, a *Association, payload byte) esp {
	t.Helper()
	f, off, n := innerPacket(payload)
	o, on, err := a.Transform().Encrypt(f, off, n)
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	return esp{f, o, on}
}

// decrypt runs a copy of p through the SA that the receiver's SAD finds
// for it, as a worker does, and returns the verdict and sequence number.
func decrypt(d *SAD, p esp) (ipsec.Verdict, uint64) {
	f := append([]byte(nil), p.frame...)
	var o ipsec.Outer
	if v := ipsec.ParseOuter(f[p.off:p.off+p.n], ipsec.NATTPort, &o); v != ipsec.VerdictOK {
		return v, 0
	}
	a := d.Lookup(o.SPI, o.Dst, o.Proto)
	if a == nil {
		return ipsec.VerdictNoState, 0
	}
	r := a.Transform().DecryptParsed(f, p.off, &o)
	a.Count(0, r.Verdict, r.N)
	return r.Verdict, r.Seq
}

func TestSADBasics(t *testing.T) {
	d := NewSAD(Config{Capacity: 3})
	s1 := mustSA(t, gcmSpec(0x1001, ""))
	a1, err := d.Add(s1)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Lookup(0x1001, netip.MustParseAddr("192.0.2.2"), ipsec.ProtoESP); got != a1 {
		t.Fatalf("Lookup = %v", got)
	}
	for _, miss := range []SAKey{
		{0x1002, netip.MustParseAddr("192.0.2.2"), ipsec.ProtoESP},
		{0x1001, netip.MustParseAddr("192.0.2.3"), ipsec.ProtoESP},
		{0x1001, netip.MustParseAddr("192.0.2.2"), ipsec.ProtoAH},
	} {
		if d.Lookup(miss.SPI, miss.Dst, miss.Proto) != nil {
			t.Errorf("Lookup(%v) hit", miss)
		}
		if _, err := d.Get(miss); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%v): %v", miss, err)
		}
	}
	if _, err := d.Add(mustSA(t, gcmSpec(0x1001, "reqid 9"))); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Add: %v", err)
	}
	// Same SPI, other destination: another SA.
	s2 := mustSA(t, strings.Replace(gcmSpec(0x1001, ""), "dst 192.0.2.2", "dst 192.0.2.3", 1))
	a2, err := d.Add(s2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Add(mustSA(t, gcmSpec(0x1003, ""))); err != nil {
		t.Fatal(err)
	}
	_, err = d.Add(mustSA(t, gcmSpec(0x1004, "")))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "holds 3 SAs, its capacity") {
		t.Fatalf("Add beyond capacity: %v", err)
	}
	l := d.List()
	if len(l) != 3 || d.Len() != 3 || l[0] != a1 || l[2] != a2 {
		t.Fatalf("List = %v", l)
	}
	// Delete takes effect for the next lookup; a worker holding the old
	// Association can still finish its packet with it.
	if err := d.Delete(s1.Key()); err != nil {
		t.Fatal(err)
	}
	if d.Lookup(0x1001, s1.Dst, ipsec.ProtoESP) != nil || d.Len() != 2 {
		t.Fatal("deleted SA still found")
	}
	a1.Count(0, ipsec.VerdictOK, 100)
	if err := d.Delete(s1.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := d.Update(s1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of a missing SA: %v", err)
	}
	if _, replaced, err := d.Set(s1); err != nil || replaced {
		t.Fatalf("Set as add: %v %v", replaced, err)
	}
	if _, replaced, err := d.Set(s1); err != nil || !replaced {
		t.Fatalf("Set as update: %v %v", replaced, err)
	}
	if d.Lookup(0x1001, s2.Dst, ipsec.ProtoESP) != a2 {
		t.Fatal("same-SPI SA lost")
	}
}

// TestSADUpdateKeepsState rekeys an SA in place while a sender keeps
// sending: the receiver's window and the sender's sequence numbers carry
// over, as do the counters.
func TestSADUpdateKeepsState(t *testing.T) {
	tx, rx := NewSAD(Config{}), NewSAD(Config{})
	spec := mustSA(t, gcmSpec(0x2000, "replay-window 32"))
	txa, err := tx.Add(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rx.Add(spec); err != nil {
		t.Fatal(err)
	}
	var sent []esp
	for i := range 5 {
		sent = append(sent, encrypt(t, txa, byte(i)))
		if i == 2 {
			continue // seq 3 is late: it arrives after the update
		}
		if v, seq := decrypt(rx, sent[i]); v != ipsec.VerdictOK || seq != uint64(i+1) {
			t.Fatalf("packet %d: %v seq %d", i, v, seq)
		}
	}
	// Rekey both ends (same key here, new lifetime).
	spec2 := mustSA(t, gcmSpec(0x2000, "replay-window 32 limit packet-hard 1000"))
	txb, err := tx.Update(spec2)
	if err != nil {
		t.Fatal(err)
	}
	if txb == txa || txb.Transform().NextSeq() != 6 {
		t.Fatalf("sender restarts at seq %d, want 6", txb.Transform().NextSeq())
	}
	rxb, err := rx.Update(spec2)
	if err != nil {
		t.Fatal(err)
	}
	// The whole window carried over: the late packet is new, the others
	// are replays.
	for i, p := range sent {
		want := ipsec.VerdictReplay
		if i == 2 {
			want = ipsec.VerdictOK
		}
		if v, _ := decrypt(rx, p); v != want {
			t.Fatalf("packet %d after the update: %v, want %v", i, v, want)
		}
	}
	next := encrypt(t, txb, 9)
	if v, seq := decrypt(rx, next); v != ipsec.VerdictOK || seq != 6 {
		t.Fatalf("packet after the update: %v seq %d", v, seq)
	}
	st := rxb.Stats()
	if st.Packets != 6 || st.Verdicts[ipsec.VerdictOK] != 6 || st.Verdicts[ipsec.VerdictReplay] != 4 {
		t.Fatalf("counters after update: %+v", st)
	}
	if rxb.Added() != rx.List()[0].Added() || rxb.FirstUse().IsZero() {
		t.Fatal("Added/FirstUse not carried")
	}
	// A rekey with new keys: the old packets no longer verify at all.
	spec3 := mustSA(t, strings.Replace(gcmSpec(0x2000, ""), gcm128, "0x"+strings.Repeat("ab", 20), 1))
	if _, err := rx.Update(spec3); err != nil {
		t.Fatal(err)
	}
	if v, _ := decrypt(rx, sent[2]); v == ipsec.VerdictOK {
		t.Fatal("old-key packet accepted after a key change")
	}
}

func TestSADLookupOutbound(t *testing.T) {
	d := NewSAD(Config{})
	old, _ := d.Add(mustSA(t, gcmSpec(0x3000, "reqid 1")))
	newer, _ := d.Add(mustSA(t, gcmSpec(0x3001, "reqid 1")))
	other, _ := d.Add(mustSA(t, gcmSpec(0x3002, "reqid 2")))
	tm := Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != newer {
		t.Fatalf("reqid 1: got %v, want the newest", got)
	}
	tm.SPI = 0x3000
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != old {
		t.Fatalf("spi 0x3000: got %v", got)
	}
	tm.SPI, tm.ReqID = 0, 2
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != other {
		t.Fatalf("reqid 2: got %v", got)
	}
	tm.Mode = ipsec.ModeTransport
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != nil {
		t.Fatalf("transport: got %v", got)
	}
	// A transport template without addresses takes the packet's.
	tr := Template{Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel}
	if got := d.LookupOutbound(&tr, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), 0); got != other {
		t.Fatalf("addressless: got %v", got)
	}
	d.Delete(newer.Key())
	tm = Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != old {
		t.Fatalf("after deleting the newest: got %v", got)
	}
}

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func TestSADLifetimes(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := NewSAD(Config{Now: clk.now})
	timed, _ := d.Add(mustSA(t, gcmSpec(0x4000, "limit time-soft 10 time-hard 20")))
	used, _ := d.Add(mustSA(t, gcmSpec(0x4001, "limit time-use-soft 5 time-use-hard 8")))
	pk, _ := d.Add(mustSA(t, gcmSpec(0x4002, "limit packet-soft 2 packet-hard 3")))
	if ex := d.Tick(clk.add(5 * time.Second)); len(ex) != 0 {
		t.Fatalf("early expiries: %+v", ex)
	}
	// Packet limits are enforced by the transform as the packets go.
	encrypt(t, pk, 1)
	select {
	case <-d.Wake():
		t.Fatal("Wake before the soft limit")
	default:
	}
	encrypt(t, pk, 2)
	select {
	case <-d.Wake():
	default:
		t.Fatal("no Wake at the soft packet limit")
	}
	used.Count(0, ipsec.VerdictOK, 10)     // first use now (t=5s)
	ex := d.Tick(clk.add(6 * time.Second)) // t=11s
	want := map[SAKey]Expiry{
		timed.Key(): {Key: timed.Key(), Limit: "time"},
		used.Key():  {Key: used.Key(), Limit: "use-time"},
		pk.Key():    {Key: pk.Key(), Limit: "packets"},
	}
	checkExpiries(t, ex, want)
	if ex := d.Tick(clk.add(time.Second)); len(ex) != 0 {
		t.Fatalf("soft expiries reported twice: %+v", ex)
	}
	encrypt(t, pk, 3)
	if _, _, err := pk.Transform().Encrypt(innerPacket(4)); !errors.Is(err, ipsec.ErrExpired) {
		t.Fatalf("fourth packet: %v, want ErrExpired", err)
	}
	ex = d.Tick(clk.add(2 * time.Second)) // t=14s: use-time 9s > 8
	checkExpiries(t, ex, map[SAKey]Expiry{
		used.Key(): {Key: used.Key(), Hard: true, Limit: "use-time"},
		pk.Key():   {Key: pk.Key(), Hard: true, Limit: "packets"},
	})
	if d.Len() != 1 || d.Lookup(pk.Key().SPI, pk.Key().Dst, pk.Key().Proto) != nil {
		t.Fatalf("hard-expired SAs still in the database: %v", d.List())
	}
	checkExpiries(t, d.Tick(clk.add(6*time.Second)), map[SAKey]Expiry{
		timed.Key(): {Key: timed.Key(), Hard: true, Limit: "time"},
	})
	if d.Len() != 0 {
		t.Fatal("time-hard SA still in the database")
	}
}

func checkExpiries(t *testing.T, got []Expiry, want map[SAKey]Expiry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("expiries %+v, want %d", got, len(want))
	}
	for _, e := range got {
		w, ok := want[e.Key]
		if !ok || e.Hard != w.Hard || e.Limit != w.Limit || !strings.Contains(e.Spec, "<key 160 bits>") {
			t.Errorf("expiry %+v, want %+v", e, w)
		}
	}
}

// TestSADConcurrent runs lookups and counting on several goroutines while
// a writer adds, updates and deletes: run with -race. Readers must always
// find the SA that is never deleted, and the counters must add up.
func TestSADConcurrent(t *testing.T) {
	d := NewSAD(Config{Shards: 4})
	stable, err := d.Add(mustSA(t, gcmSpec(0x5000, "")))
	if err != nil {
		t.Fatal(err)
	}
	k := stable.Key()
	const workers, perWorker = 4, 20000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s := mustSA(t, gcmSpec(0x6000+uint32(i%50), ""))
			d.Set(s)
			if i%3 == 0 {
				d.Delete(s.Key())
			}
			if i%7 == 0 {
				d.Update(mustSA(t, gcmSpec(0x5000, "")))
			}
		}
	}()
	var rw sync.WaitGroup
	for w := range workers {
		rw.Add(1)
		go func() {
			defer rw.Done()
			for range perWorker {
				a := d.Lookup(k.SPI, k.Dst, k.Proto)
				if a == nil {
					t.Error("stable SA missing")
					return
				}
				a.Count(w, ipsec.VerdictOK, 10)
			}
		}()
	}
	rw.Wait()
	close(stop)
	wg.Wait()
	a, _ := d.Get(k)
	if st := a.Stats(); st.Packets != workers*perWorker || st.Bytes != 10*workers*perWorker {
		t.Fatalf("counted %d packets %d bytes, want %d and %d", st.Packets, st.Bytes, workers*perWorker, 10*workers*perWorker)
	}
}

func TestSPD(t *testing.T) {
	d := NewSPD(Config{Capacity: 4})
	mustPolicy := func(line string) *PolicySpec {
		p, err := ParsePolicy(mustTokenize(t, line))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	protect := mustPolicy("src 198.51.100.0/24 dst 203.0.113.0/24 dir out priority 100 tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel")
	bypassSSH := mustPolicy("src 198.51.100.0/24 dst 203.0.113.0/24 proto tcp dport 22 dir out priority 50")
	discard := mustPolicy("src 0.0.0.0/0 dst 203.0.113.0/24 dir out priority 100 action block")
	in := mustPolicy("src 203.0.113.0/24 dst 198.51.100.0/24 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp mode tunnel")
	var ps []*Policy
	for _, s := range []*PolicySpec{protect, bypassSSH, discard, in} {
		p, err := d.Add(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	a := netip.MustParseAddr
	for _, c := range []struct {
		dir          Dir
		src, dst     string
		proto        uint8
		sport, dport uint16
		want         *Policy
	}{
		{DirOut, "198.51.100.7", "203.0.113.9", 6, 40000, 443, ps[0]},
		{DirOut, "198.51.100.7", "203.0.113.9", 6, 40000, 22, ps[1]}, // lower priority number first
		{DirOut, "192.0.2.77", "203.0.113.9", 17, 1, 2, ps[2]},       // same priority: added earlier wins, but protect does not match
		{DirOut, "198.51.100.7", "198.51.100.9", 17, 1, 2, nil},      // no policy
		{DirIn, "203.0.113.9", "198.51.100.7", 1, 8, 0, ps[3]},
		{DirFwd, "203.0.113.9", "198.51.100.7", 1, 8, 0, nil},
	} {
		if got := d.Lookup(c.dir, a(c.src), a(c.dst), c.proto, c.sport, c.dport); got != c.want {
			t.Errorf("Lookup(%v %s>%s %d %d>%d) = %v, want %v", c.dir, c.src, c.dst, c.proto, c.sport, c.dport, got, c.want)
		}
	}
	if ps[0].Action() != ActionProtect || ps[1].Action() != ActionBypass || ps[2].Action() != ActionDiscard {
		t.Error("actions")
	}
	if _, err := d.Add(protect); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := d.Add(mustPolicy("dir fwd")); !errors.Is(err, ErrFull) {
		t.Fatalf("beyond capacity: %v", err)
	}
	// Update in place: now a bypass, still first among priority 100.
	up, err := d.Update(mustPolicy("src 198.51.100.0/24 dst 203.0.113.0/24 dir out priority 100"))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Lookup(DirOut, a("198.51.100.7"), a("203.0.113.9"), 6, 1, 443); got != up || got.Action() != ActionBypass {
		t.Fatalf("after update: %v", got)
	}
	if err := d.Delete(up.Spec()); err != nil {
		t.Fatal(err)
	}
	if got := d.Lookup(DirOut, a("198.51.100.7"), a("203.0.113.9"), 6, 1, 443); got != ps[2] {
		t.Fatalf("after delete: %v", got)
	}
	if err := d.Delete(up.Spec()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if l := d.List(); len(l) != 3 || l[0] != ps[3] || l[1] != ps[1] {
		t.Fatalf("List = %v", l)
	}
}

// TestCountN checks that CountN records exactly what as many Count calls
// record, verdict by verdict and shard by shard, and that a run of zero
// packets records nothing (not even the first use).
func TestCountN(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := NewSAD(Config{Shards: 2, Now: clk.now})
	one, err := d.Add(mustSA(t, gcmSpec(0x6001, "")))
	if err != nil {
		t.Fatal(err)
	}
	batched, err := d.Add(mustSA(t, gcmSpec(0x6002, "")))
	if err != nil {
		t.Fatal(err)
	}
	batched.CountN(1, ipsec.VerdictOK, 0, 0)
	batched.CountN(0, ipsec.VerdictReplay, 0, 0)
	if st := batched.Stats(); st != (Stats{}) || !batched.FirstUse().IsZero() {
		t.Fatalf("CountN of 0 packets recorded %+v, first use %v", st, batched.FirstUse())
	}
	// Failed verdicts count in Verdicts only; the first of them does not
	// start the use time.
	runs := []struct {
		shard int
		v     ipsec.Verdict
		sizes []int
	}{
		{0, ipsec.VerdictBadICV, []int{90, 91}},
		{1, ipsec.VerdictOK, []int{64, 1400, 576}},
		{0, ipsec.VerdictReplay, []int{100}},
		{1, ipsec.VerdictDummy, []int{40, 41}},
		{3, ipsec.VerdictOK, []int{1500}}, // shard modulo Shards
		{0, ipsec.NumVerdicts, []int{7}},  // out of range: no verdict count
	}
	for i, r := range runs {
		var bytes uint64
		for _, n := range r.sizes {
			one.Count(r.shard, r.v, n)
			bytes += uint64(n)
		}
		batched.CountN(r.shard, r.v, uint64(len(r.sizes)), bytes)
		if i == 0 && !batched.FirstUse().IsZero() {
			t.Fatal("a failed verdict started the use time")
		}
	}
	want, got := one.Stats(), batched.Stats()
	if got != want {
		t.Fatalf("CountN stats %+v, Count stats %+v", got, want)
	}
	if got.Packets != 3+2+1 || got.Bytes != 64+1400+576+40+41+1500 || got.Verdicts[ipsec.VerdictOK] != 4 ||
		got.Verdicts[ipsec.VerdictBadICV] != 2 || got.Verdicts[ipsec.VerdictDummy] != 2 {
		t.Fatalf("stats %+v", got)
	}
	for s := range batched.shards {
		for v := range batched.shards[s].verdicts {
			if g, w := batched.shards[s].verdicts[v].Load(), one.shards[s].verdicts[v].Load(); g != w {
				t.Errorf("shard %d verdict %d: CountN %d, Count %d", s, v, g, w)
			}
		}
	}
	if fu := batched.FirstUse(); !fu.Equal(clk.now()) {
		t.Fatalf("first use %v, want %v", fu, clk.now())
	}
}

// TestSADLookupOutboundPerQueue: RFC 9611 per-queue SAs (pcpu-num). A
// worker prefers its own queue's SA over a fallback SA whatever their
// ages, falls back to the newest SA without pcpu-num when its queue has
// none, never takes another queue's SA, and within one queue a rekey's
// newer SA wins.
func TestSADLookupOutboundPerQueue(t *testing.T) {
	d := NewSAD(Config{Shards: 4})
	add := func(spi uint32, extra string) *Association {
		t.Helper()
		a, err := d.Add(mustSA(t, gcmSpec(spi, "reqid 1 "+extra)))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tm := Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
	look := func(q int) *Association { return d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, q) }
	want := func(what string, q int, w *Association) {
		t.Helper()
		if got := look(q); got != w {
			t.Errorf("%s: queue %d got %v, want %v", what, q, got, w)
		}
	}

	// Only queue 1 has an SA: no other queue may send on it.
	q1 := add(0x4001, "pcpu-num 1")
	want("only a queue-1 SA", 1, q1)
	for _, q := range []int{0, 2, 3, -1} {
		want("only a queue-1 SA", q, nil)
	}
	// A fallback SA, added after: queue 1 keeps its own, the others use it.
	fb := add(0x4000, "")
	want("own SA before a newer fallback", 1, q1)
	for _, q := range []int{0, 2, 3, -1} {
		want("fallback", q, fb)
	}
	// Queue 0's SA, newest of all: only queue 0 moves to it.
	q0 := add(0x4002, "pcpu-num 0")
	want("queue 0's own", 0, q0)
	want("queue 1's own", 1, q1)
	want("fallback", 2, fb)
	want("fallback (no queue)", -1, fb)
	// Rekey within queue 1: the newer queue-1 SA wins there, nowhere else.
	q1b := add(0x4011, "pcpu-num 1")
	want("queue 1 rekeyed", 1, q1b)
	want("queue 0 untouched by queue 1's rekey", 0, q0)
	want("fallback untouched by queue 1's rekey", 3, fb)
	// Rekey of the fallback: the newest fallback wins for queues without
	// their own SA.
	fb2 := add(0x4010, "")
	want("rekeyed fallback", 2, fb2)
	want("queue 1 keeps its own over the newer fallback", 1, q1b)
	// Deleting queue 1's SAs sends it back to the fallback; deleting the
	// fallbacks leaves queues without their own SA with no SA at all.
	for _, a := range []*Association{q1b, q1} {
		if err := d.Delete(a.Key()); err != nil {
			t.Fatal(err)
		}
	}
	want("queue 1 after its SAs went", 1, fb2)
	for _, a := range []*Association{fb2, fb} {
		if err := d.Delete(a.Key()); err != nil {
			t.Fatal(err)
		}
	}
	want("queue 0 with its own SA only", 0, q0)
	want("queue 1 with no SA", 1, nil)
	// Update moves an SA to another queue: pcpu-num is the new spec's.
	moved, err := d.Update(mustSA(t, gcmSpec(0x4002, "reqid 1 pcpu-num 1")))
	if err != nil {
		t.Fatal(err)
	}
	want("queue 0 after its SA moved to queue 1", 0, nil)
	want("queue 1 after queue 0's SA moved there", 1, moved)
	if q0, err = d.Update(mustSA(t, gcmSpec(0x4002, "reqid 1 pcpu-num 0"))); err != nil {
		t.Fatal(err)
	}
	want("queue 0 after its SA moved back", 0, q0)
	want("queue 1 after the SA moved back", 1, nil)
	// A template naming an SPI still honours pcpu-num: queue 1 may not
	// send on queue 0's SA even when the policy names it.
	tm.SPI = 0x4002
	want("SPI template, own queue", 0, q0)
	want("SPI template, other queue", 1, nil)
}

// TestSADLookupOutboundHardExpiredPerQueue: a queue whose own SA hard
// expired falls back to the SA without pcpu-num, not to another queue's.
func TestSADLookupOutboundHardExpiredPerQueue(t *testing.T) {
	d := NewSAD(Config{Shards: 2})
	fb, err := d.Add(mustSA(t, gcmSpec(0x5000, "reqid 1")))
	if err != nil {
		t.Fatal(err)
	}
	q0, err := d.Add(mustSA(t, gcmSpec(0x5001, "reqid 1 pcpu-num 0 limit packet-hard 1")))
	if err != nil {
		t.Fatal(err)
	}
	q1, err := d.Add(mustSA(t, gcmSpec(0x5002, "reqid 1 pcpu-num 1")))
	if err != nil {
		t.Fatal(err)
	}
	tm := Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != q0 {
		t.Fatalf("queue 0 before its limit: got %v", got)
	}
	encrypt(t, q0, 1) // its one packet
	f, off, n := innerPacket(2)
	if _, _, err := q0.Transform().Encrypt(f, off, n); !errors.Is(err, ipsec.ErrExpired) {
		t.Fatalf("second packet on a packet-hard 1 SA: %v, want ErrExpired", err)
	}
	if !q0.Transform().HardExpired() {
		t.Fatal("queue 0's SA not hard expired after its one packet")
	}
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 0); got != fb {
		t.Fatalf("queue 0 after its SA hard expired: got %v, want the fallback", got)
	}
	if got := d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 1); got != q1 {
		t.Fatalf("queue 1: got %v", got)
	}
}

// TestSADLookupOutboundAllocs: the worker's per-packet SA choice
// allocates nothing, with per-queue SAs and a fallback.
func TestSADLookupOutboundAllocs(t *testing.T) {
	d := NewSAD(Config{Shards: 2})
	for i, e := range []string{"reqid 1", "reqid 1 pcpu-num 0", "reqid 1 pcpu-num 1"} {
		if _, err := d.Add(mustSA(t, gcmSpec(0x6000+uint32(i), e))); err != nil {
			t.Fatal(err)
		}
	}
	tm := Template{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, ReqID: 1}
	var sink *Association
	if n := testing.AllocsPerRun(100, func() {
		sink = d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 1)
		sink = d.LookupOutbound(&tm, netip.Addr{}, netip.Addr{}, 3)
	}); n != 0 || sink == nil {
		t.Fatalf("LookupOutbound: %v allocations, sink %v", n, sink)
	}
}
