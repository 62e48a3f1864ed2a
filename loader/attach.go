package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/bpf"
)

// DefaultPinRoot is where Attach pins, one directory per interface.
const DefaultPinRoot = "/sys/fs/bpf/xdpsec"

// Names of the pins besides the maps (which are pinned by map name).
const (
	pinLink = "link" // the bpf_link, when attached through one
	pinProg = "prog" // the program, when attached through netlink
)

// Mode is how the program is attached to a link.
type Mode uint8

const (
	// ModeAuto tries native and falls back to generic, logging why.
	ModeAuto Mode = iota
	// ModeNative runs the program in the driver (XDP_FLAGS_DRV_MODE).
	ModeNative
	// ModeGeneric runs it on the skb path (XDP_FLAGS_SKB_MODE), on any
	// link, more slowly.
	ModeGeneric
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "auto", "native" (or "driver", "drv") and "generic" (or
// "skb").
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "auto", "":
		return ModeAuto, nil
	case "native", "driver", "drv":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %q: want auto, native or generic", s)
}

// Options tune Attach, Open and Detach. The zero value is valid.
type Options struct {
	// Force replaces a foreign XDP program already on the link.
	Force bool
	// PinRoot is the bpffs directory holding one directory per interface;
	// DefaultPinRoot when empty.
	PinRoot string
	// MaxSAs sizes the SA map (DefaultMaxSAs when 0). Queues sizes the XSK
	// map (when 0: DefaultQueues, or the link's rx queue count if larger;
	// Attach warns when a given Queues is below that count). Both apply
	// when the maps are created; pinned maps of another size make Attach
	// fail (detach first).
	MaxSAs uint32
	Queues uint32
	// Config is written when Attach creates the maps; DefaultConfig when
	// nil. Reused maps keep their config.
	Config *Config
	// Netlink attaches through IFLA_XDP instead of a bpf_link. Attach
	// does this by itself on kernels without XDP bpf_link (before 5.9).
	Netlink bool
	// Logger receives the auto-mode fallback reason; slog.Default() when
	// nil.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	if o.MaxSAs == 0 {
		o.MaxSAs = DefaultMaxSAs
	}
	if o.Queues == 0 {
		o.Queues = DefaultQueues
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Datapath is the program attached to one link, with its maps. Close
// releases this process's handles and leaves the program attached (the
// pins keep it); Detach removes it.
type Datapath struct {
	*Maps
	ifname string
	dir    string
	prog   *ebpf.Program
	lnk    link.Link // nil when attached through netlink
	// features is read from the collection when this process loaded the
	// program itself (featuresKnown); a Datapath opened from pins reads it
	// from the kernel instead, which needs CAP_SYS_ADMIN (map by id).
	features      Features
	featuresKnown bool
}

func findLink(ifname string) (netlink.Link, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: no interface named %q in this network namespace", ErrLinkNotFound, ifname)
		}
		return nil, fmt.Errorf("look up link %q: %w", ifname, err)
	}
	return l, nil
}

// xdpProgID returns the id of the XDP program on l and the mode it runs in.
func xdpProgID(l netlink.Link) (ebpf.ProgramID, Mode, bool) {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return 0, 0, false
	}
	m := ModeNative
	if x.AttachMode == nl.XDP_ATTACHED_SKB {
		m = ModeGeneric
	}
	return ebpf.ProgramID(x.ProgId), m, true
}

