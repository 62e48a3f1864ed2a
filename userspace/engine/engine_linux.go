package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/capabilities/probe"
	"github.com/xdpsec/xdpsec/internal/dropcap"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
	"github.com/xdpsec/xdpsec/userspace/engine/neigh"
	"github.com/xdpsec/xdpsec/userspace/engine/tun"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/replay"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// DefaultTUN is the name of the TUN device when Config.TUN is empty.
const DefaultTUN = "xdpsec0"

// defaultOverhead is the encapsulation overhead the TUN MTU leaves room for
// when no outbound SA exists yet to measure it: an IPv6 outer header with UDP
// encapsulation and CBC+HMAC-SHA-512 stays below it.
const defaultOverhead = 128

// MaxTUNMTU is the largest TUN MTU the engine runs with on frames of the
// default size (afxdp.DefaultFrameSize): TUNMTULimit(0), 1664 bytes.
const MaxTUNMTU = afxdp.DefaultFrameSize - afxdp.PacketHeadroom - outTailroom

// TUNMTULimit returns the largest TUN MTU the engine runs with on AF_XDP
// frames of frameSize bytes (0: afxdp.DefaultFrameSize): 1664 for 2048-byte
// frames, 3712 for 4096. An outbound packet is read from the TUN straight
// into one frame, behind the frame's headroom (afxdp.PacketHeadroom, where
// the outer headers and the Ethernet header are written) and in front of
// room for the ESP trailer and ICV. Start caps the derived MTU there and
// refuses a larger Config.MTU; a packet that still does not fit (the MTU
// raised by hand) is answered with ICMP too-big naming this limit, never
// cut.
func TUNMTULimit(frameSize int) int {
	if frameSize == 0 {
		frameSize = afxdp.DefaultFrameSize
	}
	return frameSize - afxdp.PacketHeadroom - outTailroom
}

// RxFrameLimit returns the largest Ethernet frame (its header and VLAN tags
// included) an AF_XDP socket of the engine with frames of frameSize bytes
// (0: afxdp.DefaultFrameSize) receives: 1792 bytes for 2048-byte frames,
// 3840 for 4096. The kernel copies a received packet into the frame at
// XDP_PACKET_HEADROOM (copy mode) and drops a longer one before the engine
// sees it, counted in the socket's XDP_STATISTICS rx_dropped (Stats
// Sockets[].RxDropped): the socket is bound without XDP_USE_SG, so there is
// no multi-buffer.
func RxFrameLimit(frameSize int) int {
	if frameSize == 0 {
		frameSize = afxdp.DefaultFrameSize
	}
	return frameSize - afxdp.PacketHeadroom
}

// mtuAdvice says which TUN MTUs frames of frameSize bytes carry and how to
// get more, for the errors of Start and LoadConfig.
func mtuAdvice(frameSize int) string {
	if frameSize == 0 {
		frameSize = afxdp.DefaultFrameSize
	}
	s := fmt.Sprintf("an inner packet must fit one %d-byte AF_XDP frame with its ESP headers, so the TUN MTU is 68 to %d", frameSize, TUNMTULimit(frameSize))
	if frameSize < 4096 {
		s += fmt.Sprintf(" (`frame-size 4096` raises it to %d)", TUNMTULimit(4096))
	}
	return s + "; or leave mtu out to derive it from the links"
}

// checkFrameSize refuses an AF_XDP frame size the engine does not run with.
func checkFrameSize(n int) error {
	if n != 0 && n != 2048 && n != 4096 {
		return fmt.Errorf("%w: frame-size %d: an AF_XDP frame is 2048 or 4096 bytes (4096 carries TUN MTUs up to %d)", ErrConfig, n, TUNMTULimit(4096))
	}
	return nil
}

// Errors callers tell apart with errors.Is.
var (
	// ErrConfig: the Config cannot work; the message says which field.
	ErrConfig = errors.New("invalid engine config")
	// ErrStopped: the engine was stopped.
	ErrStopped = errors.New("engine stopped")
)

// Config says what Start builds.
type Config struct {
	// Links are the interfaces whose IPsec traffic the engine terminates
	// (at least one). The XDP program is attached to each.
	Links []string
	// XDPMode is the attach mode (loader.ModeAuto: native, else generic).
	XDPMode loader.Mode
	// PinRoot is the bpffs directory of the loader's pins
	// (loader.DefaultPinRoot when empty). Under `ip netns exec`, /sys is a
	// fresh sysfs without bpffs: the loader then mounts a private bpffs
	// that dies with the process, so fail-open across a crash needs a
	// PinRoot on a bpffs mounted outside that private mount namespace.
	PinRoot string
	// FailOpen leaves the XDP program and its maps pinned on Stop, so IPsec
	// traffic falls back to the kernel (steer-fallback) until a restart.
	FailOpen bool
	// NoTUNOffload turns off the TUN's virtio_net_hdr offloads (config line
	// `tun-offload off`). By default the TUN is created with
	// tun.Config.VnetHdr: the local TCP stack hands the workers 64 KiB
	// super-packets that they segment before ESP (engine/gso), and inbound
	// TCP segments of one flow decrypted in one batch reach the stack in
	// one coalesced write.
	NoTUNOffload bool
	// TUN is the TUN device name (DefaultTUN when empty).
	TUN string
	// Addrs are the TUN's addresses (the inner addresses of this host).
	Addrs []netip.Prefix
	// Routes are extra prefixes routed into the TUN, besides the
	// destination prefixes of outbound policies.
	Routes []netip.Prefix
	// MTU is the TUN MTU, at most TUNMTULimit(FrameSize); 0 takes the
	// smallest link MTU minus the largest encapsulation overhead of the
	// outbound SAs, capped there.
	MTU int
	// FrameSize is the size in bytes of every AF_XDP frame of every socket
	// the engine opens (config line `frame-size`): 2048 or 4096, 0 meaning
	// afxdp.DefaultFrameSize (2048). One packet is one frame, so it bounds
	// the TUN MTU (TUNMTULimit) and the largest frame received
	// (RxFrameLimit); 4096 doubles the UMEM of each socket. See the
	// package documentation for the ceilings of the links themselves.
	FrameSize int
	// Queues is the number of workers (and of AF_XDP sockets per link and
	// TUN queues); 0 takes the largest rx queue count of the links.
	Queues int
	// FrameCount is the UMEM size of each socket, in frames of FrameSize
	// bytes (afxdp.DefaultFrameCount when 0).
	FrameCount int
	// SAs and Policies are installed before the workers start.
	SAs      []*sad.SASpec
	Policies []*sad.PolicySpec
	// Capabilities, when not nil, is obeyed: its current view's XDP config
	// is written into the loader and followed on every change, and SAs it
	// does not allow are refused.
	Capabilities *capabilities.Hub
	// Parameters, when not nil, are the offload parameters to start with
	// (an update of capabilities.DefaultParameters, as the config's
	// `offload` lines give), set right after the capabilities probe and
	// before any SA is admitted, so cfg's SAs are judged by them and the
	// TUN MTU is derived from the SAs they admit. ParametersDetail names
	// their source in the parameters-set change event.
	Parameters       *capabilities.Parameters
	ParametersDetail string
	// Logger receives lifecycle events (never key bytes); slog.Default()
	// when nil.
	Logger *slog.Logger
	// frameAccounting (tests) opens every socket with afxdp frame
	// accounting and makes Stop check it once the workers are gone: no
	// frame held by the engine, none in two places.
	frameAccounting bool

	// DropCapture, when not nil, is offered every inbound frame the
	// workers drop with an ipsec verdict (bad-icv, replay, no-state, ...);
	// it costs one atomic load per drop while no capture runs.
	DropCapture *dropcap.Capture
}

