package datapath

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

// otherMAC is a unicast MAC no interface of the tests has.
const otherMAC = "02:00:00:00:00:99"

// TestAttachOtherHost attaches with the CLI to a link in promiscuous mode
// (as tcpdump without -p puts it) and sends every crafted packet from the
// peer with scapy to another host's MAC: the kernel drops them all
// (PACKET_OTHERHOST), so xdpsec must steer none. traffic.py's expectations
// say which count pass-otherhost; no SA counts any of them.
func TestAttachOtherHost(t *testing.T) {
	py := script(t)
	p := newPair(t)
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "promisc", "on")
	mustXdpsec(t, p.A, append([]string{"attach", "--link", p.IfA}, saArgs(t, py)...)...)
	t.Cleanup(func() { xdpsecIn(p.A, "detach", "--link", p.IfA).Run() }) // before newPair's check for pins
	base := readStatus(t, p.A, p.IfA).Counters

	const rounds = 2
	r := run(t, p.B.Command("/usr/bin/python3", py, "send-otherhost", p.IfB, otherMAC, fmt.Sprint(rounds)))
	if r.code != 0 {
		t.Fatalf("traffic.py send-otherhost: %s", r)
	}
	var sent map[string]uint64
	if err := json.Unmarshal([]byte(r.stdout), &sent); err != nil {
		t.Fatalf("traffic.py send-otherhost printed %q: %v", r.stdout, err)
	}
	if sent["pass-otherhost"] < 30*rounds {
		t.Fatalf("traffic.py expects only %d pass-otherhost: %v", sent["pass-otherhost"], sent)
	}
	st := waitCounters(t, p.A, p.IfA, sent)
	for reason, n := range sent {
		got := st.Counters[reason] - base[reason]
		if got != n && !(reason == "pass-other" && got >= n) {
			t.Errorf("counter %s = %d, sent %d", reason, got, n)
		}
	}
	for reason, n := range st.Counters {
		if _, ok := sent[reason]; !ok && n != base[reason] {
			t.Errorf("counter %s moved by %d, sent none", reason, n-base[reason])
		}
	}
	for _, sa := range st.SAs {
		if sa.Packets != 0 {
			t.Errorf("SA %s %s counted %d packets sent to another host", sa.Proto, sa.SPI, sa.Packets)
		}
	}
	mustXdpsec(t, p.A, "detach", "--link", p.IfA)
	assertDetached(t, p.A, p.IfA)
}

// engineStats is the part of `xdpsec stats -j` TestDaemonFollowsLinkAddress
// reads.
type engineStats struct {
	InVerdicts map[string]uint64 `json:"in_verdicts"`
	Links      []struct {
		Name    string            `json:"name"`
		Reasons map[string]uint64 `json:"reasons"`
	} `json:"links"`
}

func (s engineStats) inbound() (n uint64) {
	for _, v := range s.InVerdicts {
		n += v
	}
	return n
}

func (s engineStats) reason(link, r string) uint64 {
	for _, l := range s.Links {
		if l.Name == link {
			return l.Reasons[r]
		}
	}
	return 0
}

// TestDaemonFollowsLinkAddress runs `xdpsec run` (the example tunnel's A
// side) and changes its link's MAC with `ip link set address`. The engine
// follows: ESP of its inbound SA sent with scapy to the old MAC passes as
// pass-otherhost and the engine receives none of it; to the new MAC it is
// steered and the engine judges every one (the payload is not valid ESP:
// the verdict does not matter, that it was received does).
func TestDaemonFollowsLinkAddress(t *testing.T) {
	testutil.RequireRoot(t)
	script(t) // skips without scapy
	p := testutil.NewVethPair(t)
	link := p.IfA // xa0, as the example names it
	pin := xdpsectest.MountBPFFS(t)
	conf := xdpsectest.WriteConfig(t, t.TempDir(), "tunnel-a",
		append(xdpsectest.ReadExample(t, "tunnel-a.conf"), "pin "+pin), xdpsectest.ReadExample(t, "tunnel-a.keys"))

	log := &testutil.LogBuffer{}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+p.A.Name, xdpsecBin, "run", "--config", conf.Path, "--socket", conf.Socket)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { // bounded: SIGTERM, 10 s, then SIGKILL of this PID
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("xdpsec run exited with %v after SIGTERM:\n%s", err, log.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("xdpsec run ignored SIGTERM:\n%s", log.String())
			cmd.Process.Kill()
			<-done
		}
	})
	stats := func() (engineStats, error) {
		var st engineStats
		out, err := exec.Command(xdpsecBin, "stats", "-j", "--socket", conf.Socket).Output()
		if err == nil {
			err = json.Unmarshal(out, &st)
		}
		return st, err
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := stats(); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("xdpsec run exited at start (%v):\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("xdpsec run not answering on %s:\n%s", conf.Socket, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	oldMAC, newMAC := p.MACA.String(), "02:00:00:00:00:77"
	p.A.MustRun(t, "ip", "link", "set", "dev", link, "address", newMAC)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "link MAC address changed"); {
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not log the MAC change within 5 s:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// settled reads the stats until two reads 100 ms apart agree (at most
	// 3 s): the workers count a batch after handling it.
	settled := func() engineStats {
		t.Helper()
		prev, err := stats()
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			cur, err := stats()
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(prev)
			b, _ := json.Marshal(cur)
			if string(a) == string(b) {
				return cur
			}
			prev = cur
		}
		return prev
	}
	send := func(dstMAC string, n int) {
		t.Helper()
		// The example's inbound SA: ESP spi 0x1002 to 192.0.2.1 (A).
		code := fmt.Sprintf(`from scapy.all import Ether, IP, sendp
from scapy.layers.ipsec import ESP
f = Ether(dst=%q) / IP(src="192.0.2.2", dst="192.0.2.1") / ESP(spi=0x1002, seq=1, data=bytes(64))
sendp([f] * %d, iface=%q, verbose=False)`, dstMAC, n, p.IfB)
		if out, err := p.B.Run("/usr/bin/python3", "-c", code); err != nil {
			t.Fatalf("scapy send to %s: %v: %s", dstMAC, err, out)
		}
	}

	s0 := settled()
	const nOld, nNew = 12, 7
	send(oldMAC, nOld)
	s1 := settled()
	if d := s1.reason(link, "pass-otherhost") - s0.reason(link, "pass-otherhost"); d != nOld {
		t.Errorf("to the old MAC: pass-otherhost +%d, want +%d", d, nOld)
	}
	if d := s1.inbound() - s0.inbound(); d != 0 {
		t.Errorf("to the old MAC: the engine received %d packets, want none (in_verdicts %v)", d, s1.InVerdicts)
	}
	send(newMAC, nNew)
	s2 := settled()
	if d := s2.reason(link, "steered") - s1.reason(link, "steered"); d != nNew {
		t.Errorf("to the new MAC: steered +%d, want +%d", d, nNew)
	}
	if d := s2.inbound() - s1.inbound(); d != nNew {
		t.Errorf("to the new MAC: the engine received %d packets, want %d (in_verdicts %v)", d, nNew, s2.InVerdicts)
	}
	if d := s2.reason(link, "pass-otherhost") - s1.reason(link, "pass-otherhost"); d != 0 {
		t.Errorf("to the new MAC: pass-otherhost +%d, want 0", d)
	}
}
