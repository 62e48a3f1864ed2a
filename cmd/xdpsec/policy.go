package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/xdpsec/xdpsec/userspace/sad"
)

func init() {
	register(&command{
		name:    "policy",
		summary: "add, delete or list the daemon's security policies",
		usage: `Usage: xdpsec policy add|del SPEC [--socket PATH]
       xdpsec policy list [-j] [--socket PATH]

SPEC is a policy in 'ip xfrm policy add' syntax. An outbound policy's
destination prefix is routed into the daemon's TUN; 'action block' is
DISCARD, 'action allow' without tmpl is BYPASS.

Examples:
  xdpsec policy add src 198.51.100.1/32 dst 198.51.100.2/32 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel
  xdpsec policy del src 198.51.100.1/32 dst 198.51.100.2/32 dir out
  xdpsec policy list
  xdpsec policy list -j --socket /run/xdpsec-b/control.sock`,
		run: runPolicy,
	})
	flagSets["policy"] = func() *flag.FlagSet { fs, _, _ := clientFlags("policy"); return fs }
}

func runPolicy(args []string, stdout, stderr io.Writer) error {
	fs, socket, asJSON := clientFlags("policy")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("policy needs a subcommand: add, del or list")
	}
	sub, words := pos[0], pos[1:]
	switch sub {
	case "add", "del":
		if len(words) == 0 {
			return usagef("policy %s needs a policy in 'ip xfrm policy add' syntax", sub)
		}
		if _, err := sad.ParsePolicy(words); err != nil {
			return usageError{err.Error()}
		}
		op, done := opPolicyAdd, "added"
		if sub == "del" {
			op, done = opPolicyDel, "deleted"
		}
		var spec string
		if err := callDaemon(*socket, op, wordsArgs{Words: words}, &spec); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "policy %s: %s\n", done, spec)
		return nil
	case "list":
		if len(words) > 0 {
			return usagef("policy list takes no arguments, got %q", words[0])
		}
		var l []policyInfo
		if err := callDaemon(*socket, opPolicyList, nil, &l); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, l)
		}
		if len(l) == 0 {
			fmt.Fprintln(stdout, "no policies")
		}
		for _, p := range l {
			fmt.Fprintf(stdout, "%-8s %s\n", p.Action, p.Spec)
		}
		return nil
	}
	return usagef("unknown policy subcommand %q: use add, del or list", sub)
}
