// Package livepeer proves xdpsec against an independent IPsec implementation
// on a live link: the xdpsec daemon runs in namespace A of a veth pair, and a
// scapy peer (peer.py, Debian's /usr/bin/python3 with scapy 2.5) in namespace
// B sends it ESP-encrypted ICMP echo requests over B's veth. xdpsec decrypts
// them (XDP steer -> AF_XDP -> ESP open -> TUN), A's kernel answers, xdpsec
// encrypts the reply (TUN -> SPD -> ESP seal -> AF_XDP tx) and scapy decrypts
// it and checks the echo id, sequence and payload: both directions of every
// SA shape in the matrix, judged by scapy, with the daemon's counters checked
// against what the peer sent.
package livepeer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

// python is Debian's interpreter: the first python3 in PATH lacks scapy.
const python = "/usr/bin/python3"

func TestMain(m *testing.M) { xdpsectest.Main(m) }

// needScapy skips when Debian's python with scapy is not there.
func needScapy(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import scapy.layers.ipsec, cryptography").CombinedOutput(); err != nil {
		t.Skipf("needs %s with scapy and cryptography (Debian python3-scapy): %v %s", python, err, out)
	}
}

// algo is one ESP or AH transform as both sides name it.
type algo struct {
	proto string // esp, ah
	// scapyCrypt and scapyAuth are scapy 2.5's names; icv is the AEAD
	// ICV in bytes (scapy's crypt_icv_size), 0 for non-AEAD.
	scapyCrypt, scapyAuth string
	icv                   int
	// aead, enc, auth are the xfrm words with KEY where the key goes.
	aead, enc, auth string
	// cryptKeyLen and authKeyLen are key lengths in bytes (AEAD salt
	// included, as xfrm takes it).
	cryptKeyLen, authKeyLen int
}

var (
	aesGCM128 = algo{proto: "esp", scapyCrypt: "AES-GCM", icv: 16, aead: "'rfc4106(gcm(aes))' KEY 128", cryptKeyLen: 20}
	aesGCM256 = algo{proto: "esp", scapyCrypt: "AES-GCM", icv: 16, aead: "'rfc4106(gcm(aes))' KEY 128", cryptKeyLen: 36}
	chacha    = algo{proto: "esp", scapyCrypt: "CHACHA20-POLY1305", icv: 16, aead: "'rfc7539esp(chacha20,poly1305)' KEY 128", cryptKeyLen: 36}
	cbcSHA256 = algo{proto: "esp", scapyCrypt: "AES-CBC", scapyAuth: "SHA2-256-128", enc: "'cbc(aes)' KEY", auth: "'hmac(sha256)' KEY 128",
		cryptKeyLen: 16, authKeyLen: 32}
	ahSHA256 = algo{proto: "ah", scapyAuth: "SHA2-256-128", auth: "'hmac(sha256)' KEY 128", authKeyLen: 32}
)

// peerCase is one live exchange: an SA pair of one algorithm and shape.
type peerCase struct {
	name  string
	algo  algo
	outer int // 4, 6: the outer (link) family
	inner int // 4, 6: the tunnelled family
	natt  bool
	// esn turns extended sequence numbers on and starts both directions
	// one packet below 2^32, so that the exchange crosses the wrap of the
	// low half.
	esn bool
}

// esnStart is the 64-bit sequence number of the first packet each way in
// the ESN cases: the echoes then carry 2^32-1, 2^32, 2^32+1.
const esnStart = 1<<32 - 1

// Tunnel addresses of the inner hosts (the TUN's address in A; the scapy
// peer's inner address in B).
var innerAddrs = map[int][2]string{4: {"198.51.100.1", "198.51.100.2"}, 6: {"2001:db8:a::1", "2001:db8:b::1"}}

func hostPrefix(addr string) string {
	if strings.Contains(addr, ":") {
		return addr + "/128"
	}
	return addr + "/32"
}

