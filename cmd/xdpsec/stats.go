package main

import (
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/xdpsec/xdpsec/userspace/engine"
)

func init() {
	register(&command{
		name:    "stats",
		summary: "print the daemon's counters: per reason, per verdict, per SA",
		usage: `Usage: xdpsec stats [-j] [--socket PATH] [--watch [--interval D] [--samples N]]

Prints the engine's counters (inbound and outbound, per reason), the
inbound verdicts, the XDP program's reason counters per link, and each SA's
packets and bytes. Counters that are zero are left out of the text form;
-j prints everything as one JSON document.

--watch prints rates instead, every --interval until Ctrl-C: packets/s and
bytes/s per SA, each SA's errors/s by verdict, and the inbound verdicts,
engine counters and XDP reasons per second (zero rates left out); with -j
one JSON object per interval (every SA listed).

Examples:
  xdpsec stats
  xdpsec stats -j
  xdpsec stats --watch --interval 2s
  xdpsec stats --watch -j --samples 10
  xdpsec stats --socket /run/xdpsec-b/control.sock`,
		run: runStats,
	})
	flagSets["stats"] = func() *flag.FlagSet { fs, _, _ := clientFlags("stats"); addWatchFlags(fs); return fs }
}

func runStats(args []string, stdout, stderr io.Writer) error {
	fs, socket, asJSON := clientFlags("stats")
	wo := addWatchFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("stats takes no arguments, got %q", pos[0])
	}
	if *wo.watch {
		return runStatsWatch(*socket, wo, *asJSON, stdout)
	}
	var watchOnly string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "interval" || f.Name == "samples" {
			watchOnly = f.Name
		}
	})
	if watchOnly != "" {
		return usagef("--%s only applies to --watch (add --watch, or drop --%s)", watchOnly, watchOnly)
	}
	var st engine.Stats
	if err := callDaemon(*socket, opStats, nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "engine: %d worker(s), AF_XDP %s, tun %s, up %s, %d policies\n", st.Workers, st.AFXDP, st.TUN, st.Uptime, st.Policies)
	for _, l := range st.Links {
		fmt.Fprintf(stdout, "link %s (xdp %s):", l.Name, l.XDPMode)
		printNonZero(stdout, l.Reasons)
	}
	fmt.Fprint(stdout, "engine:")
	printNonZero(stdout, st.Counters)
	fmt.Fprint(stdout, "inbound verdicts:")
	printNonZero(stdout, st.InVerdicts)
	fmt.Fprintf(stdout, "tun: rx %d pkts %d bytes, tx %d pkts %d bytes, rejected %d, truncated %d\n",
		st.TUNQueues.RxPackets, st.TUNQueues.RxBytes, st.TUNQueues.TxPackets, st.TUNQueues.TxBytes,
		st.TUNQueues.TxRejected, st.TUNQueues.RxTruncated)
	for _, s := range st.Sockets {
		fmt.Fprintf(stdout, "xsk %s/%d: rx %d tx %d rx-dropped %d rx-ring-full %d fill-empty %d\n",
			s.Link, s.Queue, s.RxPackets, s.TxPackets, s.RxDropped, s.RxRingFull, s.FillEmpty)
	}
	fmt.Fprintln(stdout, "SAs:")
	printSAs(stdout, st.SAs)
	return nil
}

func printNonZero(w io.Writer, m map[string]uint64) {
	n := 0
	for _, k := range sortedKeys(m) {
		if m[k] != 0 {
			fmt.Fprintf(w, " %s %d", k, m[k])
			n++
		}
	}
	if n == 0 {
		fmt.Fprint(w, " (all zero)")
	}
	fmt.Fprintln(w)
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