// Engine is a running host-mode IPsec engine. See the package documentation
// for its pipelines and concurrency contract.
type Engine struct {
	cfg Config
	log *slog.Logger

	sad *sad.SAD
	spd *sad.SPD

	links   []*engineLink
	dev     *tun.Device
	nr      *neigh.Resolver
	nl      *netlink.Handle
	workers []*worker

	evfd     int
	stopping atomic.Bool
	wg       sync.WaitGroup
	done     chan struct{}
	gone     chan error // one error: a link or the TUN was deleted (Gone)
	sub      *capabilities.Subscription
	hub      *capabilities.Hub

	// nattPorts are the UDP ports besides 4500 that inbound SAs receive
	// ESP-in-UDP on (immutable slices, replaced by syncSAMap); the XDP
	// config lists them, the workers parse them.
	nattPorts atomic.Pointer[[]uint16]

	mu      sync.Mutex // serialises writers and Stop
	stopped bool
	saIDs   map[sad.SAKey]uint32
	nq      int // workers (queues), fixed at Start
	nextID  uint32
	routes  map[netip.Prefix]int
	started time.Time
	// openSocks are sockets opened but not yet handed to a worker (Start).
	openSocks [][]*afxdp.Socket
}

// engineLink is one attached interface.
type engineLink struct {
	name    string
	index   int
	mtu     int
	queues  int
	dp      *loader.Datapath
	xdpConf loader.Config
	mode    string // XDP attach mode, read at Start (Status looks the link up by name in the caller's namespace)
	saCap   int    // max_entries of the link's XDP SA map as the kernel reports it
}

// ErrSAMapFull is wrapped by AddSA, UpdateSA and Reload when an inbound SA
// does not fit the XDP SA map of a link.
var ErrSAMapFull = errors.New("XDP SA map full")

// checkCapacity refuses an inbound SA that the XDP SA maps cannot hold.
// spec's own key, when present already, does not count twice.
func (e *Engine) checkCapacity(spec *sad.SASpec, locals map[netip.Addr]bool) error {
	if !e.inbound(spec, locals) {
		return nil
	}
	n := 1
	for _, a := range e.sad.List() {
		if a.Key() != spec.Key() && e.inbound(a.Spec(), locals) {
			n++
		}
	}
	for _, el := range e.links {
		if el.saCap > 0 && n > el.saCap {
			return fmt.Errorf("SA %s: %w: the XDP SA map of %s holds %d inbound SAs and all are in use; delete one (xdpsec sa del ...) first", spec.Key(), ErrSAMapFull, el.name, el.saCap)
		}
	}
	return nil
}

