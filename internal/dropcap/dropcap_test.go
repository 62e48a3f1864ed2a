package dropcap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/pcap"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

const testKey = "0x44434241343332312423222114131211f4f3f2f1" // RFC 4106 AES-128 key + salt (kernel docs example)

func newSA(t testing.TB, spi uint32) *ipsec.SA {
	t.Helper()
	w, err := sad.Tokenize(fmt.Sprintf("src 192.0.2.2 dst 192.0.2.1 proto esp spi %#x mode tunnel aead rfc4106(gcm(aes)) %s 128", spi, testKey))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := sad.ParseSA(w)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := ipsec.NewSA(spec.Params())
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// espFrames returns n Ethernet frames carrying ESP packets of sender
// (tunnel mode, inner IPv4/UDP 198.51.100.1 -> 203.0.113.1).
func espFrames(t testing.TB, sender *ipsec.SA, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		buf := make([]byte, 512)
		payload := make([]byte, 32)
		payload[0] = byte(i)
		off := 160
		ln := testutil.InnerUDP4(buf, off, payload)
		o, m, err := sender.Encrypt(buf, off, ln)
		if err != nil {
			t.Fatal(err)
		}
		eth := buf[o-14 : o]
		copy(eth, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
		out = append(out, slices.Clone(buf[o-14:o+m]))
	}
	return out
}

func requireTshark(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("needs tshark (apt-get install tshark) to judge the capture")
	}
}

// TestCaptureReadByTshark drops real ESP packets with the verdicts a
// worker gets from ipsec (forged ICV, replay, no state), records them,
// and has tshark read the pcap file back: the SPIs and sequence numbers
// of exactly the selected drops.
func TestCaptureReadByTshark(t *testing.T) {
	requireTshark(t)
	sender, receiver := newSA(t, 0x1001), newSA(t, 0x1001)
	frames := espFrames(t, sender, 6)
	frames[4][len(frames[4])-1] ^= 1                                          // seq 5: forged ICV
	frames = append(frames, slices.Clone(frames[1]), slices.Clone(frames[2])) // seq 2, 3 again: replays
	stranger := espFrames(t, newSA(t, 0x2002), 1)[0]                          // no SA: no-state

	c := New(Config{})
	file := filepath.Join(t.TempDir(), "drops.pcap")
	w, err := pcap.Create(file, pcap.LinkTypeEthernet, pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ReasonSet(ipsec.VerdictBadICV, ipsec.VerdictReplay), PcapSink(w)) }()
	waitOn(t, c)

	verdicts := map[ipsec.Verdict]int{}
	for _, f := range frames {
		r := receiver.Decrypt(f, 14, len(f)-14)
		verdicts[r.Verdict]++
		if r.Verdict != ipsec.VerdictOK {
			if !c.Record(r.Verdict, f) {
				t.Errorf("%v drop not recorded", r.Verdict)
			}
		}
	}
	if c.Record(ipsec.VerdictNoState, stranger) {
		t.Error("no-state recorded though not selected")
	}
	if verdicts[ipsec.VerdictOK] != 5 || verdicts[ipsec.VerdictBadICV] != 1 || verdicts[ipsec.VerdictReplay] != 2 {
		t.Fatalf("verdicts %v, want 5 ok, 1 bad-icv, 2 replay", verdicts)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Captured != 3 || st.Written != 3 || st.RateLimited != 0 || st.RingFull != 0 {
		t.Errorf("stats %+v, want 3 captured and written", st)
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "esp.spi", "-e", "esp.sequence").Output()
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, out)
	}
	got := strings.Fields(strings.ReplaceAll(string(out), "\n", " "))
	want := []string{"0x00001001", "5", "0x00001001", "2", "0x00001001", "3"}
	if !slices.Equal(got, want) {
		t.Errorf("tshark read %q, want %q", got, want)
	}
	if c.Record(ipsec.VerdictBadICV, frames[4]) {
		t.Error("recorded after Run returned")
	}
}

