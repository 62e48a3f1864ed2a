//go:build linux

// Package probe fills capabilities.ProbeInputs from the parts of xdpsec
// that really run: the algorithm self-tests of userspace/ipsec, the XDP
// program and SA map of package loader (attached to a link, or loaded
// without attaching when nothing is), and the link itself. It also pushes
// a current view into the datapath's config map.
//
// It sits beside package capabilities rather than inside it so that
// capabilities stays free of the loader (and of the BPF object it embeds);
// the engine imports this package, never the other way round.
package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpsec/xdpsec/bpf"
	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// SelfTest is the known-answer test the probe runs for every algorithm:
// ipsec.SelfTest, which runs published vectors through the transforms.
// An algorithm whose test fails (or has no vectors) is left out of the
// hardware view, with the error in Linux.SelfTest.
var SelfTest = ipsec.SelfTest

// Program returns what an XDP program publishing features f handles, when
// attached in mode (XDPNone: loaded, not attached). A class is claimed
// only if the program also steers to AF_XDP (FeatureSteerXSK): a program
// that cannot hand packets to the engine offloads nothing on receive.
func Program(f loader.Features, mode capabilities.XDPMode) *capabilities.Program {
	steers := f.Has(bpf.FeatureSteerXSK)
	p := &capabilities.Program{
		Mode:                 mode,
		IPv4:                 f.Has(bpf.FeatureIPv4),
		IPv6:                 f.Has(bpf.FeatureIPv6),
		IPv4Options:          f.Has(bpf.FeatureIPv4Options),
		IPv6ExtensionHeaders: f.Has(bpf.FeatureIPv6Ext),
		AH:                   steers && f.Has(bpf.FeatureAH),
		ESP:                  steers && f.Has(bpf.FeatureESP),
		AhEspCombined:        steers && f.Has(bpf.FeatureAHESP),
	}
	// The program parses Ethernet to reach any IP header; tags only when
	// it says so.
	if p.IPv4 || p.IPv6 {
		p.Encapsulation = capabilities.NDIS_ENCAPSULATION_IEEE_802_3
		if f.Has(bpf.FeatureVLAN) {
			p.Encapsulation |= capabilities.NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q
		}
	}
	// The program recognises ESP in UDP whatever the SA's mode; what is
	// nested inside is the engine's business, so only the two plain shapes
	// are claimed here.
	if steers && f.Has(bpf.FeatureUDPESP) {
		p.UdpEsp = capabilities.IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT | capabilities.IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL
	}
	return p
}

// XDPMode converts the loader's attach mode.
func XDPMode(m loader.Mode) capabilities.XDPMode {
	switch m {
	case loader.ModeNative:
		return capabilities.XDPNative
	case loader.ModeGeneric:
		return capabilities.XDPGeneric
	}
	return capabilities.XDPNone
}

// Capacity is a MapCapacity measured once (the kernel's max_entries of
// a map that may since have been closed).
type Capacity uint32

// MaxEntries returns the measured size.
func (c Capacity) MaxEntries() uint32 { return uint32(c) }

// ErrNoSAMap is returned by SACapacity when the program uses no SA map.
var ErrNoSAMap = errors.New("program has no SA map")

// SACapacity returns max_entries of the SA map the loaded program prog
// uses, as the kernel reports it: the real SaOffloadCapacity, whatever
// size the loader was asked for.
func SACapacity(prog *ebpf.Program) (Capacity, error) {
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("inspect XDP program: %w", err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		return 0, fmt.Errorf("inspect XDP program: kernel does not report its maps: %w", ErrNoSAMap)
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return 0, fmt.Errorf("open map %d of the XDP program: %w", id, err)
		}
		mi, err := m.Info()
		m.Close()
		if err != nil {
			return 0, fmt.Errorf("inspect map %d of the XDP program: %w", id, err)
		}
		if mi.Name == bpf.MapSAs {
			return Capacity(mi.MaxEntries), nil
		}
	}
	return 0, fmt.Errorf("%s: %w", info.Name, ErrNoSAMap)
}