// Start attaches the datapath to every link, creates the TUN, opens one
// AF_XDP socket per queue and link, installs cfg's SAs and policies and
// starts the workers. Call it on a thread inside the network namespace of
// the links (the engine keeps working there from any thread). On failure
// nothing Start created is left behind.
func Start(cfg Config) (_ *Engine, err error) {
	if len(cfg.Links) == 0 {
		return nil, fmt.Errorf("%w: no link: name at least one interface (config line `link IFNAME`)", ErrConfig)
	}
	if err := checkFrameSize(cfg.FrameSize); err != nil {
		return nil, err
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = afxdp.DefaultFrameSize
	}
	if cfg.MTU < 0 || cfg.MTU > TUNMTULimit(cfg.FrameSize) {
		return nil, fmt.Errorf("%w: mtu %d: %s", ErrConfig, cfg.MTU, mtuAdvice(cfg.FrameSize))
	}
	if cfg.TUN == "" {
		cfg.TUN = DefaultTUN
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{
		cfg:    cfg,
		log:    cfg.Logger,
		evfd:   -1,
		done:   make(chan struct{}),
		gone:   make(chan error, 1),
		saIDs:  map[sad.SAKey]uint32{},
		routes: map[netip.Prefix]int{},
	}
	defer func() {
		if err != nil {
			e.teardown(false)
		}
	}()
	if e.nl, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	queues, minMTU := 0, 1<<30
	for _, name := range cfg.Links {
		l, err := e.nl.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w (check `ip link` in this namespace)", name, err)
		}
		a := l.Attrs()
		el := &engineLink{name: name, index: a.Index, mtu: a.MTU, queues: max(a.NumRxQueues, 1)}
		minMTU = min(minMTU, a.MTU)
		if maxIP := RxFrameLimit(cfg.FrameSize) - ethLen - 2*4; a.MTU > maxIP {
			msg := "link MTU exceeds an AF_XDP frame: IPsec packets longer than the frame are dropped by the kernel (rx_dropped); keep the peers' packets below it"
			if cfg.FrameSize < 4096 {
				msg += ", or set `frame-size 4096` (IP packets up to " + fmt.Sprint(RxFrameLimit(4096)-ethLen-2*4) + " bytes)"
			}
			e.log.Warn(msg, "link", name, "mtu", a.MTU, "max-ip-packet", maxIP, "frame-size", cfg.FrameSize)
		}
		dp, err := loader.Attach(name, cfg.XDPMode, loader.Options{PinRoot: cfg.PinRoot, Logger: e.log})
		if err != nil {
			return nil, fmt.Errorf("attach xdp to %s: %w", name, err)
		}
		el.dp = dp
		el.mode = "unknown"
		if st, err := dp.Status(); err == nil {
			el.mode = st.Mode.String()
		}
		el.saCap = int(dp.SACapacity())
		e.links = append(e.links, el)
	}
	// One socket per rx queue in use. Netlink reports the queues allocated
	// (veth allocates one per possible CPU), not the ones in use
	// (real_num_rx_queues), and the sysfs of another namespace cannot
	// tell either: bind answers EINVAL past the last queue in use.
	socks := make([][]*afxdp.Socket, len(e.links))
	e.openSocks = socks
	for li, el := range e.links {
		n := el.queues
		if cfg.Queues > 0 {
			n = min(n, cfg.Queues)
		}
		for q := 0; q < n; q++ {
			s, err := openSocket(afxdp.Config{Ifindex: el.index, Queue: q, FrameSize: cfg.FrameSize, FrameCount: cfg.FrameCount, Accounting: cfg.frameAccounting})
			if err != nil {
				if q > 0 && errors.Is(err, unix.EINVAL) {
					break
				}
				return nil, fmt.Errorf("open AF_XDP socket on %s queue %d: %w", el.name, q, err)
			}
			socks[li] = append(socks[li], s)
		}
		el.queues = len(socks[li])
		queues = max(queues, el.queues)
		if cfg.Queues > 0 && el.queues == cfg.Queues && rxQueueInUse(el.index, cfg.Queues) {
			e.log.Warn("link has more rx queues in use than `queues`: IPsec packets arriving on the others are not steered (counted steer-fallback) and reach a kernel without the SAs; raise `queues` to the link's rx queue count or lower that (ethtool -L LINK combined N)",
				"link", el.name, "queues", cfg.Queues)
		}
	}
	if queues > tun.MaxQueues {
		return nil, fmt.Errorf("%w: %d queues: at most %d", ErrConfig, queues, tun.MaxQueues)
	}
	e.hub = cfg.Capabilities
	if e.hub == nil {
		if e.hub, err = e.probeCapabilities(queues, socks); err != nil {
			e.log.Warn("capabilities probe failed: steering every IPsec class", "err", err)
			e.hub = nil
		}
	}
	if cfg.Parameters != nil {
		if e.hub == nil {
			return nil, fmt.Errorf("%w: offload parameters need the capabilities probe, which failed (see the log): remove the `offload` lines, or fix the probe", ErrConfig)
		}
		if _, err := e.hub.ResetParameters(*cfg.Parameters, cfg.ParametersDetail); err != nil {
			return nil, fmt.Errorf("%w: offload: %w", ErrConfig, err)
		}
	}
	if err := e.applyXDPConfig(); err != nil {
		return nil, err
	}

	e.nq = queues
	e.sad = sad.NewSAD(sad.Config{Shards: queues})
	e.spd = sad.NewSPD(sad.Config{})
	for _, s := range cfg.SAs {
		if _, err := e.addSALocked(s); err != nil {
			return nil, err
		}
	}
	for _, p := range cfg.Policies {
		if _, err := e.spd.Add(p); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p, err)
		}
	}

	// The resolver may only name our links as egress: transport-mode
	// peers are routed into the TUN, and their outer packets must still
	// find the link route (see neigh.Config.Links).
	linkIdx := make([]int, len(e.links))
	for i, el := range e.links {
		linkIdx[i] = el.index
	}
	if e.nr, err = neigh.New(neigh.Config{Links: linkIdx}); err != nil {
		return nil, fmt.Errorf("start neighbour resolver: %w", err)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = minMTU - e.maxOverhead()
		if limit := TUNMTULimit(cfg.FrameSize); mtu > limit {
			msg := "TUN MTU capped at what an AF_XDP frame carries"
			if cfg.FrameSize < 4096 {
				msg += fmt.Sprintf("; set `frame-size 4096` for a TUN MTU up to %d", min(mtu, TUNMTULimit(4096)))
			}
			e.log.Info(msg, "link-mtu", minMTU, "mtu", limit, "frame-size", cfg.FrameSize)
			mtu = limit
		}
	}
	if e.dev, err = tun.Create(tun.Config{Name: cfg.TUN, Queues: queues, MTU: mtu, TxQueueLen: 1000, Addrs: cfg.Addrs, Routes: cfg.Routes, VnetHdr: !cfg.NoTUNOffload}); err != nil {
		return nil, fmt.Errorf("create tun %s: %w", cfg.TUN, err)
	}
	for _, p := range e.spd.List() {
		e.routePolicy(p.Spec(), true)
	}

	if e.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("create eventfd: %w", err)
	}
	for q := 0; q < queues; q++ {
		w := newWorker(e, q)
		e.workers = append(e.workers, w)
		for li, el := range e.links {
			if q >= el.queues {
				continue
			}
			s := socks[li][q]
			socks[li][q] = nil // the worker owns it now
			w.socks[li] = s
			if err := el.dp.SetXSK(uint32(q), s.FD()); err != nil {
				return nil, fmt.Errorf("put AF_XDP socket of %s queue %d in the XSKMAP: %w", el.name, q, err)
			}
		}
		w.init()
	}
	if err := e.syncSAMap(); err != nil {
		return nil, err
	}
	for _, a := range e.sad.List() {
		e.warmNeighbour(a)
	}
	e.awaitNeighbours(3 * time.Second)
	e.started = time.Now()
	for _, w := range e.workers {
		e.wg.Add(1)
		go w.run()
	}
	if e.hub != nil {
		e.sub = e.hub.Subscribe(4)
	}
	e.wg.Add(1)
	go e.housekeeping()
	// Subscribed here, on the caller's thread, so the socket is in the
	// links' namespace.
	tunEvents := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribeWithOptions(tunEvents, e.done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-e.done: // Stop closed the socket
			default:
				e.log.Warn("link events", "err", err)
			}
		},
	}); err != nil {
		e.log.Warn("cannot follow the links' state: routes lost to `ip link set down` come back only with a restart, and a deleted link goes unnoticed", "tun", e.dev.Name(), "err", err)
	} else {
		// A MAC changed between Attach and the subscription would be
		// missed: read each link once now that later changes are followed.
		for _, el := range e.links {
			l, err := netlink.LinkByIndex(el.index)
			if err == nil {
				_, err = el.dp.UpdateLinkAddr(l)
			}
			if err != nil {
				e.log.Warn("cannot read the link's MAC address: frames to it may pass to the kernel as pass-otherhost", "link", el.name, "err", err)
			}
		}
		e.wg.Add(1)
		go e.watchLinks(tunEvents)
	}
	e.log.Info("engine started", "links", cfg.Links, "queues", queues, "tun", e.dev.Name(), "mtu", mtu,
		"tun-offload", fmt.Sprintf("%#x", e.dev.Offloads()), "afxdp", e.afxdpMode(), "sas", e.sad.Len(), "policies", e.spd.Len())
	return e, nil
}

