package capabilities

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// fullHardware is a hardware view with every class and every algorithm of
// the table, as Probe would build it with a complete program and engine.
func fullHardware() Offload {
	var algs []string
	for _, a := range ipsec.Algorithms {
		algs = append(algs, a.Name)
	}
	return Offload{
		Encapsulation: NDIS_ENCAPSULATION_IEEE_802_3 | NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q,
		IPv4:          true, IPv6: true,
		AH: true, ESP: true, AhEspCombined: true,
		Transport: true, Tunnel: true,
		Send: true, Receive: true,
		ESN:               true,
		UdpEsp:            IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT | IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL,
		Algorithms:        algs,
		SaOffloadCapacity: 1024,
	}
}

func allOn() Parameters {
	p := DefaultParameters()
	for n := range p.Algorithms {
		p.Algorithms[n] = SwitchOn
	}
	return p
}

func TestV2FromFullHardware(t *testing.T) {
	v := fullHardware().V2()
	want := IPsecOffloadV2{
		Encapsulation: 0x6, IPv6Supported: true, Ah: true, Esp: true, AhEspCombined: true,
		Transport: true, Tunnel: true, ExtendedSequenceNumbers: true, UdpEsp: 0x3,
		// MD5 SHA-1 SHA-256 GMAC-128/192/256
		AuthenticationAlgorithms: 0x3f,
		// NONE DES 3DES GCM-128/192/256 CBC-128/192/256: every bit
		EncryptionAlgorithms: 0x1ff,
		SaOffloadCapacity:    1024,
	}
	if v != want {
		t.Fatalf("V2:\n got %+v\nwant %+v", v, want)
	}
	got := fullHardware().BeyondNDIS()
	wantBeyond := []string{"rfc7539esp(chacha20,poly1305)", "rfc3686(ctr(aes))", "hmac(sha384)", "hmac(sha512)"}
	if strings.Join(got, " ") != strings.Join(wantBeyond, " ") {
		t.Errorf("BeyondNDIS = %v, want %v", got, wantBeyond)
	}
}

func TestV1FromHardware(t *testing.T) {
	o := fullHardware()
	v := o.V1()
	b, _ := v.MarshalBinary()
	// Supported: 802.3|P_AND_Q, AH+ESP combined, no transport-tunnel
	// combined, no options, UDP-ESP transport+tunnel (0x10|0x20).
	// IPv4AH: Md5 Sha_1 Transport Tunnel Send Receive = 0x555.
	// IPv4ESP: Des TripleDes NullEsp Transport Tunnel Send Receive = 0x5551.
	want := "06000000" + "01000000" + "00000000" + "00000000" + "30000000" + "55050000" + "51550000"
	if got := hexs(b); got != want {
		t.Fatalf("V1 hex\n got %s\nwant %s", got, want)
	}
	o.IPv4 = false
	if o.V1() != (IPsecOffloadV1{}) {
		t.Fatal("V1 of an IPv6-only view is not empty")
	}
	// ESP only: Md5/Sha_1 still set (they cover ESP integrity), AH modes not.
	o = fullHardware()
	o.AH = false
	v = o.V1()
	if v.IPv4AH != (IPsecOffloadV1AH{Md5: 1, Sha_1: 1}) {
		t.Fatalf("ESP-only IPv4AH = %+v", v.IPv4AH)
	}
}

func hexs(b []byte) string {
	const d = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(d[c>>4])
		s.WriteByte(d[c&15])
	}
	return s.String()
}

