//go:build linux

// Package caps_test proves that what the capabilities views claim is what
// xdpsec does: every algorithm and shape the current view claims survives a
// real encrypt/decrypt round trip through userspace/ipsec, everything it
// does not claim is refused by State.Allows, and switching a class off
// changes the real XDP program's verdict from steer to pass.
package caps_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/capabilities/probe"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// runningEngine is what a running engine declares (capabilities.Engine is
// filled by the engine, which this test does not start). Every other input
// of the probe is real: self-tests, the loaded XDP program, its SA map.
var runningEngine = capabilities.Engine{
	Send: true, Receive: true, Transport: true, Tunnel: true,
	AhEspCombined: true, ESN: true, MaxReplayWindow: 1024, Queues: 1,
	AFXDPMode: capabilities.AFXDPCopy,
}

// probed returns a hub over the state of the loaded (never attached)
// program with a running engine, and the Classifier-independent release.
func probed(t *testing.T, selfTest func(string) error) *capabilities.Hub {
	t.Helper()
	testutil.RequireRoot(t)
	in, release, err := probe.Loaded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	if selfTest != nil {
		in.SelfTest = selfTest
	}
	eng := runningEngine
	in.Engine = &eng
	st, err := capabilities.Probe(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Linux.Limits) != 0 {
		t.Fatalf("probe with every part present still has limits: %q", st.Linux.Limits)
	}
	return capabilities.NewHub(st)
}

var (
	v4a = netip.MustParseAddr("192.0.2.1")
	v4b = netip.MustParseAddr("192.0.2.2")
	v6a = netip.MustParseAddr("2001:db8::1")
	v6b = netip.MustParseAddr("2001:db8::2")
)

// udpPacket is an IPv4 or IPv6 UDP datagram between the test addresses.
func udpPacket(v6 bool, n int) []byte {
	udp := make([]byte, 8+n)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	for i := range n {
		udp[8+i] = byte(i*31 + 7)
	}
	if v6 {
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(udp)))
		h[6], h[7] = 17, 64
		copy(h[8:], v6a.AsSlice())
		copy(h[24:], v6b.AsSlice())
		return append(h, udp...)
	}
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
	copy(h[12:], v4a.AsSlice())
	copy(h[16:], v4b.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, udp...)
}

func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*29
	}
	return k
}

// slot returns the algorithm with its largest key and longest ICV.
func slot(name string) ipsec.AlgorithmKey {
	for _, a := range ipsec.Algorithms {
		if a.Name == name {
			k := ipsec.AlgorithmKey{Name: name, Key: key(a.KeySizes[len(a.KeySizes)-1], byte(len(name)))}
			if len(a.ICVSizes) > 0 {
				k.ICVBits = a.ICVSizes[len(a.ICVSizes)-1] * 8
			}
			return k
		}
	}
	panic("no algorithm " + name)
}

func kind(name string) ipsec.Kind {
	for _, a := range ipsec.Algorithms {
		if a.Name == name {
			return a.Kind
		}
	}
	panic("no algorithm " + name)
}

// partner picks the first algorithm of kind k the view claims, so an SA
// exercising one algorithm is otherwise made of claimed parts.
func partner(cur capabilities.Offload, k ipsec.Kind) string {
	for _, n := range cur.Algorithms {
		if kind(n) == k {
			return n
		}
	}
	return ""
}

// saFor builds an SA using algorithm name in proto, with claimed partners.
func saFor(cur capabilities.Offload, name string, proto ipsec.Proto) ipsec.SAParams {
	p := ipsec.SAParams{Proto: proto, Mode: ipsec.ModeTransport, SPI: 0x1000, Src: v4a, Dst: v4b, ReplayWindow: 64}
	switch kind(name) {
	case ipsec.KindAEAD:
		p.AEAD = slot(name)
	case ipsec.KindCipher:
		p.Enc = slot(name)
		if n := partner(cur, ipsec.KindIntegrity); n != "" {
			p.Auth = slot(n)
		} else {
			p.Auth = slot("hmac(sha256)")
		}
	case ipsec.KindIntegrity:
		p.Auth = slot(name)
		if proto == ipsec.ProtoESP {
			if n := partner(cur, ipsec.KindCipher); n != "" {
				p.Enc = slot(n)
			} else {
				p.Enc = slot("cbc(aes)")
			}
		}
	}
	return p
}