// Attach loads the program and attaches it to ifname in mode, pinning its
// maps and link under opts.PinRoot/ifname. If xdpsec is already attached
// there (by this or an earlier process), Attach reuses it and returns a
// handle; an explicit mode that differs from the attached one is an error.
// A foreign XDP program makes Attach fail with ErrForeignProgram unless
// opts.Force. On failure nothing Attach created is left behind.
func Attach(ifname string, mode Mode, opts Options) (*Datapath, error) {
	queuesGiven := opts.Queues != 0
	opts = opts.withDefaults()
	if _, err := findLink(ifname); err != nil { // before mounting or locking anything
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	unlock, err := lockPinRoot(opts.PinRoot, true, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	defer unlock()
	// Read the link under the lock: another Attach may just have changed it.
	l, err := findLink(ifname)
	if err != nil {
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	// The XSK map is indexed by rx queue: a queue beyond it is never
	// steered (its IPsec falls back to the kernel, as steer-fallback).
	if rxq := uint32(max(l.Attrs().NumRxQueues, 0)); rxq > opts.Queues {
		if !queuesGiven {
			opts.Queues = rxq
		} else {
			opts.Logger.Warn("the XSK map has fewer slots than the link has rx queues: IPsec on the others is never steered",
				"link", ifname, "rx_queues", rxq, "xsk_slots", opts.Queues)
		}
	}
	dir := filepath.Join(opts.PinRoot, ifname)
	if err := adoptRenamedPins(l, opts.PinRoot, dir, opts.Logger); err != nil {
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}

	d, err := open(l, dir)
	switch {
	case err == nil:
		_, cur, _ := xdpProgID(l)
		if mode != ModeAuto && cur != mode {
			d.Close()
			return nil, fmt.Errorf("attach xdp to %s: xdpsec is already attached in %s mode; detach first to change it", ifname, cur)
		}
		if err := d.replaceStaleProgram(l, cur, opts.Logger); err != nil {
			d.Close()
			return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
		if err := d.SetLinkAddr(ethernetAddr(l)); err != nil {
			d.Close()
			return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
		return d, nil
	case !errors.Is(err, ErrNotAttached):
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}

	// restore puts back a foreign program removed by force when xdpsec
	// then fails to attach: force means "replace", not "leave the link
	// without the program someone relied on".
	restore := func(cause error) error { return cause }
	if id, m, ok := xdpProgID(l); ok {
		name := ""
		foreign, ferr := ebpf.NewProgramFromID(id)
		if ferr == nil {
			if info, err := foreign.Info(); err == nil {
				name = info.Name
			}
			defer foreign.Close()
		}
		if !opts.Force {
			return nil, fmt.Errorf("attach xdp to %s: %w (program %d %q, %s mode); detach it or use force", ifname, ErrForeignProgram, id, name, m)
		}
		if err := removeNetlinkProg(l, m); err != nil {
			return nil, fmt.Errorf("attach xdp to %s: remove foreign program %d %q (a bpf_link owned by another tool cannot be replaced; detach it there): %w", ifname, id, name, err)
		}
		opts.Logger.Warn("replaced a foreign XDP program", "link", ifname, "program_id", uint32(id), "name", name)
		restore = func(cause error) error {
			if ferr != nil {
				return fmt.Errorf("%w; the foreign program %d %q was removed and could not be reopened to put it back: %w", cause, id, name, ferr)
			}
			flags := nl.XDP_FLAGS_UPDATE_IF_NOEXIST | nl.XDP_FLAGS_DRV_MODE
			if m == ModeGeneric {
				flags = nl.XDP_FLAGS_UPDATE_IF_NOEXIST | nl.XDP_FLAGS_SKB_MODE
			}
			if err := netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), flags); err != nil {
				return fmt.Errorf("%w; putting the foreign program %d %q back failed too: %w", cause, id, name, err)
			}
			opts.Logger.Warn("xdpsec failed to attach; put the foreign XDP program back", "link", ifname, "program_id", uint32(id), "name", name)
			return cause
		}
	}

	d, err = attachNew(l, dir, mode, opts)
	if err != nil {
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, restore(err))
	}
	return d, nil
}

// ethernetAddr returns l's MAC address for SetLinkAddr, or nil (no check)
// when l has none: a tun, an ipip or gre tunnel (their "addresses" are IP
// addresses), a link whose address is not a 6-byte unicast one.
func ethernetAddr(l netlink.Link) net.HardwareAddr {
	a := l.Attrs()
	if a.EncapType != "" && a.EncapType != "ether" {
		return nil
	}
	if len(a.HardwareAddr) != 6 || a.HardwareAddr[0]&1 != 0 {
		return nil
	}
	return a.HardwareAddr
}

// UpdateLinkAddr writes the Ethernet address of l, the link d is attached
// to as a netlink update reports it, with SetLinkAddr if it differs from
// the one in force, and says whether it did. It is for a caller following
// the link's RTM_NEWLINK updates (`ip link set dev LINK address ...`); a
// link without an Ethernet address turns the check off.
func (d *Datapath) UpdateLinkAddr(l netlink.Link) (changed bool, err error) {
	want := ethernetAddr(l)
	cur, err := d.LinkAddr()
	if err != nil {
		return false, err
	}
	if slices.Equal(cur, want) {
		return false, nil
	}
	if err := d.SetLinkAddr(want); err != nil {
		return false, fmt.Errorf("follow %s's address: %w", d.ifname, err)
	}
	return true, nil
}

// lockPinRoot serialises Attach, Open and Detach on one PinRoot, across
// processes and goroutines alike: an exclusive flock on the root's parent
// directory (xdpsec never removes it; the root itself goes when the last
// interface is detached). Without it, concurrent Attaches on a link raced
// to pin the same maps and every loser removed the pins it thought it had
// created, the winner's included: measured, 4 concurrent Attaches left
// nothing attached. create mounts bpffs and creates the parent if needed
// (Attach); otherwise a missing parent means nothing is pinned, and
// nothing is locked.
func lockPinRoot(root string, create bool, log *slog.Logger) (unlock func(), err error) {
	parent := filepath.Dir(filepath.Clean(root))
	if create {
		if err := ensureBPFFS(root, log); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", parent, attachErr(err))
		}
	}
	f, err := os.Open(parent)
	if err != nil {
		if !create && errors.Is(err, fs.ErrNotExist) {
			return func() {}, nil
		}
		return nil, fmt.Errorf("open %s to lock it: %w", parent, attachErr(err))
	}
	for range 100 { // EINTR: a signal handler without SA_RESTART
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", parent, err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// bpffsMount is where Linux distributions mount the BPF filesystem.
const bpffsMount = "/sys/fs/bpf"

// ensureBPFFS mounts bpffs on /sys/fs/bpf when root lies there and nothing
// (systemd, usually) has mounted it yet, as iproute2 and bpftool do.
func ensureBPFFS(root string, log *slog.Logger) error {
	if root != bpffsMount && !strings.HasPrefix(root, bpffsMount+"/") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsMount, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", bpffsMount, "bpf", 0, "mode=0700"); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: mount bpffs on %s: %w", ErrPermission, bpffsMount, err)
		}
		return fmt.Errorf("%w: mount bpffs on %s: %w", ErrNoBPF, bpffsMount, err)
	}
	log.Info("mounted the BPF filesystem", "path", bpffsMount)
	return nil
}