// DatapathInputs returns the probe inputs of an attached datapath: the
// program's features as read from the running program's .rodata, its
// attach mode, the SA map's size, the real self-tests, and eng (nil when
// the engine does not run). TryNativeXDP stays false: the datapath owns
// the link's XDP hook.
func DatapathInputs(d *loader.Datapath, eng *capabilities.Engine) (capabilities.ProbeInputs, error) {
	st, err := d.Status()
	if err != nil {
		return capabilities.ProbeInputs{}, fmt.Errorf("probe datapath: %w", err)
	}
	// The datapath holds its SA map: its size needs no map-by-id lookup
	// (which only CAP_SYS_ADMIN may do).
	capacity := Capacity(d.SACapacity())
	return capabilities.ProbeInputs{
		Link:     st.Interface,
		SelfTest: SelfTest,
		Program:  Program(st.Features, XDPMode(st.Mode)),
		Engine:   eng,
		SAMap:    capacity,
	}, nil
}

// LocalOptions say what Local probes.
type LocalOptions struct {
	// Link is the link to probe; empty probes only the machine.
	Link string
	// TryNativeXDP briefly attaches an XDP_PASS program to Link in driver
	// mode (never when a program is attached there).
	TryNativeXDP bool
	// PinRoot is where the loader pins (loader.DefaultPinRoot when empty).
	PinRoot string
}

// Local probes without a daemon. If xdpsec is attached to o.Link, the
// attached program and SA map are probed; otherwise the XDP program is
// loaded into the kernel without attaching (the verifier must accept it,
// as it would on attach) and that copy is probed and released. The engine
// is not running, so the hardware view offloads nothing and says so in
// Linux.Limits; algorithms, kernel, CPU, link, program shapes and SA
// capacity are all measured.
func Local(o LocalOptions) (capabilities.State, error) {
	if o.Link != "" {
		d, err := loader.Open(o.Link, loader.Options{PinRoot: o.PinRoot})
		switch {
		case err == nil:
			defer d.Close()
			in, err := DatapathInputs(d, nil)
			if err != nil {
				return capabilities.State{}, err
			}
			return capabilities.Probe(in)
		case errors.Is(err, loader.ErrLinkNotFound):
			// Let Probe say it the capabilities way (ErrNoSuchLink).
			return capabilities.Probe(capabilities.ProbeInputs{Link: o.Link})
		case !errors.Is(err, loader.ErrNotAttached):
			return capabilities.State{}, fmt.Errorf("probe %s: %w", o.Link, err)
		}
	}
	in, release, err := Loaded()
	if err != nil {
		return capabilities.State{}, err
	}
	defer release()
	in.Link, in.TryNativeXDP = o.Link, o.TryNativeXDP
	return capabilities.Probe(in)
}

// Loaded loads the XDP program without attaching it and returns the probe
// inputs it yields (self-tests, program shapes, SA map size; no link, no
// engine); release frees the program and maps.
func Loaded() (in capabilities.ProbeInputs, release func(), err error) {
	c, err := loader.NewClassifier()
	if err != nil {
		return capabilities.ProbeInputs{}, nil, fmt.Errorf("load the XDP program to probe it: %w", err)
	}
	release = func() { c.Close() }
	capacity, err := SACapacity(c.Program())
	if err != nil {
		release()
		return capabilities.ProbeInputs{}, nil, fmt.Errorf("probe loaded XDP program: %w", err)
	}
	// The loaded copy is built from the embedded object, whose .rodata
	// publishes the shapes it handles.
	f, err := loader.ObjectFeatures()
	if err != nil {
		release()
		return capabilities.ProbeInputs{}, nil, err
	}
	return capabilities.ProbeInputs{
		SelfTest: SelfTest,
		Program:  Program(f, capabilities.XDPNone),
		SAMap:    capacity,
	}, release, nil
}

// LoaderConfig returns the loader config that makes the XDP program obey
// the current view cur: classes and families off in cur are passed to the
// kernel (disabled-class), never steered. natt are the extra NAT-T ports,
// kept as the operator configured them.
func LoaderConfig(cur capabilities.Offload, natt []uint16) loader.Config {
	x := cur.XDPConfig()
	return loader.Config{ESP: x.ESP, AH: x.AH, UDPESP: x.UDPESP, IPv4: x.IPv4, IPv6: x.IPv6, NATTPorts: natt}
}

// ApplyCurrent writes the current view cur into the datapath's config map
// (m is a Datapath's or Classifier's Maps), keeping its NAT-T ports. Call
// it for every change a Hub publishes.
func ApplyCurrent(m *loader.Maps, cur capabilities.Offload) error {
	old, err := m.Config()
	if err != nil {
		return fmt.Errorf("apply current offload configuration: %w", err)
	}
	if err := m.SetConfig(LoaderConfig(cur, old.NATTPorts)); err != nil {
		return fmt.Errorf("apply current offload configuration: %w", err)
	}
	return nil
}
