//go:build linux

package capabilities

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// kat is a real known-answer self-test for two algorithms: HMAC-SHA-256
// against RFC 4231 test case 2, and AES-CBC against RFC 3602 case 1 run
// through a deliberately wrong mode (ECB), so it fails as a broken
// implementation would. Every other algorithm has no vector here.
func kat(name string) error {
	switch name {
	case "hmac(sha256)":
		m := hmac.New(sha256.New, []byte("Jefe"))
		m.Write([]byte("what do ya want for nothing?"))
		want, _ := hex.DecodeString("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
		if !bytes.Equal(m.Sum(nil), want) {
			return errors.New("RFC 4231 case 2: digest mismatch")
		}
		return nil
	case "cbc(aes)":
		key, _ := hex.DecodeString("06a9214036b8a15b512e03d534120006")
		iv, _ := hex.DecodeString("3dafba429d9eb430b422da802c9fac41")
		want, _ := hex.DecodeString("e353779c1079aeb82708942dbe77181a")
		b, err := aes.NewCipher(key)
		if err != nil {
			return err
		}
		got := make([]byte, 16)
		b.Encrypt(got, []byte("Single block msg")) // ECB: IV never mixed in
		_ = iv
		if !bytes.Equal(got, want) {
			return errors.New("RFC 3602 case 1: ciphertext mismatch")
		}
		return nil
	}
	return fmt.Errorf("no known-answer vector for %s in this test", name)
}

func TestKATFunctionIsReal(t *testing.T) {
	if err := kat("hmac(sha256)"); err != nil {
		t.Fatalf("the passing vector fails: %v", err)
	}
	if err := kat("cbc(aes)"); err == nil {
		t.Fatal("the ECB-for-CBC implementation passed the CBC vector")
	}
}

func testProgram() *Program {
	return &Program{Mode: XDPNative, Encapsulation: NDIS_ENCAPSULATION_IEEE_802_3, IPv4: true, IPv6: true, ESP: true, AH: true,
		UdpEsp: IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT | IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL}
}

func testEngine() *Engine {
	return &Engine{Send: true, Receive: true, Transport: true, Tunnel: true, ESN: true,
		MaxReplayWindow: 4096, Queues: 1, AFXDPMode: AFXDPCopy}
}

func TestProbeMachineAndLink(t *testing.T) {
	testutil.RequireRoot(t)
	saMap, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: 321})
	if err != nil {
		t.Fatalf("create SA-sized map: %v", err)
	}
	defer saMap.Close()

	pair := testutil.NewVethPair(t)
	var st State
	err = pair.A.Do(func() error {
		var err error
		st, err = Probe(ProbeInputs{Link: pair.IfA, TryNativeXDP: true, SelfTest: kat,
			Program: testProgram(), Engine: testEngine(), SAMap: saMap})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	lx := st.Linux
	if !lx.Kernel.XDP.Supported || !lx.Kernel.XSKMap.Supported || !lx.Kernel.BPFLinkXDP.Supported {
		t.Errorf("kernel 6.18 features not found: %+v", lx.Kernel)
	}
	if l := lx.Link; l == nil || l.Name != pair.IfA || l.MTU != 1500 || !l.Up || l.RxQueues < 1 || !l.NativeXDP.Supported {
		t.Errorf("link: %+v", lx.Link)
	}
	// Only the algorithm whose vector passes is claimed.
	if got := st.Hardware.Algorithms; len(got) != 1 || got[0] != "hmac(sha256)" {
		t.Errorf("hardware algorithms = %v, want [hmac(sha256)]", got)
	}
	if !strings.Contains(lx.SelfTest["cbc(aes)"], "ciphertext mismatch") {
		t.Errorf("cbc(aes) self-test result = %q", lx.SelfTest["cbc(aes)"])
	}
	if st.Hardware.SaOffloadCapacity != 321 || st.Hardware.V2().SaOffloadCapacity != 321 {
		t.Errorf("SaOffloadCapacity = %d, want the map's 321", st.Hardware.SaOffloadCapacity)
	}
	if v2 := st.Hardware.V2(); !v2.Esp || !v2.Ah || !v2.IPv6Supported || v2.AuthenticationAlgorithms != IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256 || v2.EncryptionAlgorithms != 0 {
		t.Errorf("V2 = %+v", v2)
	}
	if len(lx.Limits) != 0 {
		t.Errorf("limits with every part present: %v", lx.Limits)
	}

	// The native probe detached: the link has no XDP program left.
	err = pair.A.Do(func() error {
		li, err := ProbeLink(pair.IfA, false)
		if err == nil && li.AttachedXDP != XDPNone {
			err = fmt.Errorf("XDP still attached after the probe: %s", li.AttachedXDP)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
	if _, err := Probe(ProbeInputs{Link: "xdpsec-nope0"}); !errors.Is(err, ErrNoSuchLink) {
		t.Errorf("missing link: %v", err)
	}
}

func TestProbeMissingPartsOffloadNothing(t *testing.T) {
	st, err := Probe(ProbeInputs{SelfTest: kat})
	if err != nil {
		t.Fatal(err)
	}
	if st.Hardware.Active() || st.Hardware.V2() != (IPsecOffloadV2{}) || st.Current().XDPConfig() != (XDPConfig{}) {
		t.Errorf("hardware view without program/engine/map claims offload: %+v", st.Hardware)
	}
	for _, want := range []string{"no XDP program loaded", "engine not running", "no SA map loaded"} {
		if !strings.Contains(strings.Join(st.Linux.Limits, "; "), want) {
			t.Errorf("limits %v lack %q", st.Linux.Limits, want)
		}
	}
	if err := st.Allows(saESP("192.0.2.2"), SAInbound); err == nil || !strings.Contains(err.Error(), "engine not running") {
		t.Errorf("Allows with nothing running: %v", err)
	}
}

// next waits (bounded) for the next change with reason r, skipping none:
// any other reason first is a failure.
func next(t *testing.T, s *Subscription, r Reason) Change {
	t.Helper()
	select {
	case c := <-s.C:
		if c.Reason != r {
			t.Fatalf("got change %d %s (%s), want %s", c.Seq, c.Reason, c.Detail, r)
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s change within 5s", r)
	}
	return Change{}
}

func TestWatchLinkEvents(t *testing.T) {
	pair := testutil.NewVethPair(t)
	ns := pair.A
	ns.MustRun(t, "ip", "link", "set", pair.IfA, "name", "xc0")
	var st State
	if err := ns.Do(func() error {
		var err error
		st, err = Probe(ProbeInputs{Link: "xc0", SelfTest: kat})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hub := NewHub(st)
	sub := hub.Subscribe(8)
	defer sub.Close()
	first := next(t, sub, ReasonProbe)
	h := ns.Handle()
	w, err := WatchLink(context.Background(), hub, "xc0", &h)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	ns.MustRun(t, "ip", "link", "set", "xc0", "mtu", "1400")
	c := next(t, sub, ReasonMTUChange)
	if c.State.Linux.Link.MTU != 1400 || c.Seq != first.Seq+1 {
		t.Errorf("mtu change: seq %d mtu %d", c.Seq, c.State.Linux.Link.MTU)
	}
	ns.MustRun(t, "ip", "link", "set", "xc0", "down")
	c = next(t, sub, ReasonLinkDown)
	if c.State.Linux.Link.Up || c.Seq != first.Seq+2 {
		t.Errorf("link down: %+v seq %d", c.State.Linux.Link, c.Seq)
	}
	ns.MustRun(t, "ip", "link", "set", "xc0", "up")
	c = next(t, sub, ReasonLinkUp)
	if !c.State.Linux.Link.Up || c.Seq != first.Seq+3 {
		t.Errorf("link up: %+v seq %d", c.State.Linux.Link, c.Seq)
	}
	w.Stop()
	if err := w.Err(); err != nil {
		t.Errorf("watch ended with %v", err)
	}
}