func attachNew(l netlink.Link, dir string, mode Mode, opts Options) (d *Datapath, err error) {
	if err := ensureBPFFS(opts.PinRoot, opts.Logger); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%w: create %s: %w", ErrPermission, dir, err)
		}
		return nil, fmt.Errorf("%w: create %s (is bpffs mounted at /sys/fs/bpf?): %w", ErrNoBPF, dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		removePins(dir, opts.PinRoot)
		return nil, fmt.Errorf("%w: %s is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", ErrNoBPF, dir)
	}
	_, statErr := os.Stat(filepath.Join(dir, bpf.MapConfig))
	fresh := errors.Is(statErr, fs.ErrNotExist)
	defer func() {
		if err != nil {
			if d != nil {
				d.Close()
			}
			if fresh {
				removePins(dir, opts.PinRoot)
			}
		}
	}()

	coll, err := loadCollection(loadParams{pinDir: dir, maxSAs: opts.MaxSAs, queues: opts.Queues})
	if err != nil {
		return nil, err
	}
	d, err = datapathFrom(coll, l.Attrs().Name, dir)
	if err != nil {
		return nil, err
	}
	if fresh {
		cfg := DefaultConfig()
		if opts.Config != nil {
			cfg = *opts.Config
		}
		if err := d.SetConfig(cfg); err != nil {
			return d, err
		}
	}
	// Before the program runs: it must not steer a frame for another host.
	if err := d.SetLinkAddr(ethernetAddr(l)); err != nil {
		return d, err
	}

	// Pins of an earlier attachment that no longer drives this link (open
	// found them stale) would block pinning the new one.
	for _, name := range []string{pinLink, pinProg} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return d, fmt.Errorf("remove stale pin: %w", attachErr(err))
		}
	}
	d.lnk, err = attachProgram(d.prog, l, mode, opts)
	if err != nil {
		return d, err
	}
	if d.lnk != nil {
		if err := d.lnk.Pin(filepath.Join(dir, pinLink)); err != nil {
			d.lnk.Close()
			d.lnk = nil
			return d, fmt.Errorf("pin link: %w", err)
		}
		return d, nil
	}
	if err := d.prog.Pin(filepath.Join(dir, pinProg)); err != nil {
		_, m, _ := xdpProgID(l)
		_ = removeNetlinkProg(l, m)
		return d, fmt.Errorf("pin program: %w", err)
	}
	return d, nil
}

