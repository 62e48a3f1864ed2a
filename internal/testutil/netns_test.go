package testutil

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestVethPairCarriesTraffic(t *testing.T) {
	RequireRoot(t)
	var names []string
	t.Run("pair", func(t *testing.T) {
		p := NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		// No address stays tentative (DAD is off before the links exist).
		// The kernel clears the flag from a work item right after link-up,
		// so allow it a bounded moment; with DAD on it would take ~1 s
		// (net.ipv6.conf.*.dad_transmits x retrans_time) and fail.
		for _, end := range []struct {
			ns     *NS
			ifname string
		}{{p.A, p.IfA}, {p.B, p.IfB}} {
			deadline := time.Now().Add(300 * time.Millisecond)
			for {
				addrs := end.ns.MustRun(t, "ip", "-6", "addr", "show", "dev", end.ifname)
				if !strings.Contains(addrs, "tentative") {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s still has tentative IPv6 addresses after 300 ms:\n%s", end.ifname, addrs)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		out := p.A.MustRun(t, "ping", "-c", "1", "-W", "2", p.IPv4B.String())
		if !strings.Contains(out, "1 received") {
			t.Fatalf("ping over the pair failed: %s", out)
		}
		// A UDP datagram sent from B arrives at a socket opened in A.
		var conn *net.UDPConn
		err := p.A.Do(func() error {
			var err error
			conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: p.IPv4A.AsSlice(), Port: 4500})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		err = p.B.Do(func() error {
			c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: p.IPv4A.AsSlice(), Port: 4500})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte{0xff})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 16)
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil || n != 1 || buf[0] != 0xff {
			t.Fatalf("datagram from B: n=%d err=%v", n, err)
		}
	})
	CheckRemoved(t, names...)
	if len(names) != 2 {
		t.Fatal("subtest did not create the pair")
	}
}

func TestVethPairQueues(t *testing.T) {
	RequireRoot(t)
	var names []string
	t.Run("two-queues", func(t *testing.T) {
		p := NewVethPairQueues(t, 2)
		names = []string{p.A.Name, p.B.Name}
		for _, end := range []struct {
			ns     *NS
			ifname string
		}{{p.A, p.IfA}, {p.B, p.IfB}} {
			// The kernel's own view: one rx-N and tx-N directory per queue.
			out := end.ns.MustRun(t, "ls", "/sys/class/net/"+end.ifname+"/queues")
			got := strings.Fields(out)
			want := []string{"rx-0", "rx-1", "tx-0", "tx-1"}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s queues = %v, want %v", end.ifname, got, want)
			}
		}
		if out := p.A.MustRun(t, "ping", "-c", "1", "-W", "2", p.IPv4B.String()); !strings.Contains(out, "1 received") {
			t.Fatalf("ping over the two-queue pair failed: %s", out)
		}
	})
	// NewVethPair keeps the kernel's default: one queue in use, more
	// allocated on a multi-CPU machine, so tests can raise the count with
	// ethtool -L (tests/caps does).
	t.Run("default", func(t *testing.T) {
		p := NewVethPair(t)
		names = append(names, p.A.Name, p.B.Name)
		if got := strings.Fields(p.A.MustRun(t, "ls", "/sys/class/net/"+p.IfA+"/queues")); strings.Join(got, " ") != "rx-0 tx-0" {
			t.Errorf("%s queues = %v, want [rx-0 tx-0]", p.IfA, got)
		}
		if runtime.NumCPU() >= 2 {
			p.A.MustRun(t, "ethtool", "-L", p.IfA, "rx", "2")
		}
	})
	CheckRemoved(t, names...)
}
