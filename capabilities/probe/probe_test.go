//go:build linux

package probe

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"

	"github.com/xdpsec/xdpsec/bpf"
	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
)

func TestProgramClaimsOnlyWhatItSteers(t *testing.T) {
	all := loader.Features(bpf.FeatureVLAN | bpf.FeatureIPv4 | bpf.FeatureIPv6 | bpf.FeatureIPv4Options | bpf.FeatureIPv6Ext |
		bpf.FeatureESP | bpf.FeatureAH | bpf.FeatureAHESP | bpf.FeatureUDPESP | bpf.FeatureSteerXSK)
	p := Program(all, capabilities.XDPNative)
	if !p.ESP || !p.AH || !p.AhEspCombined || p.UdpEsp == 0 || !p.IPv4 || !p.IPv6 || !p.IPv4Options || !p.IPv6ExtensionHeaders ||
		p.Encapsulation != capabilities.NDIS_ENCAPSULATION_IEEE_802_3|capabilities.NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q || p.Mode != capabilities.XDPNative {
		t.Fatalf("every feature: %+v", p)
	}
	// A program that parses but cannot hand packets to AF_XDP offloads
	// nothing on receive.
	noSteer := Program(all&^loader.Features(bpf.FeatureSteerXSK), capabilities.XDPGeneric)
	if noSteer.ESP || noSteer.AH || noSteer.AhEspCombined || noSteer.UdpEsp != 0 {
		t.Fatalf("without steering: %+v", noSteer)
	}
	if p := Program(loader.Features(bpf.FeatureESP|bpf.FeatureSteerXSK), capabilities.XDPNone); p.Encapsulation != 0 || p.IPv4 {
		t.Fatalf("no IP family parsed, yet %+v", p)
	}
}

// TestLoadedProbe: the local probe's inputs are the real program's.
func TestLoadedProbe(t *testing.T) {
	testutil.RequireRoot(t)
	in, release, err := Loaded()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, err := loader.ObjectFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if in.SAMap.MaxEntries() != loader.DefaultMaxSAs {
		t.Fatalf("SA map of the loaded program holds %d, loader says %d", in.SAMap.MaxEntries(), loader.DefaultMaxSAs)
	}
	if *in.Program != *Program(f, capabilities.XDPNone) || in.Engine != nil || in.SelfTest == nil {
		t.Fatalf("inputs: %+v", in)
	}
	st, err := Local(LocalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Hardware.Active() || !slices.Contains(st.Linux.Limits, "engine not running") {
		t.Fatalf("local probe without an engine claims %+v (limits %q)", st.Hardware, st.Linux.Limits)
	}
	if st.Linux.Program == nil || !st.Linux.Program.ESP || len(st.Hardware.Algorithms) == 0 {
		t.Fatalf("local probe lost the measured facts: program %+v algorithms %v", st.Linux.Program, st.Hardware.Algorithms)
	}
	if _, err := Local(LocalOptions{Link: "xdpsec-none0"}); !errors.Is(err, capabilities.ErrNoSuchLink) {
		t.Fatalf("missing link: %v", err)
	}
}

func TestLocalReadsTheAttachedDatapath(t *testing.T) {
	p := testutil.NewVethPair(t)
	var rnd [4]byte
	rand.Read(rnd[:])
	root := fmt.Sprintf("/sys/fs/bpf/xdpsec-probe-test-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	opts := loader.Options{PinRoot: root, MaxSAs: 512, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(func() { os.RemoveAll(root) })
	err := p.A.Do(func() error {
		d, err := loader.Attach(p.IfA, loader.ModeGeneric, opts)
		if err != nil {
			return err
		}
		defer d.Detach(opts)
		if err := d.SetConfig(loader.Config{ESP: true, IPv4: true, NATTPorts: []uint16{4501}}); err != nil {
			return err
		}
		st, err := Local(LocalOptions{Link: p.IfA, TryNativeXDP: true, PinRoot: root})
		if err != nil {
			return err
		}
		if st.Linux.XDPMode != capabilities.XDPGeneric || st.Linux.Link == nil || st.Linux.Link.AttachedXDP != capabilities.XDPGeneric {
			return fmt.Errorf("mode: datapath %q, link %+v", st.Linux.XDPMode, st.Linux.Link)
		}
		if st.Hardware.SaOffloadCapacity != 512 {
			return fmt.Errorf("capacity %d, the attached SA map holds 512", st.Hardware.SaOffloadCapacity)
		}
		if st.Linux.Link.NativeXDP.Supported {
			return fmt.Errorf("native XDP claimed while a generic program is attached: %+v", st.Linux.Link.NativeXDP)
		}
		// Pushing a current view keeps the operator's NAT-T ports.
		hw := st
		hw.Hardware = capabilities.Offload{IPv4: true, IPv6: true, ESP: true, Receive: true, Send: true, Transport: true,
			UdpEsp: capabilities.IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT, Algorithms: []string{"rfc4106(gcm(aes))"}}
		if err := ApplyCurrent(d.Maps, hw.Current()); err != nil {
			return err
		}
		c, err := d.Config()
		if err != nil {
			return err
		}
		want := loader.Config{ESP: true, UDPESP: true, IPv4: true, IPv6: true, NATTPorts: []uint16{4501}}
		if c.ESP != want.ESP || c.AH || c.UDPESP != want.UDPESP || c.IPv4 != want.IPv4 || c.IPv6 != want.IPv6 || !slices.Equal(c.NATTPorts, want.NATTPorts) {
			return fmt.Errorf("config after ApplyCurrent: %+v, want %+v", c, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