// probeCapabilities builds the capabilities state from the first link's
// datapath and what this engine handles.
func (e *Engine) probeCapabilities(queues int, socks [][]*afxdp.Socket) (*capabilities.Hub, error) {
	mode := capabilities.AFXDPCopy
	if len(socks[0]) > 0 && socks[0][0].Info().Mode == afxdp.BindZeroCopy {
		mode = capabilities.AFXDPZeroCopy
	}
	in, err := probe.DatapathInputs(e.links[0].dp, &capabilities.Engine{
		Send: true, Receive: true, Transport: true, Tunnel: true, AhEspCombined: true, ESN: true,
		MaxReplayWindow: replay.MaxSize, Queues: queues, AFXDPMode: mode,
	})
	if err != nil {
		return nil, err
	}
	st, err := capabilities.Probe(in)
	if err != nil {
		return nil, err
	}
	return capabilities.NewHub(st), nil
}

// Capabilities returns the hub the engine obeys (nil when probing failed
// and none was given): serve it on the control socket.
func (e *Engine) Capabilities() *capabilities.Hub { return e.hub }

// rxQueueInUse reports whether queue q of the link is in use (below its
// real_num_rx_queues), which netlink cannot tell (see Start): an AF_XDP bind
// to it succeeds or finds it taken (EBUSY); past the last queue in use bind
// answers EINVAL. The probe binds in copy mode with a tiny UMEM and closes
// at once, so no driver reconfigures a queue for zero-copy.
func rxQueueInUse(ifindex, q int) bool {
	s, err := afxdp.Open(afxdp.Config{Ifindex: ifindex, Queue: q, Mode: afxdp.BindCopy, FrameCount: 64,
		RxRingSize: 64, TxRingSize: 64, FillRingSize: 64, CompletionRingSize: 64})
	if err != nil {
		return errors.Is(err, unix.EBUSY)
	}
	s.Close()
	return true
}

// openSocket opens an AF_XDP socket, retrying while the kernel still
// releases the queue from a socket closed just before (EBUSY).
func openSocket(cfg afxdp.Config) (*afxdp.Socket, error) {
	var err error
	for i := 0; i < 50; i++ {
		var s *afxdp.Socket
		if s, err = afxdp.Open(cfg); err == nil {
			return s, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func (e *Engine) afxdpMode() string {
	for _, w := range e.workers {
		for _, s := range w.socks {
			if s != nil {
				return s.Info().Mode.String()
			}
		}
	}
	return "none"
}

// applyXDPConfig writes the receive-offload config: the capabilities'
// current view when a hub is given, else every class on.
func (e *Engine) applyXDPConfig() error {
	c := loader.DefaultConfig()
	if e.hub != nil {
		c = probe.LoaderConfig(e.hub.State().Current(), nil)
	}
	if p := e.nattPorts.Load(); p != nil {
		c.NATTPorts = *p
	}
	for _, el := range e.links {
		if err := el.dp.SetConfig(c); err != nil {
			return fmt.Errorf("set receive-offload config on %s: %w", el.name, err)
		}
		el.xdpConf = c
	}
	return nil
}

// maxOverhead is the largest head+tail any outbound SA adds.
func (e *Engine) maxOverhead() int {
	m := 0
	locals := e.localAddrs()
	for _, a := range e.sad.List() {
		if e.inbound(a.Spec(), locals) {
			continue
		}
		h, t := a.Transform().Overhead()
		m = max(m, h+t)
	}
	if m == 0 {
		m = defaultOverhead
	}
	return m
}

// Gone receives one error when a link of the engine or its TUN is deleted
// (`ip link del`, a driver unbound, a namespace removed): its XDP program
// and AF_XDP sockets went with it, so the engine no longer carries that
// traffic and will not on its own; the caller should Stop it (and say so).
// The error wraps ErrLinkGone.
func (e *Engine) Gone() <-chan error { return e.gone }

// ErrLinkGone is wrapped by the error Gone delivers.
var ErrLinkGone = errors.New("link deleted")

// watchLinks follows the links and the TUN. It puts the TUN's addresses and
// routes back when it comes up again: taking a device down makes the kernel
// delete every route through it and its IPv6 addresses, which would leave
// the tunnel without traffic (and a reload would not notice: its policies
// are unchanged). A link's changed MAC address goes to its XDP program,
// which steers only frames addressed to it. A deleted link or TUN is
// reported on Gone.
func (e *Engine) watchLinks(events <-chan netlink.LinkUpdate) {
	defer e.wg.Done()
	up := true
	for {
		select {
		case <-e.done:
			return
		case u, ok := <-events:
			if !ok {
				return
			}
			if u.Header.Type == unix.RTM_DELLINK {
				if name := e.deletedLink(int(u.Index)); name != "" {
					select {
					case e.gone <- fmt.Errorf("%w: %s (index %d) no longer exists: its traffic is no longer handled; restart xdpsec once it is back", ErrLinkGone, name, u.Index):
						e.log.Error("link deleted: the engine cannot carry its traffic any more", "link", name)
					default: // one report is enough
					}
				}
				continue
			}
			// A link's MAC changed (ip link set dev LINK address ...): its
			// XDP program must steer frames to the new one, and pass those
			// to the old one, as the kernel now drops them (otherhost).
			for _, el := range e.links {
				if el.index != int(u.Index) || u.Header.Type != unix.RTM_NEWLINK || u.Link == nil {
					continue
				}
				if changed, err := el.dp.UpdateLinkAddr(u.Link); err != nil {
					e.log.Warn("cannot follow the link's MAC address: frames to it may pass to the kernel as pass-otherhost", "link", el.name, "err", err)
				} else if changed {
					e.log.Info("link MAC address changed: XDP steers frames to the new one", "link", el.name, "address", u.Attrs().HardwareAddr.String())
				}
			}
			if int(u.Index) != e.dev.Index() || u.Header.Type != unix.RTM_NEWLINK {
				continue
			}
			now := u.Flags&unix.IFF_UP != 0
			if now && !up {
				e.restoreTUN()
			}
			up = now
		}
	}
}

// deletedLink names the engine's link or TUN with ifindex, or returns "".
func (e *Engine) deletedLink(ifindex int) string {
	if ifindex == e.dev.Index() {
		return "tun " + e.dev.Name()
	}
	for _, el := range e.links {
		if el.index == ifindex {
			return el.name
		}
	}
	return ""
}

// restoreTUN re-adds the TUN's configured addresses, its configured routes
// and the routes of the outbound policies (all idempotent).
func (e *Engine) restoreTUN() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return
	}
	var errs []error
	for _, a := range e.cfg.Addrs {
		errs = append(errs, e.dev.AddAddr(a))
	}
	for _, p := range e.cfg.Routes {
		errs = append(errs, e.dev.AddRoute(p))
	}
	for p := range e.routes {
		errs = append(errs, e.dev.AddRoute(p))
	}
	if err := errors.Join(errs...); err != nil {
		e.log.Warn("restore tun addresses and routes after link up", "tun", e.dev.Name(), "err", err)
		return
	}
	e.log.Info("tun up again: addresses and routes restored", "tun", e.dev.Name(), "routes", len(e.routes)+len(e.cfg.Routes))
}

// housekeeping runs lifetimes (SAD.Tick) and follows capability changes.
func (e *Engine) housekeeping() {
	defer e.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var changes <-chan capabilities.Change
	if e.sub != nil {
		changes = e.sub.C
	}
	for {
		select {
		case <-e.done:
			return
		case <-tick.C:
			e.tick()
		case <-e.sad.Wake():
			e.tick()
		case _, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			e.mu.Lock()
			if !e.stopped {
				if err := e.applyXDPConfig(); err != nil {
					e.log.Error("apply capability change", "err", err)
				}
			}
			e.mu.Unlock()
		}
	}
}

func (e *Engine) tick() {
	ex := e.sad.Tick(time.Now())
	if len(ex) == 0 {
		return
	}
	hard := false
	for _, x := range ex {
		e.log.Info("SA lifetime", "sa", x.Spec, "limit", x.Limit, "hard", x.Hard)
		hard = hard || x.Hard
	}
	if hard {
		e.mu.Lock()
		if !e.stopped {
			if err := e.syncSAMap(); err != nil {
				e.log.Error("sync XDP SA map after expiry", "err", err)
			}
		}
		e.mu.Unlock()
	}
}

// Stop ends the workers, closes the sockets, removes the TUN and detaches
// the XDP program (or, with Config.FailOpen, leaves it pinned). It is
// idempotent.
func (e *Engine) Stop() error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	// Writers and Stats see stopped and leave everything alone; the lock
	// is released before the wait, since housekeeping may be waiting for
	// it.
	e.stopped = true
	e.mu.Unlock()
	return e.teardown(e.cfg.FailOpen)
}

