//go:build linux

package capabilities

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/cpu"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Program is what the loaded XDP program publishes about the packet shapes
// it classifies and steers (the loader fills it from the object it
// loaded). A false member means those packets are passed to the kernel.
type Program struct {
	// Mode is the attach mode the loader ended up with (XDPNone: loaded,
	// not attached).
	Mode XDPMode `json:"mode"`
	// Encapsulation is the set of L2 framings parsed (Ethernet, 802.1Q).
	Encapsulation Encapsulation `json:"encapsulation"`
	IPv4          bool          `json:"ipv4"`
	IPv6          bool          `json:"ipv6"`
	// IPv4Options: IHL > 5 is parsed, not passed.
	IPv4Options bool `json:"ipv4Options"`
	// IPv6ExtensionHeaders: non-IPsec extension headers before AH/ESP are
	// walked, not passed.
	IPv6ExtensionHeaders bool `json:"ipv6ExtensionHeaders"`
	AH                   bool `json:"ah"`
	ESP                  bool `json:"esp"`
	// AhEspCombined: [IP][AH][ESP] is steered as one packet.
	AhEspCombined bool `json:"ahEspCombined"`
	// UdpEsp is the set of UDP-ESP shapes recognised on port 4500.
	UdpEsp UdpEspV2 `json:"udpEsp"`
}

// Shapes lists the packet shapes p steers, by short name, for output.
func (p *Program) Shapes() []string {
	var out []string
	for _, s := range []struct {
		on   bool
		name string
	}{
		{p.IPv4, "ipv4"}, {p.IPv4Options, "ipv4-options"}, {p.IPv6, "ipv6"},
		{p.IPv6ExtensionHeaders, "ipv6-ext-headers"}, {p.ESP, "esp"}, {p.AH, "ah"},
		{p.AhEspCombined, "ah-esp"}, {p.UdpEsp != 0, "udp-esp"},
		{p.Encapsulation&NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q != 0, "vlan"},
	} {
		if s.on {
			out = append(out, s.name)
		}
	}
	return out
}

// Engine is what the running userspace engine declares it handles.
type Engine struct {
	Send, Receive                              bool
	Transport, Tunnel, TransportTunnelCombined bool
	// AhEspCombined: the engine unwraps [AH][ESP] bundles.
	AhEspCombined   bool
	ESN             bool
	LSO             bool
	TxChecksum      bool
	MaxReplayWindow uint32
	Queues          int
	AFXDPMode       AFXDPMode
	SAsInUse        uint32
}

// MapCapacity is the part of *ebpf.Map the probe needs: the SA map's real
// size is SaOffloadCapacity.
type MapCapacity interface {
	MaxEntries() uint32
}

// ProbeInputs says what to probe and gives the facts other packages own.
// Nil members mean "that part is not there" and the hardware view offloads
// nothing, with the reason in Linux.Limits: capabilities never fills a
// member from a constant.
type ProbeInputs struct {
	// Link is the protected link's name; empty probes only the machine.
	Link string
	// TryNativeXDP attaches a minimal XDP_PASS program to Link in driver
	// mode and detaches it. Skip it while the datapath is attached.
	TryNativeXDP bool
	// SelfTest runs the known-answer test of one algorithm (an XFRM name)
	// and returns nil when it passes; ipsec.SelfTest is the real one.
	SelfTest func(name string) error
	// Program is what the loaded XDP program handles; nil: none loaded.
	Program *Program
	// Engine is what the engine handles; nil: not running.
	Engine *Engine
	// SAMap is the datapath's SA map; nil: not loaded.
	SAMap MapCapacity
}

// ErrNoSuchLink is wrapped by Probe when the link does not exist.
var ErrNoSuchLink = errors.New("no such link")

