package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// Test keys (never use them for anything else).
const (
	keyAB = "0x0102030405060708090a0b0c0d0e0f1011121314"
	keyBA = "0x2122232425262728292a2b2c2d2e2f3031323334"
)

// tunnelConfig is one end of an AES-GCM-128 tunnel-mode ESP tunnel between
// 192.0.2.1 (A) and 192.0.2.2 (B), carrying 198.51.100.1 <-> 198.51.100.2
// and 2001:db8:a::1 <-> 2001:db8:b::1 (the IPv6 inner pair over an IPv6 outer
// pair 2001:db8::1 <-> 2001:db8::2).
func tunnelConfig(a bool, link, pin string) string {
	me4, peer4, in4me, in4peer := "192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"
	me6, peer6, in6me, in6peer := "2001:db8::1", "2001:db8::2", "2001:db8:a::1", "2001:db8:b::1"
	outSPI, inSPI, outKey, inKey := 0x1001, 0x1002, keyAB, keyBA
	if !a {
		me4, peer4, in4me, in4peer = peer4, me4, in4peer, in4me
		me6, peer6, in6me, in6peer = peer6, me6, in6peer, in6me
		outSPI, inSPI, outKey, inKey = inSPI, outSPI, inKey, outKey
	}
	var b strings.Builder
	fmt.Fprintf(&b, "link %s\npin %s\naddress %s/32\naddress %s/128\n", link, pin, in4me, in6me)
	sa := func(src, dst string, spi int, key string) {
		fmt.Fprintf(&b, "ip xfrm state add src %s dst %s proto esp spi %#x mode tunnel aead 'rfc4106(gcm(aes))' %s 128\n", src, dst, spi, key)
	}
	sa(me4, peer4, outSPI, outKey)
	sa(peer4, me4, inSPI, inKey)
	sa(me6, peer6, outSPI+0x100, outKey)
	sa(peer6, me6, inSPI+0x100, inKey)
	pol := func(src, dst, dir, tsrc, tdst string) {
		fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir %s tmpl src %s dst %s proto esp mode tunnel\n", src, dst, dir, tsrc, tdst)
	}
	pol(in4me+"/32", in4peer+"/32", "out", me4, peer4)
	pol(in4peer+"/32", in4me+"/32", "in", peer4, me4)
	pol(in6me+"/128", in6peer+"/128", "out", me6, peer6)
	pol(in6peer+"/128", in6me+"/128", "in", peer6, me6)
	return b.String()
}

// mountBPFFS gives the test its own bpffs for the loader's pins, so tests of
// other packages attaching to links of the same name never collide.
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func startFromConfig(t *testing.T, ns *testutil.NS, text string) *Engine {
	t.Helper()
	return startWith(t, ns, text, nil)
}

