package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/xdpsec/xdpsec/loader"
)

func init() {
	register(&command{
		name:    "detach",
		summary: "take the XDP classifier off a link and remove its pins",
		usage: `Usage: xdpsec detach --link IF [--pin-root DIR]

Takes xdpsec's program off IF (whichever process attached it) and removes the
pins under DIR/IF (default /sys/fs/bpf/xdpsec/IF). If IF is gone but its pins
remain, the pins are removed. Packets of steered SAs go to the kernel again.

Example:
  xdpsec detach --link eth0
  xdpsec detach --link eth0 --pin-root /sys/fs/bpf/xdpsec-ns1`,
		run: runDetach,
	})
	flagSets["detach"] = func() *flag.FlagSet { f, _ := detachFlags(); return f }
}

func detachFlags() (*flag.FlagSet, *linkArgs) {
	l := &linkArgs{}
	fs := flag.NewFlagSet("detach", flag.ContinueOnError)
	l.register(fs, "network interface to detach from (required)")
	return fs, l
}

func runDetach(args []string, stdout, stderr io.Writer) error {
	fs, l := detachFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (the interface goes after --link)", pos[0])
	}
	if l.ifname == "" {
		return usagef("--link IF is required (the interface to detach from)")
	}
	if err := checkPinRoot(l.pinRoot); err != nil {
		return err
	}
	if err := loader.Detach(l.ifname, l.options()); err != nil {
		return explainBPFError(err)
	}
	fmt.Fprintf(stdout, "xdpsec detached from %s\n", l.ifname)
	return nil
}
