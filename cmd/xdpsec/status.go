package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/xdpsec/xdpsec/loader"
)

func init() {
	register(&command{
		name:    "status",
		summary: "show how the classifier is attached, its counters by reason and per SA",
		usage: `Usage: xdpsec status [--link IF] [-j] [--pin-root DIR]

Shows, for IF (or every interface with pins under DIR), the XDP mode, the
program and bpf_link ids, the pin directory, the packet shapes the running
program handles, the receive-offload config, the packet counter of every
reason (with the /proc/net/xfrm_stat counter counting the same event in the
kernel, where there is one) and every SA with its packets and bytes.

-j prints JSON: one object for --link, else an array; reason counters are
keyed by reason name, SPIs are "0x%08x" strings.

Examples:
  xdpsec status
  xdpsec status --link eth0 -j
  xdpsec status --pin-root /sys/fs/bpf/xdpsec-ns1`,
		run: runStatus,
	})
	flagSets["status"] = func() *flag.FlagSet { f, _, _ := statusFlags(); return f }
}

func statusFlags() (*flag.FlagSet, *linkArgs, *bool) {
	l := &linkArgs{}
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	l.register(fs, "network interface to report on (default: every attached one)")
	j := fs.Bool("j", false, "print JSON")
	return fs, l, j
}

// statusJSON is the -j shape of one attachment.
type statusJSON struct {
	Interface string            `json:"interface"`
	Ifindex   int               `json:"ifindex,omitempty"`
	Mode      string            `json:"mode,omitempty"`
	ProgramID uint32            `json:"program_id,omitempty"`
	LinkID    uint32            `json:"link_id,omitempty"`
	PinPath   string            `json:"pin_path"`
	Features  []string          `json:"features,omitempty"`
	Config    *configJSON       `json:"config,omitempty"`
	Counters  map[string]uint64 `json:"counters,omitempty"`
	SAs       []saJSON          `json:"sas,omitempty"`
	// Error says why an attachment listed under the pin root could not be
	// read (its interface is in another namespace, its pins are stale...).
	Error string `json:"error,omitempty"`
}

type configJSON struct {
	ESP       bool     `json:"esp"`
	AH        bool     `json:"ah"`
	UDPESP    bool     `json:"udp_esp"`
	IPv4      bool     `json:"ipv4"`
	IPv6      bool     `json:"ipv6"`
	NATTPorts []uint16 `json:"nat_t_ports"`
}

