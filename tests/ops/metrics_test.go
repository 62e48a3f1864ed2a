package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/metrics"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

const (
	metricsAddr = "127.0.0.1:9470"
	pprofAddr   = "127.0.0.1:6060"
)

// TestMetricsAndDropCapture runs the two-daemon tunnel with --metrics on
// B, sends counted UDP through it and checks B's /metrics against what was
// sent; then injects replayed and forged ESP frames from A's namespace
// while `xdpsec capture` runs, has tshark read the capture back, and checks
// the drop counters (per SA, per verdict, xdpsec_xfrm_stat) against what
// was injected.
func TestMetricsAndDropCapture(t *testing.T) {
	testutil.RequireRoot(t)
	requireTools(t, "tshark", "/usr/bin/python3")
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)
	k := newKeys(t)
	confA := writeConfig(t, "a", k, "pin "+pin)
	confB := writeConfig(t, "b", k, "pin "+pin)
	a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{})
	b := xdpsectest.StartDaemon(t, p.B, confB, xdpsectest.Options{Args: []string{"--metrics", metricsAddr, "--pprof", pprofAddr}})
	xdpsectest.Ping(t, p.B, "198.51.100.1", 2, a, b)

	// --pprof serves Go's profiles on loopback, and /metrics does not.
	br, done := httpGet(t, p.B, pprofAddr, "/debug/pprof/goroutine?debug=1")
	prof, _ := io.ReadAll(br)
	done()
	if !strings.Contains(string(prof), "engine.(*worker).run") {
		t.Errorf("pprof goroutine profile lacks the engine's workers:\n%.2000s", prof)
	}

	// Every xfrm_stat name is exported, zero or not.
	b.SettledStats() // the pings' counts land before the baseline
	m0 := scrape(t, p.B, metricsAddr)
	for _, n := range metrics.XfrmStatNames {
		if _, ok := metric(m0, "xdpsec_xfrm_stat_total", "counter", n); !ok {
			t.Errorf("no xdpsec_xfrm_stat_total{counter=%q}", n)
		}
	}

	const n, size = 300, 200
	const innerLen = 20 + 8 + size // the inner IPv4 datagram
	if got := udpBurst(t, p, "198.51.100.2:4789", n, size); got != n {
		t.Fatalf("UDP: %d of %d datagrams arrived%s%s", got, n, xdpsectest.Dump(a), xdpsectest.Dump(b))
	}
	b.SettledStats() // delivery is counted after the TUN write: let it land
	m1 := scrape(t, p.B, metricsAddr)
	in := []string{"spi", "0x00001001", "dst", "192.0.2.2", "proto", "esp", "dir", "in"}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"xdpsec_sa_packets_total", in, n},
		{"xdpsec_sa_bytes_total", in, n * innerLen},
		{"xdpsec_xdp_packets_total", []string{"link", p.IfB, "reason", "steered"}, n},
		{"xdpsec_xdp_sa_packets_total", []string{"link", p.IfB, "spi", "0x00001001"}, n},
		{"xdpsec_in_verdicts_total", []string{"verdict", "ok"}, n},
		{"xdpsec_engine_packets_total", []string{"counter", "in-delivered"}, n},
	} {
		v0, ok0 := metric(m0, c.name, c.labels...)
		v1, ok1 := metric(m1, c.name, c.labels...)
		if !ok0 || !ok1 {
			t.Errorf("%s%v: not exactly one series (before %v, after %v)", c.name, c.labels, ok0, ok1)
			continue
		}
		if v1-v0 != c.want {
			t.Errorf("%s%v grew by %v, want %v", c.name, c.labels, v1-v0, c.want)
		}
	}
	// AF_XDP: the sockets of B's queues received at least the datagrams.
	rx := func(m map[string]float64) (sum float64) {
		for s, v := range m {
			if strings.HasPrefix(s, "xdpsec_afxdp_rx_packets_total{") {
				sum += v
			}
		}
		return sum
	}
	if d := rx(m1) - rx(m0); d < n {
		t.Errorf("xdpsec_afxdp_rx_packets_total grew by %v over B's sockets, want >= %d", d, n)
	}
	if v, _ := metric(m1, "xdpsec_xfrm_stat_total", "counter", "XfrmInStateProtoError"); v != 0 {
		t.Errorf("XfrmInStateProtoError = %v before any forged packet", v)
	}

	// Drop capture: replays and forged ICVs, injected from A's namespace.
	dir := t.TempDir()
	file, stop := filepath.Join(dir, "drops.pcap"), filepath.Join(dir, "stop")
	const want = 6
	capt := b.Command("capture", "--reason", "bad-icv,replay", "-w", file,
		"--count", fmt.Sprint(want), "--duration", "20s")
	captOut := &xdpsectest.LogBuffer{}
	capt.Stdout, capt.Stderr = captOut, captOut
	if err := capt.Start(); err != nil {
		t.Fatal(err)
	}
	var captErr error
	captDone := make(chan struct{})
	go func() { captErr = capt.Wait(); close(captDone) }()
	t.Cleanup(func() { capt.Process.Kill(); <-captDone })
	// The capture starts when the daemon has the request; the injector
	// keeps sending (bounded: 40 rounds, 8 s) until the capture has enough.
	const seq = 1 << 20
	inj := p.A.Command("/usr/bin/python3", "inject.py", p.IfA, p.MACB.String(),
		fmt.Sprintf("%x", k.AB), "0x1001", fmt.Sprint(seq), "40", stop)
	injOut := &xdpsectest.LogBuffer{}
	inj.Stdout, inj.Stderr = injOut, injOut
	if err := inj.Start(); err != nil {
		t.Fatal(err)
	}
	var injErr error
	injDone := make(chan struct{})
	go func() { injErr = inj.Wait(); close(injDone) }()
	t.Cleanup(func() { inj.Process.Kill(); <-injDone })
	select {
	case <-captDone:
	case <-time.After(25 * time.Second):
		t.Fatal("xdpsec capture did not end within 25 s")
	}
	os.WriteFile(stop, nil, 0o600)
	<-injDone // bounded: 40 rounds of 0.2 s, and it stops at the stop file
	if err := injErr; err != nil {
		t.Fatalf("inject.py: %v\n%s", err, injOut)
	}
	if captErr != nil {
		t.Fatalf("xdpsec capture: %v\n%s", captErr, captOut)
	}
	var sent map[string][]int
	if err := json.Unmarshal([]byte(injOut.String()), &sent); err != nil {
		t.Fatalf("inject.py output: %v: %s", err, injOut)
	}
	if !strings.Contains(captOut.String(), fmt.Sprintf("%d packet(s) written", want)) {
		t.Errorf("capture said %q, want %d packets", captOut, want)
	}

	// tshark, the independent judge, reads SPI and sequence numbers back.
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "esp.spi", "-e", "esp.sequence").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", file, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != want {
		t.Fatalf("tshark read %d packets, want %d:\n%s", len(lines), want, out)
	}
	replays, forged := 0, 0
	badSeqs := map[string]bool{}
	for _, s := range sent["bad-icv"] {
		badSeqs[fmt.Sprint(s)] = true
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] != "0x00001001" {
			t.Errorf("tshark line %q: want spi 0x00001001 and a sequence number", l)
			continue
		}
		switch {
		case f[1] == fmt.Sprint(seq):
			replays++
		case badSeqs[f[1]]:
			forged++
		default:
			t.Errorf("captured sequence number %s was never injected as a drop", f[1])
		}
	}
	if replays == 0 || forged == 0 {
		t.Errorf("capture holds %d replays and %d forged packets, want both:\n%s", replays, forged, out)
	}

	// Counters: exactly what was injected, in the daemon's stats, the
	// per-SA error series and the kernel-named xfrm_stat family.
	st := b.SettledStats()
	m2 := scrape(t, p.B, metricsAddr)
	nReplay, nBad := float64(len(sent["replay"])), float64(len(sent["bad-icv"]))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"xdpsec_sa_errors_total", append(append([]string{}, in...), "reason", "replay"), nReplay},
		{"xdpsec_sa_errors_total", append(append([]string{}, in...), "reason", "bad-icv"), nBad},
		{"xdpsec_in_verdicts_total", []string{"verdict", "replay"}, nReplay},
		{"xdpsec_in_verdicts_total", []string{"verdict", "bad-icv"}, nBad},
		{"xdpsec_xfrm_stat_total", []string{"counter", "XfrmInStateSeqError"}, nReplay},
		{"xdpsec_xfrm_stat_total", []string{"counter", "XfrmInStateProtoError"}, nBad},
	} {
		v, ok := metric(m2, c.name, c.labels...)
		if !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if float64(st.InVerdicts["replay"]) != nReplay || float64(st.InVerdicts["bad-icv"]) != nBad {
		t.Errorf("stats -j: replay %d bad-icv %d, injected %v and %v", st.InVerdicts["replay"], st.InVerdicts["bad-icv"], nReplay, nBad)
	}
	var names []string
	for s, v := range m2 {
		if strings.HasPrefix(s, "xdpsec_xfrm_stat_total{") && v != 0 {
			names = append(names, fmt.Sprintf("%s=%v", s, v))
		}
	}
	sort.Strings(names)
	t.Logf("sent %d UDP, injected %v replays and %v forged; non-zero xfrm_stat: %v", n, nReplay, nBad, names)
}
