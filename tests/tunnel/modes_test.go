package tunnel

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

// shape is one SA/policy shape the two-daemon tests run: a mode, the
// protocols of the policy's templates (innermost first), and the UDP port of
// ESP-in-UDP (0: none).
type shape struct {
	mode   string // "tunnel" or "transport"
	protos []string
	encap  uint16
}

// Published test keys (never real): an AES-GCM-128 key+salt per direction
// and an HMAC-SHA-256 key per direction.
const (
	gcmAB  = "0x0102030405060708090a0b0c0d0e0f1011121314"
	gcmBA  = "0x2122232425262728292a2b2c2d2e2f3031323334"
	hmacAB = "0x4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60"
	hmacBA = "0x6162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80"
)

// spiOf gives each SA of a shape its SPI: proto (esp 0x1, ah 0x2), family
// (v4 0x0, v6 0x1), direction (A->B 0x1, B->A 0x2), as 0xPF0D.
func spiOf(proto string, v6 bool, ab bool) string {
	p, f, d := 1, 0, 2
	if proto == "ah" {
		p = 2
	}
	if v6 {
		f = 1
	}
	if ab {
		d = 1
	}
	return fmt.Sprintf("0x%x%x0%x", p, f, d)
}

// side holds one end's addresses in the shape's terms.
type side struct {
	outer4, outer6 string // link addresses (testutil.VethPair)
	inner4, inner6 string // TUN addresses in tunnel mode
}

var (
	sideA = side{"192.0.2.1", "2001:db8::1", "198.51.100.1", "2001:db8:a::1"}
	sideB = side{"192.0.2.2", "2001:db8::2", "198.51.100.2", "2001:db8:b::1"}
)

// inner returns the addresses the traffic runs between: the TUN addresses
// in tunnel mode, the link addresses in transport mode.
func (sh shape) inner(s side, v6 bool) string {
	switch {
	case sh.mode == "transport" && v6:
		return s.outer6
	case sh.mode == "transport":
		return s.outer4
	case v6:
		return s.inner6
	}
	return s.inner4
}

// saLine is the SA from src to dst for proto.
func (sh shape) saLine(proto string, from, to side, v6, ab bool) string {
	src, dst := from.outer4, to.outer4
	orig := "0.0.0.0"
	if v6 {
		src, dst, orig = from.outer6, to.outer6, "::"
	}
	l := fmt.Sprintf("ip xfrm state add src %s dst %s proto %s spi %s mode %s ", src, dst, proto, spiOf(proto, v6, ab), sh.mode)
	switch {
	case proto == "ah" && ab:
		l += "auth-trunc 'hmac(sha256)' " + hmacAB + " 128"
	case proto == "ah":
		l += "auth-trunc 'hmac(sha256)' " + hmacBA + " 128"
	case ab:
		l += "aead 'rfc4106(gcm(aes))' " + gcmAB + " 128"
	default:
		l += "aead 'rfc4106(gcm(aes))' " + gcmBA + " 128"
	}
	if sh.encap != 0 && proto == "esp" {
		l += fmt.Sprintf(" encap espinudp %d %d %s", sh.encap, sh.encap, orig)
	}
	return l
}

// policyLine is the policy for traffic from -> to in direction dir.
func (sh shape) policyLine(from, to side, v6 bool, dir string) string {
	bits, osrc, odst := "/32", from.outer4, to.outer4
	if v6 {
		bits, osrc, odst = "/128", from.outer6, to.outer6
	}
	l := fmt.Sprintf("ip xfrm policy add src %s%s dst %s%s dir %s", sh.inner(from, v6), bits, sh.inner(to, v6), bits, dir)
	for _, p := range sh.protos {
		l += fmt.Sprintf(" tmpl src %s dst %s proto %s mode %s", osrc, odst, p, sh.mode)
	}
	return l
}