// Probe builds a State from reality: the hardware view is what every part
// (XDP program, engine, kernel, SA map, self-tested algorithms) can do
// together, the parameters are DefaultParameters, and Linux says what was
// found and why anything is missing. Only a bad Link is an error; every
// other failed probe is reported in the State.
func Probe(in ProbeInputs) (State, error) {
	st := State{Parameters: DefaultParameters()}
	lx := &st.Linux
	lx.CPU = probeCPU()
	lx.Kernel = probeKernel()
	if in.Link != "" {
		li, err := ProbeLink(in.Link, in.TryNativeXDP)
		if err != nil {
			return State{}, err
		}
		lx.Link = li
	}

	// Algorithms: only those whose known-answer test passes.
	var algs []string
	lx.SelfTest = map[string]string{}
	if in.SelfTest == nil {
		lx.Limits = append(lx.Limits, "no algorithm self-test available: no algorithm is claimed")
	} else {
		for _, a := range ipsec.Algorithms {
			if err := in.SelfTest(a.Name); err != nil {
				lx.SelfTest[a.Name] = err.Error()
				continue
			}
			lx.SelfTest[a.Name] = ""
			algs = append(algs, a.Name)
		}
		if len(algs) == 0 {
			lx.Limits = append(lx.Limits, "no algorithm passed its self-test")
		}
	}

	if !lx.Kernel.XDP.Supported {
		lx.Limits = append(lx.Limits, "kernel cannot load XDP programs: "+lx.Kernel.XDP.Detail)
	}
	if !lx.Kernel.XSKMap.Supported {
		lx.Limits = append(lx.Limits, "kernel lacks XSKMAP (AF_XDP): "+lx.Kernel.XSKMap.Detail)
	}
	p, e := in.Program, in.Engine
	if p == nil {
		lx.Limits = append(lx.Limits, "no XDP program loaded")
	} else {
		lx.XDPMode = p.Mode
		pc := *p
		lx.Program = &pc
	}
	if e == nil {
		lx.Limits = append(lx.Limits, "engine not running")
	} else {
		lx.EngineRunning = true
		lx.AFXDPMode = e.AFXDPMode
		lx.Queues = e.Queues
		lx.MaxReplayWindow = e.MaxReplayWindow
		lx.SAsInUse = e.SAsInUse
	}
	var capacity uint32
	if in.SAMap == nil {
		lx.Limits = append(lx.Limits, "no SA map loaded")
	} else if capacity = in.SAMap.MaxEntries(); capacity == 0 {
		lx.Limits = append(lx.Limits, "the SA map holds no entries")
	}

	hw := Offload{Algorithms: algs, SaOffloadCapacity: capacity}
	if len(lx.Limits) == 0 {
		hw.Encapsulation = p.Encapsulation
		hw.IPv4, hw.IPv6 = p.IPv4, p.IPv6
		hw.IPv4Options = p.IPv4Options
		hw.IPv6NonIPsecExtensionHeaders = p.IPv6ExtensionHeaders
		hw.AH, hw.ESP = p.AH, p.ESP
		hw.AhEspCombined = p.AhEspCombined && e.AhEspCombined
		hw.Transport, hw.Tunnel = e.Transport, e.Tunnel
		hw.TransportTunnelCombined = e.TransportTunnelCombined
		hw.Send, hw.Receive = e.Send, e.Receive
		hw.LSO, hw.TxChecksum, hw.ESN = e.LSO, e.TxChecksum, e.ESN
		hw.UdpEsp = p.UdpEsp
	}
	st.Hardware = hw
	return st, nil
}

func probeCPU() CPUInfo {
	c := CPUInfo{Arch: runtime.GOARCH}
	switch runtime.GOARCH {
	case "amd64", "386":
		c.AES, c.PCLMULQDQ = cpu.X86.HasAES, cpu.X86.HasPCLMULQDQ
	case "arm64":
		c.AES, c.PCLMULQDQ = cpu.ARM64.HasAES, cpu.ARM64.HasPMULL
	}
	return c
}

func check(err error) Check {
	if err != nil {
		return Check{Detail: err.Error()}
	}
	return Check{Supported: true}
}

// probeKernel is run once per process: kernel features do not change.
var probeKernel = sync.OnceValue(func() KernelInfo {
	return KernelInfo{
		XDP:        check(features.HaveProgramType(ebpf.XDP)),
		XSKMap:     check(features.HaveMapType(ebpf.XSKMap)),
		BPFLinkXDP: probeBPFLinkXDP(),
	}
})

// passProgram loads the smallest XDP program: return XDP_PASS.
func passProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdpsec_probe",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
		License: "GPL",
	})
}

