package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/xdpsec/xdpsec/internal/pcap"
	"github.com/xdpsec/xdpsec/loader"
)

func init() {
	register(&command{
		name:    "classify",
		summary: "run the real XDP program over a capture and say what it does with each packet",
		usage: `Usage: xdpsec classify --pcap FILE [--sa SPEC ...] [--nat-t-port N ...]
                       [--off CLASS ...] [--json]

Runs xdpsec's XDP program, loaded but never attached, on every packet of FILE
(pcap or pcapng; Ethernet, raw IP or Linux cooked captures) through
BPF_PROG_TEST_RUN, and prints per packet the verdict (steer, pass, drop), the
reason counter it bumped and the SA it matched. The SA map holds the --sa SAs
('ip xfrm state' syntax, one quoted word; algorithm and key words may be left
out). No AF_XDP socket is bound, so a packet the datapath steers shows as
"steer steer-fallback". --off switches a receive-offload class off (esp, ah,
udp-esp, ipv4, ipv6), as the capabilities module would.

--json prints one object per packet:
  {"index":N,"verdict":"steer|pass|drop","reason":"...","spi":"0x..."}
with spi present when the packet carried one (matched or not). Packets whose link type
carries no IPv4/IPv6 header are not run (a note goes to stderr).
Needs CAP_BPF and CAP_NET_ADMIN (to load the program), no link.

Examples:
  xdpsec classify --pcap capture.pcap
  xdpsec classify --pcap capture.pcap --off ah --nat-t-port 4501   # as with caps set IPsecV2=esp
  xdpsec classify --pcap capture.pcapng --json \
      --sa "src 198.51.100.2 dst 198.51.100.1 proto esp spi 0x1001"`,
		run: runClassify,
	})
	flagSets["classify"] = func() *flag.FlagSet { f, _ := classifyFlags(); return f }
}

type classifyArgs struct {
	pcap     string
	sas      stringList
	natPorts stringList
	off      stringList
	json     bool
}

func classifyFlags() (*flag.FlagSet, *classifyArgs) {
	a := &classifyArgs{}
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	fs.StringVar(&a.pcap, "pcap", "", "capture file to classify, pcap or pcapng (required)")
	fs.Var(&a.sas, "sa", "SA the datapath knows: its identity (src, dst, proto, spi; encap for NAT-T) in 'ip xfrm state' syntax, one quoted word, no keys needed (repeatable)")
	fs.Var(&a.natPorts, "nat-t-port", "extra UDP port carrying ESP-in-UDP besides 4500 (repeatable)")
	fs.Var(&a.off, "off", "receive-offload class to switch off: esp, ah, udp-esp, ipv4 or ipv6 (repeatable)")
	fs.BoolVar(&a.json, "json", false, "print one JSON object per packet")
	return fs, a
}

// classifyConfig turns --nat-t-port and --off into the config map's value.
func classifyConfig(a *classifyArgs) (loader.Config, error) {
	cfg := loader.DefaultConfig()
	ports, err := parsePorts(a.natPorts)
	if err != nil {
		return cfg, err
	}
	cfg.NATTPorts = ports
	for _, o := range a.off {
		for _, class := range strings.Split(o, ",") {
			switch strings.ToLower(strings.TrimSpace(class)) {
			case "esp":
				cfg.ESP = false
			case "ah":
				cfg.AH = false
			case "udp-esp", "udpesp", "espinudp":
				cfg.UDPESP = false
			case "ipv4":
				cfg.IPv4 = false
			case "ipv6":
				cfg.IPv6 = false
			default:
				return cfg, usagef("--off %q: want esp, ah, udp-esp, ipv4 or ipv6", class)
			}
		}
	}
	return cfg, nil
}

// classifyLine is one packet's --json line, in the order the fields print.
type classifyLine struct {
	Index   int    `json:"index"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	SPI     string `json:"spi,omitempty"`
}

func runClassify(args []string, stdout, stderr io.Writer) (err error) {
	fs, a := classifyFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if a.pcap == "" && len(pos) == 1 {
		a.pcap, pos = pos[0], nil
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (give the capture with --pcap FILE)", pos[0])
	}
	if a.pcap == "" {
		return usagef("--pcap FILE is required (the capture to classify)")
	}
	sas, err := parseSteerSAs(a.sas)
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			warnKeyedSteerSAs(stderr, "classify", sas)
		}
	}()
	cfg, err := classifyConfig(a)
	if err != nil {
		return err
	}
	// Open the capture before loading the program: a wrong file is the
	// likelier mistake, and its error should not wait on BPF.
	r, err := pcap.Open(a.pcap)
	if err != nil {
		return err
	}
	defer r.Close()

	c, err := loader.NewClassifier()
	if err != nil {
		return explainBPFError(fmt.Errorf("load the classifier: %w", err))
	}
	defer c.Close()
	if err := c.SetConfig(cfg); err != nil {
		return fmt.Errorf("set the receive-offload config: %w", err)
	}
	if err := putSAs(c.Maps, sas); err != nil {
		return err
	}

	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var (
		frame   []byte
		byVerd  [3]int
		byReas  [loader.NumReasons]int
		skipped int
	)
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.Flush()
			return err
		}
		frame, err = pcap.EthernetFrame(frame, p.LinkType, p.Data)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xdpsec classify: packet %d not run: %v\n", p.Index, err)
			skipped++
			continue
		}
		res, err := c.Classify(frame)
		if err != nil {
			w.Flush()
			return fmt.Errorf("packet %d: %w", p.Index, err)
		}
		byVerd[res.Verdict]++
		byReas[res.Reason]++
		line := classifyLine{Index: p.Index, Verdict: res.Verdict.String(), Reason: loader.ReasonName(res.Reason)}
		if res.LookedUp {
			line.SPI = fmt.Sprintf("0x%08x", res.Key.SPI)
		}
		if a.json {
			if err := writeJSON(w, line); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(w, "%d\t%s\t%s", line.Index, line.Verdict, line.Reason)
		if res.Matched {
			fmt.Fprintf(w, "\tsa %d: %s", res.SAID, res.Key)
		}
		if p.Truncated() {
			fmt.Fprintf(w, "\t(captured %d of %d bytes: a malformed verdict may be the snap length's)", len(p.Data), p.OrigLen)
		}
		fmt.Fprintln(w)
	}
	if a.json {
		return nil
	}
	total := byVerd[0] + byVerd[1] + byVerd[2]
	fmt.Fprintf(w, "%d packets: %d steer, %d pass, %d drop", total,
		byVerd[loader.VerdictSteer], byVerd[loader.VerdictPass], byVerd[loader.VerdictDrop])
	if skipped > 0 {
		fmt.Fprintf(w, " (%d not run: no IP header)", skipped)
	}
	fmt.Fprintln(w)
	for r, n := range byReas {
		if n > 0 {
			fmt.Fprintf(w, "  %-16s %d\n", loader.ReasonName(loader.Reason(r)), n)
		}
	}
	return nil
}