// configs writes the two ends' config and key files (keys chmod 600) with
// extra lines appended to both configs.
func (sh shape) configs(t *testing.T, ifA, ifB string, extra ...string) (confA, confB xdpsectest.Config) {
	t.Helper()
	write := func(me, peer side, ifname, name string) xdpsectest.Config {
		var conf, keys []string
		conf = append(conf, "link "+ifname, "tun xdpsec0", "keys "+name+".keys")
		if sh.mode == "tunnel" {
			conf = append(conf, "address "+me.inner4+"/32", "address "+me.inner6+"/128")
		}
		if sh.mode == "transport" {
			// The transport policies select every protocol to the peer,
			// which would tunnel IKE and NAT-T keepalives too: let them go
			// in the clear, as an IKE daemon's socket policy does.
			for _, port := range []string{"500", "4500"} {
				conf = append(conf, fmt.Sprintf("ip xfrm policy add src %s/32 dst %s/32 proto udp dport %s dir out action allow", me.outer4, peer.outer4, port),
					fmt.Sprintf("ip xfrm policy add src %s/128 dst %s/128 proto udp dport %s dir out action allow", me.outer6, peer.outer6, port))
			}
		}
		for _, v6 := range []bool{false, true} {
			conf = append(conf, sh.policyLine(me, peer, v6, "out"), sh.policyLine(peer, me, v6, "in"))
			for _, p := range sh.protos {
				meIsA := me == sideA
				keys = append(keys, sh.saLine(p, me, peer, v6, meIsA), sh.saLine(p, peer, me, v6, !meIsA))
			}
		}
		conf = append(conf, extra...)
		return xdpsectest.WriteConfig(t, t.TempDir(), name, conf, keys)
	}
	return write(sideA, sideB, ifA, "a"), write(sideB, sideA, ifB, "b")
}

// saKeyOf is the SA's key as Stats names it.
func saKeyOf(proto, spi, dst string) string {
	var n uint32
	fmt.Sscanf(spi, "0x%x", &n)
	return fmt.Sprintf("%s spi 0x%08x dst %s", proto, n, dst)
}

// runShape starts two daemons with sh and carries ping both ways, TCP and
// counted UDP over IPv4 and IPv6 through them; every protocol's SA on B
// must have counted exactly the UDP datagrams A sent, and nothing may have
// been dropped as bad, replayed or unknown.
func runShape(t *testing.T, sh shape, extra ...string) (*testutil.VethPair, *xdpsectest.Daemon, *xdpsectest.Daemon) {
	t.Helper()
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)
	confA, confB := sh.configs(t, p.IfA, p.IfB, append([]string{"pin " + pin}, extra...)...)
	a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{})
	b := xdpsectest.StartDaemon(t, p.B, confB, xdpsectest.Options{})
	for _, v6 := range []bool{false, true} {
		xdpsectest.Ping(t, p.A, sh.inner(sideB, v6), 3, a, b)
		xdpsectest.Ping(t, p.B, sh.inner(sideA, v6), 3, a, b)
	}
	tcpTransfer(t, p, sh.inner(sideB, false), 512<<10)
	tcpTransfer(t, p, "["+sh.inner(sideB, true)+"]", 256<<10)
	for _, v6 := range []bool{false, true} {
		const n = 100
		a0, b0 := a.SettledStats(), b.SettledStats()
		dst := sh.inner(sideB, v6)
		if v6 {
			dst = "[" + dst + "]"
		}
		got := udpBurst(t, p, dst+":4789", n)
		a1, b1 := a.SettledStats(), b.SettledStats()
		if got != n {
			t.Errorf("UDP to %s: %d of %d datagrams arrived%s", dst, got, n, xdpsectest.Dump(a, b))
		}
		if d := a1.Counters["out-protected"] - a0.Counters["out-protected"]; d != n {
			t.Errorf("UDP to %s: A out-protected grew by %d, want %d", dst, d, n)
		}
		if d := b1.Counters["in-delivered"] - b0.Counters["in-delivered"]; d != n {
			t.Errorf("UDP to %s: B in-delivered grew by %d, want %d", dst, d, n)
		}
		outerB := sideB.outer4
		if v6 {
			outerB = sideB.outer6
		}
		for _, proto := range sh.protos {
			key := saKeyOf(proto, spiOf(proto, v6, true), outerB)
			sa0, sa1 := xdpsectest.SAStats(b0, key), xdpsectest.SAStats(b1, key)
			if sa1.Key == "" {
				t.Fatalf("B has no SA %q: %+v", key, b1.SAs)
			}
			if d := sa1.Packets - sa0.Packets; d != n {
				t.Errorf("B SA %s packets grew by %d, want %d", key, d, n)
			}
		}
		// The outermost SA is the one XDP matched and steered.
		outer := sh.protos[len(sh.protos)-1]
		key := saKeyOf(outer, spiOf(outer, v6, true), outerB)
		if d := xdpsectest.SAStats(b1, key).XDPPackets - xdpsectest.SAStats(b0, key).XDPPackets; d != n {
			t.Errorf("B XDP matched %d packets of SA %s, want %d", d, key, n)
		}
		for _, st := range []engine.Stats{a1, b1} {
			for _, bad := range []string{"bad-icv", "replay", "malformed", "no-state"} {
				if st.InVerdicts[bad] != 0 {
					t.Errorf("inbound %s = %d, want 0%s", bad, st.InVerdicts[bad], xdpsectest.Dump(a, b))
				}
			}
		}
	}
	return p, a, b
}

