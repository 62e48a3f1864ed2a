package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

func init() {
	register(&command{
		name:    "attach",
		summary: "attach the XDP classifier to a link (pinned: it stays after xdpsec exits)",
		usage: `Usage: xdpsec attach --link IF [--mode auto|native|generic] [--force]
                     [--nat-t-port N ...] [--sa SPEC ...] [--pin-root DIR]

Loads the XDP program, attaches it to IF and pins the program's link and maps
under DIR/IF (default /sys/fs/bpf/xdpsec/IF), so the attachment outlives this
command; run it again to reuse what is pinned, 'xdpsec detach' to remove it.
auto tries native (driver) mode and falls back to generic (skb) mode, saying
why on stderr. A foreign XDP program on IF is refused unless --force.

--sa puts an SA into the datapath's SA map, so its packets are steered (to the
rx queue's AF_XDP socket, or to the kernel while none is bound). SPEC is in
'ip xfrm state' syntax as one quoted word; the algorithm and key words may be
left out (the datapath needs only the SPI, the destination and the protocol).
--nat-t-port adds a UDP port carrying ESP-in-UDP besides 4500.

Run inside a network namespace with 'nsenter --net=/run/netns/NAME xdpsec ...':
'ip netns exec' gives the process a private /sys without the BPF filesystem.

Examples:
  xdpsec attach --link eth0
  xdpsec attach --link eth0 --force --pin-root /sys/fs/bpf/xdpsec-ns1   # replace a foreign XDP program
  xdpsec attach --link eth0 --mode generic --nat-t-port 4501 \
      --sa "src 198.51.100.2 dst 198.51.100.1 proto esp spi 0x1001 encap espinudp 4500 4500 0.0.0.0"`,
		run: runAttach,
	})
	flagSets["attach"] = func() *flag.FlagSet { f, _ := attachFlags(); return f }
}

type attachArgs struct {
	link     linkArgs
	mode     string
	force    bool
	natPorts stringList
	sas      stringList
}

// linkArgs are the flags attach, detach and status share.
type linkArgs struct {
	ifname  string
	pinRoot string
}

func (l *linkArgs) register(fs *flag.FlagSet, linkUsage string) {
	fs.StringVar(&l.ifname, "link", "", linkUsage)
	fs.StringVar(&l.pinRoot, "pin-root", loader.DefaultPinRoot, "bpffs directory holding one pin directory per interface (namespaces that reuse interface names need one each)")
}

func (l *linkArgs) options() loader.Options {
	return loader.Options{PinRoot: l.pinRoot, Logger: stderrLogger()}
}

func attachFlags() (*flag.FlagSet, *attachArgs) {
	a := &attachArgs{}
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	a.link.register(fs, "network interface to attach to (required)")
	fs.StringVar(&a.mode, "mode", "auto", "XDP mode: auto (native, else generic), native (driver) or generic (skb)")
	fs.BoolVar(&a.force, "force", false, "replace a foreign XDP program already on the link")
	fs.Var(&a.natPorts, "nat-t-port", "extra UDP port carrying ESP-in-UDP besides 4500 (repeatable, at most "+strconv.Itoa(loader.MaxNATTPorts)+")")
	fs.Var(&a.sas, "sa", "SA to steer: its identity (src, dst, proto, spi; encap for NAT-T) in 'ip xfrm state' syntax, one quoted word, no keys needed (repeatable)")
	return fs, a
}

// steerSA is an SA spec reduced to what the XDP datapath holds.
type steerSA struct {
	key       loader.SAKey
	encapPort uint16
	// keyed: the spec carried key bytes, which steering never needs.
	keyed bool
}

// warnKeyedSteerSAs says, after a successful run, that --sa values carried
// keys the command does not need, where every local user could read them.
func warnKeyedSteerSAs(stderr io.Writer, cmd string, sas []steerSA) {
	for i, s := range sas {
		if s.keyed {
			fmt.Fprintf(stderr, "xdpsec %s: warning: --sa #%d carried keys, which %s does not need, on the command line where every local user can read them (ps, /proc/PID/cmdline; and it stays in shell history): give only src, dst, proto and spi (and encap)\n", cmd, i+1, cmd)
			return
		}
	}
}