// TestStreamEvents sends the capture as JSON events, as the control socket
// does, and writes them on the client side with WritePacket.
func TestStreamEvents(t *testing.T) {
	requireTshark(t)
	sender, receiver := newSAPair(t, 0xabc)
	frames := espFrames(t, sender, 2)
	frames = append(frames, slices.Clone(frames[0]))

	events := make(chan []byte, 8)
	c := New(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, DropReasons, SinkFunc(func(p Packet) error {
			b, err := json.Marshal(p)
			events <- b
			return err
		}))
	}()
	waitOn(t, c)
	for _, f := range frames {
		if r := receiver.Decrypt(f, 14, len(f)-14); r.Verdict != ipsec.VerdictOK {
			c.Record(r.Verdict, f)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(events)
	file := filepath.Join(t.TempDir(), "stream.pcap")
	w, err := pcap.Create(file, pcap.LinkTypeEthernet, pcap.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for b := range events {
		var p Packet
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		if p.Reason != "replay" {
			t.Errorf("event reason %q, want replay", p.Reason)
		}
		if err := WritePacket(w, p); err != nil {
			t.Fatal(err)
		}
		n++
	}
	w.Close()
	if n != 1 {
		t.Fatalf("%d events, want 1 (the replay)", n)
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "esp.spi", "-e", "esp.sequence").Output()
	if err != nil || strings.TrimSpace(string(out)) != "0x00000abc\t1" {
		t.Errorf("tshark: %v: %q, want the replayed packet spi 0xabc seq 1", err, out)
	}
}

func newSAPair(t testing.TB, spi uint32) (*ipsec.SA, *ipsec.SA) { return newSA(t, spi), newSA(t, spi) }

// waitOn waits until Run has switched the capture on (bounded).
func waitOn(t *testing.T, c *Capture) {
	t.Helper()
	for i := 0; c.Enabled() == 0; i++ {
		if i > 500 {
			t.Fatal("capture did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// blockSink holds every WritePacket until release is closed.
type blockSink struct {
	got     int
	release chan struct{}
}

func (s *blockSink) WritePacket(Packet) error { <-s.release; s.got++; return nil }
func (s *blockSink) Flush() error             { return nil }

func TestRateLimitAndRing(t *testing.T) {
	clk := &clock{time.Unix(1_700_000_000, 0)}
	c := New(Config{Slots: 4, SnapLen: 64, Rate: 2, Burst: 3, Now: clk.now})
	sink := &blockSink{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ReasonSet(ipsec.VerdictReplay), sink) }()
	waitOn(t, c)

	frame := make([]byte, 100)
	n := 0
	for range 10 {
		if c.Record(ipsec.VerdictReplay, frame) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("captured %d of 10 at one instant, want the burst of 3", n)
	}
	clk.t = clk.t.Add(500 * time.Millisecond) // one token at 2/s
	if !c.Record(ipsec.VerdictReplay, frame) || c.Record(ipsec.VerdictReplay, frame) {
		t.Fatal("after 0.5 s at 2/s exactly one more packet should pass")
	}
	// The sink blocks on the first slot: 4 slots are taken now.
	clk.t = clk.t.Add(10 * time.Second) // bucket full again
	if c.Record(ipsec.VerdictReplay, frame) {
		t.Fatal("recorded into a full ring")
	}
	st := c.Stats()
	if st.Captured != 4 || st.RateLimited != 8 || st.RingFull != 1 {
		t.Errorf("stats %+v, want 4 captured, 8 rate-limited, 1 ring-full", st)
	}
	close(sink.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sink.got != 4 {
		t.Errorf("sink got %d packets, want 4", sink.got)
	}
}

func TestRecordAllocations(t *testing.T) {
	c := New(Config{Rate: 1e9, Burst: 1 << 20, Slots: 1024})
	frame := make([]byte, 1500)
	if a := testing.AllocsPerRun(1000, func() { c.Record(ipsec.VerdictBadICV, frame) }); a != 0 {
		t.Errorf("Record while off: %v allocations, want 0", a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, ReasonSet(ipsec.VerdictBadICV), SinkFunc(func(Packet) error { return nil }))
	}()
	waitOn(t, c)
	if a := testing.AllocsPerRun(1000, func() { c.Record(ipsec.VerdictBadICV, frame) }); a != 0 {
		t.Errorf("Record while on: %v allocations, want 0 (copy into a preallocated slot)", a)
	}
	cancel()
	<-done
}

func TestRunErrors(t *testing.T) {
	c := New(Config{})
	if err := c.Run(context.Background(), 0, SinkFunc(nil)); err == nil || !strings.Contains(err.Error(), "bad-icv") {
		t.Errorf("Run without reasons: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	boom := errors.New("disk full")
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, DropReasons, SinkFunc(func(Packet) error { return boom })) }()
	waitOn(t, c)
	if err := c.Run(ctx, DropReasons, SinkFunc(nil)); !errors.Is(err, ErrBusy) {
		t.Errorf("second Run: %v, want ErrBusy", err)
	}
	c.Record(ipsec.VerdictMalformed, []byte{1, 2, 3})
	if err := <-done; !errors.Is(err, boom) {
		t.Errorf("Run with a failing sink: %v", err)
	}
	if c.Enabled() != 0 {
		t.Error("capture still on after the sink failed")
	}
}

func TestParseReasons(t *testing.T) {
	r, err := ParseReasons("bad-icv, replay")
	if err != nil || !r.Has(ipsec.VerdictBadICV) || !r.Has(ipsec.VerdictReplay) || r.Has(ipsec.VerdictNoState) {
		t.Errorf("ParseReasons: %v %v", r.Names(), err)
	}
	if r, err := ParseReasons("all"); err != nil || r != DropReasons {
		t.Errorf("all: %v %v", r.Names(), err)
	}
	for _, bad := range []string{"ok", "bogus", "bad-icv,,replay"} {
		if _, err := ParseReasons(bad); err == nil || !strings.Contains(err.Error(), "want all or") {
			t.Errorf("ParseReasons(%q) = %v", bad, err)
		}
	}
}