// teardown releases everything in reverse order of Start.
func (e *Engine) teardown(failOpen bool) error {
	var errs []error
	e.stopping.Store(true)
	if e.evfd >= 0 {
		var one = [8]byte{1}
		unix.Write(e.evfd, one[:])
	}
	close(e.done)
	e.wg.Wait()
	if e.sub != nil {
		e.sub.Close()
	}
	if e.cfg.frameAccounting {
		errs = append(errs, e.checkFrames()...)
	}
	for _, w := range e.workers {
		for li, s := range w.socks {
			if s == nil {
				continue
			}
			if failOpen {
				// Closing the socket removes it from the XSKMAP; clear the
				// slot explicitly too, so steering falls back at once.
				e.links[li].dp.ClearXSK(uint32(w.q))
			}
			if err := s.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, ss := range e.openSocks {
		for _, s := range ss {
			if s != nil {
				s.Close()
			}
		}
	}
	if e.dev != nil {
		if err := e.dev.Close(); err != nil {
			errs = append(errs, fmt.Errorf("remove tun: %w", err))
		}
	}
	if e.nr != nil {
		e.nr.Close()
	}
	if e.evfd >= 0 {
		unix.Close(e.evfd)
	}
	for _, el := range e.links {
		if failOpen {
			el.dp.Close()
			continue
		}
		if err := el.dp.Detach(loader.Options{PinRoot: e.cfg.PinRoot}); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp from %s: %w", el.name, err))
		}
	}
	if e.nl != nil {
		e.nl.Close()
	}
	if e.hub != nil {
		e.hub.EngineStopped("engine stopped")
	}
	e.log.Info("engine stopped", "fail-open", failOpen)
	return errors.Join(errs...)
}

// checkFrames (Config.frameAccounting) reaps what the kernel still
// transmits and checks every socket's frame accounting, once the workers
// have stopped: every frame must be back with its socket (free list, fill
// ring) or still with the kernel (tx), none held by the engine or lost.
func (e *Engine) checkFrames() []error {
	var errs []error
	for _, w := range e.workers {
		for li, s := range w.socks {
			if s == nil {
				continue
			}
			// Copy mode transmits inside each kick; a link without
			// carrier takes one descriptor per kick, so allow a ring's worth.
			for range 2 * afxdp.DefaultRingSize {
				if s.Complete(); s.Free()+s.Info().FillRingSize >= s.Info().FrameCount {
					break
				}
			}
			c, err := s.FrameAccounting()
			if err == nil && c[afxdp.FrameApp] != 0 {
				err = fmt.Errorf("%d frames still held by the worker", c[afxdp.FrameApp])
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("frames of %s queue %d (%v): %w", e.links[li].name, w.q, c, err))
			}
		}
	}
	return errs
}

// localAddrs lists the addresses of the namespace's interfaces.
func (e *Engine) localAddrs() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	addrs, err := e.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		e.log.Warn("list local addresses", "err", err)
		return m
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	return m
}

// inbound says whether an SA verifies traffic to this host: `dir in`, or,
// without a dir, a destination that is a local address.
func (e *Engine) inbound(s *sad.SASpec, locals map[netip.Addr]bool) bool {
	switch s.Dir {
	case "in":
		return true
	case "out":
		return false
	}
	return locals[s.Dst.Unmap()]
}

// isNATTPort says whether an inbound SA receives ESP-in-UDP on port p
// besides 4500. Workers call it; it never allocates.
func (e *Engine) isNATTPort(p uint16) bool {
	if ps := e.nattPorts.Load(); ps != nil {
		return slices.Contains(*ps, p)
	}
	return false
}