// roundTrip encrypts a packet with one SA and decrypts it with another
// built from the same parameters, as two peers would.
func roundTrip(t *testing.T, p ipsec.SAParams, v6 bool) {
	t.Helper()
	out, err := ipsec.NewSA(p)
	if err != nil {
		t.Fatalf("NewSA(out): %v", err)
	}
	in, err := ipsec.NewSA(p)
	if err != nil {
		t.Fatalf("NewSA(in): %v", err)
	}
	pkt := udpPacket(v6, 333)
	frame := make([]byte, 4096)
	const off = 256
	copy(frame[off:], pkt)
	o, n, err := out.Encrypt(frame, off, len(pkt))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if bytes.Contains(frame[o:o+n], pkt[len(pkt)-64:]) && p.AEAD.Name != "rfc4543(gcm(aes))" && p.Enc.Name != "ecb(cipher_null)" && p.Proto == ipsec.ProtoESP {
		t.Fatalf("ESP with %s/%s left the payload in clear", p.AEAD.Name, p.Enc.Name)
	}
	r := in.Decrypt(frame, o, n)
	if r.Verdict != ipsec.VerdictOK {
		t.Fatalf("Decrypt: verdict %v", r.Verdict)
	}
	got := frame[r.Off : r.Off+r.N]
	// Transport mode rewrites the outer header's checksum and length; the
	// payload after the IP header must be intact.
	hl := 20
	if v6 {
		hl = 40
	}
	if len(got) != len(pkt) || !bytes.Equal(got[hl:], pkt[hl:]) {
		t.Fatalf("round trip changed the packet: %d bytes in, %d out", len(pkt), len(got))
	}
}

// checkClaims is the heart of the proof: claims of the current view are
// reality, and nothing unclaimed passes State.Allows.
func checkClaims(t *testing.T, st capabilities.State) (claimed, refused int) {
	t.Helper()
	cur := st.Current()
	for _, a := range ipsec.Algorithms {
		protos := []ipsec.Proto{ipsec.ProtoESP}
		if a.Kind == ipsec.KindIntegrity {
			protos = append(protos, ipsec.ProtoAH)
		}
		for _, proto := range protos {
			p := saFor(cur, a.Name, proto)
			err := st.Allows(&p, capabilities.SAInbound)
			protoOn := (proto == ipsec.ProtoESP && cur.ESP) || (proto == ipsec.ProtoAH && cur.AH)
			unclaimedPartner := ""
			for _, other := range []string{p.AEAD.Name, p.Enc.Name, p.Auth.Name} {
				if other != "" && other != a.Name && !cur.HasAlgorithm(other) {
					unclaimedPartner = other
				}
			}
			if unclaimedPartner != "" && cur.HasAlgorithm(a.Name) {
				// No claimed partner to pair it with (AH may still use
				// it): such an SA must be refused for the partner.
				if err == nil {
					t.Errorf("%s over %s with unclaimed %s accepted", a.Name, proto, unclaimedPartner)
				}
				continue
			}
			if !cur.HasAlgorithm(a.Name) || !protoOn {
				var be *capabilities.BlockedError
				if !errors.As(err, &be) || !errors.Is(err, capabilities.ErrNotOffloadable) {
					t.Errorf("%s over %s is not claimed but Allows says %v", a.Name, proto, err)
				}
				refused++
				continue
			}
			if err != nil {
				t.Errorf("%s over %s is claimed but refused: %v", a.Name, proto, err)
				continue
			}
			claimed++
			// Every claimed shape with this algorithm: both families,
			// both modes, ESN, and ESP in UDP.
			for _, v6 := range []bool{false, true} {
				if (v6 && !cur.IPv6) || (!v6 && !cur.IPv4) {
					continue
				}
				for _, mode := range []ipsec.Mode{ipsec.ModeTransport, ipsec.ModeTunnel} {
					if (mode == ipsec.ModeTunnel && !cur.Tunnel) || (mode == ipsec.ModeTransport && !cur.Transport) {
						continue
					}
					variants := []func(*ipsec.SAParams){func(*ipsec.SAParams) {}}
					if cur.ESN {
						variants = append(variants, func(q *ipsec.SAParams) { q.ESN = true })
					}
					if proto == ipsec.ProtoESP && cur.UdpEsp != 0 {
						variants = append(variants, func(q *ipsec.SAParams) { q.EncapSrcPort, q.EncapDstPort = 4500, 4500 })
					}
					for i, variant := range variants {
						q := p
						q.Mode = mode
						if v6 {
							q.Src, q.Dst = v6a, v6b
						}
						variant(&q)
						t.Run(fmt.Sprintf("%s/%s/%s/v6=%v/%d", a.Name, proto, mode, v6, i), func(t *testing.T) {
							if err := st.Allows(&q, capabilities.SAInbound); err != nil {
								t.Fatalf("claimed shape refused: %v", err)
							}
							roundTrip(t, q, v6)
						})
					}
				}
			}
		}
	}
	return claimed, refused
}

