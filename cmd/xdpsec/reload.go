package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

func init() {
	register(&command{
		name:    "reload",
		summary: "make the running daemon match its config file again, and say what changed",
		usage: `Usage: xdpsec reload [-j] [--socket PATH]

What SIGHUP does, with the answer here instead of only in the daemon's
log: the daemon reads its config again; its offload lines become the
parameters (undoing a runtime 'caps set' they do not repeat), then SAs
and policies are made to match the file (unchanged SAs are not touched,
changed ones keep their sequence numbers and replay window). A config
that does not load changes nothing and its one-line error (FILE:LINE)
is printed here.

Examples:
  xdpsec reload
  xdpsec reload -j --socket /run/xdpsec-b/control.sock`,
		run: runReload,
	})
	flagSets["reload"] = func() *flag.FlagSet { fs, _, _ := clientFlags("reload"); return fs }
}

func runReload(args []string, stdout, stderr io.Writer) error {
	fs, socket, asJSON := clientFlags("reload")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("reload takes no arguments, got %q", pos[0])
	}
	var r reloadResult
	if err := callDaemon(*socket, opReload, nil, &r); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, r)
	}
	fmt.Fprintf(stdout, "reloaded: SAs %d added, %d updated, %d deleted, %d unchanged; policies %d added, %d deleted, %d kept\n",
		r.SAsAdded, r.SAsUpdated, r.SAsDeleted, r.SAsUnchanged, r.PoliciesAdded, r.PoliciesDeleted, r.PoliciesKept)
	if len(r.OffloadChanged) > 0 {
		fmt.Fprintf(stdout, "offload parameters changed: %s\n", strings.Join(r.OffloadChanged, " "))
	}
	return nil
}