// sameMap says whether a and b are the same kernel map.
func sameMap(a, b *ebpf.Map) bool {
	ai, err := a.Info()
	if err != nil {
		return false
	}
	bi, err := b.Info()
	if err != nil {
		return false
	}
	aid, aok := ai.ID()
	bid, bok := bi.ID()
	return aok && bok && aid == bid
}

// replaceStaleProgram makes the attached program this build's: a program
// pinned by an earlier xdpsec build (an upgrade restarting over its pins)
// would otherwise keep running, whatever this build fixed. It loads the
// embedded program against the pinned maps and compares kernel tags (a
// hash of the instructions, taken before verification, so the same object
// always has the same tag); if they differ it swaps the program atomically
// (BPF_LINK_UPDATE, or a netlink replace) and keeps the maps and their
// SAs, XSK slots, config and counters (the counters restart from 0 when
// the earlier build counted fewer reasons). Other pinned maps of another
// layout make it fail with ErrMapIncompatible's advice to detach.
func (d *Datapath) replaceStaleProgram(l netlink.Link, mode Mode, log *slog.Logger) error {
	coll, err := loadCollection(loadParams{pinDir: d.dir, maxSAs: d.sas.MaxEntries(), queues: d.xsks.MaxEntries()})
	if err != nil {
		return fmt.Errorf("load this build's program to compare with the attached one: %w", err)
	}
	defer coll.Close()
	fresh := coll.Programs[bpf.ProgClassify]
	oldInfo, err := d.prog.Info()
	if err != nil {
		return fmt.Errorf("inspect attached program: %w", err)
	}
	newInfo, err := fresh.Info()
	if err != nil {
		return fmt.Errorf("inspect loaded program: %w", err)
	}
	if oldInfo.Tag == newInfo.Tag && sameMap(d.counters, coll.Maps[bpf.MapCounters]) {
		return nil
	}
	prog := coll.DetachProgram(bpf.ProgClassify)
	if d.lnk != nil {
		if err := d.lnk.Update(prog); err != nil {
			prog.Close()
			return fmt.Errorf("replace attached program %s (tag %s) through its bpf_link: %w", oldInfo.Name, oldInfo.Tag, attachErr(err))
		}
	} else {
		flags := nl.XDP_FLAGS_DRV_MODE
		if mode == ModeGeneric {
			flags = nl.XDP_FLAGS_SKB_MODE
		}
		// Without XDP_FLAGS_UPDATE_IF_NOEXIST the kernel swaps programs
		// in one step: no packet sees the link without one.
		if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), flags); err != nil {
			prog.Close()
			return fmt.Errorf("replace attached program %s (tag %s) through netlink: %w", oldInfo.Name, oldInfo.Tag, attachErr(err))
		}
		pin := filepath.Join(d.dir, pinProg)
		if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			prog.Close()
			return fmt.Errorf("replace pin %s: %w", pin, attachErr(err))
		}
		if err := prog.Pin(pin); err != nil {
			prog.Close()
			return fmt.Errorf("pin replaced program: %w", err)
		}
	}
	oldID, _ := oldInfo.ID()
	newID := ebpf.ProgramID(0)
	if ni, err := prog.Info(); err == nil {
		newID, _ = ni.ID()
	}
	if d.linkAddr == nil { // pins of a build without it: loading pinned a fresh one
		d.linkAddr = coll.DetachMap(bpf.MapLinkAddr)
	}
	if !sameMap(d.counters, coll.Maps[bpf.MapCounters]) {
		// The earlier build counted fewer reasons: loading pinned a fresh
		// counter map (unpinOutgrownCounters), which the new program uses.
		d.counters.Close()
		d.counters = coll.DetachMap(bpf.MapCounters)
		log.Info("reason counters restarted from 0: the attached build counted fewer reasons", "link", d.ifname, "reasons", NumReasons)
	}
	log.Info("replaced the attached xdpsec program with this build's; maps kept",
		"link", d.ifname, "old_id", uint32(oldID), "old_tag", oldInfo.Tag, "new_id", uint32(newID), "new_tag", newInfo.Tag)
	d.prog.Close()
	d.prog = prog
	var f uint32
	if v := coll.Variables[bpf.VarFeatures]; v != nil && v.Get(&f) == nil {
		d.features, d.featuresKnown = Features(f), true
	}
	return nil
}