func TestCurrentIsIntersection(t *testing.T) {
	st := State{Hardware: fullHardware(), Parameters: DefaultParameters()}
	cur := st.Current()
	for _, a := range ipsec.Algorithms {
		if cur.HasAlgorithm(a.Name) == a.Insecure {
			t.Errorf("default current: %s present=%v, insecure=%v", a.Name, cur.HasAlgorithm(a.Name), a.Insecure)
		}
	}
	if got := cur.XDPConfig(); got != (XDPConfig{ESP: true, AH: true, UDPESP: true, IPv4: true, IPv6: true}) {
		t.Errorf("XDPConfig = %+v", got)
	}

	cases := []struct {
		name   string
		update Parameters
		want   XDPConfig
	}{
		{"IPsecV2 ESP only", Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED}, XDPConfig{ESP: true, UDPESP: true, IPv4: true, IPv6: true}},
		{"IPsecV2 AH only", Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_ENABLED}, XDPConfig{AH: true, IPv4: true, IPv6: true}},
		{"IPsecV2 disabled", Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED}, XDPConfig{}},
		{"IPsecV1 disabled", Parameters{IPsecV1: NDIS_OFFLOAD_PARAMETERS_IPSECV1_DISABLED}, XDPConfig{ESP: true, AH: true, UDPESP: true, IPv6: true}},
		{"IPsecV1 ESP only", Parameters{IPsecV1: NDIS_OFFLOAD_PARAMETERS_IPSECV1_ESP_ENABLED}, XDPConfig{ESP: true, UDPESP: true, IPv4: true, IPv6: true}},
		{"UdpEsp off", Parameters{UdpEsp: SwitchOff}, XDPConfig{ESP: true, AH: true, IPv4: true, IPv6: true}},
		// IPsecV2IPv4 governs only IPv4-only hardware: no effect here.
		{"IPsecV2IPv4 disabled on dual-stack", Parameters{IPsecV2IPv4: NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED}, XDPConfig{ESP: true, AH: true, UDPESP: true, IPv4: true, IPv6: true}},
	}
	for _, c := range cases {
		p, err := DefaultParameters().Update(c.update)
		if err != nil {
			t.Fatal(err)
		}
		st := State{Hardware: fullHardware(), Parameters: p}
		if got := st.Current().XDPConfig(); got != c.want {
			t.Errorf("%s: XDPConfig = %+v, want %+v", c.name, got, c.want)
		}
	}
	// IPv4-only hardware: IPsecV2IPv4 governs IPv4.
	hw := fullHardware()
	hw.IPv6 = false
	p, _ := DefaultParameters().Update(Parameters{IPsecV2IPv4: NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED})
	if cur := (State{Hardware: hw, Parameters: p}).Current(); cur.Active() {
		t.Errorf("IPv4-only hardware with IPsecV2IPv4 disabled still offloads: %+v", cur)
	}
	// The current view never exceeds the hardware view.
	hw = fullHardware()
	hw.AH = false
	if cur := (State{Hardware: hw, Parameters: allOn()}).Current(); cur.AH || cur.V2().Ah {
		t.Error("current claims AH the hardware lacks")
	}
}

func TestUpdateRejects(t *testing.T) {
	p := DefaultParameters()
	for _, u := range []Parameters{
		{IPsecV2: 5},
		{IPsecV1: 9},
		{UdpEsp: 3},
		{Algorithms: map[string]Switch{"cbc(aes-typo)": SwitchOn}},
		{Algorithms: map[string]Switch{"cbc(aes)": 7}},
	} {
		q, err := p.Update(u)
		if !errors.Is(err, ErrBadParameter) {
			t.Errorf("Update(%+v) err = %v", u, err)
		}
		if !q.Equal(p) {
			t.Errorf("failed Update changed parameters")
		}
	}
	q, err := p.Update(Parameters{Algorithms: map[string]Switch{"cbc(des)": SwitchOn, "cbc(aes)": SwitchNoChange}})
	if err != nil || q.Algorithms["cbc(des)"] != SwitchOn || q.Algorithms["cbc(aes)"] != SwitchOn || p.Algorithms["cbc(des)"] != SwitchOff {
		t.Errorf("Update algorithms: %v %v (original changed: %v)", err, q.Algorithms, p.Algorithms["cbc(des)"])
	}
	for s, want := range map[string]uint8{"esp": 3, "NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_ENABLED": 2, "4": 4, "disabled": 1} {
		if v, err := ParseIPsecParameter(s); err != nil || v != want {
			t.Errorf("ParseIPsecParameter(%q) = %d, %v", s, v, err)
		}
	}
	if _, err := ParseIPsecParameter("espp"); err == nil {
		t.Error("ParseIPsecParameter accepted a typo")
	}
}

