package engine

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

func TestLoadConfigTUNOffload(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		line    string
		off     bool
		wantErr string
	}{
		{"", false, ""},
		{"tun-offload on", false, ""},
		{"tun-offload off", true, ""},
		{"tun-offload maybe", false, "expected on or off"},
		{"tun-offload", false, "takes one on or off"},
	} {
		path := filepath.Join(dir, "c.conf")
		if err := os.WriteFile(path, []byte("link xa0\n"+c.line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fc, err := LoadConfig(path)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", c.line, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.line, err)
		}
		if fc.NoTUNOffload != c.off {
			t.Errorf("%q: NoTUNOffload %v, want %v", c.line, fc.NoTUNOffload, c.off)
		}
	}
}

// TestTunnelTCPOffload sends 4 MiB of TCP through the tunnel, A to B, with
// the TUN offloads on and off: the bytes must arrive exactly either way;
// with offloads on, A's worker must have read fewer TUN packets than it
// sent segments (super-packets were cut) and B's must have coalesced
// segments into shared writes; with them off, neither happens.
func TestTunnelTCPOffload(t *testing.T) {
	testutil.RequireRoot(t)
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			p := testutil.NewVethPair(t)
			pin := mountBPFFS(t)
			extra := ""
			if !on {
				extra = "tun-offload off\n"
			}
			ea := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin)+extra)
			eb := startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin)+extra)
			if got := eb.dev.VnetHdr(); got != on {
				t.Fatalf("TUN vnet_hdr %v, want %v", got, on)
			}
			data := make([]byte, 4<<20)
			rand.Read(data)
			var ln net.Listener
			if err := p.B.Do(func() error {
				var err error
				ln, err = net.Listen("tcp", "198.51.100.2:5301")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			deadline := time.Now().Add(20 * time.Second)
			got := make(chan []byte, 1)
			go func() {
				ln.(*net.TCPListener).SetDeadline(deadline)
				c, err := ln.Accept()
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				c.SetDeadline(deadline)
				b, _ := io.ReadAll(c)
				got <- b
			}()
			// The first packets may find the next hop unresolved: retry the dial.
			var conn net.Conn
			err := p.A.Do(func() error {
				var err error
				for try := 0; try < 5; try++ {
					d := net.Dialer{Timeout: 2 * time.Second}
					if conn, err = d.Dial("tcp", "198.51.100.2:5301"); err == nil {
						return nil
					}
				}
				return err
			})
			if err != nil {
				t.Fatalf("dial through the tunnel: %v", err)
			}
			conn.SetDeadline(deadline)
			if _, err := conn.Write(data); err != nil {
				t.Fatalf("write: %v", err)
			}
			conn.Close()
			if b := <-got; !bytes.Equal(b, data) {
				t.Fatalf("B received %d bytes, not the %d sent", len(b), len(data))
			}
			sa, _ := ea.Stats()
			sb, _ := eb.Stats()
			segs, reads := sa.Counters["out-packets"], sa.TUNQueues.RxPackets
			coalesced := sb.Counters["in-coalesced"]
			t.Logf("A: %d segments out of %d TUN reads; B: %d of %d delivered segments coalesced in %d TUN writes",
				segs, reads, coalesced, sb.Counters["in-delivered"], sb.TUNQueues.TxPackets)
			if on && (segs <= reads || coalesced == 0) {
				t.Fatalf("offloads on, but A read %d packets for %d segments and B coalesced %d", reads, segs, coalesced)
			}
			if !on && (segs != reads || coalesced != 0) {
				t.Fatalf("offloads off, but A read %d packets for %d segments and B coalesced %d", reads, segs, coalesced)
			}
		})
	}
}