// probeBPFLinkXDP attaches an XDP_PASS program through a bpf_link to the
// loopback of a fresh, unnamed network namespace that disappears
// afterwards, so no real link is touched.
func probeBPFLinkXDP() Check {
	if os.Geteuid() != 0 {
		return Check{Detail: "not probed: needs root"}
	}
	prog, err := passProgram()
	if err != nil {
		return Check{Detail: fmt.Sprintf("load XDP_PASS program: %v", err)}
	}
	defer prog.Close()
	res := make(chan Check, 1)
	go func() {
		// The thread changes namespace; it is never unlocked, so if the
		// way back fails the runtime retires the thread with the goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			res <- Check{Detail: fmt.Sprintf("get netns: %v", err)}
			return
		}
		defer orig.Close()
		tmp, err := netns.New()
		if err != nil {
			res <- Check{Detail: fmt.Sprintf("create probe netns: %v", err)}
			return
		}
		c := func() Check {
			defer tmp.Close()
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: 1, Flags: link.XDPGenericMode})
			if err != nil {
				return Check{Detail: fmt.Sprintf("attach XDP through bpf_link: %v", err)}
			}
			if err := l.Close(); err != nil {
				return Check{Detail: fmt.Sprintf("detach XDP bpf_link: %v", err)}
			}
			return Check{Supported: true}
		}()
		if err := netns.Set(orig); err != nil {
			res <- Check{Detail: fmt.Sprintf("return from probe netns: %v", err)}
			return
		}
		runtime.UnlockOSThread()
		res <- c
	}()
	return <-res
}

// ProbeLink reads the link called name in the caller's network namespace:
// index, MTU, state, receive queues and the XDP program attached now. With
// tryNative, and no XDP program attached, it attaches a minimal XDP_PASS
// program in driver mode and detaches it to learn whether native XDP
// works; with a program attached it reports that program's mode instead.
func ProbeLink(name string, tryNative bool) (*LinkInfo, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("probe link %q: %w (see `ip link`)", name, ErrNoSuchLink)
		}
		return nil, fmt.Errorf("probe link %q: %w", name, err)
	}
	a := l.Attrs()
	li := &LinkInfo{
		Name:      a.Name,
		Index:     a.Index,
		MTU:       a.MTU,
		Up:        a.Flags&net.FlagUp != 0,
		OperState: a.OperState.String(),
	}
	li.RxQueues, li.QueueSource = rxQueues(a)
	if a.Xdp != nil && a.Xdp.Attached {
		li.AttachedXDP = attachMode(a.Xdp.AttachMode)
	}
	switch {
	case !tryNative:
		li.NativeXDP = Check{Detail: "not tried"}
	case li.AttachedXDP == XDPNative:
		li.NativeXDP = Check{Supported: true, Detail: "an XDP program is attached in native mode"}
	case li.AttachedXDP != XDPNone:
		li.NativeXDP = Check{Detail: fmt.Sprintf("not tried: an XDP program is attached in %s mode", li.AttachedXDP)}
	default:
		li.NativeXDP = tryNativeXDP(a.Index)
	}
	return li, nil
}

func tryNativeXDP(ifindex int) Check {
	prog, err := passProgram()
	if err != nil {
		return Check{Detail: fmt.Sprintf("load XDP_PASS program: %v", err)}
	}
	defer prog.Close()
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return Check{Detail: fmt.Sprintf("attach in driver mode: %v", err)}
	}
	if err := l.Close(); err != nil {
		return Check{Supported: true, Detail: fmt.Sprintf("attached, but detach failed: %v", err)}
	}
	return Check{Supported: true}
}

// attachMode maps IFLA_XDP_ATTACHED (XDP_ATTACHED_*) to a mode.
func attachMode(m uint32) XDPMode {
	switch m {
	case 1: // XDP_ATTACHED_DRV
		return XDPNative
	case 2: // XDP_ATTACHED_SKB
		return XDPGeneric
	case 3: // XDP_ATTACHED_HW
		return XDPOffload
	case 4: // XDP_ATTACHED_MULTI
		return XDPMode("multi")
	}
	return XDPNone
}

// rxQueues counts /sys/class/net/L/queues/rx-* when that sysfs entry is
// this link (same ifindex: sysfs shows the namespace it was mounted in),
// else falls back to netlink's IFLA_NUM_RX_QUEUES.
func rxQueues(a *netlink.LinkAttrs) (int, string) {
	dir := filepath.Join("/sys/class/net", a.Name)
	if b, err := os.ReadFile(filepath.Join(dir, "ifindex")); err == nil {
		if idx, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && idx == a.Index {
			if m, err := filepath.Glob(filepath.Join(dir, "queues", "rx-*")); err == nil && len(m) > 0 {
				return len(m), "sysfs"
			}
		}
	}
	return a.NumRxQueues, "netlink"
}