func saESP(dst string) *ipsec.SAParams {
	return &ipsec.SAParams{
		Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, SPI: 0x1000,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr(dst),
		AEAD: ipsec.AlgorithmKey{Name: "rfc4106(gcm(aes))", ICVBits: 128},
	}
}

func TestAllowsNamesTheBlocker(t *testing.T) {
	base := State{Hardware: fullHardware(), Parameters: DefaultParameters(), Linux: Linux{MaxReplayWindow: 4096}}
	if err := base.Allows(saESP("192.0.2.2"), SAInbound); err != nil {
		t.Fatalf("plain ESP refused: %v", err)
	}
	with := func(u Parameters) State {
		s := base.Clone()
		p, err := s.Parameters.Update(u)
		if err != nil {
			t.Fatal(err)
		}
		s.Parameters = p
		return s
	}
	cases := []struct {
		name  string
		st    State
		sa    func() *ipsec.SAParams
		dir   SADirection
		wants []string
	}{
		{"IPv6 off", with(Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED}),
			func() *ipsec.SAParams { return saESP("2001:db8::2") }, SAInbound,
			[]string{"IPv6Supported", "parameter IPsecV2 = NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED"}},
		{"AH off", with(Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED}),
			func() *ipsec.SAParams {
				p := saESP("192.0.2.2")
				p.Proto, p.AEAD, p.Auth = ipsec.ProtoAH, ipsec.AlgorithmKey{}, ipsec.AlgorithmKey{Name: "hmac(sha256)", ICVBits: 128}
				return p
			}, SAOutbound,
			[]string{"an AH SA", "Ah", "IPsecV2 = NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED"}},
		{"DES off by default", base,
			func() *ipsec.SAParams {
				p := saESP("192.0.2.2")
				p.AEAD, p.Enc, p.Auth = ipsec.AlgorithmKey{}, ipsec.AlgorithmKey{Name: "cbc(des)"}, ipsec.AlgorithmKey{Name: "hmac(sha1)", ICVBits: 96}
				return p
			}, SAInbound,
			[]string{"cbc(des)", "IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC", "Algorithms[cbc(des)] = off"}},
		{"UDP-ESP off", with(Parameters{UdpEsp: SwitchOff}),
			func() *ipsec.SAParams { p := saESP("192.0.2.2"); p.EncapSrcPort, p.EncapDstPort = 4500, 4500; return p }, SAInbound,
			[]string{"UdpEsp = off", "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL"}},
		{"replay window", base,
			func() *ipsec.SAParams { p := saESP("192.0.2.2"); p.ReplayWindow = 8192; return p }, SAInbound,
			[]string{"maxReplayWindow", "at most 4096"}},
	}
	for _, c := range cases {
		err := c.st.Allows(c.sa(), c.dir)
		var be *BlockedError
		if !errors.Is(err, ErrNotOffloadable) || !errors.As(err, &be) {
			t.Errorf("%s: err = %v, want a BlockedError", c.name, err)
			continue
		}
		for _, w := range c.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
	}
	// Hardware-side refusals name no parameter.
	hw := base.Clone()
	hw.Hardware.ESN = false
	p := saESP("192.0.2.2")
	p.ESN = true
	if err := hw.Allows(p, SAInbound); err == nil || !strings.Contains(err.Error(), "hardware capability ExtendedSequenceNumbers") {
		t.Errorf("ESN: %v", err)
	}
	hw = base.Clone()
	hw.Hardware.Algorithms = hw.Hardware.Algorithms[1:] // rfc4106 failed its self-test
	hw.Linux.SelfTest = map[string]string{"rfc4106(gcm(aes))": "vector 2: tag mismatch"}
	if err := hw.Allows(saESP("192.0.2.2"), SAInbound); err == nil || !strings.Contains(err.Error(), "self-test failed: vector 2") {
		t.Errorf("self-test: %v", err)
	}
	if err := base.CheckCapacity(1024); !errors.Is(err, ErrNotOffloadable) || !strings.Contains(err.Error(), "1024 of 1024") {
		t.Errorf("capacity: %v", err)
	}
	if err := base.CheckCapacity(1023); err != nil {
		t.Errorf("capacity 1023/1024: %v", err)
	}
}
