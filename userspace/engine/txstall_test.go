package engine

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// TestWorkerNeverSleepsOnTxBacklog: when the kernel refuses a tx kick as
// busy, the rest of the burst stays on the tx ring and nothing wakes the
// worker when the kernel could take it: only another kick sends it. The
// worker used to sleep its full idle wait (1 s) in poll with such a
// backlog whenever enough frames were free, so the last packets of a
// burst left up to a second late (seen as tunnel replies arriving after
// ping gave up). The test makes every kick refused deterministically (the
// link has no carrier: copy mode then takes one descriptor per kick and
// answers EBUSY), posts more descriptors than a worker's spin rounds kick,
// runs the real worker loop, and checks the event, not a duration: the
// worker never slept its idle wait while descriptors waited on the ring,
// it emptied the ring through short retry sleeps, and once nothing was in
// flight it did sleep the idle wait (no spinning when idle).
func TestWorkerNeverSleepsOnTxBacklog(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	p.B.MustRun(t, "ip", "link", "set", p.IfB, "down") // A loses its carrier
	var s *afxdp.Socket
	if err := p.A.Do(func() error {
		var err error
		s, err = afxdp.Open(afxdp.Config{Ifindex: p.IndexA, Mode: afxdp.BindCopy, FrameCount: 512,
			RxRingSize: 64, TxRingSize: 256, FillRingSize: 64, CompletionRingSize: 256, Accounting: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	// More than one refused kick per spin round can send: the worker
	// must sleep with a backlog several times before the ring is empty.
	const n = 4 * spinRounds
	burst := make([]afxdp.Desc, n)
	if got := s.Alloc(burst); got != n {
		t.Fatalf("Alloc gave %d frames, want %d", got, n)
	}
	for i := range burst {
		burst[i].Len = 60
		pkt := s.Packet(burst[i])
		copy(pkt, p.MACB)
		copy(pkt[6:], p.MACA)
		pkt[12], pkt[13] = 0x88, 0xb5 // local experimental ethertype
	}
	if k, err := s.Transmit(burst); err != nil || k != n {
		t.Fatalf("Transmit posted %d of %d: %v", k, n, err)
	}
	if b := s.TxBacklog(); b < n-1 {
		t.Fatalf("tx backlog %d after the first kick, want >= %d: kicks are not refused, the test does not reach its path", b, n-1)
	}
	// The frames left over stay free: the old rule (sleep 1 ms only when
	// under a quarter of the frames are free) would not have stayed awake.
	if free, all := s.Free(), s.Info().FrameCount; free < all/4 {
		t.Fatalf("%d of %d frames free: the test needs more than a quarter free", free, all)
	}

	// The real worker loop, on this one socket (no TUN: primary -1).
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{evfd: evfd}
	w := &worker{e: e, socks: []*afxdp.Socket{s}, primary: -1, ctr: new(workerCounters),
		rx: make([]afxdp.Desc, inBatch), spare: [][]afxdp.Desc{nil},
		pfd: []unix.PollFd{{Fd: int32(evfd), Events: unix.POLLIN}, {Fd: int32(s.FD()), Events: unix.POLLIN}}}
	e.wg.Add(1)
	go w.run()
	t.Cleanup(func() { // before s.Close (cleanups run last first)
		e.stopping.Store(true)
		unix.Write(evfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		e.wg.Wait()
		unix.Close(evfd)
	})

	// Read the idle sleeps first, the backlog second: the backlog only
	// shrinks, so a backlog seen after an idle sleep was counted means the
	// worker slept the idle wait with descriptors on the ring.
	deadline := time.Now().Add(20 * time.Second)
	for {
		idle := w.sleeps[sleepIdle].Load()
		b := s.TxBacklog()
		if b > 0 && idle > 0 {
			t.Fatalf("the worker slept its idle wait (%d ms) %d times with %d descriptors still on the tx ring", idleWait, idle, b)
		}
		if b == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tx ring still holds %d descriptors after 20 s (%d retry sleeps)", b, w.sleeps[sleepRetry].Load())
		}
		time.Sleep(time.Millisecond)
	}
	retries := w.sleeps[sleepRetry].Load()
	if retries == 0 {
		t.Fatal("the ring emptied without one retry sleep: the worker never slept with a backlog, the test does not reach its path")
	}
	// With the ring empty and every frame reaped, the worker must go back
	// to its idle wait.
	for w.sleeps[sleepIdle].Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the worker never slept its idle wait after the tx ring emptied (%d retry sleeps): it polls as if busy",
				w.sleeps[sleepRetry].Load())
		}
		time.Sleep(time.Millisecond)
	}
	e.stopping.Store(true)
	unix.Write(evfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	e.wg.Wait()

	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The link dropped every packet (no carrier); each went through a kick.
	if st.Completed != n || s.InFlight() != 0 {
		t.Errorf("completed %d, in flight %d; want %d, 0", st.Completed, s.InFlight(), n)
	}
	// Every kick was refused (poll's own retries at entry took the rest).
	if st.TxKickBusy == 0 || st.TxKickBusy != st.TxKicks || st.KickErrors != 0 {
		t.Errorf("%d tx kicks, %d busy, %d kick errors; want all busy, no error", st.TxKicks, st.TxKickBusy, st.KickErrors)
	}
	if c, err := s.FrameAccounting(); err != nil || c[afxdp.FrameTx] != 0 {
		t.Errorf("frames %v: %v", c, err)
	}
	t.Logf("%d descriptors: %d tx kicks (%d busy), %d retry sleeps, %d idle sleeps",
		n, st.TxKicks, st.TxKickBusy, retries, w.sleeps[sleepIdle].Load())
}