// datapathFrom takes the program and maps out of coll and closes the rest.
func datapathFrom(coll *ebpf.Collection, ifname, dir string) (*Datapath, error) {
	defer coll.Close()
	maps := map[string]*ebpf.Map{}
	for _, name := range pinnedMaps {
		m := coll.DetachMap(name)
		if m == nil {
			return nil, fmt.Errorf("object lacks map %s", name)
		}
		maps[name] = m
	}
	mm, err := mapsFrom(maps)
	if err != nil {
		return nil, err
	}
	d := &Datapath{Maps: mm, ifname: ifname, dir: dir, prog: coll.DetachProgram(bpf.ProgClassify)}
	var f uint32
	if v := coll.Variables[bpf.VarFeatures]; v != nil && v.Get(&f) == nil {
		d.features, d.featuresKnown = Features(f), true
	}
	return d, nil
}

func attachProgram(prog *ebpf.Program, l netlink.Link, mode Mode, opts Options) (link.Link, error) {
	one := func(m Mode) (link.Link, error) {
		if !opts.Netlink {
			flags := link.XDPDriverMode
			if m == ModeGeneric {
				flags = link.XDPGenericMode
			}
			lnk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: flags})
			if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
				return lnk, attachErr(err)
			}
			opts.Logger.Info("kernel lacks XDP bpf_link; attaching through netlink", "link", l.Attrs().Name)
		}
		flags := nl.XDP_FLAGS_UPDATE_IF_NOEXIST | nl.XDP_FLAGS_DRV_MODE
		if m == ModeGeneric {
			flags = nl.XDP_FLAGS_UPDATE_IF_NOEXIST | nl.XDP_FLAGS_SKB_MODE
		}
		return nil, attachErr(netlink.LinkSetXdpFdWithFlags(l, prog.FD(), flags))
	}
	native := func() (link.Link, error) {
		lnk, err := one(ModeNative)
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w (the driver of %s has no native XDP: use generic mode, or auto to fall back to it)", err, l.Attrs().Name)
		}
		return lnk, err
	}
	switch mode {
	case ModeNative, ModeGeneric:
		attach := native
		if mode == ModeGeneric {
			attach = func() (link.Link, error) { return one(ModeGeneric) }
		}
		lnk, err := attach()
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", mode, err)
		}
		return lnk, nil
	}
	lnk, err := native()
	if err == nil {
		return lnk, nil
	}
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrNoBPF) {
		return nil, err
	}
	opts.Logger.Info("native XDP attach failed; falling back to generic mode", "link", l.Attrs().Name, "reason", err.Error())
	lnk, gerr := one(ModeGeneric)
	if gerr != nil {
		return nil, fmt.Errorf("native mode: %w; generic mode: %w", err, gerr)
	}
	return lnk, nil
}

// attachErr marks the errors callers must tell apart: a missing capability
// (ErrPermission) and a kernel without the bpf(2) system call (ErrNoBPF).
func attachErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: %w", ErrNoBPF, noBPFSyscall(err))
	}
	return err
}

// noBPFSyscall says what ENOSYS from bpf(2) means; err is kept for %+v.
func noBPFSyscall(err error) error {
	return fmt.Errorf("the bpf(2) system call is not implemented here (ENOSYS: a kernel without CONFIG_BPF_SYSCALL, or a seccomp filter): %w", err)
}

func removeNetlinkProg(l netlink.Link, m Mode) error {
	flags := nl.XDP_FLAGS_DRV_MODE
	if m == ModeGeneric {
		flags = nl.XDP_FLAGS_SKB_MODE
	}
	return attachErr(netlink.LinkSetXdpFdWithFlags(l, -1, flags))
}