// extraPorts lists the UDP ports besides 4500 that the inbound SAs of the
// SAD, with spec (when not nil) added or replacing its namesake, receive
// ESP-in-UDP on, sorted.
func (e *Engine) extraPorts(spec *sad.SASpec, locals map[netip.Addr]bool) []uint16 {
	var ports []uint16
	add := func(s *sad.SASpec) {
		if s.Encap != nil && s.Encap.DstPort != ipsec.NATTPort && e.inbound(s, locals) && !slices.Contains(ports, s.Encap.DstPort) {
			ports = append(ports, s.Encap.DstPort)
		}
	}
	for _, a := range e.sad.List() {
		if spec == nil || a.Key() != spec.Key() {
			add(a.Spec())
		}
	}
	if spec != nil {
		add(spec)
	}
	slices.Sort(ports)
	return ports
}

// checkQueue refuses an SA whose `pcpu-num` names a queue this engine has
// no worker for (no worker would ever send on it), as Linux refuses a
// pcpu-num beyond its CPUs.
func (e *Engine) checkQueue(spec *sad.SASpec) error {
	if spec.PCPU != nil && int(*spec.PCPU) >= e.nq {
		return fmt.Errorf("%w: SA %s: pcpu-num %d names a queue this daemon does not run (queues 0-%d): lower it, or raise `queues`", ErrConfig, spec.Key(), *spec.PCPU, e.nq-1)
	}
	return nil
}

// checkPorts refuses an SA whose NAT-T port would not fit the XDP config.
func (e *Engine) checkPorts(spec *sad.SASpec, locals map[netip.Addr]bool) error {
	if ps := e.extraPorts(spec, locals); len(ps) > loader.MaxNATTPorts {
		return fmt.Errorf("SA %s: encap port %d: the XDP datapath holds at most %d NAT-T ports besides 4500 (wanted: %v); reuse one of them or delete an SA", spec.Key(), spec.Encap.DstPort, loader.MaxNATTPorts, ps)
	}
	return nil
}

