//go:build linux

package caps_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/pcap"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Keys of the operator test's inbound SAs (test values, never printed by
// xdpsec: the checks below look for them in every output).
var (
	espKey = bytes.Repeat([]byte{0xa5}, 20) // AES-128 key + 4-byte salt
	ahKey  = bytes.Repeat([]byte{0x5a}, 32) // HMAC-SHA-256
)

const (
	espSPI = 0x1002
	ahSPI  = 0x2002
)

func TestMain(m *testing.M) { xdpsectest.Main(m) }

// operatorDaemon is one `xdpsec run` in namespace A of a veth pair, its
// link xa0 terminating an inbound ESP SA and an inbound AH SA from B.
type operatorDaemon struct {
	*xdpsectest.Daemon
	t *testing.T
}

// startOperatorDaemon writes the config (SAs with keys: mode 0600, as
// xdpsec demands) and starts the daemon as an operator would, through
// `ip netns exec`, its output going to a log file. The pins live on a bpffs
// of the test's own: `ip netns exec` hides /sys/fs/bpf.
func startOperatorDaemon(t *testing.T, p *testutil.VethPair) *operatorDaemon {
	t.Helper()
	dir := t.TempDir()
	lines := []string{
		"link " + p.IfA + " mode native",
		"tun xdpsec0",
		"address 198.51.100.1/32",
		"pin " + xdpsectest.MountBPFFS(t),
		fmt.Sprintf("ip xfrm state add src %s dst %s proto esp spi %#x mode tunnel aead 'rfc4106(gcm(aes))' 0x%x 128", p.IPv4B, p.IPv4A, espSPI, espKey),
		fmt.Sprintf("ip xfrm state add src %s dst %s proto ah spi %#x mode tunnel auth-trunc 'hmac(sha256)' 0x%x 128", p.IPv4B, p.IPv4A, ahSPI, ahKey),
	}
	conf := xdpsectest.WriteConfig(t, dir, "xdpsec", lines, nil)
	d := xdpsectest.StartDaemon(t, p.A, conf, xdpsectest.Options{LogFile: filepath.Join(dir, "daemon.log")})
	return &operatorDaemon{Daemon: d, t: t}
}

// cli runs `xdpsec ARGS --socket S` in the daemon's namespace and returns
// its trimmed output and whether it succeeded; output holding a key fails
// the test.
func (d *operatorDaemon) cli(args ...string) (string, bool) {
	out, err := d.CLI(args...)
	s := strings.TrimSpace(out)
	for _, k := range [][]byte{espKey, ahKey} {
		if strings.Contains(strings.ToLower(s), hex.EncodeToString(k)[:16]) {
			d.t.Errorf("xdpsec %v printed key bytes", args)
		}
	}
	return s, err == nil
}

// counters are what `xdpsec stats -j` says of the link and the two SAs.
type counters struct {
	reasons         map[string]uint64
	espXDP, ahXDP   uint64 // packets the XDP program matched to the SA
	espPkts, ahPkts uint64 // packets the engine processed for the SA
}

