package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// TestFrameSizeLimits: the limits derived from the frame size are what the
// workers and the kernel use. The TUN MTU limit is exactly the buffer a
// TUN read gets in a frame of a real socket (from the packet's offset to the
// tailroom kept for the ESP trailer), for both sizes.
func TestFrameSizeLimits(t *testing.T) {
	for _, c := range []struct{ size, tunMTU, rx int }{
		{0, 1664, 1792}, {2048, 1664, 1792}, {4096, 3712, 3840},
	} {
		if got := TUNMTULimit(c.size); got != c.tunMTU {
			t.Errorf("TUNMTULimit(%d) = %d, want %d", c.size, got, c.tunMTU)
		}
		if got := RxFrameLimit(c.size); got != c.rx {
			t.Errorf("RxFrameLimit(%d) = %d, want %d", c.size, got, c.rx)
		}
	}
	if MaxTUNMTU != TUNMTULimit(0) {
		t.Errorf("MaxTUNMTU = %d, TUNMTULimit(0) = %d: MaxTUNMTU is the default frame size's limit", MaxTUNMTU, TUNMTULimit(0))
	}
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	for _, size := range []int{2048, 4096} {
		var s *afxdp.Socket
		if err := p.A.Do(func() (err error) {
			s, err = openSocket(afxdp.Config{Ifindex: p.IndexA, Mode: afxdp.BindCopy, FrameSize: size, FrameCount: 64,
				RxRingSize: 32, TxRingSize: 32, FillRingSize: 32, CompletionRingSize: 32})
			return err
		}); err != nil {
			t.Fatalf("open a socket with %d-byte frames: %v", size, err)
		}
		var d [1]afxdp.Desc
		if s.Alloc(d[:]) != 1 {
			t.Fatalf("%d-byte frames: no free frame", size)
		}
		fr := s.Frame(d[0].Addr)
		// The slice outbound() hands the TUN read.
		if got := len(fr[s.Info().RxOffset : len(fr)-outTailroom]); got != TUNMTULimit(size) {
			t.Errorf("%d-byte frames: a TUN read gets %d bytes, TUNMTULimit says %d", size, got, TUNMTULimit(size))
		}
		if got := len(fr) - s.Info().RxOffset; got != RxFrameLimit(size) {
			t.Errorf("%d-byte frames: a received packet has room for %d bytes, RxFrameLimit says %d", size, got, RxFrameLimit(size))
		}
		s.Release(d[:])
		s.Close()
	}
}