// Open re-opens what an earlier Attach pinned for ifname, without changing
// anything; ErrNotAttached when nothing (or only stale pins) is there.
func Open(ifname string, opts Options) (*Datapath, error) {
	opts = opts.withDefaults()
	unlock, err := lockPinRoot(opts.PinRoot, false, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("open xdpsec on %s: %w", ifname, err)
	}
	defer unlock()
	l, err := findLink(ifname)
	if err != nil {
		return nil, fmt.Errorf("open xdpsec on %s: %w", ifname, err)
	}
	dir := filepath.Join(opts.PinRoot, ifname)
	if err := adoptRenamedPins(l, opts.PinRoot, dir, opts.Logger); err != nil {
		return nil, fmt.Errorf("open xdpsec on %s: %w", ifname, err)
	}
	d, err := open(l, dir)
	if err != nil {
		return nil, fmt.Errorf("open xdpsec on %s: %w", ifname, err)
	}
	return d, nil
}

// adoptRenamedPins: pins are keyed by interface name, so an interface
// renamed while attached (ip link set NAME name NEW, udev) would look
// unattached under its new name, and xdpsec's own program on it foreign.
// When dir (root/ifname) does not exist but the program attached to l is
// the one pinned in another directory of root (same program id: ids are
// global, so this cannot match another namespace's link), that directory
// is renamed to dir.
func adoptRenamedPins(l netlink.Link, root, dir string, log *slog.Logger) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	id, _, ok := xdpProgID(l)
	if !ok {
		return nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil // no root: nothing pinned anywhere
	}
	for _, e := range entries {
		old := filepath.Join(root, e.Name())
		if !e.IsDir() || pinnedProgramID(old) != id {
			continue
		}
		if err := os.Rename(old, dir); err != nil {
			return fmt.Errorf("move the pins of renamed interface %s from %s to %s: %w", l.Attrs().Name, old, dir, attachErr(err))
		}
		log.Info("interface renamed while xdpsec was attached; moved its pins", "from", e.Name(), "to", l.Attrs().Name)
		return nil
	}
	return nil
}

// pinnedProgramID returns the id of the program pinned in dir (through its
// bpf_link or directly), 0 if none.
func pinnedProgramID(dir string) ebpf.ProgramID {
	if lnk, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); err == nil {
		defer lnk.Close()
		if info, err := lnk.Info(); err == nil {
			return info.Program
		}
		return 0
	}
	if prog, err := ebpf.LoadPinnedProgram(filepath.Join(dir, pinProg), nil); err == nil {
		defer prog.Close()
		if info, err := prog.Info(); err == nil {
			id, _ := info.ID()
			return id
		}
	}
	return 0
}

func open(l netlink.Link, dir string) (*Datapath, error) {
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: nothing pinned at %s", ErrNotAttached, dir)
		}
		return nil, attachErr(err)
	}
	d := &Datapath{ifname: l.Attrs().Name, dir: dir}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if lnk, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); err == nil {
		d.lnk = lnk
		info, err := lnk.Info()
		if err != nil {
			return nil, fmt.Errorf("inspect pinned link: %w", err)
		}
		x := info.XDP()
		if x == nil || x.Ifindex == 0 { // defunct: its interface is gone, or it was detached
			return nil, fmt.Errorf("%w: the link pinned at %s no longer drives %s (stale pins; run detach)", ErrNotAttached, dir, d.ifname)
		}
		// Alive, so it drives some interface: this one only if the
		// program on this one is the link's. An ifindex alone can be
		// another network namespace's (pins are keyed by name, and
		// namespaces repeat both names and indexes).
		if id, _, ok := xdpProgID(l); int(x.Ifindex) != l.Attrs().Index || !ok || id != info.Program {
			return nil, fmt.Errorf("the pins at %s belong to a live attachment of program %d on ifindex %d, not to %s here: "+
				"another network namespace with an interface of the same name? give each namespace its own pin root (--pin-root)",
				dir, info.Program, x.Ifindex, d.ifname)
		}
		if d.prog, err = ebpf.NewProgramFromID(info.Program); err != nil {
			return nil, fmt.Errorf("open attached program %d: %w", info.Program, attachErr(err))
		}
	} else if prog, perr := ebpf.LoadPinnedProgram(filepath.Join(dir, pinProg), nil); perr == nil {
		d.prog = prog
		info, err := prog.Info()
		if err != nil {
			return nil, fmt.Errorf("inspect pinned program: %w", err)
		}
		pid, _ := info.ID()
		if id, _, attached := xdpProgID(l); !attached || id != pid {
			return nil, fmt.Errorf("%w: the program pinned at %s is not on %s (stale pins; run detach)", ErrNotAttached, dir, d.ifname)
		}
	} else {
		if errors.Is(err, os.ErrPermission) || errors.Is(perr, os.ErrPermission) {
			return nil, attachErr(err)
		}
		if errors.Is(err, unix.ENOSYS) || errors.Is(perr, unix.ENOSYS) {
			return nil, attachErr(err)
		}
		return nil, fmt.Errorf("%w: no link or program pinned at %s (stale pins; run detach)", ErrNotAttached, dir)
	}
	maps := map[string]*ebpf.Map{}
	for _, name := range pinnedMaps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if name == bpf.MapLinkAddr && errors.Is(err, fs.ErrNotExist) {
			continue // an older build's pins: Maps.SetLinkAddr says so
		}
		if err != nil {
			for _, m := range maps {
				m.Close()
			}
			return nil, fmt.Errorf("open pinned map %s: %w", name, attachErr(err))
		}
		maps[name] = m
	}
	var err error
	if d.Maps, err = mapsFrom(maps); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// Close releases this handle; the program stays attached.
