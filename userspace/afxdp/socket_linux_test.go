package afxdp

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// receiveN runs the worker loop (Receive, check, Release) until want packets
// arrived or the deadline passed, marking each payload's sequence number in
// seen. It fails the test on a packet that is not the test's or arrives twice.
func receiveN(t *testing.T, s *Socket, want int, seen []bool, deadline time.Time) int {
	t.Helper()
	batch := make([]Desc, 64)
	got := 0
	for got < want && time.Now().Before(deadline) {
		n := s.Receive(batch)
		if n == 0 {
			if err := s.Wait(10 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			continue
		}
		for _, d := range batch[:n] {
			pkt := s.Packet(d)
			if len(pkt) < 42+4 || binary.BigEndian.Uint16(pkt[36:]) != testPort {
				t.Fatalf("received a frame that is not the test's: % x", pkt)
			}
			if h := s.Headroom(d); h < PacketHeadroom+s.Info().Headroom {
				t.Fatalf("packet at %#x has %d bytes of headroom, want >= %d", d.Addr, h, PacketHeadroom+s.Info().Headroom)
			}
			seq := binary.BigEndian.Uint32(pkt[42:])
			if int(seq) >= len(seen) || seen[seq] {
				t.Fatalf("sequence %d received twice or out of range", seq)
			}
			seen[seq] = true
		}
		s.Release(batch[:n])
		got += n
	}
	return got
}

func TestReceiveFromPeer(t *testing.T) {
	testutil.RequireRoot(t)
	p, s := rxSetup(t, Config{FrameCount: 1024, FillRingSize: 512, Headroom: 128, Accounting: true})

	info := s.Info()
	if info.Mode != BindCopy {
		t.Errorf("veth bound in %s, want copy (veth has no zero-copy)", info.Mode)
	}
	if info.ZeroCopyError == "" {
		t.Error("auto mode fell back to copy without saying why zero-copy failed")
	}
	t.Logf("bound: mode=%s zero-copy refused: %s, rx offset %d, tx budget %d", info.Mode, info.ZeroCopyError, info.RxOffset, info.TxBudget)
	if info.RxOffset != PacketHeadroom+128 {
		t.Errorf("rx offset %d, want %d", info.RxOffset, PacketHeadroom+128)
	}

	var conn *net.UDPConn
	if err := p.B.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.IPv4A.AsSlice(), Port: testPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// 5000 packets in bursts smaller than the veth's 256-entry queue, each
	// drained before the next, so no loss is legitimate and every packet
	// must arrive exactly once.
	const total, burst = 5000, 200
	seen := make([]bool, total)
	payload := make([]byte, 64)
	deadline := time.Now().Add(20 * time.Second)
	received := 0
	for sent := 0; sent < total; {
		n := min(burst, total-sent)
		for i := range n {
			binary.BigEndian.PutUint32(payload, uint32(sent+i))
			if _, err := conn.Write(payload); err != nil {
				t.Fatalf("send from peer: %v", err)
			}
		}
		sent += n
		received += receiveN(t, s, n, seen, deadline)
		if received != sent {
			break
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if received != total {
		t.Fatalf("received %d of %d packets; stats %+v", received, total, st)
	}
	if st.RxPackets != total || st.Released != total {
		t.Errorf("counters: rx %d released %d, want %d each", st.RxPackets, st.Released, total)
	}
	if st.RxDropped+st.RxRingFull+st.RxInvalidDescs+st.RxFillRingEmptyDescs != 0 {
		t.Errorf("kernel reports loss with the rings never full: %+v", st)
	}
	counts, err := s.FrameAccounting()
	if err != nil {
		t.Fatal(err)
	}
	if counts[FrameApp] != 0 || counts[FrameTx] != 0 || counts[FrameFill] != 512 {
		t.Errorf("after the run frames are %v, want all 512 fill-ring frames back on the fill ring", counts)
	}
	t.Logf("rx %d packets in %d batches, %d poll wakeups, %d rx kicks; frames %v", st.RxPackets, st.RxBatches, st.PollWakeups, st.RxKicks, counts)
}

// TestTransmitToPeer builds frames in Alloc'd UMEM frames and checks that a
// UDP socket in the peer namespace receives every one: the kernel's own
// stack is the judge of the frames' validity.
func TestTransmitToPeer(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	s := openIn(t, p.A, Config{Ifindex: p.IndexA, FrameCount: 512, FillRingSize: 64, TxRingSize: 256, CompletionRingSize: 256, Accounting: true})

	var peer *net.UDPConn
	if err := p.B.Do(func() error {
		var err error
		peer, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.IPv4B.AsSlice(), Port: testPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := peer.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}

	const total, burst = 3000, 128
	seen := make([]bool, total)
	batch := make([]Desc, burst)
	buf := make([]byte, 2048)
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	for sent := 0; sent < total && time.Now().Before(deadline); {
		s.Complete()
		n := s.Alloc(batch[:min(burst, total-sent)])
		for i := range batch[:n] {
			f := s.Frame(batch[i].Addr)[batch[i].Addr&(2048-1):]
			writeUDPHeaders(f, p.MACB, p.MACA, p.IPv4A, p.IPv4B, 40000, testPort, 8)
			binary.BigEndian.PutUint64(f[42:], uint64(sent+i))
			batch[i].Len = 42 + 8
		}
		posted := 0
		for posted < n && time.Now().Before(deadline) {
			k, err := s.Transmit(batch[posted:n])
			if err != nil {
				t.Fatal(err)
			}
			posted += k
			s.Complete()
		}
		sent += posted
		// Read what arrived so far: the socket buffer never overflows.
		for got < sent {
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			m, err := peer.Read(buf)
			if err != nil {
				t.Fatalf("peer read after %d of %d: %v", got, sent, err)
			}
			seq := binary.BigEndian.Uint64(buf[:m])
			if m != 8 || seq >= total || seen[seq] {
				t.Fatalf("peer got %d bytes, sequence %d (duplicate or out of range)", m, seq)
			}
			seen[seq] = true
			got++
		}
	}
	if got != total {
		t.Fatalf("peer received %d of %d", got, total)
	}
	// Reap the last completions (bounded).
	for i := 0; i < 100 && s.tx.pending()+s.comp.pending() > 0; i++ {
		s.Complete()
		time.Sleep(time.Millisecond)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxPackets != total || st.Completed != total {
		t.Errorf("tx %d completed %d, want %d", st.TxPackets, st.Completed, total)
	}
	if st.TxInvalidDescs != 0 {
		t.Errorf("kernel rejected %d tx descriptors", st.TxInvalidDescs)
	}
	// Copy mode needs a sendto for every transmission: the kernel keeps
	// need_wakeup set on the tx ring, and the socket must have obeyed it.
	if st.TxKicks == 0 {
		t.Error("copy-mode transmit never kicked the kernel")
	}
	counts, err := s.FrameAccounting()
	if err != nil {
		t.Fatal(err)
	}
	if counts[FrameTx] != 0 || counts[FrameApp] != 0 || counts[FrameFree]+counts[FrameFill] != 512 {
		t.Errorf("after all completions frames are %v", counts)
	}
	t.Logf("tx %d in %d batches, %d kicks (%d errors), ring-full %d; frames %v", st.TxPackets, st.TxBatches, st.TxKicks, st.KickErrors, st.TxRingFull, counts)
}

// TestReflectInPlace is the engine's pattern: receive a frame, grow the
// packet at the head into the headroom, rewrite the headers and transmit
// the same frame; the peer's UDP socket gets the reply.
func TestReflectInPlace(t *testing.T) {
	testutil.RequireRoot(t)
	p, s := rxSetup(t, Config{FrameCount: 256, FillRingSize: 128, Accounting: true})

	var conn *net.UDPConn
	if err := p.B.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.IPv4B.AsSlice(), Port: 40001})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	const total = 500
	prefix := []byte("ECHO")
	batch := make([]Desc, 32)
	buf := make([]byte, 2048)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < total; i++ {
		msg := []byte{byte(i >> 8), byte(i), 'x', 'y'}
		if _, err := conn.WriteToUDP(msg, &net.UDPAddr{IP: p.IPv4A.AsSlice(), Port: testPort}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for n == 0 && time.Now().Before(deadline) {
			if n = s.Receive(batch[:1]); n == 0 {
				s.Wait(10 * time.Millisecond)
			}
		}
		if n == 0 {
			t.Fatalf("packet %d not received", i)
		}
		d := batch[0]
		old := s.Packet(d)
		payload := len(old) - 42
		// Grow at the head by len(prefix): headers move 4 bytes back,
		// the payload stays where the kernel put it.
		d.Addr -= uint64(len(prefix))
		d.Len += uint32(len(prefix))
		pkt := s.Packet(d)
		copy(pkt[42:], prefix)
		writeUDPHeaders(pkt, p.MACB, p.MACA, p.IPv4A, p.IPv4B, testPort, 40001, len(prefix)+payload)
		if k, err := s.Transmit([]Desc{d}); err != nil || k != 1 {
			t.Fatalf("transmit reply %d: posted %d, %v", i, k, err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if want := append(append([]byte{}, prefix...), msg...); string(buf[:m]) != string(want) {
			t.Fatalf("reply %d is %q, want %q", i, buf[:m], want)
		}
		s.Complete()
		s.Refill()
	}
	for i := 0; i < 100 && s.tx.pending()+s.comp.pending() > 0; i++ {
		time.Sleep(time.Millisecond)
		s.Complete()
	}
	s.Complete()
	s.Refill()
	counts, err := s.FrameAccounting()
	if err != nil {
		t.Fatal(err)
	}
	if counts[FrameFill]+counts[FrameFree] != 256 {
		t.Errorf("after %d reflections frames are %v", total, counts)
	}
}

func TestZeroCopyOnVethFails(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	err := p.A.Do(func() error {
		s, err := Open(Config{Ifindex: p.IndexA, Mode: BindZeroCopy})
		if err == nil {
			s.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("zero-copy bind on veth succeeded; veth has no AF_XDP zero-copy")
	}
	if !strings.Contains(err.Error(), "zero-copy") {
		t.Errorf("error does not say which mode failed: %v", err)
	}
	t.Logf("zero-copy on veth: %v", err)
}

func TestOneSocketPerQueueAndCloseReleases(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	cfg := Config{Ifindex: p.IndexA, FrameCount: 64, FillRingSize: 32, RxRingSize: 32, TxRingSize: 32, CompletionRingSize: 32}
	first := openIn(t, p.A, cfg)
	err := p.A.Do(func() error {
		s, err := Open(cfg)
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second socket on a bound queue: %v, want EBUSY", err)
	}
	fd := first.FD()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("fd %d still open after Close", fd)
	}
	// The kernel frees the queue from a work item after the last reference
	// goes, so the queue becomes free shortly after Close, not at once.
	var again *Socket
	tries := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); tries++ {
		err = p.A.Do(func() error {
			var err error
			again, err = Open(cfg)
			return err
		})
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("reopen after Close (%d tries): %v", tries, err)
	}
	again.Close()
	t.Logf("queue free again after %d EBUSY tries", tries)
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	s := openIn(t, p.A, Config{Ifindex: p.IndexA, FrameCount: 256, FillRingSize: 64})
	batch := make([]Desc, 16)
	allocs := testing.AllocsPerRun(200, func() {
		n := s.Alloc(batch)
		for i := range batch[:n] {
			f := s.Packet(batch[i])[:60]
			writeUDPHeadersNoAlloc(f)
			batch[i].Len = 60
		}
		k, _ := s.Transmit(batch[:n])
		s.Release(batch[k:n])
		s.Complete()
		s.Receive(batch)
		s.Refill()
	})
	if allocs != 0 {
		t.Errorf("hot path allocates %.1f times per batch", allocs)
	}
}

// writeUDPHeadersNoAlloc fills a fixed broadcast frame for the allocation
// test; its content only has to be a frame the veth accepts.
func writeUDPHeadersNoAlloc(f []byte) {
	for i := range 12 {
		f[i] = 0xff
	}
	f[12], f[13] = 0x88, 0xb5 // local experimental ethertype
}
