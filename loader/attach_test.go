package loader

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// testPinRoot returns a bpffs directory of this test alone (interface
// names from testutil repeat across tests) and checks at the end that
// Detach left nothing there.
func testPinRoot(t *testing.T) string {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	root := fmt.Sprintf("/sys/fs/bpf/xdpsec-test-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	t.Cleanup(func() {
		if _, err := os.Stat(root); err == nil {
			t.Errorf("pins left behind under %s", root)
			os.RemoveAll(root)
		}
	})
	return root
}

func quietOptions(root string) Options {
	return Options{PinRoot: root, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// xdpOn returns the id of the XDP program on ifname inside ns (0 = none).
func xdpOn(t *testing.T, ns *testutil.NS, ifname string) (id uint32) {
	t.Helper()
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			id = x.ProgId
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sendIP sends payloads as raw IP protocol proto from ns to dst.
func sendIP(t *testing.T, ns *testutil.NS, proto int, dst netip.Addr, payloads ...[]byte) {
	t.Helper()
	network := fmt.Sprintf("ip4:%d", proto)
	if dst.Is6() {
		network = fmt.Sprintf("ip6:%d", proto)
	}
	err := ns.Do(func() error {
		c, err := net.ListenPacket(network, "")
		if err != nil {
			return err
		}
		defer c.Close()
		for _, p := range payloads {
			if _, err := c.WriteTo(p, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send %s from %s: %v", network, ns.Name, err)
	}
}

// sendUDP sends payloads from ns to dst:port.
func sendUDP(t *testing.T, ns *testutil.NS, dst netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	err := ns.Do(func() error {
		// Unconnected, so an ICMP port unreachable never fails (and
		// swallows) a later send.
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, p := range payloads {
			if _, err := c.WriteToUDPAddrPort(p, dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send udp from %s: %v", ns.Name, err)
	}
}

// detachAtEnd makes sure a failing test does not leave xdpsec attached or
// pinned (the namespace goes anyway; the pins would not).
func detachAtEnd(t *testing.T, ns *testutil.NS, ifname string, opts Options) {
	t.Cleanup(func() { ns.Do(func() error { Detach(ifname, opts); return nil }) })
}

func repeat(n int, p []byte) [][]byte { return slices.Repeat([][]byte{p}, n) }

// waitCounters polls until every wanted counter has reached its value
// (veth delivers asynchronously), at most 5 s, then returns the counters.
func waitCounters(t *testing.T, m *Maps, want map[Reason]uint64) Counters {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := m.Counters()
		if err != nil {
			t.Fatal(err)
		}
		done := true
		for r, n := range want {
			if got[r] < n {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listenIn opens a packet socket in ns and counts what arrives, to prove
// that passed packets reach the kernel's stack. It reads until want
// packets came (then 200 ms more, to see any extra) or 10 s passed, so a
// loaded machine's pauses between the sends cannot end the count early.
type receiver struct {
	c net.PacketConn
	n chan int
}

func listenIn(t *testing.T, ns *testutil.NS, network, addr string, want int) *receiver {
	t.Helper()
	r := &receiver{n: make(chan int, 1)}
	err := ns.Do(func() (err error) {
		r.c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	t.Cleanup(func() { r.c.Close() })
	go func() {
		buf := make([]byte, 2048)
		n := 0
		deadline := time.Now().Add(10 * time.Second)
		for {
			if n >= want {
				deadline = time.Now().Add(200 * time.Millisecond)
				want = math.MaxInt
			}
			r.c.SetReadDeadline(deadline)
			if _, _, err := r.c.ReadFrom(buf); err != nil {
				break
			}
			n++
		}
		r.n <- n
	}()
	return r
}

func TestAttachTrafficCounters(t *testing.T) {
	testutil.RequireRoot(t)
	var created []string
	for _, mode := range []Mode{ModeNative, ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			p := testutil.NewVethPair(t)
			created = append(created, p.A.Name, p.B.Name)
			root := testPinRoot(t)
			opts := quietOptions(root)
			detachAtEnd(t, p.A, p.IfA, opts)

			var d *Datapath
			err := p.A.Do(func() (err error) {
				d, err = Attach(p.IfA, mode, opts)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			sas := map[SAKey]SA{
				{SPI: 0x1001, Dst: p.IPv4A, Proto: ProtoESP}: {ID: 1},
				{SPI: 0x2001, Dst: p.IPv4A, Proto: ProtoAH}:  {ID: 2},
				{SPI: 0x3001, Dst: p.IPv4A, Proto: ProtoESP}: {ID: 3, EncapPort: 4500},
				{SPI: 0x1002, Dst: p.IPv6A, Proto: ProtoESP}: {ID: 4},
			}
			for k, sa := range sas {
				if err := d.PutSA(k, sa); err != nil {
					t.Fatal(err)
				}
			}
			var st Status
			if err := p.A.Do(func() (err error) { st, err = d.Status(); return err }); err != nil {
				t.Fatal(err)
			}
			objFeatures, _ := ObjectFeatures()
			if st.Mode != mode || st.ProgramID == 0 || st.LinkID == 0 || st.PinPath != filepath.Join(root, p.IfA) ||
				st.Features != objFeatures || st.SAs != len(sas) || uint32(st.ProgramID) != xdpOn(t, p.A, p.IfA) {
				t.Fatalf("status %+v", st)
			}

			espIn := listenIn(t, p.A, "ip4:50", "0.0.0.0", 30)
			udpIn := listenIn(t, p.A, "udp4", ":4500", 15+4+3)
			ikeIn := listenIn(t, p.A, "udp4", ":500", 2)

			sendIP(t, p.B, 50, p.IPv4A, repeat(20, esp(0x1001, 48))...) // steer-fallback
			sendIP(t, p.B, 50, p.IPv4A, repeat(10, esp(0xbad, 48))...)  // no-state
			sendIP(t, p.B, 50, p.IPv4A, repeat(5, esp(0, 48))...)       // malformed-esp, dropped
			sendIP(t, p.B, 51, p.IPv4A, repeat(4, ah(4, 0x2001, 12, -1, bytesOf(0x45, 20)))...)
			sendIP(t, p.B, 50, p.IPv6A, repeat(6, esp(0x1002, 48))...) // steer-fallback (v6)
			natt := netip.AddrPortFrom(p.IPv4A, 4500)
			sendUDP(t, p.B, natt, repeat(15, esp(0x3001, 48))...)                           // steer-fallback
			sendUDP(t, p.B, natt, repeat(4, append(make([]byte, 4), bytesOf(1, 40)...))...) // IKE marker
			sendUDP(t, p.B, natt, repeat(3, []byte{0xff})...)                               // keepalive
			sendUDP(t, p.B, netip.AddrPortFrom(p.IPv4A, 500), repeat(2, bytesOf(0x21, 28))...)

			want := map[Reason]uint64{
				ReasonSteerFallback: 20 + 4 + 6 + 15,
				ReasonNoState:       10,
				ReasonMalformedESP:  5,
				ReasonPassIKE:       4 + 2,
				ReasonPassKeepalive: 3,
			}
			got := waitCounters(t, d.Maps, want)
			for r, n := range want {
				if got[r] != n {
					t.Errorf("%s = %d, want %d", ReasonName(r), got[r], n)
				}
			}
			for _, r := range []Reason{ReasonSteered, ReasonMalformedAH, ReasonMalformedUDP, ReasonStateMismatch, ReasonDisabledClass} {
				if got[r] != 0 {
					t.Errorf("%s = %d, want 0", ReasonName(r), got[r])
				}
			}
			if got[ReasonPassOther] == 0 { // ARP / neighbour discovery at least
				t.Errorf("pass-other = 0: the peer's ARP and ND went uncounted")
			}
			_, c, err := d.LookupSA(SAKey{SPI: 0x1001, Dst: p.IPv4A, Proto: ProtoESP})
			if err != nil || c.Packets != 20 || c.Bytes != 20*(20+8+48) {
				t.Errorf("SA 0x1001 counters %+v (%v), want 20 packets of 76 bytes", c, err)
			}
			// Passed packets reached the stack; dropped ones did not.
			if n := <-espIn.n; n != 30 {
				t.Errorf("raw ESP socket got %d packets, want 30 (20 fallback + 10 no-state, not the 5 malformed)", n)
			}
			if n := <-udpIn.n; n != 15+4+3 {
				t.Errorf("UDP 4500 socket got %d datagrams, want 22", n)
			}
			if n := <-ikeIn.n; n != 2 {
				t.Errorf("UDP 500 socket got %d datagrams, want 2", n)
			}

			if err := p.A.Do(func() error { return d.Detach(opts) }); err != nil {
				t.Fatal(err)
			}
			if id := xdpOn(t, p.A, p.IfA); id != 0 {
				t.Errorf("program %d still attached after Detach", id)
			}
			if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin root %s still there after Detach: %v", root, err)
			}
		})
	}
	for _, leaked := range testutil.Leaked() {
		if slices.Contains(created, leaked) {
			t.Errorf("namespace %s left behind", leaked)
		}
	}
}

// The child half of TestAttachSurvivesSIGKILL: attach, say so, wait to be
// killed (at most a minute).
func TestAttachChildProcess(t *testing.T) {
	ifname, root := os.Getenv("XDPSEC_CHILD_IF"), os.Getenv("XDPSEC_CHILD_PINROOT")
	if ifname == "" {
		t.Skip("helper for TestAttachSurvivesSIGKILL")
	}
	// Enter the namespace on this thread only; the mount namespace (and so
	// the bpffs the parent sees) stays the same, unlike `ip netns exec`.
	runtime.LockOSThread()
	ns, err := netns.GetFromName(os.Getenv("XDPSEC_CHILD_NETNS"))
	if err == nil {
		err = netns.Set(ns)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	d, err := Attach(ifname, ModeNative, quietOptions(root))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := d.PutSA(SAKey{SPI: 0x3001, Dst: netip.MustParseAddr("192.0.2.1"), Proto: ProtoESP}, SA{ID: 9, EncapPort: 4500}); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("attached")
	time.Sleep(time.Minute)
	os.Exit(2)
}

func TestAttachSurvivesSIGKILL(t *testing.T) {
	p := testutil.NewVethPair(t)
	root := testPinRoot(t)
	opts := quietOptions(root)
	detachAtEnd(t, p.A, p.IfA, opts)

	cmd := exec.Command(os.Args[0], "-test.run=^TestAttachChildProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "XDPSEC_CHILD_IF="+p.IfA, "XDPSEC_CHILD_PINROOT="+root, "XDPSEC_CHILD_NETNS="+p.A.Name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	timeout := time.After(30 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("child exited before attaching")
			}
			if strings.HasPrefix(l, "error:") {
				t.Fatalf("child: %s", l)
			}
			if l == "attached" {
				break wait
			}
		case <-timeout:
			t.Fatal("child did not attach within 30 s")
		}
	}
	progID := xdpOn(t, p.A, p.IfA)
	if progID == 0 {
		t.Fatal("child reported attached but the link has no XDP program")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, by PID
		t.Fatal(err)
	}
	cmd.Wait()

	// The pinned link keeps the program; the link still carries traffic.
	if id := xdpOn(t, p.A, p.IfA); id != progID {
		t.Fatalf("after SIGKILL the link runs program %d, want %d", id, progID)
	}
	p.B.MustRun(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", p.IPv4A.String())

	var d *Datapath
	if err := p.A.Do(func() (err error) { d, err = Open(p.IfA, opts); return err }); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sendUDP(t, p.B, netip.AddrPortFrom(p.IPv4A, 4500), repeat(7, esp(0x3001, 32))...)
	got := waitCounters(t, d.Maps, map[Reason]uint64{ReasonSteerFallback: 7})
	if got[ReasonSteerFallback] != 7 || got[ReasonPassOther] == 0 {
		t.Errorf("counters after restart: steer-fallback %d (want 7), pass-other %d (want ICMP > 0)", got[ReasonSteerFallback], got[ReasonPassOther])
	}
	// A fresh Attach reuses the pinned program rather than stacking another.
	var again *Datapath
	if err := p.A.Do(func() (err error) { again, err = Attach(p.IfA, ModeAuto, opts); return err }); err != nil {
		t.Fatal(err)
	}
	if sa, _, err := again.LookupSA(SAKey{SPI: 0x3001, Dst: p.IPv4A, Proto: ProtoESP}); err != nil || sa.ID != 9 {
		t.Errorf("SA programmed by the killed process: %+v %v", sa, err)
	}
	if err := p.A.Do(func() error { return again.Detach(opts) }); err != nil {
		t.Fatal(err)
	}
	if id := xdpOn(t, p.A, p.IfA); id != 0 {
		t.Errorf("program %d still attached after Detach", id)
	}
}

// loadForeign loads a minimal XDP_PASS program that is not xdpsec's.
func loadForeign(t *testing.T) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "foreign_pass",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func TestAttachErrors(t *testing.T) {
	p := testutil.NewVethPair(t)
	root := testPinRoot(t)
	opts := quietOptions(root)
	detachAtEnd(t, p.A, p.IfA, opts)
	inA := func(fn func() error) error { return p.A.Do(fn) }

	t.Run("missing link", func(t *testing.T) {
		err := inA(func() error { _, err := Attach("nosuch0", ModeAuto, opts); return err })
		if !errors.Is(err, ErrLinkNotFound) || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Attach(nosuch0) = %v, want ErrLinkNotFound naming it", err)
		}
		err = inA(func() error { return Detach("nosuch0", opts) })
		if !errors.Is(err, ErrLinkNotFound) {
			t.Errorf("Detach(nosuch0) = %v, want ErrLinkNotFound", err)
		}
	})
	t.Run("not attached", func(t *testing.T) {
		if err := inA(func() error { return Detach(p.IfA, opts) }); !errors.Is(err, ErrNotAttached) {
			t.Errorf("Detach = %v, want ErrNotAttached", err)
		}
		if err := inA(func() error { _, err := Open(p.IfA, opts); return err }); !errors.Is(err, ErrNotAttached) {
			t.Errorf("Open = %v, want ErrNotAttached", err)
		}
	})
	t.Run("foreign program", func(t *testing.T) {
		foreign := loadForeign(t)
		err := inA(func() error {
			l, err := netlink.LinkByName(p.IfA)
			if err != nil {
				return err
			}
			return netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), 1<<1) // XDP_FLAGS_SKB_MODE
		})
		if err != nil {
			t.Fatal(err)
		}
		info, _ := foreign.Info()
		fid, _ := info.ID()
		err = inA(func() error { _, err := Attach(p.IfA, ModeAuto, opts); return err })
		if !errors.Is(err, ErrForeignProgram) || !strings.Contains(err.Error(), "foreign_pass") {
			t.Errorf("Attach over a foreign program = %v, want ErrForeignProgram naming it", err)
		}
		if id := xdpOn(t, p.A, p.IfA); id != uint32(fid) {
			t.Errorf("foreign program %d replaced by %d without force", fid, id)
		}
		if _, err := os.Stat(filepath.Join(root, p.IfA)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused Attach left pins: %v", err)
		}
		force := opts
		force.Force = true
		var d *Datapath
		if err := inA(func() (err error) { d, err = Attach(p.IfA, ModeNative, force); return err }); err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if id := xdpOn(t, p.A, p.IfA); id == 0 || id == uint32(fid) {
			t.Errorf("after forced Attach the link runs %d", id)
		}
		// An explicit, different mode on an attached link is refused.
		err = inA(func() error { _, err := Attach(p.IfA, ModeGeneric, opts); return err })
		if err == nil || !strings.Contains(err.Error(), "already attached in native mode") {
			t.Errorf("Attach generic over native = %v", err)
		}
		if err := inA(func() error { return d.Detach(opts) }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("netlink attach", func(t *testing.T) {
		nlOpts := opts
		nlOpts.Netlink = true
		var d *Datapath
		if err := inA(func() (err error) { d, err = Attach(p.IfA, ModeGeneric, nlOpts); return err }); err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		var st Status
		if err := inA(func() (err error) { st, err = d.Status(); return err }); err != nil {
			t.Fatal(err)
		}
		if st.Mode != ModeGeneric || st.LinkID != 0 || st.ProgramID == 0 {
			t.Errorf("netlink status %+v", st)
		}
		var re *Datapath
		if err := inA(func() (err error) { re, err = Open(p.IfA, opts); return err }); err != nil {
			t.Fatalf("re-open netlink attachment: %v", err)
		}
		re.Close()
		if err := inA(func() error { return Detach(p.IfA, opts) }); err != nil {
			t.Fatal(err)
		}
		if id := xdpOn(t, p.A, p.IfA); id != 0 {
			t.Errorf("program %d still attached after Detach", id)
		}
	})
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"auto": ModeAuto, "native": ModeNative, "drv": ModeNative, "generic": ModeGeneric, "SKB": ModeGeneric} {
		if got, err := ParseMode(s); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseMode("hw"); err == nil || !strings.Contains(err.Error(), "want auto, native or generic") {
		t.Errorf("ParseMode(hw) = %v", err)
	}
}

// Loopback has no native XDP: auto mode must fall back to generic and say
// why in the log.
func TestAttachAutoFallsBackToGeneric(t *testing.T) {
	ns := testutil.NewNS(t, "autofallback")
	var logged strings.Builder
	opts := quietOptions(testPinRoot(t))
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	detachAtEnd(t, ns, "lo", opts)

	var st Status
	err := ns.Do(func() error {
		if _, err := Attach("lo", ModeNative, opts); err == nil || !strings.Contains(err.Error(), "native mode") {
			return fmt.Errorf("native attach on loopback = %v, want a native-mode error", err)
		}
		d, err := Attach("lo", ModeAuto, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		if st, err = d.Status(); err != nil {
			return err
		}
		return d.Detach(opts)
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != ModeGeneric {
		t.Errorf("auto mode on loopback attached %s, want generic", st.Mode)
	}
	if !strings.Contains(logged.String(), "falling back to generic") || !strings.Contains(logged.String(), "lo") {
		t.Errorf("fallback not logged with its reason: %q", logged.String())
	}
}

// Pins whose link no longer drives the interface (someone detached the
// bpf_link behind xdpsec's back) are stale: Open says so, and Attach
// replaces them, keeping the pinned SAs.
func TestAttachOverStalePins(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)
	key := SAKey{SPI: 0x7007, Dst: p.IPv4A, Proto: ProtoESP}
	err := p.A.Do(func() error {
		d, err := Attach(p.IfA, ModeNative, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.PutSA(key, SA{ID: 77}); err != nil {
			return err
		}
		if err := d.lnk.Detach(); err != nil { // BPF_LINK_DETACH, pins stay
			return err
		}
		if _, err := Open(p.IfA, opts); !errors.Is(err, ErrNotAttached) || !strings.Contains(err.Error(), "stale") {
			return fmt.Errorf("Open over stale pins = %v, want ErrNotAttached saying stale", err)
		}
		again, err := Attach(p.IfA, ModeNative, opts)
		if err != nil {
			return fmt.Errorf("Attach over stale pins: %w", err)
		}
		defer again.Close()
		if sa, _, err := again.LookupSA(key); err != nil || sa.ID != 77 {
			return fmt.Errorf("pinned SA after re-attach: %+v %v", sa, err)
		}
		return again.Detach(opts)
	})
	if err != nil {
		t.Fatal(err)
	}
	if id := xdpOn(t, p.A, p.IfA); id != 0 {
		t.Errorf("program %d still attached after Detach", id)
	}
}

// An xdpsec upgrade restarts over the pins of the previous build: Attach
// must swap the program the old build left attached for its own (the old
// one would keep running whatever this build fixed), keep the pinned maps
// and their SAs, and leave an up-to-date program alone.
func TestAttachReplacesAnotherBuildsProgram(t *testing.T) {
	for _, viaNetlink := range []bool{false, true} {
		t.Run(fmt.Sprintf("netlink=%v", viaNetlink), func(t *testing.T) {
			p := testutil.NewVethPair(t)
			opts := quietOptions(testPinRoot(t))
			opts.Netlink = viaNetlink
			var logged strings.Builder
			opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			detachAtEnd(t, p.A, p.IfA, opts)
			key := SAKey{SPI: 0x7117, Dst: p.IPv4A, Proto: ProtoESP}

			// "Another build": any other XDP program in xdpsec's place.
			other := anotherBuildsProgram(t)
			otherInfo, _ := other.Info()
			otherID, _ := otherInfo.ID()

			var want string // the tag of this build's program
			err := p.A.Do(func() error {
				d, err := Attach(p.IfA, ModeNative, opts)
				if err != nil {
					return err
				}
				info, err := d.prog.Info()
				if err != nil {
					return err
				}
				want = info.Tag
				if err := d.PutSA(key, SA{ID: 71}); err != nil {
					return err
				}
				if err := d.SetConfig(DefaultConfig()); err != nil {
					return err
				}
				// Put the other program in place the way that build would
				// have attached it, pins included.
				if viaNetlink {
					l, err := netlink.LinkByName(p.IfA)
					if err != nil {
						return err
					}
					if err := netlink.LinkSetXdpFdWithFlags(l, other.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
						return err
					}
					os.Remove(filepath.Join(d.dir, pinProg))
					if err := other.Pin(filepath.Join(d.dir, pinProg)); err != nil {
						return err
					}
				} else if err := d.lnk.Update(other); err != nil {
					return err
				}
				return d.Close()
			})
			if err != nil {
				t.Fatal(err)
			}
			if id := xdpOn(t, p.A, p.IfA); ebpf.ProgramID(id) != otherID {
				t.Fatalf("setup: program %d attached, want the other build's %d", id, otherID)
			}

			var firstID uint32
			err = p.A.Do(func() error {
				d, err := Attach(p.IfA, ModeAuto, opts)
				if err != nil {
					return fmt.Errorf("Attach over another build's program: %w", err)
				}
				defer d.Close()
				if sa, _, err := d.LookupSA(key); err != nil || sa.ID != 71 {
					return fmt.Errorf("pinned SA after the swap: %+v %v", sa, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			firstID = xdpOn(t, p.A, p.IfA)
			prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(firstID))
			if err != nil {
				t.Fatal(err)
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil {
				t.Fatal(err)
			}
			if info.Tag != want || ebpf.ProgramID(firstID) == otherID {
				t.Errorf("after Attach: program %d tag %s, want this build's tag %s", firstID, info.Tag, want)
			}
			if !strings.Contains(logged.String(), "replaced the attached xdpsec program") || !strings.Contains(logged.String(), otherInfo.Tag) {
				t.Errorf("the swap was not logged with the old tag %s: %q", otherInfo.Tag, logged.String())
			}

			// The swapped-in program runs on the kept maps: ESP of the
			// pinned SA is classified by it.
			d, err := openIn(t, p.A, p.IfA, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			before, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			sendIP(t, p.B, 50, p.IPv4A, esp(0x7117, 32))
			got := waitCounters(t, d.Maps, map[Reason]uint64{ReasonSteerFallback: before[ReasonSteerFallback] + 1})
			if got[ReasonSteerFallback] != before[ReasonSteerFallback]+1 {
				t.Errorf("steer-fallback moved by %d, want 1", got[ReasonSteerFallback]-before[ReasonSteerFallback])
			}

			// Up to date: a further Attach changes nothing.
			logged.Reset()
			err = p.A.Do(func() error {
				d, err := Attach(p.IfA, ModeAuto, opts)
				if err != nil {
					return err
				}
				return d.Close()
			})
			if err != nil {
				t.Fatal(err)
			}
			if id := xdpOn(t, p.A, p.IfA); id != firstID || strings.Contains(logged.String(), "replaced") {
				t.Errorf("re-Attach of the same build: program %d (was %d), log %q", id, firstID, logged.String())
			}
			if err := p.A.Do(func() error { return Detach(p.IfA, opts) }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// anotherBuildsProgram stands in for the program of another xdpsec build:
// an XDP_PASS program of the same name (closed at the test's end).
func anotherBuildsProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdpsec_classify", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// openIn opens xdpsec on ifname inside ns.
func openIn(t *testing.T, ns *testutil.NS, ifname string, opts Options) (d *Datapath, err error) {
	t.Helper()
	err = ns.Do(func() error {
		d, err = Open(ifname, opts)
		return err
	})
	return d, err
}

// Pins are keyed by interface name. An interface renamed while attached
// keeps xdpsec (the program follows the ifindex): Open, Attach and Detach
// under the new name find the pins (moved on first use) instead of calling
// xdpsec's own program foreign. An interface deleted while attached takes
// the program with it; Detach by the old name removes the pins.
func TestInterfaceRenamedOrDeletedWhileAttached(t *testing.T) {
	for _, viaNetlink := range []bool{false, true} {
		t.Run(fmt.Sprintf("netlink=%v", viaNetlink), func(t *testing.T) {
			p := testutil.NewVethPair(t)
			root := testPinRoot(t)
			opts := quietOptions(root)
			opts.Netlink = viaNetlink
			renamed := p.IfA + "n"
			detachAtEnd(t, p.A, p.IfA, opts)
			detachAtEnd(t, p.A, renamed, opts)
			key := SAKey{SPI: 0x7227, Dst: p.IPv4A, Proto: ProtoESP}

			err := p.A.Do(func() error {
				d, err := Attach(p.IfA, ModeNative, opts)
				if err != nil {
					return err
				}
				if err := d.PutSA(key, SA{ID: 72}); err != nil {
					return err
				}
				d.Close()
				l, err := netlink.LinkByName(p.IfA)
				if err != nil {
					return err
				}
				// A link must be down to be renamed.
				if err := netlink.LinkSetDown(l); err != nil {
					return err
				}
				if err := netlink.LinkSetName(l, renamed); err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}

				o, err := Open(renamed, opts)
				if err != nil {
					return fmt.Errorf("Open under the new name: %w", err)
				}
				sa, _, err := o.LookupSA(key)
				o.Close()
				if err != nil || sa.ID != 72 {
					return fmt.Errorf("pinned SA under the new name: %+v %v", sa, err)
				}
				if _, err := os.Stat(filepath.Join(root, p.IfA)); !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("old pin directory still there: %v", err)
				}
				a, err := Attach(renamed, ModeAuto, opts)
				if err != nil {
					return fmt.Errorf("Attach under the new name: %w", err)
				}
				a.Close()
				return Detach(renamed, opts)
			})
			if err != nil {
				t.Fatal(err)
			}
			if id := xdpOn(t, p.A, renamed); id != 0 {
				t.Errorf("program %d still attached after Detach under the new name", id)
			}

			// Deleted while attached: the kernel detaches; the pins stay
			// until Detach by the old name removes them.
			err = p.A.Do(func() error {
				l, err := netlink.LinkByName(renamed)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetDown(l); err != nil {
					return err
				}
				if err := netlink.LinkSetName(l, p.IfA); err != nil {
					return err
				}
				d, err := Attach(p.IfA, ModeNative, opts)
				if err != nil {
					return err
				}
				d.Close()
				if err := netlink.LinkDel(l); err != nil {
					return err
				}
				if _, err := Open(p.IfA, opts); !errors.Is(err, ErrLinkNotFound) {
					return fmt.Errorf("Open of a deleted interface = %v, want ErrLinkNotFound", err)
				}
				if err := Detach(p.IfA, opts); err != nil {
					return fmt.Errorf("Detach of a deleted interface with pins: %w", err)
				}
				if err := Detach(p.IfA, opts); !errors.Is(err, ErrLinkNotFound) {
					return fmt.Errorf("second Detach = %v, want ErrLinkNotFound", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The XSK map is indexed by rx queue: by default Attach sizes it to the
// link's rx queue count when that exceeds DefaultQueues (a queue beyond the
// map would never be steered), and warns when a given size is too small.
func TestAttachSizesXSKMapToRxQueues(t *testing.T) {
	ns := testutil.NewNS(t, "xskq")
	const rxq = DefaultQueues + 44
	err := ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: "mq0", NumRxQueues: rxq, NumTxQueues: rxq},
			PeerName:  "mq1",
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.MustRun(t, "ip", "link", "set", "mq0", "up")
	ns.MustRun(t, "ip", "link", "set", "mq1", "up")
	for _, given := range []uint32{0, 8} {
		opts := quietOptions(testPinRoot(t))
		opts.Queues = given
		var logged strings.Builder
		opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
		detachAtEnd(t, ns, "mq0", opts)
		err := ns.Do(func() error {
			d, err := Attach("mq0", ModeNative, opts)
			if err != nil {
				return err
			}
			defer d.Detach(opts)
			want := uint32(rxq)
			if given != 0 {
				want = given
			}
			if got := d.xsks.MaxEntries(); got != want {
				return fmt.Errorf("Queues %d: XSK map has %d slots, want %d", given, got, want)
			}
			if err := d.SetXSK(want, 0); err == nil || !strings.Contains(err.Error(), "slots") {
				return fmt.Errorf("SetXSK beyond the map = %v, want an error naming the slots", err)
			}
			// A packet of a known SA on a queue beyond the map, and on one
			// inside it without a socket: both fall back to the kernel.
			key := SAKey{SPI: 0x7337, Dst: netip.MustParseAddr(dst4), Proto: ProtoESP}
			if err := d.PutSA(key, SA{ID: 73}); err != nil {
				return err
			}
			l, err := netlink.LinkByName("mq0")
			if err != nil {
				return err
			}
			queues := []uint32{want - 1}
			if want < rxq {
				queues = append(queues, want+5)
			}
			for _, q := range queues {
				before, err := d.Counters()
				if err != nil {
					return err
				}
				// struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
				// To the link's own MAC: a frame for another host would pass as pass-otherhost.
				frame := withMACs(v4{dst: dst4, proto: 50, payload: esp(0x7337, 32)}.frame(), l.Attrs().HardwareAddr, macSrc)
				ctx := [6]uint32{1: uint32(len(frame)), 3: uint32(l.Attrs().Index), 4: q}
				ret, err := d.prog.Run(&ebpf.RunOptions{Data: frame, Context: ctx})
				if err != nil {
					return fmt.Errorf("run on rx queue %d: %w", q, err)
				}
				after, err := d.Counters()
				if err != nil {
					return err
				}
				if ret != 2 || after[ReasonSteerFallback]-before[ReasonSteerFallback] != 1 {
					var moved []string
					for r := range NumReasons {
						if d := after[r] - before[r]; d != 0 {
							moved = append(moved, fmt.Sprintf("%s +%d", ReasonName(Reason(r)), d))
						}
					}
					return fmt.Errorf("rx queue %d of %d slots: action %d, counters %v; want XDP_PASS, steer-fallback +1", q, want, ret, moved)
				}
			}
			warned := strings.Contains(logged.String(), "fewer slots than the link has rx queues")
			if warned != (given != 0) {
				return fmt.Errorf("Queues %d: warning logged %v: %q", given, warned, logged.String())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// bpffs: Attach mounts it on /sys/fs/bpf when nothing is mounted there (as
// iproute2 and bpftool do), and refuses a PinRoot on another filesystem
// with one line saying how to fix it, leaving nothing behind.
func TestAttachBPFFS(t *testing.T) {
	p := testutil.NewVethPair(t)
	t.Run("not mounted", func(t *testing.T) {
		var logged strings.Builder
		opts := quietOptions(testPinRoot(t))
		opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
		errc := make(chan error, 1)
		go func() {
			// A private mount namespace on a thread of its own, where
			// /sys/fs/bpf is unmounted; the thread is never unlocked, so
			// the namespace dies with it (and the pins in it).
			runtime.LockOSThread()
			errc <- func() error {
				if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
					return fmt.Errorf("unshare mount namespace: %w", err)
				}
				if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
					return fmt.Errorf("make mounts private: %w", err)
				}
				for i := 0; i < 8 && unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH) == nil; i++ {
				}
				var st unix.Statfs_t
				if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type == unix.BPF_FS_MAGIC {
					return fmt.Errorf("setup: /sys/fs/bpf still bpffs (%v)", err)
				}
				if err := netns.Set(p.A.Handle()); err != nil {
					return err
				}
				d, err := Attach(p.IfA, ModeNative, opts)
				if err != nil {
					return fmt.Errorf("Attach without bpffs mounted: %w", err)
				}
				if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
					return fmt.Errorf("Attach did not mount bpffs (%v)", err)
				}
				if !strings.Contains(logged.String(), "mounted the BPF filesystem") {
					return fmt.Errorf("mount not logged: %q", logged.String())
				}
				return d.Detach(opts)
			}()
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if id := xdpOn(t, p.A, p.IfA); id != 0 {
			t.Errorf("program %d left attached", id)
		}
	})
	t.Run("pin root elsewhere", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "pins")
		opts := quietOptions(root)
		err := p.A.Do(func() error { _, err := Attach(p.IfA, ModeNative, opts); return err })
		if !errors.Is(err, ErrNoBPF) || !strings.Contains(err.Error(), "not on a bpf filesystem") ||
			!strings.Contains(err.Error(), "mount -t bpf") || strings.Contains(err.Error(), "\n") {
			t.Errorf("Attach with PinRoot on tmpfs = %v, want one line wrapping ErrNoBPF with the mount command", err)
		}
		if id := xdpOn(t, p.A, p.IfA); id != 0 {
			t.Errorf("refused Attach left program %d", id)
		}
		if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused Attach left %s: %v", root, err)
		}
	})
}

// Native mode on a driver without native XDP (loopback) fails with one line
// saying so and what to use instead, through a bpf_link or netlink alike.
func TestAttachNativeUnsupportedSaysWhy(t *testing.T) {
	ns := testutil.NewNS(t, "nonative")
	opts := quietOptions(testPinRoot(t))
	for _, viaNetlink := range []bool{false, true} {
		opts.Netlink = viaNetlink
		err := ns.Do(func() error { _, err := Attach("lo", ModeNative, opts); return err })
		if err == nil || !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "the driver of lo has no native XDP: use generic mode") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("netlink=%v: native on lo = %v, want one line saying the driver has no native XDP", viaNetlink, err)
		}
		if id := xdpOn(t, ns, "lo"); id != 0 {
			t.Errorf("netlink=%v: failed Attach left program %d", viaNetlink, id)
		}
	}
}

// Force replaces a foreign program; if xdpsec then fails to attach, the
// foreign program goes back (a forced attach must not leave the link with
// neither). Native mode on loopback fails after the removal.
func TestForcedAttachFailureRestoresForeignProgram(t *testing.T) {
	ns := testutil.NewNS(t, "restore")
	opts := quietOptions(testPinRoot(t))
	opts.Force = true
	foreign := loadForeign(t)
	info, _ := foreign.Info()
	fid, _ := info.ID()
	err := ns.Do(func() error {
		l, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), nl.XDP_FLAGS_SKB_MODE)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error { _, err := Attach("lo", ModeNative, opts); return err })
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("forced native Attach on lo = %v, want the native failure", err)
	}
	if id := xdpOn(t, ns, "lo"); ebpf.ProgramID(id) != fid {
		t.Errorf("after the failed forced Attach lo runs program %d, want the foreign %d back", id, fid)
	}
	ns.Do(func() error {
		l, err := netlink.LinkByName("lo")
		if err == nil {
			netlink.LinkSetXdpFdWithFlags(l, -1, nl.XDP_FLAGS_SKB_MODE)
		}
		return nil
	})
}