func TestClaimsAreRealityWithDefaults(t *testing.T) {
	hub := probed(t, nil)
	st := hub.State()
	cur := st.Current()
	if !cur.ESP || !cur.AH || !cur.IPv4 || !cur.IPv6 {
		t.Fatalf("default current view lacks a class the loaded program handles: %+v", cur)
	}
	claimed, refused := checkClaims(t, st)
	// The insecure four are off by default; everything else passes its
	// self-test on any machine Go runs on.
	for _, a := range ipsec.Algorithms {
		if cur.HasAlgorithm(a.Name) == a.Insecure {
			t.Errorf("%s: claimed=%v, insecure=%v", a.Name, cur.HasAlgorithm(a.Name), a.Insecure)
		}
	}
	if claimed == 0 || refused == 0 {
		t.Fatalf("claimed %d, refused %d: the test proved nothing", claimed, refused)
	}
}

func TestClaimsAreRealityAfterSwitchingInsecureOnAndAHOff(t *testing.T) {
	hub := probed(t, nil)
	u, err := capabilities.ParseSettings([]string{"cbc(des)=on", "cbc(des3_ede)=on", "ecb(cipher_null)=on", "hmac(md5)=on", "IPsecV2=esp", "rfc3686(ctr(aes))=off"})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := hub.SetParameters(u)
	if err != nil {
		t.Fatal(err)
	}
	cur := ch.State.Current()
	if cur.AH || !cur.ESP || !cur.HasAlgorithm("cbc(des)") || cur.HasAlgorithm("rfc3686(ctr(aes))") {
		t.Fatalf("current after set: AH=%v ESP=%v algorithms=%v", cur.AH, cur.ESP, cur.Algorithms)
	}
	checkClaims(t, ch.State)
	// The refusal names the parameter that blocks it.
	p := saFor(cur, "hmac(sha256)", ipsec.ProtoAH)
	err = ch.State.Allows(&p, capabilities.SAInbound)
	var be *capabilities.BlockedError
	if !errors.As(err, &be) || !strings.Contains(be.Parameter, "IPsecV2") {
		t.Fatalf("AH SA after IPsecV2=esp: %v (want the IPsecV2 parameter named)", err)
	}
}

func TestFailedSelfTestIsNotClaimed(t *testing.T) {
	broken := "rfc7539esp(chacha20,poly1305)"
	hub := probed(t, func(name string) error {
		if name == broken {
			return errors.New("known-answer mismatch (injected)")
		}
		return probe.SelfTest(name)
	})
	st := hub.State()
	if st.Hardware.HasAlgorithm(broken) || st.Current().HasAlgorithm(broken) {
		t.Fatalf("%s failed its self-test but is claimed", broken)
	}
	if !strings.Contains(st.Linux.SelfTest[broken], "injected") {
		t.Fatalf("self-test failure not reported: %q", st.Linux.SelfTest[broken])
	}
	checkClaims(t, st)
	// A failure at run time removes it too, with an event.
	ch := hub.SelfTestFailed("cbc(aes)", errors.New("mismatch at run time"))
	if ch.Reason != capabilities.ReasonSelfTestFailure || ch.State.Current().HasAlgorithm("cbc(aes)") {
		t.Fatalf("run-time self-test failure: %v, still claimed: %v", ch.Reason, ch.State.Current().HasAlgorithm("cbc(aes)"))
	}
	checkClaims(t, ch.State)
}

func TestCapacityIsTheRealSAMap(t *testing.T) {
	hub := probed(t, nil)
	st := hub.State()
	if got := st.Hardware.V2().SaOffloadCapacity; got != loader.DefaultMaxSAs {
		t.Fatalf("SaOffloadCapacity = %d, the loader's SA map holds %d", got, loader.DefaultMaxSAs)
	}
	if err := st.CheckCapacity(loader.DefaultMaxSAs - 1); err != nil {
		t.Fatalf("one free slot refused: %v", err)
	}
	if err := st.CheckCapacity(loader.DefaultMaxSAs); !errors.Is(err, capabilities.ErrNotOffloadable) {
		t.Fatalf("a full SA map accepted one more: %v", err)
	}
}

// ether prefixes an IP packet with an Ethernet header.
func ether(ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	et := uint16(0x0800)
	if ip[0]>>4 == 6 {
		et = 0x86dd
	}
	binary.BigEndian.PutUint16(f[12:], et)
	return append(f, ip...)
}

