package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/userspace/engine"
)

func snapshot(saPkts, saBytes, badICV, steered uint64) engine.Stats {
	return engine.Stats{
		InVerdicts: map[string]uint64{"ok": saPkts, "bad-icv": badICV},
		Counters:   map[string]uint64{"in-delivered": saPkts},
		Links:      []engine.LinkStats{{Name: "xa0", Reasons: map[string]uint64{"steered": steered, "pass": 7}}},
		SAs: []engine.SAStats{{Key: "esp spi 0x00001002 dst 192.0.2.1", Dir: "in", Packets: saPkts, Bytes: saBytes,
			Verdicts: map[string]uint64{"ok": saPkts, "bad-icv": badICV}}},
	}
}

func TestRatesDivideDeltasByElapsedTime(t *testing.T) {
	prev := snapshot(1000, 100_000, 5, 1005)
	cur := snapshot(3000, 300_000, 9, 3009)
	r := rates(prev, cur, 2, time.Unix(0, 0))
	if len(r.SAs) != 1 || r.SAs[0].PPS != 1000 || r.SAs[0].BytesPS != 100_000 || r.SAs[0].ErrorsPS["bad-icv"] != 2 {
		t.Errorf("SA rates = %+v", r.SAs)
	}
	if _, ok := r.SAs[0].ErrorsPS["ok"]; ok {
		t.Error("ok counted as an SA error")
	}
	if r.InVerdictPS["ok"] != 1000 || r.InVerdictPS["bad-icv"] != 2 || r.CounterPS["in-delivered"] != 1000 {
		t.Errorf("verdict/counter rates = %v %v", r.InVerdictPS, r.CounterPS)
	}
	if r.XDPPS["xa0"]["steered"] != 1002 {
		t.Errorf("xdp rates = %v", r.XDPPS)
	}
	if _, ok := r.XDPPS["xa0"]["pass"]; ok {
		t.Error("an unchanged counter has a rate")
	}
	// A restarted daemon (counters went back) counts from zero, never
	// wraps to a huge rate.
	r = rates(cur, snapshot(10, 1000, 0, 10), 1, time.Unix(0, 0))
	if r.SAs[0].PPS != 10 || r.InVerdictPS["ok"] != 10 {
		t.Errorf("after a reset: %+v %v", r.SAs, r.InVerdictPS)
	}
	// An SA added during the interval counts from zero.
	r = rates(engine.Stats{}, cur, 1, time.Unix(0, 0))
	if r.SAs[0].PPS != 3000 {
		t.Errorf("new SA: %+v", r.SAs)
	}
}

func TestWatchPrintsOneJSONObjectPerInterval(t *testing.T) {
	var n uint64
	fetch := func() (engine.Stats, error) {
		n++
		return snapshot(n*100, n*10_000, 0, n*100), nil
	}
	var out bytes.Buffer
	if err := watchStats(context.Background(), &out, fetch, 20*time.Millisecond, 3, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		var r statsRates
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not JSON: %v: %s", err, l)
		}
		// 100 packets per interval: the rate times the measured interval.
		if got := r.SAs[0].PPS * r.IntervalS; got < 99.9 || got > 100.1 {
			t.Errorf("pps %v x %vs = %v packets, want 100", r.SAs[0].PPS, r.IntervalS, got)
		}
	}

	out.Reset()
	if err := watchStats(context.Background(), &out, fetch, 20*time.Millisecond, 1, false); err != nil {
		t.Fatal(err)
	}
	txt := out.String()
	for _, want := range []string{"sa esp spi 0x00001002 dst 192.0.2.1 (in):", "pkt/s", "inbound verdicts/s: ok", "xdp xa0/s: steered"} {
		if !strings.Contains(txt, want) {
			t.Errorf("text lacks %q:\n%s", want, txt)
		}
	}
}

func TestWatchAndCaptureBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"stats", "--watch", "--interval", "1ms", "--socket", "/nonexistent/x.sock"}, "--interval 1ms is too short"},
		{[]string{"stats", "--samples", "3", "--socket", "/nonexistent/x.sock"}, "--samples only applies to --watch"},
		{[]string{"stats", "--interval", "5s", "--socket", "/nonexistent/x.sock"}, "--interval only applies to --watch"},
		{[]string{"sa", "list", "--file", "x.sas"}, "--file only applies to sa add and sa update"},
		{[]string{"sa", "add", "-", "src", "192.0.2.1"}, "from --file or from the command line, not both"},
		{[]string{"capture", "-w", "x.pcap"}, "--reason is required"},
		{[]string{"capture", "--reason", "bogus", "-w", "x.pcap"}, "--reason:"},
		{[]string{"capture", "--reason", "replay"}, "-w FILE.pcap is required"},
		{[]string{"run", "--config", "x.conf", "--metrics", "0.0.0.0:9470"}, "--metrics-allow-remote"},
		{[]string{"run", "--config", "x.conf", "--pprof", "192.0.2.1:6060"}, "loopback only"},
		{[]string{"run", "--config", "x.conf", "--log-format", "xml"}, "use one of text, json"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want exit 2 and %q", c.args, code, stderr, c.want)
		}
	}
}
