package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// sendFrames writes Ethernet frames out of ifname in ns through an
// AF_PACKET socket: the destination MAC is whatever the frame says.
func sendFrames(t *testing.T, ns *testutil.NS, ifname string, frames ...[]byte) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send frames out of %s in %s: %v", ifname, ns.Name, err)
	}
}

// withMACs returns frame with destination dst and source src.
func withMACs(frame []byte, dst, src net.HardwareAddr) []byte {
	out := slices.Clone(frame)
	copy(out[0:6], dst)
	copy(out[6:12], src)
	return out
}

// espSeen opens a raw ESP socket in ns, calls send, and counts the ESP
// packets the kernel delivers to it by SPI until want packets of SPI until
// have arrived or 5 s have passed. Sent last, those mark the end: a veth
// queue keeps order, so whatever was sent before them is in by then.
func espSeen(t *testing.T, ns *testutil.NS, until uint32, want int, send func()) map[uint32]int {
	t.Helper()
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:50", "0.0.0.0")
		return err
	})
	if err != nil {
		t.Fatalf("listen ip4:50 in %s: %v", ns.Name, err)
	}
	defer c.Close()
	send()
	seen := map[uint32]int{}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for seen[until] < want && time.Now().Before(deadline) {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		if n >= 4 {
			seen[binary.BigEndian.Uint32(buf[:4])]++
		}
	}
	return seen
}

