package loader

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// TestSteerToXSK binds a real AF_XDP socket to the rx queue and checks that
// packets of a known SA land in it (steered), everything else still reaches
// the kernel, and clearing the slot falls back to the kernel again.
func TestSteerToXSK(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)

	d, sock := attachWithSocket(t, p, opts)
	key := SAKey{SPI: 0x5005, Dst: p.IPv4A, Proto: ProtoESP}
	if err := d.PutSA(key, SA{ID: 55}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetXSK(0, sock.FD()); err != nil {
		t.Fatal(err)
	}
	const steered, other = 25, 5
	espIn := listenIn(t, p.A, "ip4:50", "0.0.0.0", other)

	sendIP(t, p.B, 50, p.IPv4A, repeat(steered, esp(0x5005, 100))...)
	sendIP(t, p.B, 50, p.IPv4A, repeat(other, esp(0x6006, 100))...) // no-state: kernel

	got := 0
	batch := make([]afxdp.Desc, 64)
	deadline := time.Now().Add(5 * time.Second)
	for got < steered && time.Now().Before(deadline) {
		if err := sock.Wait(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		n := sock.Receive(batch)
		for _, desc := range batch[:n] {
			pkt := sock.Packet(desc)
			// Ethernet + IPv4 (no options) + ESP: the SPI at 34.
			if len(pkt) < 42 || binary.BigEndian.Uint32(pkt[34:]) != 0x5005 || !bytes.Equal(pkt[30:34], p.IPv4A.AsSlice()) {
				t.Errorf("socket received an unexpected frame % x", pkt[:min(len(pkt), 48)])
			}
		}
		sock.Release(batch[:n])
		got += n
	}
	if got != steered {
		t.Fatalf("AF_XDP socket received %d frames, want %d", got, steered)
	}
	c := waitCounters(t, d.Maps, map[Reason]uint64{ReasonSteered: steered, ReasonNoState: other})
	if c[ReasonSteered] != steered || c[ReasonNoState] != other || c[ReasonSteerFallback] != 0 {
		t.Errorf("steered %d no-state %d steer-fallback %d, want %d %d 0", c[ReasonSteered], c[ReasonNoState], c[ReasonSteerFallback], steered, other)
	}
	if n := <-espIn.n; n != other {
		t.Errorf("kernel saw %d ESP packets, want only the %d unknown ones", n, other)
	}

	// Without a socket the same SA falls back to the kernel.
	if err := d.ClearXSK(0); err != nil {
		t.Fatal(err)
	}
	espIn = listenIn(t, p.A, "ip4:50", "0.0.0.0", 3)
	sendIP(t, p.B, 50, p.IPv4A, repeat(3, esp(0x5005, 100))...)
	c = waitCounters(t, d.Maps, map[Reason]uint64{ReasonSteerFallback: 3})
	if c[ReasonSteerFallback] != 3 || c[ReasonSteered] != steered {
		t.Errorf("after ClearXSK: steer-fallback %d steered %d, want 3 and %d", c[ReasonSteerFallback], c[ReasonSteered], steered)
	}
	if n := <-espIn.n; n != 3 {
		t.Errorf("kernel saw %d ESP packets after ClearXSK, want 3", n)
	}
	if _, sc, err := d.LookupSA(key); err != nil || sc.Packets != steered+3 {
		t.Errorf("SA counters %+v %v, want %d packets", sc, err, steered+3)
	}
	if err := d.SetXSK(d.xsks.MaxEntries(), sock.FD()); err == nil {
		t.Error("SetXSK beyond the map accepted")
	}
}

// attachWithSocket attaches xdpsec natively to p's A end and binds a small
// copy-mode AF_XDP socket to its queue 0; both are closed at the test's end.
func attachWithSocket(t *testing.T, p *testutil.VethPair, opts Options) (*Datapath, *afxdp.Socket) {
	t.Helper()
	var (
		d    *Datapath
		sock *afxdp.Socket
	)
	err := p.A.Do(func() (err error) {
		if d, err = Attach(p.IfA, ModeNative, opts); err != nil {
			return err
		}
		sock, err = afxdp.Open(afxdp.Config{Ifindex: p.IndexA, Queue: 0, Mode: afxdp.BindCopy, FrameCount: 256, RxRingSize: 256, TxRingSize: 64, FillRingSize: 256, CompletionRingSize: 64})
		return err
	})
	if err != nil {
		if d != nil {
			d.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sock.Close()
		d.Close()
	})
	return d, sock
}