func (d *operatorDaemon) counters(ifname string) counters {
	d.t.Helper()
	out, ok := d.cli("stats", "-j")
	if !ok {
		d.t.Fatalf("stats -j: %s", out)
	}
	var st struct {
		Links []struct {
			Name    string            `json:"name"`
			Reasons map[string]uint64 `json:"reasons"`
		} `json:"links"`
		SAs []struct {
			Key        string `json:"key"`
			Packets    uint64 `json:"packets"`
			XDPPackets uint64 `json:"xdp_packets"`
		} `json:"sas"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		d.t.Fatalf("stats -j: %v\n%s", err, out)
	}
	var c counters
	for _, l := range st.Links {
		if l.Name == ifname {
			c.reasons = l.Reasons
		}
	}
	for _, s := range st.SAs {
		switch {
		case strings.HasPrefix(s.Key, fmt.Sprintf("esp spi 0x%08x ", espSPI)):
			c.espXDP, c.espPkts = s.XDPPackets, s.Packets
		case strings.HasPrefix(s.Key, fmt.Sprintf("ah spi 0x%08x ", ahSPI)):
			c.ahXDP, c.ahPkts = s.XDPPackets, s.Packets
		}
	}
	if c.reasons == nil {
		d.t.Fatalf("stats -j has no link %s:\n%s", ifname, out)
	}
	return c
}

// innerUDP is the tunnelled packet B's peer protects: 198.51.100.2 ->
// 198.51.100.1, UDP to the discard port.
func innerUDP(seq int) []byte {
	pkt := udpPacket(false, 64)
	copy(pkt[12:], netip.MustParseAddr("198.51.100.2").AsSlice())
	copy(pkt[16:], netip.MustParseAddr("198.51.100.1").AsSlice())
	binary.BigEndian.PutUint32(pkt[28:], uint32(seq))
	binary.BigEndian.PutUint16(pkt[10:], 0)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(pkt[26:], 0) // UDP checksum optional over IPv4
	return pkt
}

// peerSA is B's outbound twin of one of the daemon's inbound SAs.
type peerSA struct {
	name string
	sa   *ipsec.SA
}

// frames returns n real protected frames per SA, addressed from B's MAC
// to A's, in the order they are sent.
func frames(t *testing.T, p *testutil.VethPair, sas []peerSA, n int) (out [][]byte, names []string) {
	t.Helper()
	for i := range n {
		for _, s := range sas {
			pkt := innerUDP(i)
			buf := make([]byte, 2048)
			copy(buf[256:], pkt)
			o, l, err := s.sa.Encrypt(buf, 256, len(pkt))
			if err != nil {
				t.Fatal(err)
			}
			f := make([]byte, 14, 14+l)
			copy(f[0:6], p.MACA)
			copy(f[6:12], p.MACB)
			binary.BigEndian.PutUint16(f[12:], 0x0800)
			out = append(out, append(f, buf[o:o+l]...))
			names = append(names, s.name)
		}
	}
	return out, names
}

// send puts frames on B's end of the veth through an AF_PACKET socket.
func send(t *testing.T, p *testutil.VethPair, fs [][]byte) {
	t.Helper()
	err := p.B.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: p.IndexB, Halen: 6}
		copy(to.Addr[:], p.MACA)
		for _, f := range fs {
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s: %v", p.B.Name, err)
	}
}

// waitFor polls the daemon's counters until ok says yes (veth delivery and
// the engine are asynchronous), at most 5 s.
func (d *operatorDaemon) waitFor(ifname string, ok func(counters) bool) counters {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := d.counters(ifname)
		if ok(c) || time.Now().After(deadline) {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// classifyCapture runs `xdpsec classify --json` over a capture of fs with
// the daemon's two SAs and the given extra arguments, and returns the
// verdict and reason per packet.
func classifyCapture(t *testing.T, d *operatorDaemon, p *testutil.VethPair, fs [][]byte, extra ...string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "capture.pcap")
	w, err := pcap.Create(path, pcap.LinkTypeEthernet, pcap.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if err := w.WritePacket(time.Unix(1700000000, 0), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	args := []string{"classify", "--pcap", path, "--json",
		"--sa", fmt.Sprintf("src %s dst %s proto esp spi %#x", p.IPv4B, p.IPv4A, espSPI),
		"--sa", fmt.Sprintf("src %s dst %s proto ah spi %#x", p.IPv4B, p.IPv4A, ahSPI)}
	out, err := exec.Command(d.Bin(), append(args, extra...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("xdpsec %v: %v\n%s", args, err, out)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var l struct{ Verdict, Reason string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("classify line %q: %v", line, err)
		}
		got = append(got, l.Verdict+" "+l.Reason)
	}
	return got
}

// TestCapsSetSwitchesTheLiveDatapath is issue 5's "switching a class off
// changes XDP verdicts and sa add", done as an operator does it: a running
// daemon terminates an ESP and an AH SA; real protected frames from the
// peer are steered to the engine; `xdpsec caps set IPsecV2=esp` turns the
// attached program's verdict for AH into pass/disabled-class (the engine
// sees none of them; ESP stays steered), `xdpsec classify` over a capture
// of the same frames says the same, and `xdpsec sa add` of an AH SA is
// refused naming IPsecV2 — until `caps set IPsecV2=ah-esp` restores both.
func TestCapsSetSwitchesTheLiveDatapath(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	d := startOperatorDaemon(t, p)

	espSA, err := ipsec.NewSA(ipsec.SAParams{Proto: ipsec.ProtoESP, Mode: ipsec.ModeTunnel, SPI: espSPI, Src: p.IPv4B, Dst: p.IPv4A,
		AEAD: ipsec.AlgorithmKey{Name: "rfc4106(gcm(aes))", Key: espKey, ICVBits: 128}})
	if err != nil {
		t.Fatal(err)
	}
	ahSA, err := ipsec.NewSA(ipsec.SAParams{Proto: ipsec.ProtoAH, Mode: ipsec.ModeTunnel, SPI: ahSPI, Src: p.IPv4B, Dst: p.IPv4A,
		Auth: ipsec.AlgorithmKey{Name: "hmac(sha256)", Key: ahKey, ICVBits: 128}})
	if err != nil {
		t.Fatal(err)
	}
	peer := []peerSA{{"esp", espSA}, {"ah", ahSA}}
	const n = 20

	// phase sends n frames per SA and returns the counter deltas once the
	// expected ones have arrived, plus the frames (for classify).
	phase := func(wantAH string) (counters, counters, [][]byte) {
		t.Helper()
		before := d.counters(p.IfA)
		fs, _ := frames(t, p, peer, n)
		send(t, p, fs)
		after := d.waitFor(p.IfA, func(c counters) bool {
			return c.espPkts-before.espPkts >= n && c.reasons[wantAH]-before.reasons[wantAH] >= n
		})
		return before, after, fs
	}
	delta := func(b, a counters, reason string) uint64 { return a.reasons[reason] - b.reasons[reason] }
	logPhase := func(name string, b, a counters) {
		t.Logf("%s: XDP steered +%d, disabled-class +%d; engine ESP +%d, AH +%d; XDP-matched AH +%d",
			name, delta(b, a, "steered"), delta(b, a, "disabled-class"), a.espPkts-b.espPkts, a.ahPkts-b.ahPkts, a.ahXDP-b.ahXDP)
	}

	// 1. Defaults: both SAs steered, the engine verifies and decrypts both.
	if !d.currentAh() {
		t.Fatal("the current view does not claim Ah with default parameters")
	}
	b, a, _ := phase("steered")
	logPhase("defaults", b, a)
	if delta(b, a, "steered") != 2*n || a.espPkts-b.espPkts != n || a.ahPkts-b.ahPkts != n || delta(b, a, "disabled-class") != 0 {
		t.Fatalf("defaults: steered %d (want %d), engine esp %d ah %d (want %d each), disabled-class %d\nreasons %v\n%s",
			delta(b, a, "steered"), 2*n, a.espPkts-b.espPkts, a.ahPkts-b.ahPkts, n, delta(b, a, "disabled-class"), a.reasons, d.Log())
	}

	// 2. The operator switches AH off.
	if out, ok := d.cli("caps", "set", "IPsecV2=esp"); !ok {
		t.Fatalf("caps set IPsecV2=esp: %s", out)
	}
	if d.currentAh() {
		t.Error("after caps set IPsecV2=esp the current view still claims Ah")
	}
	b, a, fs := phase("disabled-class")
	logPhase("IPsecV2=esp", b, a)
	if got := delta(b, a, "disabled-class"); got != n {
		t.Errorf("IPsecV2=esp: disabled-class moved by %d, want %d (the AH frames)\nreasons %v", got, n, a.reasons)
	}
	if got := delta(b, a, "steered"); got != n {
		t.Errorf("IPsecV2=esp: steered moved by %d, want %d (the ESP frames)", got, n)
	}
	if a.ahPkts != b.ahPkts || a.espPkts-b.espPkts != n {
		t.Errorf("IPsecV2=esp: engine saw %d AH and %d ESP packets, want 0 and %d", a.ahPkts-b.ahPkts, a.espPkts-b.espPkts, n)
	}
	if a.ahXDP-b.ahXDP != n {
		t.Errorf("IPsecV2=esp: XDP matched %d AH packets to the SA, want %d (matched, then passed)", a.ahXDP-b.ahXDP, n)
	}
	// classify over a capture of the same frames says the same with AH
	// off, and steers both with every class on.
	wantOff := map[string]string{"esp": "steer steer-fallback", "ah": "pass disabled-class"}
	_, names := frames(t, p, peer, 1)
	for i, got := range classifyCapture(t, d, p, fs, "--off", "ah") {
		if want := wantOff[names[i%len(names)]]; got != want {
			t.Errorf("classify --off ah, packet %d (%s): %s, want %s", i, names[i%len(names)], got, want)
		}
	}
	for i, got := range classifyCapture(t, d, p, fs) {
		if got != "steer steer-fallback" {
			t.Errorf("classify, packet %d (%s): %s, want steer steer-fallback", i, names[i%len(names)], got)
		}
	}

	// 3. sa add of an AH SA is refused, naming the parameter.
	addAH := strings.Fields(fmt.Sprintf("sa add src %s dst %s proto ah spi 0x2003 mode tunnel auth-trunc hmac(sha256) 0x%x 128", p.IPv4B, p.IPv4A, ahKey))
	out, ok := d.cli(addAH...)
	if ok {
		t.Fatalf("sa add of an AH SA with IPsecV2=esp succeeded: %s", out)
	}
	t.Logf("sa add AH with IPsecV2=esp: %s", out)
	if strings.Contains(out, "\n") || !strings.Contains(out, "IPsecV2") {
		t.Errorf("sa add refusal is not one line naming IPsecV2: %s", out)
	}

	// 4. AH back on: steered again, and the same sa add succeeds.
	if out, ok := d.cli("caps", "set", "IPsecV2=ah-esp"); !ok {
		t.Fatalf("caps set IPsecV2=ah-esp: %s", out)
	}
	b, a, _ = phase("steered")
	logPhase("IPsecV2=ah-esp", b, a)
	if delta(b, a, "steered") != 2*n || a.ahPkts-b.ahPkts != n || delta(b, a, "disabled-class") != 0 {
		t.Errorf("IPsecV2=ah-esp: steered %d (want %d), engine AH %d (want %d), disabled-class %d", delta(b, a, "steered"), 2*n, a.ahPkts-b.ahPkts, n, delta(b, a, "disabled-class"))
	}
	if !d.currentAh() {
		t.Error("after caps set IPsecV2=ah-esp the current view does not claim Ah")
	}
	if out, ok := d.cli(addAH...); !ok {
		t.Errorf("sa add of the AH SA after IPsecV2=ah-esp: %s", out)
	}
}

// currentAh reads the V2 member Ah of the daemon's current view, as
// `xdpsec caps --view current -j` prints it.
func (d *operatorDaemon) currentAh() bool {
	d.t.Helper()
	out, ok := d.cli("caps", "--view", "current", "-j")
	if !ok {
		d.t.Fatalf("caps --view current -j: %s", out)
	}
	var doc struct {
		Current struct {
			V2 struct{ Ah *bool } `json:"v2"`
		} `json:"current"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Current.V2.Ah == nil {
		d.t.Fatalf("caps --view current -j has no current.v2.Ah (%v):\n%s", err, out)
	}
	return *doc.Current.V2.Ah
}