// saSide is one SA as peer.py takes it (JSON on its stdin).
type saSide struct {
	Proto    string  `json:"proto"`
	SPI      uint32  `json:"spi"`
	Src      string  `json:"src"`
	Dst      string  `json:"dst"`
	Crypt    string  `json:"crypt,omitempty"`
	CryptKey string  `json:"crypt_key,omitempty"`
	ICV      int     `json:"icv,omitempty"`
	Auth     string  `json:"auth,omitempty"`
	AuthKey  string  `json:"auth_key,omitempty"`
	NATT     *[2]int `json:"natt"`

	xfrmAlgo string // the SA's xfrm algorithm words, keys filled in
}

// peerInput is peer.py's stdin.
type peerInput struct {
	Iface    string  `json:"iface"`
	MACSrc   string  `json:"mac_src"`
	MACDst   string  `json:"mac_dst"`
	Outer    int     `json:"outer"`
	Inner    int     `json:"inner"`
	InnerSrc string  `json:"inner_src"`
	InnerDst string  `json:"inner_dst"`
	Out      saSide  `json:"out"` // peer -> xdpsec
	In       saSide  `json:"in"`  // xdpsec -> peer
	Count    int     `json:"count"`
	Timeout  float64 `json:"timeout"`
	// Bad asks the peer for a replay of its first request and a request
	// with a flipped last byte after the echoes.
	Bad bool `json:"bad"`
	// ESN, SeqOut, SeqIn: extended sequence numbers; the 64-bit sequence
	// number of the peer's first packet and of xdpsec's first reply.
	ESN    bool   `json:"esn"`
	SeqOut uint64 `json:"seq_out"`
	SeqIn  uint64 `json:"seq_in"`
}