// protect returns a real protected frame of the SA (as its peer sends it).
func protect(t *testing.T, p ipsec.SAParams, v6 bool) []byte {
	t.Helper()
	sa, err := ipsec.NewSA(p)
	if err != nil {
		t.Fatal(err)
	}
	pkt := udpPacket(v6, 100)
	frame := make([]byte, 2048)
	copy(frame[256:], pkt)
	o, n, err := sa.Encrypt(frame, 256, len(pkt))
	if err != nil {
		t.Fatal(err)
	}
	return ether(frame[o : o+n])
}

func TestSwitchingAClassOffPassesItToTheKernel(t *testing.T) {
	hub := probed(t, nil)
	c, err := loader.NewClassifier()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cur := hub.State().Current()

	esp := saFor(cur, "rfc4106(gcm(aes))", ipsec.ProtoESP)
	esp.SPI = 0x2001
	ah := saFor(cur, "hmac(sha256)", ipsec.ProtoAH)
	ah.SPI = 0x2002
	esp6 := esp
	esp6.SPI, esp6.Src, esp6.Dst = 0x2003, v6a, v6b
	natt := esp
	natt.SPI, natt.EncapSrcPort, natt.EncapDstPort = 0x2004, 4500, 4500
	type probeCase struct {
		name  string
		frame []byte
	}
	cases := []probeCase{
		{"esp", protect(t, esp, false)},
		{"ah", protect(t, ah, false)},
		{"esp6", protect(t, esp6, true)},
		{"udp-esp", protect(t, natt, false)},
	}
	for i, p := range []ipsec.SAParams{esp, ah, esp6, natt} {
		sa := loader.SA{ID: uint32(i + 1)}
		if p.EncapDstPort != 0 {
			sa.EncapPort = p.EncapDstPort
		}
		if err := c.PutSA(loader.SAKey{SPI: p.SPI, Dst: p.Dst, Proto: loader.Proto(p.Proto)}, sa); err != nil {
			t.Fatal(err)
		}
	}
	verdicts := func(st capabilities.State) map[string]loader.Result {
		t.Helper()
		if err := probe.ApplyCurrent(c.Maps, st.Current()); err != nil {
			t.Fatal(err)
		}
		out := map[string]loader.Result{}
		for _, pc := range cases {
			r, err := c.Classify(pc.frame)
			if err != nil {
				t.Fatal(err)
			}
			out[pc.name] = r
		}
		return out
	}
	steer := func(r loader.Result) bool {
		return r.Verdict == loader.VerdictSteer && r.Matched
	}
	disabled := func(r loader.Result) bool {
		return r.Verdict == loader.VerdictPass && r.Reason == loader.ReasonDisabledClass && r.Matched
	}
	// Defaults: all four are steered.
	for n, r := range verdicts(hub.State()) {
		if !steer(r) {
			t.Errorf("defaults: %s = %v, want steer", n, r)
		}
	}
	for _, step := range []struct {
		settings []string
		want     map[string]func(loader.Result) bool
	}{
		{[]string{"IPsecV2=esp"}, map[string]func(loader.Result) bool{"esp": steer, "ah": disabled, "esp6": steer, "udp-esp": steer}},
		{[]string{"IPsecV2=ah-esp", "UdpEsp=off"}, map[string]func(loader.Result) bool{"esp": steer, "ah": steer, "esp6": steer, "udp-esp": disabled}},
		{[]string{"IPsecV2=ah", "UdpEsp=on"}, map[string]func(loader.Result) bool{"esp": disabled, "ah": steer, "esp6": disabled, "udp-esp": disabled}},
		{[]string{"IPsecV2=disabled"}, map[string]func(loader.Result) bool{"esp": disabled, "ah": disabled, "esp6": disabled, "udp-esp": disabled}},
		{[]string{"IPsecV2=ah-esp"}, map[string]func(loader.Result) bool{"esp": steer, "ah": steer, "esp6": steer, "udp-esp": steer}},
	} {
		u, err := capabilities.ParseSettings(step.settings)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := hub.SetParameters(u)
		if err != nil {
			t.Fatal(err)
		}
		got := verdicts(ch.State)
		for n, ok := range step.want {
			if !ok(got[n]) {
				t.Errorf("after %v: %s = %v", step.settings, n, got[n])
			}
		}
	}
	// Engine stop: fail-open, everything goes to the kernel.
	ch := hub.EngineStopped("test stop")
	for n, r := range verdicts(ch.State) {
		if !disabled(r) {
			t.Errorf("after engine stop: %s = %v, want pass disabled-class", n, r)
		}
	}
}