func TestTransportMode(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("esp-transport", func(t *testing.T) {
		p, _, _ := runShape(t, shape{mode: "transport", protos: []string{"esp"}})
		names = []string{p.A.Name, p.B.Name}
		// The peer's address is routed into the TUN (the local stack's
		// packets reach the engine), while the outer packets leave on
		// the veth: the kernel's own route still names the TUN.
		if out := p.A.MustRun(t, "ip", "route", "get", "192.0.2.2"); !strings.Contains(out, "dev xdpsec0") {
			t.Errorf("ip route get 192.0.2.2 in A: %s, want dev xdpsec0", out)
		}
	})
	testutil.CheckRemoved(t, names...)
}

func TestNATTraversal(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	for _, tc := range []struct {
		name string
		sh   shape
	}{
		{"tunnel-4500", shape{mode: "tunnel", protos: []string{"esp"}, encap: 4500}},
		{"transport-4500", shape{mode: "transport", protos: []string{"esp"}, encap: 4500}},
		{"tunnel-extra-port-4600", shape{mode: "tunnel", protos: []string{"esp"}, encap: 4600}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, a, b := runShape(t, tc.sh)
			names = append(names, p.A.Name, p.B.Name)
			if tc.sh.encap == 4500 {
				ikeAndKeepaliveReachKernel(t, p, a, b)
			}
		})
	}
	testutil.CheckRemoved(t, names...)
}

// ikeAndKeepaliveReachKernel: with ESP-in-UDP steered to the engine, a
// NAT-T keepalive (one 0xff byte, RFC 3948 §2.3) and an IKE message behind
// the non-ESP marker (four zero bytes, RFC 3948 §2.2) sent from B to A's
// UDP port 4500 still reach a UDP socket there: XDP passes them to the
// kernel (counted pass-keepalive and pass-ike) and the engine never sees
// them.
func ikeAndKeepaliveReachKernel(t *testing.T, p *testutil.VethPair, a, b *xdpsectest.Daemon) {
	t.Helper()
	var rc *net.UDPConn
	if err := p.A.Do(func() (err error) {
		rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(sideA.outer4), Port: 4500})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var sc *net.UDPConn
	if err := p.B.Do(func() (err error) {
		sc, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(sideB.outer4), Port: 4500},
			&net.UDPAddr{IP: net.ParseIP(sideA.outer4), Port: 4500})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	a0 := a.Stats()
	ike := append([]byte{0, 0, 0, 0}, []byte("IKE_SA_INIT from a test, 28 bytes of header follow")...)
	for _, msg := range [][]byte{{0xff}, ike} {
		if _, err := sc.Write(msg); err != nil {
			t.Fatal(err)
		}
		rc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 2048)
		n, err := rc.Read(buf)
		if err != nil {
			t.Fatalf("UDP socket on %s:4500 in A got nothing for a %d-byte NAT-T message: %v%s", sideA.outer4, len(msg), err, xdpsectest.Dump(a, b))
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("UDP socket on 4500 got %x, want %x", buf[:n], msg)
		}
	}
	a1 := a.Stats()
	for _, r := range []string{"pass-keepalive", "pass-ike"} {
		if d := a1.Links[0].Reasons[r] - a0.Links[0].Reasons[r]; d != 1 {
			t.Errorf("A XDP %s grew by %d, want 1", r, d)
		}
	}
	if d := a1.Counters["in-frames"] - a0.Counters["in-frames"]; d != 0 {
		t.Errorf("the engine took %d frames of IKE/keepalive traffic, want 0", d)
	}
}

func TestAH(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	for _, tc := range []struct {
		name string
		sh   shape
	}{
		{"ah-tunnel", shape{mode: "tunnel", protos: []string{"ah"}}},
		{"ah-transport", shape{mode: "transport", protos: []string{"ah"}}},
		// RFC 4301 bundle: ESP inside, AH outside.
		{"esp-ah-bundle-transport", shape{mode: "transport", protos: []string{"esp", "ah"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, _ := runShape(t, tc.sh)
			names = append(names, p.A.Name, p.B.Name)
		})
	}
	testutil.CheckRemoved(t, names...)
}