// peerResult is peer.py's stdout.
type peerResult struct {
	Sent    int      `json:"sent"`
	Replies int      `json:"replies"`
	Errors  []string `json:"errors"`
	Seqs    []uint32 `json:"seqs"`
	BadSent int      `json:"bad_sent"`
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newSA makes one direction's SA with fresh random keys.
func newSA(t *testing.T, a algo, spi uint32, src, dst string, natt bool, extra ...string) saSide {
	t.Helper()
	s := saSide{Proto: a.proto, SPI: spi, Src: src, Dst: dst, Crypt: a.scapyCrypt, ICV: a.icv, Auth: a.scapyAuth}
	var words []string
	if a.cryptKeyLen > 0 {
		s.CryptKey = randHex(t, a.cryptKeyLen)
	}
	if a.authKeyLen > 0 {
		s.AuthKey = randHex(t, a.authKeyLen)
	}
	if a.aead != "" {
		words = append(words, "aead", strings.Replace(a.aead, "KEY", "0x"+s.CryptKey, 1))
	}
	if a.enc != "" {
		words = append(words, "enc", strings.Replace(a.enc, "KEY", "0x"+s.CryptKey, 1))
	}
	if a.auth != "" {
		words = append(words, "auth-trunc", strings.Replace(a.auth, "KEY", "0x"+s.AuthKey, 1))
	}
	if natt {
		s.NATT = &[2]int{4500, 4500}
		words = append(words, "encap espinudp 4500 4500 0.0.0.0")
	}
	s.xfrmAlgo = strings.Join(append(words, extra...), " ")
	return s
}

func (s saSide) xfrmLine() string {
	return fmt.Sprintf("ip xfrm state add src %s dst %s proto %s spi 0x%08x mode tunnel %s", s.Src, s.Dst, s.Proto, s.SPI, s.xfrmAlgo)
}

// writeConfig writes A's config and key file (0600).
func writeConfig(t *testing.T, p *testutil.VethPair, pin string, inner int, out, in saSide) xdpsectest.Config {
	t.Helper()
	a, b := innerAddrs[inner][0], innerAddrs[inner][1]
	keys := []string{"# livepeer test keys: random per run", out.xfrmLine(), in.xfrmLine()}
	c := []string{
		"# xdpsec side of the live scapy interop",
		"link " + p.IfA,
		"tun xdpsec0",
		"address " + hostPrefix(a),
		"pin " + pin,
		"keys a.keys",
		fmt.Sprintf("ip xfrm policy add src %s dst %s dir out tmpl src %s dst %s proto %s mode tunnel",
			hostPrefix(a), hostPrefix(b), out.Src, out.Dst, out.Proto),
		fmt.Sprintf("ip xfrm policy add src %s dst %s dir in tmpl src %s dst %s proto %s mode tunnel",
			hostPrefix(b), hostPrefix(a), in.Src, in.Dst, in.Proto),
	}
	return xdpsectest.WriteConfig(t, t.TempDir(), "a", c, keys)
}

// startDaemon runs `xdpsec run` in ns (the datapath on link) and waits,
// bounded, until its control socket answers. Cleanup stops it and checks
// that it left nothing on the link.
func startDaemon(t *testing.T, ns *testutil.NS, link string, conf xdpsectest.Config) *xdpsectest.Daemon {
	t.Helper()
	d := xdpsectest.StartDaemon(t, ns, conf, xdpsectest.Options{})
	t.Cleanup(func() { checkCleanStop(t, d, link) }) // runs before the harness's own Stop
	return d
}

// checkCleanStop stops the daemon (SIGTERM, bounded, then SIGKILL); a
// daemon that stopped on SIGTERM must have exited 0 and removed its XDP
// program and TUN.
func checkCleanStop(t *testing.T, d *xdpsectest.Daemon, link string) {
	if !d.Stop() {
		return
	}
	if err := d.ExitErr(); err != nil {
		t.Errorf("xdpsec run exited with %v after SIGTERM:\n%s", err, d.Log())
	}
	if out, err := d.NS().Run("ip", "link", "show", "dev", link); err != nil || strings.Contains(out, "prog/xdp") {
		t.Errorf("after SIGTERM, %s still has an XDP program (or is gone: %v):\n%s", link, err, out)
	}
	if out, err := d.NS().Run("ip", "link", "show", "dev", "xdpsec0"); err == nil {
		t.Errorf("after SIGTERM, the TUN xdpsec0 is still there:\n%s", out)
	}
}

// skipLinkLocalDAD replaces both ends' link-local addresses, still
// tentative (the veth existed before NewVethPair turned DAD off, so the
// links keep accept_dad=1), by ones added nodad. Neighbour discovery waits
// for usable link-local addresses: without this the daemon's IPv6 next-hop
// resolution at start takes 1-2 s (measured: 1.1-2.1 s; 0.1 s with it).
func skipLinkLocalDAD(t *testing.T, p *testutil.VethPair) {
	t.Helper()
	for _, end := range []struct {
		ns     *testutil.NS
		ifname string
		addr   string
	}{{p.A, p.IfA, "fe80::a/64"}, {p.B, p.IfB, "fe80::b/64"}} {
		end.ns.MustRun(t, "ip", "-6", "addr", "flush", "dev", end.ifname, "scope", "link")
		end.ns.MustRun(t, "ip", "-6", "addr", "add", end.addr, "dev", end.ifname, "nodad")
	}
}

// verdicts sums the inbound verdicts: every packet the engine judged.
func verdicts(st engine.Stats) uint64 {
	var n uint64
	for _, v := range st.InVerdicts {
		n += v
	}
	return n
}

func saKey(s saSide) string { return fmt.Sprintf("%s spi 0x%08x dst %s", s.Proto, s.SPI, s.Dst) }

// runPeer runs peer.py in ns with in on its stdin, bounded in time.
func runPeer(t *testing.T, ns *testutil.NS, in peerInput) peerResult {
	t.Helper()
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(python, "peer.py")
	cmd.Stdin = bytes.NewReader(js)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	limit := 20*time.Second + time.Duration(float64(in.Count)*in.Timeout*float64(time.Second))
	select {
	case err = <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("peer.py (pid %d) still running after %v; killed\n%s", cmd.Process.Pid, limit, stderr.String())
	}
	if err != nil {
		t.Fatalf("peer.py: %v\n%s", err, stderr.String())
	}
	var r peerResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("peer.py output: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	return r
}

// liveCases is the matrix proven against the live scapy peer.
var liveCases = []peerCase{
	{name: "aes-gcm-128", algo: aesGCM128, outer: 4, inner: 4},
	{name: "aes-gcm-256", algo: aesGCM256, outer: 4, inner: 4},
	{name: "chacha20-poly1305", algo: chacha, outer: 4, inner: 4},
	{name: "aes-cbc-hmac-sha256", algo: cbcSHA256, outer: 4, inner: 4},
	{name: "natt-aes-gcm-128", algo: aesGCM128, outer: 4, inner: 4, natt: true},
	{name: "natt-aes-cbc-hmac-sha256", algo: cbcSHA256, outer: 4, inner: 4, natt: true},
	{name: "ipv6-aes-gcm-128", algo: aesGCM128, outer: 6, inner: 6},
	{name: "ipv6-chacha20-poly1305", algo: chacha, outer: 6, inner: 6},
	{name: "ipv6-aes-cbc-hmac-sha256", algo: cbcSHA256, outer: 6, inner: 6},
	{name: "ipv6-natt-aes-gcm-256", algo: aesGCM256, outer: 6, inner: 6, natt: true},
	{name: "4in6-aes-gcm-128", algo: aesGCM128, outer: 6, inner: 4},
	{name: "6in4-aes-gcm-128", algo: aesGCM128, outer: 4, inner: 6},
	{name: "ah-hmac-sha256", algo: ahSHA256, outer: 4, inner: 4},
	{name: "esn-aes-gcm-128", algo: aesGCM128, outer: 4, inner: 4, esn: true},
	{name: "esn-aes-cbc-hmac-sha256", algo: cbcSHA256, outer: 4, inner: 4, esn: true},
	{name: "esn-ah-hmac-sha256", algo: ahSHA256, outer: 4, inner: 4, esn: true},
	{name: "ipv6-ah-hmac-sha256", algo: ahSHA256, outer: 6, inner: 6},
}

// echoes is how many echo requests the peer sends per case (one at a time).
const echoes = 3

func TestScapyPeerEcho(t *testing.T) {
	testutil.RequireRoot(t)
	needScapy(t)
	xdpsectest.Binary(t)
	g0 := runtime.NumGoroutine()
	for i, c := range liveCases {
		var names []string
		t.Run(c.name, func(t *testing.T) {
			p := testutil.NewVethPair(t)
			names = []string{p.A.Name, p.B.Name}
			skipLinkLocalDAD(t, p)
			outerA, outerB := p.IPv4A.String(), p.IPv4B.String()
			if c.outer == 6 {
				outerA, outerB = p.IPv6A.String(), p.IPv6B.String()
			}
			base := uint32(0x5000 + 0x10*i)
			seq := uint64(1)
			var inWords, outWords []string
			if c.esn {
				seq = esnStart
				inWords = []string{"flag", "esn", "replay-seq", fmt.Sprintf("0x%x", seq-1)}
				outWords = []string{"flag", "esn", "replay-oseq", fmt.Sprintf("0x%x", seq-1)}
			}
			toA := newSA(t, c.algo, base+1, outerB, outerA, c.natt, inWords...)  // scapy -> xdpsec
			toB := newSA(t, c.algo, base+2, outerA, outerB, c.natt, outWords...) // xdpsec -> scapy
			conf := writeConfig(t, p, xdpsectest.MountBPFFS(t), c.inner, toB, toA)
			t0 := time.Now()
			d := startDaemon(t, p.A, p.IfA, conf)
			t1 := time.Now()

			st0 := d.Stats()
			res := runPeer(t, p.B, peerInput{
				Iface: p.IfB, MACSrc: p.MACB.String(), MACDst: p.MACA.String(),
				Outer: c.outer, Inner: c.inner,
				InnerSrc: innerAddrs[c.inner][1], InnerDst: innerAddrs[c.inner][0],
				Out: toA, In: toB, Count: echoes, Timeout: 5, Bad: true,
				ESN: c.esn, SeqOut: seq, SeqIn: seq,
			})
			// The two bad packets get no reply to wait for: poll (bounded)
			// until the engine has judged every packet the peer sent.
			st1 := d.Stats()
			for deadline := time.Now().Add(5 * time.Second); verdicts(st1)-verdicts(st0) < uint64(res.Sent+res.BadSent) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				st1 = d.Stats()
			}
			st1 = d.SettledStats() // delivery is counted after the TUN write
			t.Logf("daemon up in %v, peer ran %v: %+v", t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond), res)

			if len(res.Errors) > 0 || res.Sent != echoes || res.Replies != echoes || res.BadSent != 2 {
				t.Fatalf("scapy peer: sent %d (+%d bad), %d verified echo replies of %d; errors:\n  %s%s",
					res.Sent, res.BadSent, res.Replies, echoes, strings.Join(res.Errors, "\n  "), xdpsectest.Dump(d))
			}
			// xdpsec numbers its outbound packets from its configured
			// start (1 on a fresh SA); the wire carries the low half.
			for k, s := range res.Seqs {
				if want := uint32(seq + uint64(k)); s != want {
					t.Errorf("reply %d carried sequence number %d, want %d", k+1, s, want)
				}
			}
			// The counters moved by exactly the traffic the peer made: the
			// echoes delivered and answered, the replay and the forgery
			// steered to the engine and refused, nothing else.
			delta := func(m0, m1 map[string]uint64, k string) uint64 { return m1[k] - m0[k] }
			if n := delta(st0.Counters, st1.Counters, "in-delivered"); n != echoes {
				t.Errorf("in-delivered grew by %d, want %d", n, echoes)
			}
			if n := delta(st0.Counters, st1.Counters, "out-protected"); n != echoes {
				t.Errorf("out-protected grew by %d, want %d", n, echoes)
			}
			in0, in1 := xdpsectest.SAStats(st0, saKey(toA)), xdpsectest.SAStats(st1, saKey(toA))
			if in1.Key == "" {
				t.Fatalf("xdpsec has no SA %q: %+v", saKey(toA), st1.SAs)
			}
			if n := in1.Packets - in0.Packets; n != echoes {
				t.Errorf("inbound SA %s packets grew by %d, want %d", in1.Key, n, echoes)
			}
			if n := in1.XDPPackets - in0.XDPPackets; n != echoes+2 {
				t.Errorf("XDP matched %d packets to inbound SA %s, want %d", n, in1.Key, echoes+2)
			}
			if n := delta(st0.Links[0].Reasons, st1.Links[0].Reasons, "steered"); n != echoes+2 {
				t.Errorf("XDP steered %d packets, want %d", n, echoes+2)
			}
			for v, want := range map[string]uint64{"ok": echoes, "replay": 1, "bad-icv": 1} {
				if n := delta(st0.InVerdicts, st1.InVerdicts, v); n != want {
					t.Errorf("inbound verdict %s grew by %d, want %d", v, n, want)
				}
				if n := delta(in0.Verdicts, in1.Verdicts, v); n != want {
					t.Errorf("inbound SA %s verdict %s grew by %d, want %d", in1.Key, v, n, want)
				}
			}
			if n := verdicts(st1) - verdicts(st0); n != echoes+2 {
				t.Errorf("%d inbound verdicts, want %d (%v)", n, echoes+2, st1.InVerdicts)
			}
			out0, out1 := xdpsectest.SAStats(st0, saKey(toB)), xdpsectest.SAStats(st1, saKey(toB))
			if n := out1.Packets - out0.Packets; n != echoes {
				t.Errorf("outbound SA %s packets grew by %d, want %d", out1.Key, n, echoes)
			}
			if t.Failed() {
				t.Log(xdpsectest.Dump(d))
			}
		})
		testutil.CheckRemoved(t, names...)
	}
	checkNoGoroutineLeak(t, g0)
}

// checkNoGoroutineLeak fails if more than g0 goroutines are still running
// after a bounded wait (daemon and peer waiters must have ended).
func checkNoGoroutineLeak(t *testing.T, g0 int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > g0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > g0 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left, %d before the test:\n%s", n, g0, buf[:runtime.Stack(buf, true)])
	}
}
