// Package tunnel runs the built xdpsec binary as a daemon in two network
// namespaces joined by a veth, with the shipped example configs, and sends
// ping, TCP and UDP through the ESP tunnel between them.
package tunnel

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

func TestMain(m *testing.M) { xdpsectest.Main(m) }

// exampleConfig writes examples/tunnel-SIDE.{conf,keys} into a fresh
// directory (the key file chmod 600, as xdpsec demands) with extra lines
// appended to the config.
func exampleConfig(t *testing.T, side string, extra ...string) xdpsectest.Config {
	t.Helper()
	name := "tunnel-" + side
	return xdpsectest.WriteConfig(t, t.TempDir(), name, append(xdpsectest.ReadExample(t, name+".conf"), extra...), xdpsectest.ReadExample(t, name+".keys"))
}

// startExampleTunnel runs the example tunnel's two daemons, extra lines
// appended to both configs, at the ends of p, with their pins on one bpffs
// of the test's own (pin), and each its own socket.
func startExampleTunnel(t *testing.T, p *testutil.VethPair, extra ...string) (pin string, a, b *xdpsectest.Daemon) {
	t.Helper()
	pin = xdpsectest.MountBPFFS(t)
	a = xdpsectest.StartDaemon(t, p.A, exampleConfig(t, "a", append([]string{"pin " + pin}, extra...)...), xdpsectest.Options{})
	b = xdpsectest.StartDaemon(t, p.B, exampleConfig(t, "b", append([]string{"pin " + pin}, extra...)...), xdpsectest.Options{})
	return pin, a, b
}

func TestTunnelTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("aes-gcm-128-tunnel", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		_, a, b := startExampleTunnel(t, p)

		xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
		xdpsectest.Ping(t, p.B, "198.51.100.1", 3, a, b)
		xdpsectest.Ping(t, p.A, "2001:db8:b::1", 3, a, b)
		xdpsectest.Ping(t, p.B, "2001:db8:a::1", 3, a, b)

		// UDP, counted exactly: the deltas of A's outbound and B's
		// inbound counters equal the datagrams sent.
		const n = 200
		a0, b0 := a.SettledStats(), b.SettledStats()
		got := udpBurst(t, p, "198.51.100.2:4789", n)
		a1, b1 := a.SettledStats(), b.SettledStats()
		if got != n {
			t.Errorf("UDP: %d of %d datagrams arrived%s", got, n, xdpsectest.Dump(a, b))
		}
		if d := a1.Counters["out-protected"] - a0.Counters["out-protected"]; d != n {
			t.Errorf("A out-protected grew by %d, want %d", d, n)
		}
		if d := b1.Counters["in-delivered"] - b0.Counters["in-delivered"]; d != n {
			t.Errorf("B in-delivered grew by %d, want %d", d, n)
		}
		key := "esp spi 0x00001001 dst 192.0.2.2"
		sa0, sa1 := xdpsectest.SAStats(b0, key), xdpsectest.SAStats(b1, key)
		if sa1.Key == "" {
			t.Fatalf("B has no SA %q: %+v", key, b1.SAs)
		}
		if d := sa1.Packets - sa0.Packets; d != n {
			t.Errorf("B SA %s packets grew by %d, want %d", key, d, n)
		}
		if d := sa1.XDPPackets - sa0.XDPPackets; d != n {
			t.Errorf("B XDP matched %d packets of SA %s, want %d", d, key, n)
		}
		if d := b1.Links[0].Reasons["steered"] - b0.Links[0].Reasons["steered"]; d != n {
			t.Errorf("B XDP steered %d, want %d", d, n)
		}
		for _, st := range []engine.Stats{a1, b1} {
			for _, bad := range []string{"bad-icv", "replay", "malformed", "no-state"} {
				if st.InVerdicts[bad] != 0 {
					t.Errorf("inbound %s = %d, want 0", bad, st.InVerdicts[bad])
				}
			}
		}
		// TCP: 2 MiB from A to B, checked by hash. After the exact UDP
		// counts: a connection's last FIN/ACK may still be on its way
		// when the next baseline is read.
		tcpTransfer(t, p, "198.51.100.2", 2<<20)
		tcpTransfer(t, p, "[2001:db8:b::1]", 1<<20)

		// Text stats and sa list never show keys.
		for _, args := range [][]string{{"stats"}, {"sa", "list"}, {"sa", "list", "-j"}} {
			out := a.MustCLI(args...)
			if strings.Contains(out, "0102030405") || strings.Contains(out, "2122232425") {
				t.Errorf("xdpsec %v printed key bytes:\n%s", args, out)
			}
		}
	})
	testutil.CheckRemoved(t, names...)
}