type saJSON struct {
	SPI       string `json:"spi"`
	Dst       string `json:"dst"`
	Proto     string `json:"proto"`
	ID        uint32 `json:"id"`
	EncapPort uint16 `json:"encap_port"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	flags, l, asJSON := statusFlags()
	pos, err := parseInterspersed(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (name the interface with --link)", pos[0])
	}
	if err := checkPinRoot(l.pinRoot); err != nil {
		return err
	}
	if l.ifname != "" {
		st, err := readStatus(l.ifname, l.options())
		if err != nil {
			return explainBPFError(err)
		}
		if *asJSON {
			return writeJSON(stdout, st)
		}
		printStatus(stdout, st)
		return nil
	}

	entries, err := os.ReadDir(l.pinRoot)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return explainBPFError(fmt.Errorf("list %s: %w", l.pinRoot, err))
	}
	all := []statusJSON{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := readStatus(e.Name(), l.options())
		if err != nil {
			st = statusJSON{Interface: e.Name(), PinPath: filepath.Join(l.pinRoot, e.Name()), Error: oneLine(err.Error())}
		}
		all = append(all, st)
	}
	if *asJSON {
		return writeJSON(stdout, all)
	}
	if len(all) == 0 {
		fmt.Fprintf(stdout, "xdpsec is attached nowhere (nothing pinned under %s)\n", l.pinRoot)
	}
	for i, st := range all {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printStatus(stdout, st)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func readStatus(ifname string, opts loader.Options) (statusJSON, error) {
	d, err := loader.Open(ifname, opts)
	if err != nil {
		return statusJSON{}, err
	}
	defer d.Close()
	st, err := d.Status()
	if err != nil {
		return statusJSON{}, fmt.Errorf("status of %s: %w", ifname, err)
	}
	sas, err := d.SAs()
	if err != nil {
		return statusJSON{}, fmt.Errorf("list SAs on %s: %w", ifname, err)
	}
	out := statusJSON{
		Interface: st.Interface,
		Ifindex:   st.Ifindex,
		Mode:      st.Mode.String(),
		ProgramID: uint32(st.ProgramID),
		LinkID:    uint32(st.LinkID),
		PinPath:   st.PinPath,
		Features:  st.Features.Names(),
		Config: &configJSON{
			ESP: st.Config.ESP, AH: st.Config.AH, UDPESP: st.Config.UDPESP,
			IPv4: st.Config.IPv4, IPv6: st.Config.IPv6,
			NATTPorts: append([]uint16{4500}, st.Config.NATTPorts...),
		},
		Counters: map[string]uint64{},
		SAs:      []saJSON{},
	}
	for r, n := range st.Counters {
		out.Counters[loader.ReasonName(loader.Reason(r))] = n
	}
	sort.Slice(sas, func(i, j int) bool {
		a, b := sas[i].Key, sas[j].Key
		if c := a.Dst.Compare(b.Dst); c != 0 {
			return c < 0
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.SPI < b.SPI
	})
	for _, e := range sas {
		out.SAs = append(out.SAs, saJSON{
			SPI: fmt.Sprintf("0x%08x", e.Key.SPI), Dst: e.Key.Dst.String(), Proto: e.Key.Proto.String(),
			ID: e.SA.ID, EncapPort: e.SA.EncapPort, Packets: e.Counters.Packets, Bytes: e.Counters.Bytes,
		})
	}
	return out, nil
}

func printStatus(w io.Writer, st statusJSON) {
	if st.Error != "" {
		fmt.Fprintf(w, "%s: pinned at %s, unreadable here: %s\n", st.Interface, st.PinPath, st.Error)
		return
	}
	via := "netlink"
	if st.LinkID != 0 {
		via = fmt.Sprintf("bpf_link %d", st.LinkID)
	}
	fmt.Fprintf(w, "%s (ifindex %d): %s mode, program %d (%s), pinned at %s\n", st.Interface, st.Ifindex, st.Mode, st.ProgramID, via, st.PinPath)
	fmt.Fprintf(w, "  handles: %s\n", strings.Join(st.Features, " "))
	c := st.Config
	var on, off []string
	for _, x := range []struct {
		name string
		on   bool
	}{{"esp", c.ESP}, {"ah", c.AH}, {"udp-esp", c.UDPESP}, {"ipv4", c.IPv4}, {"ipv6", c.IPv6}} {
		if x.on {
			on = append(on, x.name)
		} else {
			off = append(off, x.name)
		}
	}
	ports := make([]string, len(c.NATTPorts))
	for i, p := range c.NATTPorts {
		ports[i] = fmt.Sprint(p)
	}
	fmt.Fprintf(w, "  offload on: %s; off: %s; ESP-in-UDP ports: %s\n", orNone(on), orNone(off), strings.Join(ports, " "))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  reason\tpackets\txfrm_stat")
	for r := range loader.NumReasons {
		name := loader.ReasonName(loader.Reason(r))
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", name, st.Counters[name], loader.ReasonXfrmStat(loader.Reason(r)))
	}
	tw.Flush()
	fmt.Fprintf(w, "  SAs: %d\n", len(st.SAs))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(st.SAs) > 0 {
		fmt.Fprintln(tw, "    id\tproto\tspi\tdst\tencap\tpackets\tbytes")
	}
	for _, s := range st.SAs {
		encap := "-"
		if s.EncapPort != 0 {
			encap = fmt.Sprintf("udp/%d", s.EncapPort)
		}
		fmt.Fprintf(tw, "    %d\t%s\t%s\t%s\t%s\t%d\t%d\n", s.ID, s.Proto, s.SPI, s.Dst, encap, s.Packets, s.Bytes)
	}
	tw.Flush()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}
