package afxdp

import (
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// carrierless opens a copy-mode socket on the A end of a veth pair whose B
// end is down, so A has no carrier: every copy-mode kick then sends (drops,
// the driver refuses it) exactly one descriptor and answers EBUSY, a
// refused kick that leaves the rest of the tx ring behind, deterministically.
func carrierless(t *testing.T) *Socket {
	t.Helper()
	p := testutil.NewVethPair(t)
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "down")
	return openIn(t, p.A, Config{Ifindex: p.IndexA, Mode: BindCopy, FrameCount: 128,
		RxRingSize: 32, TxRingSize: 64, FillRingSize: 32, CompletionRingSize: 64, Accounting: true})
}

// postFrames allocates n frames, fills them with a 60-byte Ethernet frame
// and posts them with Transmit.
func postFrames(t *testing.T, s *Socket, n int) {
	t.Helper()
	batch := make([]Desc, n)
	if got := s.Alloc(batch); got != n {
		t.Fatalf("Alloc gave %d frames, want %d", got, n)
	}
	for i := range batch {
		batch[i].Len = 60
		pkt := s.Packet(batch[i])
		clear(pkt)
		pkt[12], pkt[13] = 0x88, 0xb5 // local experimental ethertype
	}
	if k, err := s.Transmit(batch); err != nil || k != n {
		t.Fatalf("Transmit posted %d of %d: %v", k, n, err)
	}
}

// TestFlushTxDrainsRefusedKicks: a kick the kernel refuses as busy leaves
// descriptors on the tx ring; TxBacklog reports them, TxKickBusy counts the
// refusal (not KickErrors), and FlushTx kicks again until the ring is empty.
func TestFlushTxDrainsRefusedKicks(t *testing.T) {
	testutil.RequireRoot(t)
	s := carrierless(t)
	const n = 16
	postFrames(t, s, n)
	st := s.localStats()
	if st.TxKicks != 1 || st.TxKickBusy != 1 || st.KickErrors != 0 {
		t.Fatalf("after Transmit: %d tx kicks, %d busy, %d errors; want 1, 1, 0", st.TxKicks, st.TxKickBusy, st.KickErrors)
	}
	if b := s.TxBacklog(); b != n-1 {
		t.Fatalf("tx backlog %d after one refused kick, want %d", b, n-1)
	}
	if f := s.InFlight(); f != n {
		t.Fatalf("in flight %d, want %d", f, n)
	}
	// Each FlushTx is one kick that gets one descriptor off the ring.
	for want := n - 2; want >= 0; want-- {
		if b := s.FlushTx(); b != want {
			t.Fatalf("FlushTx left %d descriptors, want %d", b, want)
		}
	}
	kicks := s.localStats().TxKicks
	if b := s.FlushTx(); b != 0 || s.localStats().TxKicks != kicks {
		t.Errorf("FlushTx on an empty tx ring: backlog %d, kicked %d times; want 0, 0", b, s.localStats().TxKicks-kicks)
	}
	// Every descriptor was consumed (dropped by the driver) and completes.
	reap(s)
	st = s.localStats()
	if s.InFlight() != 0 || st.Completed != n {
		t.Errorf("in flight %d, completed %d; want 0, %d", s.InFlight(), st.Completed, n)
	}
	if st.TxKickBusy != n || st.KickErrors != 0 {
		t.Errorf("%d busy kicks, %d kick errors; want %d, 0", st.TxKickBusy, st.KickErrors, n)
	}
	if c, err := s.FrameAccounting(); err != nil || c[FrameTx] != 0 {
		t.Errorf("frames %v: %v", c, err)
	}
}

// TestFlushTxIdleWhenSent: with a carrier, one copy-mode kick sends the
// whole batch: no backlog, no busy kick, and FlushTx makes no syscall.
func TestFlushTxIdleWhenSent(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	s := openIn(t, p.A, Config{Ifindex: p.IndexA, Mode: BindCopy, FrameCount: 128,
		RxRingSize: 32, TxRingSize: 64, FillRingSize: 32, CompletionRingSize: 64, Accounting: true})
	const n = 16
	postFrames(t, s, n)
	kicks := s.localStats().TxKicks
	if b := s.FlushTx(); b != 0 {
		t.Fatalf("tx backlog %d after a kick with carrier, want 0", b)
	}
	st := s.localStats()
	if st.TxKicks != kicks || st.TxKickBusy != 0 || st.KickErrors != 0 {
		t.Errorf("FlushTx kicked %d times; %d busy, %d errors; want 0, 0, 0", st.TxKicks-kicks, st.TxKickBusy, st.KickErrors)
	}
	reap(s)
	if s.InFlight() != 0 {
		t.Errorf("%d frames still in flight after the completions", s.InFlight())
	}
}

// reap calls Complete until nothing is in flight, for at most 2 s: a
// completion comes when the kernel frees the packet, which under load a
// softirq on another CPU may do a little later.
func reap(s *Socket) {
	for i := 0; i < 2000 && s.InFlight() > 0; i++ {
		if s.Complete(); s.InFlight() > 0 {
			time.Sleep(time.Millisecond)
		}
	}
}