func (d *Datapath) Close() error {
	if d.Maps != nil {
		d.Maps.close()
		d.Maps = nil
	}
	if d.lnk != nil {
		d.lnk.Close() // pinned: closing our fd does not detach
		d.lnk = nil
	}
	if d.prog != nil {
		d.prog.Close()
		d.prog = nil
	}
	return nil
}

// Detach closes the handle and detaches xdpsec from its link (Detach).
func (d *Datapath) Detach(opts Options) error {
	ifname := d.ifname
	opts.PinRoot = filepath.Dir(d.dir)
	d.Close()
	return Detach(ifname, opts)
}

// Detach removes xdpsec from ifname: the program comes off the link (even
// if another process still holds the link), and the pins and the
// interface's pin directory are removed (the PinRoot too when empty).
// ErrNotAttached when nothing is pinned; ErrLinkNotFound when the
// interface is gone and nothing is pinned either. If the interface is gone
// but pins remain, Detach removes the pins.
func Detach(ifname string, opts Options) error {
	opts = opts.withDefaults()
	unlock, err := lockPinRoot(opts.PinRoot, false, opts.Logger)
	if err != nil {
		return fmt.Errorf("detach xdp from %s: %w", ifname, err)
	}
	defer unlock()
	dir := filepath.Join(opts.PinRoot, ifname)
	l, lerr := findLink(ifname)
	if lerr == nil {
		if err := adoptRenamedPins(l, opts.PinRoot, dir, opts.Logger); err != nil {
			return fmt.Errorf("detach xdp from %s: %w", ifname, err)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		if lerr != nil {
			return fmt.Errorf("detach xdp from %s: %w", ifname, lerr)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("detach xdp from %s: %w (nothing pinned at %s)", ifname, ErrNotAttached, dir)
		}
		return fmt.Errorf("detach xdp from %s: %w", ifname, attachErr(err))
	}
	if lnk, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); errors.Is(err, unix.ENOSYS) {
		// Without bpf(2) nothing pinned can be inspected; removing the
		// pins blindly could orphan a netlink-attached program.
		return fmt.Errorf("detach xdp from %s: %w", ifname, attachErr(err))
	} else if err == nil {
		// BPF_LINK_DETACH takes the program off for every holder.
		derr := lnk.Detach()
		lnk.Close()
		if derr != nil && !errors.Is(derr, ebpf.ErrNotSupported) {
			return fmt.Errorf("detach xdp from %s: %w", ifname, attachErr(derr))
		}
	} else if prog, err := ebpf.LoadPinnedProgram(filepath.Join(dir, pinProg), nil); err == nil {
		info, ierr := prog.Info()
		prog.Close()
		if ierr == nil && lerr == nil {
			pid, _ := info.ID()
			if id, m, ok := xdpProgID(l); ok && id == pid {
				if err := removeNetlinkProg(l, m); err != nil {
					return fmt.Errorf("detach xdp from %s: %w", ifname, err)
				}
			}
		}
	}
	if err := removePins(dir, opts.PinRoot); err != nil {
		return fmt.Errorf("detach xdp from %s: %w", ifname, err)
	}
	return nil
}