// tcpTransfer sends size random bytes from A to B's addr over TCP and checks
// they arrive whole.
func tcpTransfer(t *testing.T, p *testutil.VethPair, addr string, size int) {
	t.Helper()
	var ln net.Listener
	if err := p.B.Do(func() (err error) { ln, err = net.Listen("tcp", addr+":5201"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	var c net.Conn
	if err := p.A.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr+":5201", 5*time.Second); return }); err != nil {
		t.Fatalf("dial %s through the tunnel: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("TCP write to %s: %v", addr, err)
	}
	c.Close()
	r := <-res
	if r.err != nil || r.n != int64(size) || r.sum != want {
		t.Fatalf("TCP to %s: got %d of %d bytes, hash match %v, err %v", addr, r.n, size, r.sum == want, r.err)
	}
}

// udpBurst sends n datagrams from A to B's addr, paced, and returns how
// many arrived.
func udpBurst(t *testing.T, p *testutil.VethPair, addr string, n int) int {
	t.Helper()
	var rc *net.UDPConn
	if err := p.B.Do(func() error {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		rc, err = net.ListenUDP("udp", ua)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Room for the whole burst: on two busy cores the reader may not run
	// for a while, and the default buffer holds fewer than 100 datagrams.
	if err := testutil.ForceReadBuffer(rc, 4<<20); err != nil {
		t.Fatal(err)
	}
	var sc net.Conn
	if err := p.A.Do(func() (err error) { sc, err = net.Dial("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// Receive while sending: the socket buffer holds fewer than n
	// datagrams.
	got := make(chan int, 1)
	go func() {
		k := 0
		buf := make([]byte, 2048)
		for k < n {
			rc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := rc.Read(buf); err != nil {
				break
			}
			k++
		}
		got <- k
	}()
	msg := make([]byte, 1000)
	for i := 0; i < n; i++ {
		if _, err := sc.Write(msg); err != nil {
			t.Fatalf("UDP send %d: %v", i, err)
		}
		if i%20 == 19 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return <-got
}

func TestFailOpenAfterSIGKILL(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("sigkill", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		pin, a, b := startExampleTunnel(t, p, "fail-open")
		t.Cleanup(func() {
			p.A.Do(func() error { return loader.Detach(p.IfA, loader.Options{PinRoot: pin}) })
			p.B.Do(func() error { return loader.Detach(p.IfB, loader.Options{PinRoot: pin}) })
		})
		xdpsectest.Ping(t, p.A, "198.51.100.2", 2, a, b)

		// Ping from B while A's daemon dies.
		pinger := p.B.Command("ping", "-c", "20", "-i", "0.05", "198.51.100.1")
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		a.Kill()
		pinger.Wait() // fails: A cannot answer without its daemon
		// Kill returned after the exit, so A's AF_XDP socket is closed
		// and gone from the XSK map: these echoes reach A's XDP now for
		// certain (the pinger's may all have been sent before the exit
		// on a loaded machine).
		p.B.Run("ping", "-c", "3", "-i", "0.1", "-W", "1", "198.51.100.1")

		if out := p.A.MustRun(t, "ip", "link", "show", p.IfA); !strings.Contains(out, "prog/xdp") {
			t.Fatalf("XDP program gone after SIGKILL (want it pinned):\n%s", out)
		}
		var fallback uint64
		err := p.A.Do(func() error {
			d, err := loader.Open(p.IfA, loader.Options{PinRoot: pin})
			if err != nil {
				return err
			}
			defer d.Close()
			c, err := d.Counters()
			fallback = c[loader.ReasonSteerFallback]
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if fallback == 0 {
			t.Errorf("no steer-fallback counted after the daemon died")
		}
		// B's daemon lives on; a restart of A resumes steering: B's
		// echo requests reach A's new daemon and are decrypted.
		a.Restart()
		p.B.Run("ping", "-c", "5", "-i", "0.1", "-W", "1", "198.51.100.1")
		st := a.Stats()
		if st.Counters["in-delivered"] < 5 || st.Links[0].Reasons["steered"] == 0 {
			t.Errorf("restarted daemon: delivered %d, want >= 5%s", st.Counters["in-delivered"], xdpsectest.Dump(a, b))
		}
		// Its replies start again at sequence number 1 under the same
		// keys, and B's replay window rightly refuses them: a restart
		// without a rekey must move the outbound sequence numbers past
		// what the dead daemon used (IKE would rekey instead).
		if bs := b.Stats(); bs.InVerdicts["replay"] == 0 {
			t.Errorf("B accepted reused sequence numbers from the restarted A (replay 0)%s", xdpsectest.Dump(a, b))
		}
		keys, err := os.ReadFile(a.Config().Keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(keys), "\n") {
			if strings.HasPrefix(line, "ip xfrm state add src 192.0.2.1 ") {
				words := strings.Fields(strings.ReplaceAll(strings.TrimPrefix(line, "ip xfrm state add "), "'", ""))
				a.MustCLI(append(append([]string{"sa", "update"}, words...), "replay-oseq", "1000000")...)
			}
		}
		xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
		xdpsectest.Ping(t, p.B, "198.51.100.1", 3, a, b)
	})
	testutil.CheckRemoved(t, names...)
}
