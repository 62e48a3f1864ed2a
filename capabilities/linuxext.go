package capabilities

import (
	"maps"
	"reflect"
	"slices"
)

// XDPMode is how an XDP program is attached to a link.
type XDPMode string

// XDP attach modes.
const (
	XDPNone    XDPMode = ""
	XDPNative  XDPMode = "native"  // XDP_FLAGS_DRV_MODE, in the driver
	XDPGeneric XDPMode = "generic" // XDP_FLAGS_SKB_MODE, after the skb is built
	XDPOffload XDPMode = "offload" // XDP_FLAGS_HW_MODE, on the NIC
)

// AFXDPMode is how the AF_XDP sockets move frames.
type AFXDPMode string

// AF_XDP modes.
const (
	AFXDPNone     AFXDPMode = ""
	AFXDPZeroCopy AFXDPMode = "zero-copy" // XDP_ZEROCOPY: the NIC DMAs into the UMEM
	AFXDPCopy     AFXDPMode = "copy"      // XDP_COPY: the kernel copies into the UMEM
)

// Check is the outcome of one probe: Supported, or not with Detail saying
// why (the error seen, or why the probe was not run).
type Check struct {
	Supported bool   `json:"supported"`
	Detail    string `json:"detail,omitempty"`
}

// LinkInfo is what the probe found about the protected link.
type LinkInfo struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	MTU   int    `json:"mtu"`
	// Up is the administrative state (IFF_UP); OperState the RFC 2863
	// operational state netlink reports.
	Up        bool   `json:"up"`
	OperState string `json:"operState"`
	// RxQueues is the number of active receive queues (one AF_XDP socket
	// and worker each). QueueSource says where it was read: "sysfs"
	// (/sys/class/net/L/queues, the active count) or "netlink"
	// (IFLA_NUM_RX_QUEUES, the allocated count; used when sysfs shows
	// another namespace).
	RxQueues    int    `json:"rxQueues"`
	QueueSource string `json:"queueSource"`
	// AttachedXDP is the mode of the XDP program attached now, if any.
	AttachedXDP XDPMode `json:"attachedXdp,omitempty"`
	// NativeXDP says whether a minimal XDP_PASS program attached in driver
	// mode (tried only when asked: it briefly owns the link's XDP hook).
	NativeXDP Check `json:"nativeXdp"`
}

// KernelInfo holds kernel features the datapath needs.
type KernelInfo struct {
	// XDP: BPF_PROG_TYPE_XDP loads (4.8+).
	XDP Check `json:"xdp"`
	// XSKMap: BPF_MAP_TYPE_XSKMAP exists (4.18+).
	XSKMap Check `json:"xskmap"`
	// BPFLinkXDP: XDP attaches through a bpf_link (5.9+), so a crashed
	// daemon's program detaches with its last file descriptor.
	BPFLinkXDP Check `json:"bpfLinkXdp"`
}

// CPUInfo holds the CPU features the transforms' speed depends on.
type CPUInfo struct {
	Arch string `json:"arch"`
	// AES: AES instructions (AES-NI, ARMv8 AES). Without them Go's AES is
	// constant-time but several times slower.
	AES bool `json:"aes"`
	// PCLMULQDQ: carry-less multiply (PCLMULQDQ, ARMv8 PMULL) for GHASH.
	PCLMULQDQ bool `json:"pclmulqdq"`
}

// Linux holds what NDIS cannot say: how the datapath runs, the link, the
// machine, and the outcome of every algorithm self-test.
type Linux struct {
	// Link is nil when no link was probed.
	Link *LinkInfo `json:"link,omitempty"`
	// Program is what the loaded XDP program handles; nil when none was
	// loaded. It is reported even when another part (the engine) keeps the
	// hardware view from claiming it.
	Program *Program `json:"program,omitempty"`
	// XDPMode is the mode the datapath's XDP program runs in.
	XDPMode XDPMode `json:"xdpMode"`
	// AFXDPMode is the mode of the engine's AF_XDP sockets.
	AFXDPMode AFXDPMode `json:"afxdpMode"`
	// Queues is the number of queues the engine serves.
	Queues int `json:"queues"`
	// MaxReplayWindow is the largest anti-replay window, in packets.
	MaxReplayWindow uint32 `json:"maxReplayWindow"`
	// SAsInUse is the number of SAs installed when the state was taken.
	SAsInUse uint32 `json:"sasInUse"`
	// EngineRunning says whether the userspace engine serves the queues.
	EngineRunning bool       `json:"engineRunning"`
	Kernel        KernelInfo `json:"kernel"`
	CPU           CPUInfo    `json:"cpu"`
	// SelfTest maps every algorithm of ipsec.Algorithms to "" (its
	// known-answer test passed) or the failure. Algorithms absent from the
	// map were not tested.
	SelfTest map[string]string `json:"selfTest"`
	// Limits lists why the hardware view lacks something, in words
	// ("engine not running", "no XDP program loaded", ...).
	Limits []string `json:"limits"`
}

// Clone returns a deep copy.
func (l Linux) Clone() Linux {
	if l.Link != nil {
		c := *l.Link
		l.Link = &c
	}
	if l.Program != nil {
		c := *l.Program
		l.Program = &c
	}
	l.SelfTest = maps.Clone(l.SelfTest)
	l.Limits = slices.Clone(l.Limits)
	return l
}

// Equal reports whether two Linux extensions are the same (a nil and an
// empty map or slice are the same).
func (l Linux) Equal(m Linux) bool {
	if !maps.Equal(l.SelfTest, m.SelfTest) || !slices.Equal(l.Limits, m.Limits) {
		return false
	}
	if (l.Link == nil) != (m.Link == nil) || (l.Link != nil && *l.Link != *m.Link) {
		return false
	}
	l.Link, m.Link, l.SelfTest, m.SelfTest, l.Limits, m.Limits = nil, nil, nil, nil, nil, nil
	return reflect.DeepEqual(l, m)
}