// TestLoadConfigFrameSize: `frame-size` takes 2048 or 4096 and nothing
// else, with one line naming the allowed values; `mtu` is judged against
// the frame size wherever the two lines are in the file, and its error
// names the mtu line, the limit and `frame-size 4096` when that would
// carry it.
func TestLoadConfigFrameSize(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		body      string
		size, mtu int
	}{
		{"link xa0\n", 0, 0},
		{"link xa0\nframe-size 2048\n", 2048, 0},
		{"link xa0\nframe-size 4096\n", 4096, 0},
		{"link xa0\nmtu 3712\nframe-size 4096\n", 4096, 3712},
		{"link xa0\nframe-size 4096\nmtu 3000\n", 4096, 3000},
		{"link xa0\nframe-size 2048\nmtu 1664\n", 2048, 1664},
	} {
		fc, err := LoadConfig(writeFile(t, dir, "ok.conf", c.body, 0o644))
		if err != nil {
			t.Errorf("%q: %v", c.body, err)
			continue
		}
		if fc.FrameSize != c.size || fc.MTU != c.mtu {
			t.Errorf("%q: frame size %d, mtu %d; want %d, %d", c.body, fc.FrameSize, fc.MTU, c.size, c.mtu)
		}
	}
	for _, c := range []struct {
		body, at string
		want     []string
	}{
		{"link xa0\nframe-size 3000\n", ":2: ", []string{"`frame-size 3000`", "2048 or 4096"}},
		{"link xa0\nframe-size 0\n", ":2: ", []string{"2048 or 4096"}},
		{"link xa0\nframe-size 4k\n", ":2: ", []string{"2048 or 4096"}},
		{"link xa0\nframe-size\n", ":2: ", []string{"2048 or 4096"}},
		{"link xa0\nframe-size 2048 4096\n", ":2: ", []string{"2048 or 4096"}},
		// mtu over the default frame: the limit and the way out.
		{"link xa0\nmtu 3000\n", ":2: ", []string{"`mtu 3000`", "1664", "`frame-size 4096`", "3712"}},
		{"link xa0\nmtu 3000\nframe-size 2048\n", ":2: ", []string{"`mtu 3000`", "1664", "`frame-size 4096`"}},
		// mtu over 4096-byte frames: no frame size helps.
		{"link xa0\nframe-size 4096\n\nmtu 3713\n", ":4: ", []string{"`mtu 3713`", "3712"}},
		{"link xa0\nmtu 67\n", ":2: ", []string{"68", "1664", "3712"}},
	} {
		p := writeFile(t, dir, "bad.conf", c.body, 0o644)
		_, err := LoadConfig(p)
		if err == nil {
			t.Errorf("%q: accepted", c.body)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, p+c.at) || strings.Contains(msg, "\n") {
			t.Errorf("%q: %q, want one line starting %q", c.body, msg, p+c.at)
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: %q does not say %q", c.body, msg, w)
			}
		}
		if strings.Contains(c.body, "3713") && strings.Contains(msg, "frame-size 4096`") {
			t.Errorf("%q: %q advises a frame size the config already has", c.body, msg)
		}
	}
}

// TestStartFrameSize: Start refuses a frame size other than 2048 or 4096
// and an MTU its frames cannot carry, before it creates anything.
func TestStartFrameSize(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Links: []string{"xdpsec-none"}, FrameSize: 3000}, "2048 or 4096"},
		{Config{Links: []string{"xdpsec-none"}, FrameSize: -1}, "2048 or 4096"},
		{Config{Links: []string{"xdpsec-none"}, MTU: 3000}, "1664"},
		{Config{Links: []string{"xdpsec-none"}, FrameSize: 4096, MTU: 3713}, "3712"},
	} {
		_, err := Start(c.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start(frame size %d, mtu %d): %v, want ErrConfig naming %s", c.cfg.FrameSize, c.cfg.MTU, err, c.want)
		}
	}
	// Within the limits the config is fine: Start goes on to the link.
	_, err := Start(Config{Links: []string{"xdpsec-none"}, FrameSize: 4096, MTU: 3712})
	if err == nil || errors.Is(err, ErrConfig) {
		t.Errorf("Start(frame size 4096, mtu 3712) over a missing link: %v, want the link's error", err)
	}
}

// badICVFrame returns an Ethernet frame of n bytes from src to dst MAC:
// IPv4 192.0.2.2 -> 192.0.2.1 (header checksum right, DF) carrying ESP with
// spi, sequence number 1 and a payload of a fixed pattern: a frame the XDP
// program steers and the engine drops (bad-icv, or malformed when the
// ciphertext is not 4-byte aligned).
func badICVFrame(dst, src net.HardwareAddr, spi uint32, n int) []byte {
	ip := make([]byte, n-14)
	ip[0], ip[8], ip[9] = 0x45, 64, 50
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	copy(ip[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip[:20], 0))
	binary.BigEndian.PutUint32(ip[20:], spi)
	binary.BigEndian.PutUint32(ip[24:], 1)
	for i := 28; i < len(ip); i++ {
		ip[i] = byte(i * 13)
	}
	return ethFrame(dst, src, ip)
}