// TestOtherHostNotSteered puts the receiving veth in promiscuous mode (as
// tcpdump without -p does) and sends ESP of a known SA, at layer 2, to
// another host's MAC, to the link's own MAC and to the broadcast address,
// with an AF_XDP socket bound to the queue. Only the last two reach the
// socket; the first passes to the kernel, which drops it (PACKET_OTHERHOST:
// a raw ESP socket sees none of it), counted pass-otherhost and not by
// the SA. A changed link address is written by the next Attach.
func TestOtherHostNotSteered(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "promisc", "on")

	d, sock := attachWithSocket(t, p, opts)
	if got, err := d.LinkAddr(); err != nil || !bytes.Equal(got, p.MACA) {
		t.Fatalf("link address after Attach: %v %v, want %s", got, err, p.MACA)
	}
	key := SAKey{SPI: 0x5005, Dst: p.IPv4A, Proto: ProtoESP}
	if err := d.PutSA(key, SA{ID: 55}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetXSK(0, sock.FD()); err != nil {
		t.Fatal(err)
	}

	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	known := v4{src: p.IPv4B.String(), dst: p.IPv4A.String(), proto: 50, payload: esp(0x5005, 100)}.frame()
	unknown := v4{src: p.IPv4B.String(), dst: p.IPv4A.String(), proto: 50, payload: esp(0x6006, 100)}.frame()
	const nOther, nOwn, nBcast, nUnknown = 20, 10, 5, 5
	var frames [][]byte
	frames = append(frames, repeat(nOther, withMACs(known, other, p.MACB))...)
	frames = append(frames, repeat(nOwn, withMACs(known, p.MACA, p.MACB))...)
	frames = append(frames, repeat(nBcast, withMACs(known, bcast, p.MACB))...)
	// Last, to the link's MAC and unknown to the SA map: the kernel gets
	// them, and once they are in, so is everything sent before them.
	frames = append(frames, repeat(nUnknown, withMACs(unknown, p.MACA, p.MACB))...)
	seen := espSeen(t, p.A, 0x6006, nUnknown, func() { sendFrames(t, p.B, p.IfB, frames...) })
	if seen[0x6006] != nUnknown || seen[0x5005] != 0 {
		t.Errorf("the kernel's raw ESP socket saw %d of SPI 0x6006 (want %d) and %d of 0x5005 (want 0: steered or dropped as other host)",
			seen[0x6006], nUnknown, seen[0x5005])
	}

	got := 0
	batch := make([]afxdp.Desc, 64)
	deadline := time.Now().Add(5 * time.Second)
	for got < nOwn+nBcast && time.Now().Before(deadline) {
		if err := sock.Wait(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		n := sock.Receive(batch)
		for _, desc := range batch[:n] {
			if pkt := sock.Packet(desc); bytes.Equal(pkt[:6], other) {
				t.Errorf("the socket received a frame for another host: % x", pkt[:min(len(pkt), 48)])
			}
		}
		sock.Release(batch[:n])
		got += n
	}
	if got != nOwn+nBcast {
		t.Errorf("AF_XDP socket received %d frames, want %d (own MAC and broadcast)", got, nOwn+nBcast)
	}
	c := waitCounters(t, d.Maps, map[Reason]uint64{ReasonPassOtherHost: nOther, ReasonSteered: nOwn + nBcast, ReasonNoState: nUnknown})
	if c[ReasonPassOtherHost] != nOther || c[ReasonSteered] != nOwn+nBcast || c[ReasonNoState] != nUnknown || c[ReasonSteerFallback] != 0 {
		t.Errorf("pass-otherhost %d steered %d no-state %d steer-fallback %d, want %d %d %d 0",
			c[ReasonPassOtherHost], c[ReasonSteered], c[ReasonNoState], c[ReasonSteerFallback], nOther, nOwn+nBcast, nUnknown)
	}
	if _, sc, err := d.LookupSA(key); err != nil || sc.Packets != nOwn+nBcast {
		t.Errorf("SA counters %+v %v, want %d packets (frames for another host are not the SA's)", sc, err, nOwn+nBcast)
	}

	// The link's address changes: the next Attach (reusing the pins)
	// writes the new one, and the old one is another host's.
	newMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x77}
	p.A.MustRun(t, "ip", "link", "set", "dev", p.IfA, "address", newMAC.String())
	err := p.A.Do(func() error {
		again, err := Attach(p.IfA, ModeAuto, opts)
		if err != nil {
			return err
		}
		return again.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.LinkAddr(); err != nil || !bytes.Equal(got, newMAC) {
		t.Fatalf("link address after the change and Attach: %v %v, want %s", got, err, newMAC)
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	frames = append(repeat(3, withMACs(known, p.MACA, p.MACB)), repeat(4, withMACs(known, newMAC, p.MACB))...)
	sendFrames(t, p.B, p.IfB, frames...)
	c = waitCounters(t, d.Maps, map[Reason]uint64{ReasonPassOtherHost: before[ReasonPassOtherHost] + 3, ReasonSteered: before[ReasonSteered] + 4})
	if c[ReasonPassOtherHost]-before[ReasonPassOtherHost] != 3 || c[ReasonSteered]-before[ReasonSteered] != 4 {
		t.Errorf("after the change: pass-otherhost +%d steered +%d, want +3 (old MAC) and +4 (new MAC)",
			c[ReasonPassOtherHost]-before[ReasonPassOtherHost], c[ReasonSteered]-before[ReasonSteered])
	}
}

// TestSetLinkAddr checks what SetLinkAddr accepts and that LinkAddr reads
// it back; nil and all zero both turn the check off.
func TestSetLinkAddr(t *testing.T) {
	c := newTestClassifier(t)
	if got, err := c.LinkAddr(); err != nil || got != nil {
		t.Fatalf("fresh LinkAddr = %v %v, want nil (no check)", got, err)
	}
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	if err := c.SetLinkAddr(mac); err != nil {
		t.Fatal(err)
	}
	if got, err := c.LinkAddr(); err != nil || !bytes.Equal(got, mac) {
		t.Fatalf("LinkAddr = %v %v, want %s", got, err, mac)
	}
	for _, bad := range []net.HardwareAddr{
		{1, 2, 3, 4, 5},                   // too short
		make(net.HardwareAddr, 20),        // InfiniBand's length
		{0x01, 0x00, 0x5e, 0x00, 0x00, 1}, // multicast
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		if err := c.SetLinkAddr(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SetLinkAddr(%v) = %v, want ErrInvalidConfig", bad, err)
		}
	}
	if got, _ := c.LinkAddr(); !bytes.Equal(got, mac) {
		t.Errorf("a refused address changed the map: %v", got)
	}
	for _, off := range []net.HardwareAddr{nil, {0, 0, 0, 0, 0, 0}} {
		if err := c.SetLinkAddr(mac); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLinkAddr(off); err != nil {
			t.Fatal(err)
		}
		if got, err := c.LinkAddr(); err != nil || got != nil {
			t.Errorf("after SetLinkAddr(%v): %v %v, want nil", off, got, err)
		}
	}
}