// removePins deletes the files Attach pins in dir, then dir, then root if
// it is empty. Unknown files are left alone (and keep dir).
func removePins(dir, root string) error {
	for _, name := range append([]string{pinLink, pinProg}, pinnedMaps...) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return attachErr(err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	_ = os.Remove(root) // fails while other interfaces are attached
	return nil
}

// Status describes an attachment.
type Status struct {
	Interface string
	Ifindex   int
	// Mode is native or generic, as the kernel reports it.
	Mode      Mode
	ProgramID ebpf.ProgramID
	// LinkID is the bpf_link's id, 0 when attached through netlink.
	LinkID  link.ID
	PinPath string
	// Features are read from the attached program's own .rodata.
	Features Features
	Config   Config
	Counters Counters
	SAs      int
}

// Status reports how the program is attached and what its maps hold.
func (d *Datapath) Status() (Status, error) {
	st := Status{Interface: d.ifname, PinPath: d.dir}
	l, err := findLink(d.ifname)
	if err != nil {
		return st, err
	}
	st.Ifindex = l.Attrs().Index
	id, mode, ok := xdpProgID(l)
	if !ok {
		return st, fmt.Errorf("status of %s: %w: no XDP program on the link", d.ifname, ErrNotAttached)
	}
	st.ProgramID, st.Mode = id, mode
	if d.lnk != nil {
		if info, err := d.lnk.Info(); err == nil {
			st.LinkID = info.ID
		}
	}
	if st.Features, err = d.Features(); err != nil {
		return st, err
	}
	if st.Config, err = d.Config(); err != nil {
		return st, err
	}
	if st.Counters, err = d.Counters(); err != nil {
		return st, err
	}
	sas, err := d.SAs()
	if err != nil {
		return st, err
	}
	st.SAs = len(sas)
	return st, nil
}

// Features returns xdpsec_features of the program attached: from the
// collection when this process loaded it, otherwise from the .rodata of
// the program running in the kernel (located through the map's BTF), so it
// describes the program actually running, whichever build loaded it. The
// second way opens maps by id, which the kernel allows only with
// CAP_SYS_ADMIN.
func (d *Datapath) Features() (Features, error) {
	if d.featuresKnown {
		return d.features, nil
	}
	return programFeatures(d.prog)
}

func programFeatures(prog *ebpf.Program) (Features, error) {
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("inspect program: %w", err)
	}
	ids, _ := info.MapIDs()
	var openErr error
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			openErr = err
			continue
		}
		f, found, err := rodataFeatures(m)
		m.Close()
		if found || err != nil {
			return f, err
		}
	}
	if openErr != nil {
		return 0, fmt.Errorf("read %s of program %s: open its maps by id: %w (needs CAP_SYS_ADMIN; a process that loads the program itself does not)", bpf.VarFeatures, info.Name, openErr)
	}
	return 0, fmt.Errorf("program %s has no %s in its .rodata", info.Name, bpf.VarFeatures)
}

func rodataFeatures(m *ebpf.Map) (Features, bool, error) {
	mi, err := m.Info()
	if err != nil || !strings.HasSuffix(mi.Name, ".rodata") {
		return 0, false, nil
	}
	btfID, ok := mi.BTFID()
	if !ok {
		return 0, false, nil
	}
	h, err := btf.NewHandleFromID(btfID)
	if err != nil {
		return 0, false, fmt.Errorf("open BTF of %s: %w", mi.Name, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return 0, false, fmt.Errorf("read BTF of %s: %w", mi.Name, err)
	}
	var ds *btf.Datasec
	if err := spec.TypeByName(".rodata", &ds); err != nil {
		return 0, false, nil
	}
	for _, v := range ds.Vars {
		if vv, ok := v.Type.(*btf.Var); ok && vv.Name == bpf.VarFeatures && v.Size == 4 {
			val := make([]byte, m.ValueSize())
			if err := m.Lookup(uint32(0), &val); err != nil {
				return 0, false, fmt.Errorf("read %s: %w", mi.Name, err)
			}
			return Features(binary.NativeEndian.Uint32(val[v.Offset:])), true, nil
		}
	}
	return 0, false, nil
}