// TestRxFrameLimit lets the kernel judge RxFrameLimit: with frames of each
// size, an ESP frame of exactly RxFrameLimit bytes reaches the engine (in
// one piece: its drop verdict is counted), and one byte more is dropped by the kernel and
// counted in the socket's rx_dropped, never handed over cut. The XDP
// program steers both. Generic XDP over links of MTU 9000, since native
// XDP on veth refuses MTUs above ~3506 (see the package documentation).
func TestRxFrameLimit(t *testing.T) {
	testutil.RequireRoot(t)
	for _, size := range []int{2048, 4096} {
		t.Run(fmt.Sprint("frame-size=", size), func(t *testing.T) {
			p := testutil.NewVethPair(t)
			p.A.MustRun(t, "ip", "link", "set", p.IfA, "mtu", "9000")
			p.B.MustRun(t, "ip", "link", "set", p.IfB, "mtu", "9000")
			pin := mountBPFFS(t)
			e := startWith(t, p.A, tunnelConfig(true, p.IfA, pin), func(fc *FileConfig) {
				fc.XDPMode = loader.ModeGeneric
				fc.FrameSize = size
				fc.Queues = 1
			})
			var fd int
			if err := p.B.Do(func() (err error) {
				fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
				return err
			}); err != nil {
				t.Fatalf("packet socket: %v", err)
			}
			defer unix.Close(fd)
			to := &unix.SockaddrLinklayer{Ifindex: p.IndexB, Halen: 6}
			copy(to.Addr[:], p.MACA)

			type snap struct{ rx, dropped, verdicts, steered uint64 }
			read := func() snap {
				st, err := e.Stats()
				if err != nil {
					t.Fatal(err)
				}
				var s snap
				for _, so := range st.Sockets {
					if so.FrameSize != size {
						t.Errorf("socket %s/%d has %d-byte frames, want %d", so.Link, so.Queue, so.FrameSize, size)
					}
					s.rx += so.RxPackets
					s.dropped += so.RxDropped
				}
				for v, n := range st.InVerdicts {
					if v != "ok" {
						s.verdicts += n
					}
				}
				s.steered = st.Links[0].Reasons["steered"]
				return s
			}
			for _, c := range []struct {
				n        int
				fits     bool
				what     string
				moved    func(a, b snap) bool
				unmoved  func(a, b snap) bool
				unmovedN string
			}{
				{RxFrameLimit(size), true, "the engine",
					func(a, b snap) bool { return b.verdicts == a.verdicts+1 && b.rx == a.rx+1 },
					func(a, b snap) bool { return b.dropped == a.dropped }, "rx_dropped"},
				{RxFrameLimit(size) + 1, false, "rx_dropped",
					func(a, b snap) bool { return b.dropped == a.dropped+1 },
					func(a, b snap) bool { return b.verdicts == a.verdicts && b.rx == a.rx }, "the engine's verdicts or rx_packets"},
			} {
				before := read()
				if err := unix.Sendto(fd, badICVFrame(p.MACA, p.MACB, 0x1002, c.n), 0, to); err != nil {
					t.Fatalf("send a %d-byte frame: %v", c.n, err)
				}
				after := read()
				for deadline := time.Now().Add(3 * time.Second); !c.moved(before, after) && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
					after = read()
				}
				if !c.moved(before, after) {
					st, _ := e.Stats()
					t.Fatalf("%d-byte frame with %d-byte AF_XDP frames: %s did not count it once: before %+v after %+v, counters %v, verdicts %v",
						c.n, size, c.what, before, after, e.counters(), st.InVerdicts)
				}
				if after.steered != before.steered+1 {
					t.Errorf("%d-byte frame: XDP steered %d frames, want 1", c.n, after.steered-before.steered)
				}
				time.Sleep(50 * time.Millisecond) // anything counted late shows now
				if after = read(); !c.unmoved(before, after) {
					t.Errorf("%d-byte frame (fits %v): %s moved: before %+v after %+v", c.n, c.fits, c.unmovedN, before, after)
				}
			}
		})
	}
}

// tunMTUIn reads the TUN's MTU in ns.
func tunMTUIn(t *testing.T, ns *testutil.NS) int {
	t.Helper()
	mtu, err := strconv.Atoi(strings.TrimSpace(ns.MustRun(t, "cat", "/sys/class/net/"+DefaultTUN+"/mtu")))
	if err != nil {
		t.Fatal(err)
	}
	return mtu
}