// syncSAMap makes every link's XDP SA map hold exactly the inbound SAs of
// the SAD, and the XDP config their extra NAT-T ports. e.mu is held (or
// Start is running).
func (e *Engine) syncSAMap() error {
	locals := e.localAddrs()
	if ps := e.extraPorts(nil, locals); len(e.links) > 0 && !slices.Equal(ps, e.links[0].xdpConf.NATTPorts) {
		e.nattPorts.Store(&ps)
		if err := e.applyXDPConfig(); err != nil {
			return err
		}
	}
	want := map[loader.SAKey]loader.SA{}
	for _, a := range e.sad.List() {
		s := a.Spec()
		if !e.inbound(s, locals) {
			continue
		}
		k := s.Key()
		id, ok := e.saIDs[k]
		if !ok {
			e.nextID++
			id = e.nextID
			e.saIDs[k] = id
		}
		var port uint16
		if s.Encap != nil {
			port = s.Encap.DstPort
		}
		want[loader.SAKey{SPI: k.SPI, Dst: k.Dst, Proto: loader.Proto(k.Proto)}] = loader.SA{ID: id, EncapPort: port}
	}
	var errs []error
	for _, el := range e.links {
		have, err := el.dp.SAs()
		if err != nil {
			return fmt.Errorf("list XDP SAs of %s: %w", el.name, err)
		}
		seen := map[loader.SAKey]bool{}
		for _, h := range have {
			k := h.Key
			k.Dst = k.Dst.Unmap()
			seen[k] = true
			if w, ok := want[k]; ok && w == h.SA {
				continue
			} else if ok {
				errs = append(errs, el.dp.PutSA(k, w))
				continue
			}
			if err := el.dp.DeleteSA(h.Key); err != nil && !errors.Is(err, loader.ErrSANotFound) {
				errs = append(errs, err)
			}
		}
		for k, v := range want {
			if !seen[k] {
				errs = append(errs, el.dp.PutSA(k, v))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("program XDP SA map: %w", err)
	}
	return nil
}

// warmNeighbour starts resolving the next hop of an outbound SA's peer
// (the outer destination, in tunnel and transport mode alike), so the
// first packets find the Ethernet header ready.
func (e *Engine) warmNeighbour(a *sad.Association) {
	if e.nr == nil {
		return
	}
	s := a.Spec()
	if !e.inbound(s, e.localAddrs()) {
		e.nr.Lookup(s.Dst.Unmap())
	}
}

// awaitNeighbours waits, at most d, until the next hops of the outbound
// SAs are resolved (or known unreachable), so that the first packets after
// Start are not dropped as neigh-pending.
func (e *Engine) awaitNeighbours(d time.Duration) {
	locals := e.localAddrs()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		pending := false
		for _, a := range e.sad.List() {
			s := a.Spec()
			if e.inbound(s, locals) {
				continue
			}
			if _, st := e.nr.Lookup(s.Dst.Unmap()); st == neigh.Pending {
				pending = true
			}
		}
		if !pending {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkAllowed asks the capabilities, when configured, whether spec fits
// the current offload view.
func (e *Engine) checkAllowed(spec *sad.SASpec, in bool) error {
	if e.hub == nil {
		return nil
	}
	p := spec.Params()
	dir := capabilities.SAOutbound
	if in {
		dir = capabilities.SAInbound
	}
	if err := e.hub.State().Allows(&p, dir); err != nil {
		return fmt.Errorf("SA %s: %w", spec.Key(), err)
	}
	return nil
}

func (e *Engine) addSALocked(spec *sad.SASpec) (*sad.Association, error) {
	locals := e.localAddrs()
	if err := e.checkAllowed(spec, e.inbound(spec, locals)); err != nil {
		return nil, err
	}
	if err := e.checkQueue(spec); err != nil {
		return nil, err
	}
	if err := e.checkPorts(spec, locals); err != nil {
		return nil, err
	}
	if err := e.checkCapacity(spec, locals); err != nil {
		return nil, err
	}
	// One counter-mode key on two SAs is a configuration mistake, not yet
	// a nonce reuse: every SA starts its IVs at a random 64-bit offset
	// (userspace/ipsec), so it is said, once per SA, and allowed, as Linux
	// allows it.
	if err := e.sad.KeyReuse(spec); err != nil {
		e.log.Warn("SA shares its key with another SA", "err", err.Error())
	}
	a, err := e.sad.Add(spec)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// AddSA adds an SA (ErrExists from sad when its key is taken) and, if it is
// inbound, puts it in the XDP SA map.
func (e *Engine) AddSA(spec *sad.SASpec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	a, err := e.addSALocked(spec)
	if err != nil {
		return err
	}
	if err := e.syncSAMap(); err != nil {
		// The XDP map refused it: take it out of the SAD too, so what
		// `sa list` shows is what is steered.
		e.sad.Delete(spec.Key())
		delete(e.saIDs, spec.Key())
		if err2 := e.syncSAMap(); err2 != nil {
			e.log.Error("resync XDP SA map after a refused SA", "err", err2)
		}
		return err
	}
	e.warmNeighbour(a)
	return nil
}

// UpdateSA replaces an SA, keeping its sequence numbers and replay window
// (sad.SAD.Update), and updates the XDP SA map.
func (e *Engine) UpdateSA(spec *sad.SASpec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	locals := e.localAddrs()
	if err := e.checkAllowed(spec, e.inbound(spec, locals)); err != nil {
		return err
	}
	if err := e.checkQueue(spec); err != nil {
		return err
	}
	if err := e.checkPorts(spec, locals); err != nil {
		return err
	}
	if _, err := e.sad.Update(spec); err != nil {
		return err
	}
	return e.syncSAMap()
}

// DeleteSA removes an SA; its packets in flight are dropped as no-state.
func (e *Engine) DeleteSA(k sad.SAKey) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	if err := e.sad.Delete(k); err != nil {
		return err
	}
	delete(e.saIDs, k)
	return e.syncSAMap()
}

// GetSA returns the SA with key k (sad.ErrNotFound when absent).
func (e *Engine) GetSA(k sad.SAKey) (*sad.Association, error) { return e.sad.Get(k) }

// SAD returns the engine's SA database, for reading. Change it only through
// the Engine, which keeps the XDP SA map in step.
func (e *Engine) SAD() *sad.SAD { return e.sad }

// SPD returns the engine's policy database, for reading. Change it only
// through the Engine, which keeps the TUN routes in step.
func (e *Engine) SPD() *sad.SPD { return e.spd }

// AddPolicy adds a policy; an outbound policy's destination prefix is routed
// into the TUN.
func (e *Engine) AddPolicy(spec *sad.PolicySpec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	if _, err := e.spd.Add(spec); err != nil {
		return err
	}
	e.routePolicy(spec, true)
	return nil
}

// DeletePolicy removes the policy with spec's direction and selector, and
// its route when no other policy needs it.
func (e *Engine) DeletePolicy(spec *sad.PolicySpec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	var old *sad.PolicySpec
	for _, p := range e.spd.List() {
		ps := p.Spec()
		if ps.Dir == spec.Dir && ps.Sel.String() == spec.Sel.String() && ps.IfID == spec.IfID {
			old = ps
		}
	}
	if err := e.spd.Delete(spec); err != nil {
		return err
	}
	if old != nil {
		e.routePolicy(old, false)
	}
	return nil
}

// routePolicy adds (or removes) the TUN route of an outbound policy's
// destination prefix, reference-counted per prefix. A prefix may hold an
// SA's outer address (transport mode always does): the neighbour resolver
// looks outer next hops up constrained to the engine's links, so the TUN
// route only catches the local stack's packets.
func (e *Engine) routePolicy(p *sad.PolicySpec, add bool) {
	if p.Dir != sad.DirOut || !p.Sel.Dst.IsValid() || p.Sel.Dst.Bits() == 0 || e.dev == nil {
		return
	}
	pfx := p.Sel.Dst.Masked()
	if add {
		e.routes[pfx]++
		if e.routes[pfx] == 1 {
			if err := e.dev.AddRoute(pfx); err != nil {
				e.log.Warn("route policy prefix into the tun", "prefix", pfx, "err", err)
			}
		}
		return
	}
	if e.routes[pfx] == 0 {
		return
	}
	e.routes[pfx]--
	if e.routes[pfx] == 0 {
		delete(e.routes, pfx)
		if err := e.dev.DelRoute(pfx); err != nil {
			e.log.Warn("remove policy route", "prefix", pfx, "err", err)
		}
	}
}

// ReloadSummary says what Reload changed.
type ReloadSummary struct {
	SAsAdded, SAsUpdated, SAsDeleted, SAsUnchanged int
	PoliciesAdded, PoliciesDeleted, PoliciesKept   int
}

// Reload makes the SAD and SPD hold exactly sas and policies: unchanged SAs
// are left alone (their traffic never notices), changed ones are updated in
// place (sequence numbers and replay window kept), missing ones deleted, new
// ones added. Errors of single entries are joined; the rest is applied.
func (e *Engine) Reload(sas []*sad.SASpec, policies []*sad.PolicySpec) (ReloadSummary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var sum ReloadSummary
	if e.stopped {
		return sum, ErrStopped
	}
	var errs []error
	want := map[sad.SAKey]*sad.SASpec{}
	for _, s := range sas {
		want[s.Key()] = s
	}
	for _, a := range e.sad.List() {
		if _, ok := want[a.Key()]; !ok {
			if err := e.sad.Delete(a.Key()); err != nil {
				errs = append(errs, err)
			}
			delete(e.saIDs, a.Key())
			sum.SAsDeleted++
		}
	}
	for _, s := range sas {
		old, err := e.sad.Get(s.Key())
		switch {
		case err != nil:
			a, err := e.addSALocked(s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			e.warmNeighbour(a)
			sum.SAsAdded++
		case slices.Equal(old.Spec().SecretWords(), s.SecretWords()):
			sum.SAsUnchanged++
		default:
			locals := e.localAddrs()
			if err := errors.Join(e.checkAllowed(s, e.inbound(s, locals)), e.checkQueue(s), e.checkPorts(s, locals)); err != nil {
				errs = append(errs, err)
				continue
			}
			if _, err := e.sad.Update(s); err != nil {
				errs = append(errs, err)
				continue
			}
			sum.SAsUpdated++
		}
	}
	wantP := map[string]*sad.PolicySpec{}
	for _, p := range policies {
		wantP[p.String()] = p
	}
	for _, p := range e.spd.List() {
		ps := p.Spec()
		if _, ok := wantP[ps.String()]; ok {
			delete(wantP, ps.String())
			sum.PoliciesKept++
			continue
		}
		if err := e.spd.Delete(ps); err != nil {
			errs = append(errs, err)
		}
		e.routePolicy(ps, false)
		sum.PoliciesDeleted++
	}
	for _, p := range policies {
		if _, ok := wantP[p.String()]; !ok {
			continue
		}
		if _, err := e.spd.Add(p); err != nil {
			errs = append(errs, err)
			continue
		}
		e.routePolicy(p, true)
		sum.PoliciesAdded++
	}
	errs = append(errs, e.syncSAMap())
	return sum, errors.Join(errs...)
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	Uptime   string            `json:"uptime"`
	Workers  int               `json:"workers"`
	AFXDP    string            `json:"afxdp_mode"`
	TUN      string            `json:"tun"`
	Counters map[string]uint64 `json:"counters"`
	// InVerdicts counts inbound packets by ipsec.Verdict name.
	InVerdicts map[string]uint64 `json:"in_verdicts"`
	Links      []LinkStats       `json:"links"`
	SAs        []SAStats         `json:"sas"`
	Policies   int               `json:"policies"`
	TUNQueues  tun.QueueStats    `json:"tun_queues"`
	Neighbours neigh.Stats       `json:"neighbours"`
	Sockets    []SocketStats     `json:"sockets"`
}

// LinkStats are one link's XDP facts and reason counters.
type LinkStats struct {
	Name    string            `json:"name"`
	Ifindex int               `json:"ifindex"`
	XDPMode string            `json:"xdp_mode"`
	Reasons map[string]uint64 `json:"reasons"`
}

// SAStats are one SA's counters; Spec is redacted (no key bytes).
type SAStats struct {
	Key      string            `json:"key"`
	Dir      string            `json:"dir"`
	Spec     string            `json:"spec"`
	Packets  uint64            `json:"packets"`
	Bytes    uint64            `json:"bytes"`
	Verdicts map[string]uint64 `json:"verdicts,omitempty"`
	// XDPPackets counts the packets the XDP program matched to the SA,
	// XDPBytes their IP datagrams' bytes as the kernel received them
	// (outer IP header included, Ethernet header excluded): the size of
	// the inbound ESP/AH packets on the wire, counted before the engine
	// sees them.
	XDPPackets uint64 `json:"xdp_packets"`
	XDPBytes   uint64 `json:"xdp_bytes"`
	NextSeq    uint64 `json:"next_seq"`
}

// SocketStats are one AF_XDP socket's main counters.
type SocketStats struct {
	Link  string `json:"link"`
	Queue int    `json:"queue"`
	// FrameSize is the size of the socket's UMEM frames as registered
	// with the kernel (Config.FrameSize).
	FrameSize  int    `json:"frame_size"`
	RxPackets  uint64 `json:"rx_packets"`
	TxPackets  uint64 `json:"tx_packets"`
	RxDropped  uint64 `json:"rx_dropped"`
	RxRingFull uint64 `json:"rx_ring_full"`
	FillEmpty  uint64 `json:"fill_ring_empty"`
	TxKickBusy uint64 `json:"tx_kick_busy"` // tx kicks refused as busy: the worker retries them (afxdp.Stats.TxKickBusy)
}

// Stats sums the workers' counters and reads the links, sockets and SAs.
func (e *Engine) Stats() (Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return Stats{}, ErrStopped
	}
	st := Stats{
		Uptime:     time.Since(e.started).Round(time.Second).String(),
		Workers:    len(e.workers),
		AFXDP:      e.afxdpMode(),
		TUN:        e.dev.Name(),
		Counters:   map[string]uint64{},
		InVerdicts: map[string]uint64{},
		Policies:   e.spd.Len(),
		TUNQueues:  e.dev.Stats(),
		Neighbours: e.nr.Stats(),
	}
	for c := Counter(0); c < numCounters; c++ {
		var n uint64
		for _, w := range e.workers {
			n += w.ctr.c[c].Load()
		}
		st.Counters[CounterName(c)] = n
	}
	for v := ipsec.Verdict(0); v < ipsec.NumVerdicts; v++ {
		var n uint64
		for _, w := range e.workers {
			n += w.ctr.v[v].Load()
		}
		st.InVerdicts[v.String()] = n
	}
	xdp := map[sad.SAKey]loader.SACounters{}
	for _, el := range e.links {
		ls := LinkStats{Name: el.name, Ifindex: el.index, Reasons: map[string]uint64{}}
		ls.XDPMode = el.mode
		if ctr, err := el.dp.Counters(); err == nil {
			for r, n := range ctr {
				ls.Reasons[loader.ReasonName(loader.Reason(r))] = n
			}
		}
		if sas, err := el.dp.SAs(); err == nil {
			for _, s := range sas {
				k := sad.SAKey{SPI: s.Key.SPI, Dst: s.Key.Dst.Unmap(), Proto: ipsec.Proto(s.Key.Proto)}
				c := xdp[k]
				c.Packets += s.Counters.Packets
				c.Bytes += s.Counters.Bytes
				xdp[k] = c
			}
		}
		st.Links = append(st.Links, ls)
	}
	locals := e.localAddrs()
	for _, a := range e.sad.List() {
		s := a.Stats()
		ss := SAStats{Key: a.Key().String(), Dir: "out", Spec: a.Spec().String(), Packets: s.Packets, Bytes: s.Bytes,
			XDPPackets: xdp[a.Key()].Packets, XDPBytes: xdp[a.Key()].Bytes, NextSeq: a.Transform().NextSeq()}
		if e.inbound(a.Spec(), locals) {
			ss.Dir = "in"
		}
		for v, n := range s.Verdicts {
			if n != 0 {
				if ss.Verdicts == nil {
					ss.Verdicts = map[string]uint64{}
				}
				ss.Verdicts[ipsec.Verdict(v).String()] = n
			}
		}
		st.SAs = append(st.SAs, ss)
	}
	for _, w := range e.workers {
		for li, s := range w.socks {
			if s == nil {
				continue
			}
			x, err := s.Stats()
			if err != nil {
				continue
			}
			st.Sockets = append(st.Sockets, SocketStats{Link: e.links[li].name, Queue: w.q, FrameSize: s.Info().FrameSize, RxPackets: x.RxPackets,
				TxPackets: x.TxPackets, RxDropped: x.RxDropped, RxRingFull: x.RxRingFull, FillEmpty: x.RxFillRingEmptyDescs, TxKickBusy: x.TxKickBusy})
		}
	}
	return st, nil
}

// String renders a summary line, for logs.
func (st Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workers=%d afxdp=%s in-delivered=%d out-protected=%d", st.Workers, st.AFXDP,
		st.Counters[CounterName(InDelivered)], st.Counters[CounterName(OutProtected)])
	return b.String()
}
