package tunnel

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

// mqBenchSeconds is the length of one iperf3 run in BenchmarkMultiQueueTCP.
const mqBenchSeconds = 3

// BenchmarkMultiQueueTCP measures iperf3 TCP (8 parallel streams, A -> B)
// through the example tunnel over a two-queue veth with one worker per side
// (queues 1) against two (queues 2), the configurations alternating within
// each round (b.N rounds) so a noisy neighbour hits them alike, the daemons
// started afresh for each. Two queues run with the SAs' default replay
// window (64) and with the largest (65536): one SA across two queues
// reorders its packets by as much as one worker's time off its CPU, and
// the replay-% metrics say what share of B's ESP packets the window refused
// for it (the loss TCP then repairs). Metrics: medians over the rounds, in
// Mbit/s, q2/q1 = queues 2 (window 65536) over queues 1 in the same round,
// and cpu-busy-% = how busy the machine's CPUs were during the iperf3 run
// (/proc/stat: both daemons, iperf3 and softirq share them).
// No assertion: it reports. Needs root and iperf3; about 20 s a round.
//
//	go test -run '^$' -bench MultiQueueTCP -benchtime 3x ./tests/tunnel/
func BenchmarkMultiQueueTCP(b *testing.B) {
	testutil.RequireRoot(b)
	p := testutil.NewVethPairQueues(b, 2)
	// The plain veth's offloads off, as scripts/bench-tunnel.sh does.
	p.A.Run("ethtool", "-K", p.IfA, "tso", "off", "gso", "off", "gro", "off")
	p.B.Run("ethtool", "-K", p.IfB, "tso", "off", "gso", "off", "gro", "off")
	pin := xdpsectest.MountBPFFS(b)
	configs := []struct {
		name           string
		queues, window int
	}{{"q1", 1, 65536}, {"q2", 2, 65536}, {"q2-w64", 2, 64}}
	mbits := map[string][]float64{}
	replay := map[string][]float64{}
	busy := map[string][]float64{}
	var ratios []float64
	port := 5301
	for round := 0; round < b.N; round++ {
		got := map[string]float64{}
		line := fmt.Sprintf("round %d", round)
		for _, c := range configs {
			extra := []string{"pin " + pin, fmt.Sprintf("queues %d", c.queues)}
			a := xdpsectest.StartDaemon(b, p.A, windowConfig(b, "a", c.window, extra...), xdpsectest.Options{})
			d := xdpsectest.StartDaemon(b, p.B, windowConfig(b, "b", c.window, extra...), xdpsectest.Options{})
			xdpsectest.Ping(b, p.A, "198.51.100.2", 2, a, d)
			b0 := d.SettledStats()
			c0 := cpuTimes(b)
			m := iperf3(b, p, "198.51.100.2", port, 8)
			c1 := cpuTimes(b)
			busyPct := 100 * (1 - float64(c1.idle-c0.idle)/float64(max(c1.total-c0.total, 1)))
			port++
			b1 := d.SettledStats()
			a.Stop()
			d.Stop()
			ok := b1.InVerdicts["ok"] - b0.InVerdicts["ok"]
			rp := b1.InVerdicts["replay"] - b0.InVerdicts["replay"]
			rx, _ := socketDeltas(b0, b1, p.IfB)
			line += fmt.Sprintf("; %s %.0f Mbit/s, CPUs %.0f%% busy, B accepted %d ESP, refused %d as replay, per queue %v", c.name, m, busyPct, ok, rp, rx)
			busy[c.name] = append(busy[c.name], busyPct)
			got[c.name] = m
			mbits[c.name] = append(mbits[c.name], m)
			replay[c.name] = append(replay[c.name], 100*float64(rp)/float64(max(ok+rp, 1)))
		}
		ratios = append(ratios, got["q2"]/got["q1"])
		b.Log(line)
	}
	for _, c := range configs {
		b.ReportMetric(median(mbits[c.name]), c.name+"-Mbit/s")
		b.ReportMetric(median(replay[c.name]), c.name+"-replay-%")
		b.ReportMetric(median(busy[c.name]), c.name+"-cpu-busy-%")
	}
	b.ReportMetric(median(ratios), "q2/q1")
}

// iperf3 runs an iperf3 server in B on port and a client in A sending
// streams parallel TCP streams to addr for mqBenchSeconds, and returns the
// received rate in Mbit/s.
func iperf3(tb testing.TB, p *testutil.VethPair, addr string, port, streams int) float64 {
	tb.Helper()
	srv := p.B.Command("iperf3", "-s", "-1", "-p", fmt.Sprint(port))
	if err := srv.Start(); err != nil {
		tb.Fatalf("iperf3 server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	defer func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Process.Kill()
			<-done
		}
	}()
	// Wait (bounded) until the server listens: a client that comes too
	// early is refused, and iperf3 -J still exits 0.
	listening := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _ := p.B.Run("ss", "-Htln", fmt.Sprintf("sport = :%d", port)); strings.TrimSpace(out) != "" {
			listening = true
			break
		}
	}
	if !listening {
		tb.Fatalf("iperf3 server in %s not listening on %d after 5 s", p.B.Name, port)
	}
	out, err := p.A.Command("iperf3", "-c", addr, "-p", fmt.Sprint(port), "-P", fmt.Sprint(streams),
		"-t", fmt.Sprint(mqBenchSeconds), "-J").Output()
	if err != nil {
		tb.Fatalf("iperf3 client to %s:%d: %v\n%s", addr, port, err, out)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
		tb.Fatalf("iperf3 to %s:%d: %v %s\n%s", addr, port, err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e6
}

// cpuTime is the machine's CPU time so far, from /proc/stat, in ticks.
type cpuTime struct{ idle, total uint64 }

// cpuTimes reads the first line of /proc/stat (all CPUs): idle counts idle
// and iowait, total every field.
func cpuTimes(tb testing.TB) cpuTime {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		tb.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var c cpuTime
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/stat: %q: %v", line, err)
		}
		// Fields 8 and 9 (guest, guest_nice) are already in user and nice.
		if i < 8 {
			c.total += v
		}
		if i == 3 || i == 4 {
			c.idle += v
		}
	}
	return c
}

// median returns the middle value of v (the upper one of an even count),
// leaving v as it is.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