// parseSteerSAs parses --sa values. The datapath and classify need only
// the SA's identity, so the algorithm words are optional (checked when
// present). Errors name the spec by position, never echo it: it may hold
// key bytes.
func parseSteerSAs(specs []string) ([]steerSA, error) {
	out := make([]steerSA, 0, len(specs))
	for i, s := range specs {
		words, err := sad.Tokenize(s)
		if err != nil {
			return nil, usagef("--sa #%d: %v", i+1, err)
		}
		spec, err := sad.ParseSAForLookup(words)
		if err != nil {
			return nil, usagef("--sa #%d: %v", i+1, err)
		}
		e := steerSA{key: loader.SAKey{SPI: spec.SPI, Dst: spec.Dst, Proto: loader.Proto(spec.Proto)}, keyed: hasKeyBytes(spec)}
		if spec.Encap != nil {
			e.encapPort = spec.Encap.DstPort
		}
		for _, prev := range out {
			if prev.key == e.key {
				return nil, usagef("--sa #%d: %s given twice", i+1, e.key)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// parsePorts parses --nat-t-port values.
func parsePorts(vals []string) ([]uint16, error) {
	var ports []uint16
	for _, v := range vals {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 || n == 500 || n == 4500 {
			return nil, usagef("--nat-t-port %q: want a UDP port 1-65535 other than 500 (IKE) and 4500 (always on)", v)
		}
		if !slices.Contains(ports, uint16(n)) {
			ports = append(ports, uint16(n))
		}
	}
	if len(ports) > loader.MaxNATTPorts {
		return nil, usagef("--nat-t-port given %d times: the datapath holds at most %d extra ports", len(ports), loader.MaxNATTPorts)
	}
	return ports, nil
}

func runAttach(args []string, stdout, stderr io.Writer) (err error) {
	fs, a := attachFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (the interface goes after --link)", pos[0])
	}
	if a.link.ifname == "" {
		return usagef("--link IF is required (the interface to attach to)")
	}
	mode, err := loader.ParseMode(a.mode)
	if err != nil {
		return usagef("--mode: %v", err)
	}
	ports, err := parsePorts(a.natPorts)
	if err != nil {
		return err
	}
	sas, err := parseSteerSAs(a.sas)
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			warnKeyedSteerSAs(stderr, "attach", sas)
		}
	}()
	if err := checkPinRoot(a.link.pinRoot); err != nil {
		return err
	}

	opts := a.link.options()
	opts.Force = a.force
	if len(ports) > 0 {
		cfg := loader.DefaultConfig()
		cfg.NATTPorts = ports
		opts.Config = &cfg
	}
	// Whether this run creates the attachment decides what a later failure
	// undoes: a fresh attachment is detached again, a reused one is kept.
	fresh := true
	if d, err := loader.Open(a.link.ifname, opts); err == nil {
		fresh = false
		d.Close()
	}
	d, err := loader.Attach(a.link.ifname, mode, opts)
	if err != nil {
		if errors.Is(err, loader.ErrForeignProgram) {
			err = fmt.Errorf("%w (--force replaces it)", err)
		}
		return explainBPFError(err)
	}
	undo := func(err error) error {
		if fresh {
			if derr := d.Detach(opts); derr != nil {
				return fmt.Errorf("%w (and undoing the attach failed: %v)", err, derr)
			}
		} else {
			d.Close()
		}
		return err
	}
	if !fresh && len(ports) > 0 {
		cfg, err := d.Config()
		if err == nil {
			cfg.NATTPorts = ports
			err = d.SetConfig(cfg)
		}
		if err != nil {
			return undo(fmt.Errorf("set NAT-T ports on %s: %w", a.link.ifname, err))
		}
	}
	if err := putSAs(d.Maps, sas); err != nil {
		return undo(err)
	}
	st, err := d.Status()
	if err != nil {
		return undo(fmt.Errorf("read back the attachment on %s: %w", a.link.ifname, err))
	}
	d.Close()

	how := "attached on " + st.Interface
	if !fresh {
		how = "already attached on " + st.Interface + " (reused)"
	}
	via := "netlink"
	if st.LinkID != 0 {
		via = fmt.Sprintf("bpf_link %d", st.LinkID)
	}
	fmt.Fprintf(stdout, "xdpsec %s: %s mode, program %d (%s), pinned at %s\n", how, st.Mode, st.ProgramID, via, st.PinPath)
	if len(sas) > 0 {
		fmt.Fprintf(stdout, "SAs programmed: %d (the SA map holds %d)\n", len(sas), st.SAs)
	}
	return nil
}

// putSAs writes sas into the SA map. An SA already there keeps its id (and
// counters); a new one gets the next id above those in use.
func putSAs(m *loader.Maps, sas []steerSA) error {
	if len(sas) == 0 {
		return nil
	}
	cur, err := m.SAs()
	if err != nil {
		return fmt.Errorf("list SAs: %w", err)
	}
	ids := map[loader.SAKey]uint32{}
	var next uint32 = 1
	for _, e := range cur {
		ids[e.Key] = e.SA.ID
		next = max(next, e.SA.ID+1)
	}
	for _, s := range sas {
		id, ok := ids[s.key]
		if !ok {
			id = next
			next++
		}
		if err := m.PutSA(s.key, loader.SA{ID: id, EncapPort: s.encapPort}); err != nil {
			return err
		}
	}
	return nil
}

func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// checkPinRoot refuses a pin root that would not outlive this process.
// `ip netns exec` runs its command in a private mount namespace with a
// fresh /sys and no BPF filesystem; the loader would mount a new bpffs
// there, private to this process, and the pins (and with the last pin the
// attachment itself) would vanish when it exits.
func checkPinRoot(root string) error {
	const bpffs = "/sys/fs/bpf"
	if root != bpffs && !strings.HasPrefix(root, bpffs+"/") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffs, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if ns := ipNetnsExecName(); ns != "" {
		return fmt.Errorf("%s is not the BPF filesystem in this process: 'ip netns exec %s' gave it a private /sys, so pins would vanish when it exits; run 'nsenter --net=/run/netns/%s xdpsec ...' instead", bpffs, ns, ns)
	}
	return nil
}

// ipNetnsExecName returns the namespace name when /sys is the sysfs
// `ip netns exec NAME` mounts (its source is NAME), else "".
func ipNetnsExecName() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || fields[4] != "/sys" || len(tail) < 2 || tail[0] != "sysfs" {
			continue
		}
		name := tail[1]
		if name != "sysfs" && !strings.Contains(name, "/") {
			if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
				return name
			}
		}
	}
	return ""
}

// Capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// effectiveCaps returns the process's effective capability set.
func effectiveCaps() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// missingCaps names the capabilities loading and attaching an XDP program
// needs that this process lacks: CAP_BPF and CAP_NET_ADMIN (XDP is a
// networking program type), either of which CAP_SYS_ADMIN stands in for,
// as the kernel's bpf_capable() and bpf_net_capable() check.
func missingCaps() []string {
	eff, ok := effectiveCaps()
	if !ok {
		return nil
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var miss []string
	if !has(capBPF) && !has(capSysAdmin) {
		miss = append(miss, "CAP_BPF")
	}
	if !has(capNetAdmin) && !has(capSysAdmin) {
		miss = append(miss, "CAP_NET_ADMIN")
	}
	return miss
}

// explainBPFError adds to a permission error which capability is missing
// and how to get it, and to a no-BPF error what the kernel needs.
func explainBPFError(err error) error {
	switch {
	case errors.Is(err, loader.ErrPermission):
		if miss := missingCaps(); len(miss) > 0 {
			return fmt.Errorf("%w; this process lacks %s (run as root, or grant it: setcap cap_bpf,cap_net_admin+ep xdpsec)", err, strings.Join(miss, " and "))
		}
		return fmt.Errorf("%w; the capabilities are there, so an LSM, a seccomp filter or kernel.unprivileged_bpf_disabled refused it", err)
	case errors.Is(err, loader.ErrNoBPF):
		return fmt.Errorf("%w; xdpsec needs a kernel with CONFIG_BPF_SYSCALL, XDP and the bpf filesystem (5.18+: the program reads with bpf_xdp_load_bytes)", err)
	}
	return err
}
