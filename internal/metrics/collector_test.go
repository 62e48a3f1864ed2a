package metrics

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

const testKey = "0x44434241343332312423222114131211f4f3f2f1" // RFC 4106 AES-128 key + salt (kernel docs example)

// inboundSpec is the SA B uses to send to A: 192.0.2.2 -> 192.0.2.1.
func inboundSpec(t testing.TB, spi uint32) *sad.SASpec {
	t.Helper()
	w, err := sad.Tokenize(fmt.Sprintf("src 192.0.2.2 dst 192.0.2.1 proto esp spi %#x mode tunnel aead rfc4106(gcm(aes)) %s 128 dir in", spi, testKey))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sad.ParseSA(w)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// espPayloads encrypts n inner IPv4/UDP packets with sender and returns
// what follows the outer IPv4 header (ESP header, ciphertext, ICV): what
// a raw ip4:50 socket sends.
func espPayloads(t testing.TB, sender *ipsec.SA, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		frame := make([]byte, 512)
		payload := make([]byte, 32)
		payload[0] = byte(i)
		off := 128
		ln := testutil.InnerUDP4(frame, off, payload)
		o, m, err := sender.Encrypt(frame, off, ln)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), frame[o+20:o+m]...))
	}
	return out
}

func sendESP(t *testing.T, ns *testutil.NS, dst netip.Addr, payloads [][]byte) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.ListenPacket("ip4:50", "")
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
		t.Fatalf("send ESP from %s: %v", ns.Name, err)
	}
}

func pinRoot(t *testing.T) string {
	var rnd [4]byte
	rand.Read(rnd[:])
	root := fmt.Sprintf("/sys/fs/bpf/xdpsec-metrics-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

func scrape(t *testing.T, addr net.Addr) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want; it fails the test when there is none or more than one.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s in the scrape", name)
	}
	var found []float64
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range want {
			match := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					match = true
				}
			}
			ok = ok && match
		}
		if ok {
			switch {
			case m.Counter != nil:
				found = append(found, m.GetCounter().GetValue())
			case m.Gauge != nil:
				found = append(found, m.GetGauge().GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(found))
	}
	return found[0]
}

