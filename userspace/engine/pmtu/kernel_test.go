package pmtu

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/engine/tun"
)

// TestKernelAcceptsTooBig: a UDP socket sends a DF packet larger than the
// tunnel carries through a TUN; the error built for it and written back
// into the TUN makes the Linux stack record the route MTU exception
// (`ip route get` shows "mtu N"), for IPv4 and IPv6. This is the judge
// that matters: the local stack is who must believe the error.
func TestKernelAcceptsTooBig(t *testing.T) {
	ns := testutil.NewNS(t, t.Name())
	var dev *tun.Device
	err := ns.Do(func() error {
		var err error
		dev, err = tun.Create(tun.Config{
			Name: "xp%d", Queues: 1, MTU: 1500,
			Addrs:  []netip.Prefix{netip.PrefixFrom(local4, 24), netip.PrefixFrom(local6, 64)},
			Routes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:2::/64")},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	q := dev.Queue(0)
	for _, tc := range []struct {
		dst netip.Addr
		mtu int
	}{{remote4, 1300}, {remote6, 1280}} {
		if out := ns.MustRun(t, "ip", "route", "get", tc.dst.String()); strings.Contains(out, "mtu ") {
			t.Fatalf("route to %s has an MTU before the test: %s", tc.dst, out)
		}
		var conn *net.UDPConn
		err := ns.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.dst, 9)))
			if err != nil {
				return err
			}
			conn = c
			// DF on every packet, so the stack sends 1400 bytes whole and
			// believes the error.
			raw, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			raw.Control(func(fd uintptr) {
				if tc.dst.Is4() {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
				}
			})
			if serr != nil {
				return serr
			}
			_, err = c.Write(make([]byte, 1400-8-headerLen(tc.dst)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Read the datagram the stack routed to the TUN (skip its own
		// chatter, e.g. MLD reports).
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		var inner []byte
		deadline := time.Now().Add(5 * time.Second)
		for inner == nil && time.Now().Before(deadline) {
			n, err := q.Read(bufs, sizes, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 && sizes[0] == 1400 {
				inner = bufs[0][:1400]
			}
		}
		if inner == nil {
			t.Fatalf("the 1400-byte datagram to %s never reached the TUN", tc.dst)
		}
		msg := make([]byte, MaxLen6)
		n, err := TooBig(msg, inner, tc.mtu, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		if w, err := q.Write([][]byte{msg[:n]}); w != 1 || err != nil {
			t.Fatalf("write the error into the TUN: %d, %v", w, err)
		}
		want := "mtu " + strconv.Itoa(tc.mtu)
		var out string
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			out = ns.MustRun(t, "ip", "route", "get", tc.dst.String())
			if strings.Contains(out, want) {
				break
			}
		}
		if !strings.Contains(out, want) {
			t.Fatalf("the stack did not take the error: ip route get %s: %s (want %q)", tc.dst, out, want)
		}
		// The socket learns it too: the next large send fails with EMSGSIZE.
		if _, err := conn.Write(make([]byte, 1400-8-headerLen(tc.dst))); !errors.Is(err, syscall.EMSGSIZE) {
			t.Errorf("send after the error: %v, want EMSGSIZE", err)
		}
		t.Logf("%s: %s", tc.dst, strings.TrimSpace(out))
	}
}

func headerLen(a netip.Addr) int {
	if a.Is4() {
		return 20
	}
	return 40
}
