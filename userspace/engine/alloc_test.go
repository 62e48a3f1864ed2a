package engine

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// memMallocs is the process's count of heap allocations so far.
func memMallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// TestHotPathAllocatesNothing: two engines in this process carry a ping
// flood (IPv4 and IPv6, from ping processes outside this one) through both
// pipelines — TUN read, SPD lookup, encrypt, AF_XDP tx on one side; AF_XDP
// rx, SAD lookup, decrypt, inbound policy, TUN write on the other, and back.
// The process's heap allocations during the flood, less what the same
// engines allocate idle over as long (housekeeping, neighbour refresh), must
// stay below one per thousand packets: one allocation per packet would show
// as tens of thousands, one per batch (at most 64 packets) as hundreds.
func TestHotPathAllocatesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	ea := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin))
	eb := startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin))
	for _, dst := range []string{"198.51.100.2", "2001:db8:b::1"} {
		if out, err := p.A.Run("ping", "-c", "2", "-i", "0.1", "-w", "5", dst); err != nil {
			t.Fatalf("warm-up ping %s: %v\n%s", dst, err, out)
		}
	}
	packets := func() uint64 {
		var n uint64
		for _, e := range []*Engine{ea, eb} {
			st, err := e.Stats()
			if err != nil {
				t.Fatal(err)
			}
			n += st.Counters[CounterName(OutProtected)] + st.Counters[CounterName(InDelivered)]
		}
		return n
	}

	// The flood: separate processes, started (exec allocates here) and
	// held at a gate (`read` on a pipe) before the count begins, so that
	// only the engines' work falls between the two counts.
	var floods []*exec.Cmd
	var gates []*os.File
	for _, c := range []string{
		"ping -f -c 4000 -s 1000 -w 20 198.51.100.2",
		"ping -6 -f -c 4000 -s 64 -w 20 2001:db8:b::1",
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := p.A.Command("sh", "-c", "read go; exec "+c+" >/dev/null")
		cmd.Stdin = r
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		floods, gates = append(floods, cmd), append(gates, w)
	}
	defer func() {
		for _, cmd := range floods {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}
	}()
	var states [2]*os.ProcessState
	p0 := packets()
	runtime.GC()
	start, m0 := time.Now(), memMallocs()
	for i, cmd := range floods {
		gates[i].Write([]byte("go\n"))
		gates[i].Close()
		cmd.Wait()
		states[i] = cmd.ProcessState
	}
	busy, m1 := time.Since(start), memMallocs()
	n := packets() - p0
	for i, st := range states {
		if !st.Success() {
			t.Logf("flood %d: %v", i, st)
		}
	}

	// The same engines idle for as long.
	runtime.GC()
	i0 := memMallocs()
	time.Sleep(busy)
	idle := memMallocs() - i0

	extra := int64(m1-m0) - int64(idle)
	t.Logf("%d packets through both pipelines in %v: %d allocations during the flood, %d idle over as long: %+d", n, busy.Round(time.Millisecond), m1-m0, idle, extra)
	if n < 8000 {
		t.Fatalf("only %d packets went through the engines, want >= 8000 (4000 echoes each way over 2 SAs)", n)
	}
	if extra > int64(n/1000) {
		t.Errorf("%d allocations beyond idle for %d packets: the per-packet path allocates", extra, n)
	}
}