// TestScrapeDuringTraffic attaches the real XDP program in a namespace,
// binds a real AF_XDP socket, lets B send real ESP (good, replayed,
// forged, unknown SPI, truncated), verifies the steered packets with the
// SAD's transform as a worker does, and checks every number of an HTTP
// scrape against what was sent.
func TestScrapeDuringTraffic(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := loader.Options{PinRoot: pinRoot(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(func() { p.A.Do(func() error { return loader.Detach(p.IfA, opts) }) })

	var (
		dp   *loader.Datapath
		sock *afxdp.Socket
	)
	err := p.A.Do(func() (err error) {
		if dp, err = loader.Attach(p.IfA, loader.ModeNative, opts); err != nil {
			return err
		}
		sock, err = afxdp.Open(afxdp.Config{Ifindex: p.IndexA, Queue: 0, Mode: afxdp.BindCopy, FrameCount: 256,
			RxRingSize: 256, TxRingSize: 64, FillRingSize: 256, CompletionRingSize: 64})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	defer sock.Close()

	const spi = 0x1001
	db := sad.NewSAD(sad.Config{})
	spec := inboundSpec(t, spi)
	if _, err := db.Add(spec); err != nil {
		t.Fatal(err)
	}
	if err := dp.PutSA(loader.SAKey{SPI: spi, Dst: p.IPv4A, Proto: loader.ProtoESP}, loader.SA{ID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetXSK(0, sock.FD()); err != nil {
		t.Fatal(err)
	}

	c := New(Options{SAs: db})
	c.AddLink(p.IfA, dp)
	c.AddSocket(p.IfA, 0, sock)
	srv, err := Serve("127.0.0.1:0", NewRegistry(c), ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	sender, err := ipsec.NewSA(spec.Params())
	if err != nil {
		t.Fatal(err)
	}
	const good, replayed, forged, unknown, truncated = 20, 3, 2, 4, 5
	pkts := espPayloads(t, sender, good+forged)
	for _, f := range pkts[good:] {
		f[len(f)-1] ^= 0x80 // flip an ICV bit
	}
	pkts = append(pkts, pkts[:replayed]...)
	var junk [][]byte
	for range unknown {
		junk = append(junk, append(binary.BigEndian.AppendUint32(nil, 0x7777), make([]byte, 60)...))
	}
	for range truncated {
		junk = append(junk, []byte{0, 0, 0x10, 0x01}) // 4 bytes: no room for the sequence number
	}
	sendESP(t, p.B, p.IPv4A, pkts)
	sendESP(t, p.B, p.IPv4A, junk)

	// The worker's part: verify what the socket received.
	want := map[ipsec.Verdict]int{ipsec.VerdictOK: good, ipsec.VerdictBadICV: forged, ipsec.VerdictReplay: replayed}
	var okBytes uint64
	got := map[ipsec.Verdict]int{}
	batch := make([]afxdp.Desc, 64)
	deadline := time.Now().Add(5 * time.Second)
	for received := 0; received < len(pkts) && time.Now().Before(deadline); {
		if err := sock.Wait(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		n := sock.Receive(batch)
		for _, d := range batch[:n] {
			frame := sock.Packet(d)
			var o ipsec.Outer
			if v := ipsec.ParseOuter(frame[14:], 0, &o); v != ipsec.VerdictOK {
				t.Fatalf("steered frame is not ESP: %v", v)
			}
			a := db.Lookup(o.SPI, o.Dst, o.Proto)
			if a == nil {
				t.Fatalf("steered frame of unknown SA %#x", o.SPI)
			}
			r := a.Transform().DecryptParsed(frame, 14, &o)
			a.Count(0, r.Verdict, r.N)
			got[r.Verdict]++
			if r.Verdict == ipsec.VerdictOK {
				okBytes += uint64(r.N)
			}
		}
		sock.Release(batch[:n])
		received += n
	}
	for v, n := range want {
		if got[v] != n {
			t.Fatalf("worker saw %v: %d, want %d (all: %v)", v, got[v], n, got)
		}
	}
	// The XDP counters settle (veth delivers asynchronously).
	for time.Now().Before(deadline) {
		cnt, err := dp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if cnt[loader.ReasonNoState] >= unknown && cnt[loader.ReasonMalformedESP] >= truncated {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := scrape(t, srv.Addr())
	sa := map[string]string{"spi": "0x00001001", "dst": "192.0.2.1", "proto": "esp", "dir": "in"}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range m {
			out[a] = b
		}
		return out
	}
	link := map[string]string{"link": p.IfA}
	steered := good + forged + replayed
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"xdpsec_sa_packets_total", sa, good},
		{"xdpsec_sa_bytes_total", sa, float64(okBytes)},
		{"xdpsec_sa_errors_total", with(sa, "reason", "bad-icv"), forged},
		{"xdpsec_sa_errors_total", with(sa, "reason", "replay"), replayed},
		{"xdpsec_sa_errors_total", with(sa, "reason", "bad-padding"), 0},
		{"xdpsec_xdp_packets_total", with(link, "reason", "steered"), float64(steered)},
		{"xdpsec_xdp_packets_total", with(link, "reason", "no-state"), unknown},
		{"xdpsec_xdp_packets_total", with(link, "reason", "malformed-esp"), truncated},
		{"xdpsec_xdp_sa_packets_total", with(link, "spi", "0x00001001"), float64(steered)},
		{"xdpsec_afxdp_rx_packets_total", with(link, "queue", "0"), float64(steered)},
		{"xdpsec_afxdp_rx_dropped_total", with(link, "queue", "0"), 0},
		{"xdpsec_afxdp_rx_ring_full_total", with(link, "queue", "0"), 0},
		{"xdpsec_afxdp_rx_invalid_descs_total", with(link, "queue", "0"), 0},
		{"xdpsec_afxdp_tx_invalid_descs_total", with(link, "queue", "0"), 0},
		{"xdpsec_xfrm_stat_total", map[string]string{"counter": "XfrmInNoStates"}, unknown},
		{"xdpsec_xfrm_stat_total", map[string]string{"counter": "XfrmInHdrError"}, truncated},
		{"xdpsec_xfrm_stat_total", map[string]string{"counter": "XfrmInStateProtoError"}, forged},
		{"xdpsec_xfrm_stat_total", map[string]string{"counter": "XfrmInStateSeqError"}, replayed},
		{"xdpsec_xfrm_stat_total", map[string]string{"counter": "XfrmOutNoStates"}, 0},
	} {
		if v := value(t, f, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if n := len(f["xdpsec_xfrm_stat_total"].GetMetric()); n != len(XfrmStatNames) {
		t.Errorf("xdpsec_xfrm_stat_total has %d counters, want all %d of /proc/net/xfrm_stat", n, len(XfrmStatNames))
	}
	if f["go_goroutines"] == nil || f["process_open_fds"] == nil {
		t.Error("runtime and process collectors missing")
	}
	if v := value(t, f, "xdpsec_afxdp_ring_pending", with(with(link, "queue", "0"), "ring", "fill")); v <= 0 {
		t.Errorf("fill ring pending %v, want the posted frames", v)
	}

	// A socket removed before Close is no longer read.
	c.RemoveSocket(p.IfA, 0)
	if f := scrape(t, srv.Addr()); f["xdpsec_afxdp_rx_packets_total"] != nil {
		t.Error("removed socket still exported")
	}
}

// TestEngineSource checks that engine verdicts (packets no SA claimed
// included) and outbound counters reach xdpsec_xfrm_stat under the kernel's
// names, and that a failing source leaves the others in the scrape.
func TestEngineSource(t *testing.T) {
	eng := EngineSourceFunc(func() (EngineCounters, error) {
		return EngineCounters{
			InVerdicts: map[string]uint64{"ok": 9, "no-state": 2, "bad-icv": 3, "bad-padding": 1, "bad-seq": 1, "replay": 4, "expired": 5},
			Counters:   map[string]uint64{"out-no-sa": 6, "out-discard": 7, "out-encrypt-error": 8, "in-policy-mismatch": 2, "out-transmitted": 100},
		}, nil
	})
	c := New(Options{Engine: eng})
	c.AddLink("broken0", failing{})
	srv, err := Serve("[::1]:0", NewRegistry(c), ServerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer srv.Close()
	f := scrape(t, srv.Addr())
	for name, want := range map[string]float64{
		"XfrmInNoStates": 2, "XfrmInStateProtoError": 4, "XfrmInStateSeqError": 5, "XfrmInStateExpired": 5,
		"XfrmOutNoStates": 6, "XfrmOutPolBlock": 7, "XfrmOutError": 8, "XfrmInTmplMismatch": 2, "XfrmInError": 0,
	} {
		if v := value(t, f, "xdpsec_xfrm_stat_total", map[string]string{"counter": name}); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v := value(t, f, "xdpsec_engine_packets_total", map[string]string{"counter": "out-transmitted"}); v != 100 {
		t.Errorf("out-transmitted = %v", v)
	}
	if v := value(t, f, "xdpsec_in_verdicts_total", map[string]string{"verdict": "ok"}); v != 9 {
		t.Errorf("in verdict ok = %v", v)
	}
	if f["xdpsec_xdp_packets_total"] != nil {
		t.Error("failing link exported values")
	}
}

type failing struct{}

func (failing) Counters() (loader.Counters, error) {
	return loader.Counters{}, fmt.Errorf("read counter: %w", loader.ErrPermission)
}

func TestCheckAddr(t *testing.T) {
	for _, c := range []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"127.0.0.1:9470", false, true},
		{"127.1.2.3:9470", false, true},
		{"[::1]:9470", false, true},
		{"localhost:9470", false, true},
		{":9470", false, false},
		{"0.0.0.0:9470", false, false},
		{"192.0.2.1:9470", false, false},
		{"[2001:db8::1]:9470", false, false},
		{"192.0.2.1:9470", true, true},
		{":9470", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:", false, false},
	} {
		err := CheckAddr(c.addr, c.allow)
		if (err == nil) != c.ok {
			t.Errorf("CheckAddr(%q, %v) = %v", c.addr, c.allow, err)
		}
	}
	if _, err := Serve("0.0.0.0:0", NewRegistry(New(Options{})), ServerOptions{}); err == nil {
		t.Error("Serve on the wildcard address accepted without AllowNonLoopback")
	}
}