// startWith starts an engine in ns from the config text, with edit (when
// not nil) applied to the loaded config first, and stops it at cleanup.
func startWith(t *testing.T, ns *testutil.NS, text string, edit func(*FileConfig)) *Engine {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xdpsec.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(fc)
	}
	var e *Engine
	err = ns.Do(func() error {
		var err error
		e, err = Start(fc.Config)
		return err
	})
	if err != nil {
		t.Fatalf("start engine in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { e.Stop() })
	return e
}

func TestTunnelPingBothWays(t *testing.T) {
	testutil.RequireRoot(t)
	goroutines := runtime.NumGoroutine()
	p := testutil.NewVethPair(t)
	pin := mountBPFFS(t)
	ea := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, pin))
	eb := startFromConfig(t, p.B, tunnelConfig(false, p.IfB, pin))

	for _, c := range []struct {
		ns  *testutil.NS
		dst string
	}{{p.A, "198.51.100.2"}, {p.B, "198.51.100.1"}, {p.A, "2001:db8:b::1"}, {p.B, "2001:db8:a::1"}} {
		// The first packets may find the neighbour unresolved; -w bounds
		// the whole run.
		out, err := c.ns.Run("ping", "-c", "3", "-i", "0.2", "-w", "5", c.dst)
		if err != nil || !strings.Contains(out, " 0% packet loss") && !strings.Contains(out, "3 received") {
			if !strings.Contains(out, "received") || strings.Contains(out, " 0 received") {
				t.Fatalf("ping %s from %s: %v\n%s", c.dst, c.ns.Name, err, out)
			}
		}
	}
	sa, err := ea.Stats()
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := eb.Stats()
	t.Logf("A: xdp %s, counters %v, verdicts %v", sa.Links[0].XDPMode, sa.Counters, sa.InVerdicts)
	for _, st := range []Stats{sa, sb} {
		ok := st.InVerdicts[ipsec.VerdictOK.String()]
		if ok < 6 || st.Counters[CounterName(InDelivered)] != ok {
			t.Errorf("inbound: %d ok, %d delivered; want >= 6 and equal (counters %v, verdicts %v)", ok,
				st.Counters[CounterName(InDelivered)], st.Counters, st.InVerdicts)
		}
		if st.Counters[CounterName(OutProtected)] < 6 {
			t.Errorf("outbound protected %d, want >= 6: %v", st.Counters[CounterName(OutProtected)], st.Counters)
		}
		steered := st.Links[0].Reasons["steered"]
		if steered < ok {
			t.Errorf("XDP steered %d packets, fewer than the %d the engine decrypted (link %+v)", steered, ok, st.Links[0])
		}
		for _, s := range st.SAs {
			if s.Packets == 0 {
				t.Errorf("SA %s (%s) counted no packet", s.Key, s.Dir)
			}
			if strings.Contains(s.Spec, "0x0102") || strings.Contains(s.Spec, "0x2122") {
				t.Errorf("stats show key bytes: %s", s.Spec)
			}
		}
	}
	// Delete A's inbound SA: B's packets are now passed by XDP (no state).
	if err := ea.DeleteSA(sad.SAKey{SPI: 0x1002, Dst: p.IPv4A, Proto: ipsec.ProtoESP}); err != nil {
		t.Fatal(err)
	}
	if out, err := p.B.Run("ping", "-c", "1", "-W", "1", "198.51.100.1"); err == nil {
		t.Errorf("ping through a deleted SA answered:\n%s", out)
	}
	if err := ea.Stop(); err != nil {
		t.Errorf("stop A: %v", err)
	}
	if err := eb.Stop(); err != nil {
		t.Errorf("stop B: %v", err)
	}
	if out, _ := p.A.Run("ip", "link", "show", DefaultTUN); !strings.Contains(out, "does not exist") {
		t.Errorf("tun left behind after Stop: %s", out)
	}
	if out := p.A.MustRun(t, "ip", "link", "show", p.IfA); strings.Contains(out, "prog/xdp") {
		t.Errorf("XDP still attached after Stop without fail-open: %s", out)
	}
	checkGoroutines(t, goroutines)
}

// checkGoroutines waits (bounded) for the goroutine count to come back.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

func TestLoadConfigRefusesReadableKeys(t *testing.T) {
	dir := t.TempDir()
	sa := "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead 'rfc4106(gcm(aes))' " + keyAB + " 128\n"
	inline := filepath.Join(dir, "inline.conf")
	os.WriteFile(inline, []byte("link xa0\n"+sa), 0o644)
	keys := filepath.Join(dir, "k.keys")
	os.WriteFile(keys, []byte(sa), 0o640)
	split := filepath.Join(dir, "split.conf")
	os.WriteFile(split, []byte("link xa0\nkeys k.keys\n"), 0o644)
	for _, path := range []string{inline, split} {
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || !errors.Is(err, ErrKeyFileMode) {
			t.Errorf("LoadConfig(%s) = %v, want ErrKeyFileMode saying chmod 600", filepath.Base(path), err)
		}
		if err != nil && strings.Contains(err.Error(), "0102030405") {
			t.Errorf("error shows key bytes: %v", err)
		}
	}
	os.Chmod(keys, 0o600)
	fc, err := LoadConfig(split)
	if err != nil || len(fc.SAs) != 1 || fc.Links[0] != "xa0" {
		t.Fatalf("LoadConfig with a 600 key file: %+v, %v", fc, err)
	}
	// A policy-only config may be world-readable.
	os.WriteFile(inline, []byte("link xa0\ntun t0\naddress 198.51.100.1/32\nfail-open\n"), 0o644)
	if fc, err = LoadConfig(inline); err != nil || fc.TUN != "t0" || !fc.FailOpen {
		t.Fatalf("LoadConfig without keys: %+v, %v", fc, err)
	}
	for _, bad := range []string{"link\n", "link xa0\nmtu 10\n", "link xa0\nfrobnicate\n", "link xa0\naddress 1.2.3\n", "tun x\n"} {
		os.WriteFile(inline, []byte(bad), 0o600)
		if _, err := LoadConfig(inline); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("LoadConfig(%q) = %v, want one-line error", bad, err)
		}
	}
}
