package engine

import (
	"net"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// TestTxDropReturnsFramesOfEveryLink drives a worker's transmit on a link
// whose carrier is down: copy-mode AF_XDP then consumes one tx descriptor
// per kick (the driver drops it), so the tx ring fills and transmit drops
// what does not fit (out-tx-dropped). Those frames must go back to their
// socket. On a link other than the primary they used to be parked on the
// worker's spare list, which only the primary's TUN reads draw from: every
// full tx ring leaked them until the link's UMEM was empty and everything
// routed over it was dropped for good.
func TestTxDropReturnsFramesOfEveryLink(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	p.A.MustRun(t, "ip", "link", "add", "xc0", "type", "veth", "peer", "name", "xd0")
	p.A.MustRun(t, "ip", "link", "set", "xc0", "up") // xd0 stays down: xc0 has no carrier
	var idx int
	if err := p.A.Do(func() error {
		ifc, err := net.InterfaceByName("xc0")
		if err == nil {
			idx = ifc.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	const frames, ring = 256, 64
	open := func(ifindex int) *afxdp.Socket {
		var s *afxdp.Socket
		if err := p.A.Do(func() error {
			var err error
			s, err = afxdp.Open(afxdp.Config{Ifindex: ifindex, Mode: afxdp.BindCopy, FrameCount: frames,
				RxRingSize: ring, TxRingSize: ring, FillRingSize: ring, CompletionRingSize: ring, Accounting: true})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s0, s1 := open(p.IndexA), open(idx)
	w := &worker{socks: []*afxdp.Socket{s0, s1}, primary: 0, ctr: new(workerCounters),
		tx:    [][]afxdp.Desc{make([]afxdp.Desc, 0, batchSize), make([]afxdp.Desc, 0, batchSize)},
		spare: [][]afxdp.Desc{make([]afxdp.Desc, 0, 2*batchSize), make([]afxdp.Desc, 0, 2*batchSize)}}

	frame := make([]afxdp.Desc, batchSize)
	const rounds = 40 // 40 x 64 frames: ten times the link's free frames
	var posted uint64
	for r := range rounds {
		s1.Complete()
		n := s1.Alloc(frame)
		if n < batchSize/2 {
			c, _ := s1.FrameAccounting()
			t.Fatalf("round %d: the link has %d free frames (%v; worker spare list %d): frames leak on tx drops",
				r, n, c, len(w.spare[1]))
		}
		for _, d := range frame[:n] {
			pkt := s1.Packet(afxdp.Desc{Addr: d.Addr, Len: 60})
			copy(pkt, p.MACB)
			copy(pkt[6:], p.MACA)
			pkt[12], pkt[13] = 0x08, 0x00
			w.tx[1] = append(w.tx[1], afxdp.Desc{Addr: d.Addr, Len: 60})
		}
		posted += uint64(n)
		w.transmit(1, s1)
	}
	sent, dropped := w.ctr.c[OutTransmitted].Load(), w.ctr.c[OutTxDropped].Load()
	if sent+dropped != posted {
		t.Errorf("transmitted %d + tx-dropped %d != %d posted", sent, dropped, posted)
	}
	if dropped == 0 {
		t.Fatalf("no tx drop in %d rounds on a link without carrier: the test did not reach the path it checks", rounds)
	}
	c, err := s1.FrameAccounting()
	if err != nil {
		t.Fatal(err)
	}
	if c[afxdp.FrameApp] != 0 || len(w.spare[1]) != 0 {
		t.Errorf("after tx drops the worker holds %d frames of the second link (spare list %d): %v", c[afxdp.FrameApp], len(w.spare[1]), c)
	}
	t.Logf("posted %d, transmitted %d, tx-dropped %d; second link's frames %v", posted, sent, dropped, c)
}

// TestCopyToLinkFitsEveryFrame: a packet sent over a link other than the
// primary is encrypted in a primary frame, where it may have grown into the
// headroom, and then copied into a frame of the other link. Up to a whole
// frame must fit (the copy used to start PacketHeadroom into the frame:
// anything over 1792 bytes panicked, slicing past the frame's end).
func TestCopyToLinkFitsEveryFrame(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	var s *afxdp.Socket
	if err := p.A.Do(func() error {
		var err error
		s, err = afxdp.Open(afxdp.Config{Ifindex: p.IndexA, Mode: afxdp.BindCopy, FrameCount: 64,
			RxRingSize: 32, TxRingSize: 32, FillRingSize: 32, CompletionRingSize: 32, Accounting: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{60, 1500, afxdp.DefaultFrameSize - afxdp.PacketHeadroom, afxdp.DefaultFrameSize - afxdp.PacketHeadroom + 1, 1914, afxdp.DefaultFrameSize} {
		f := make([]byte, n)
		for i := range f {
			f[i] = byte(i * 7)
		}
		d, ok := copyToLink(s, f)
		if !ok {
			t.Fatalf("%d bytes: no free frame", n)
		}
		if got := s.Packet(d); int(d.Len) != n || string(got) != string(f) {
			t.Errorf("%d bytes: copy holds %d bytes, equal %v", n, len(got), string(got) == string(f))
		}
		if _, err := s.Transmit([]afxdp.Desc{d}); err != nil {
			t.Errorf("%d bytes: the copy is not a valid tx descriptor: %v", n, err)
		}
	}
}
