package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/userspace/engine"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

func init() {
	register(&command{
		name:    "sa",
		summary: "add, update, delete, list or show the daemon's SAs",
		usage: `Usage: xdpsec sa add|update SPEC [--socket PATH]
       xdpsec sa del|get src A dst B proto esp|ah spi N [--socket PATH]
       xdpsec sa list [-j] [--socket PATH]

SPEC is an SA in 'ip xfrm state add' syntax. Keys travel only over the
root-only control socket and are never printed: list and get show
"<key N bits>" in their place.

Examples:
  xdpsec sa add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128
  xdpsec sa get src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001
  xdpsec sa del src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001
  xdpsec sa list -j`,
		run: runSA,
	})
	flagSets["sa"] = func() *flag.FlagSet { fs, _, _ := clientFlags("sa"); return fs }
}

// clientFlags are the flags of the commands that talk to the daemon.
func clientFlags(name string) (*flag.FlagSet, *string, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	socket := fs.String("socket", control.DefaultPath, "the daemon's control socket")
	asJSON := fs.Bool("j", false, "print JSON")
	return fs, socket, asJSON
}

// callDaemon makes one call on the daemon's control socket, with errors
// that say what to do.
func callDaemon(socket, op string, args, result any) error {
	c, err := control.Dial(socket)
	if err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return fmt.Errorf("no daemon at %s: start one with 'xdpsec run --config FILE' (or give --socket)", socket)
		}
		return fmt.Errorf("connect to the daemon at %s: %w", socket, err)
	}
	defer c.Close()
	if err := c.Call(op, args, result); err != nil {
		var re *control.RemoteError
		if errors.As(err, &re) && re.Code == "" {
			// The daemon refused the request itself: its one line says
			// why; the op and socket would only repeat what was typed.
			return &trimmedRemote{re, strings.TrimPrefix(re.Msg, op+": ")}
		}
		return daemonErr(socket, op, err)
	}
	return nil
}

// trimmedRemote is a RemoteError shown without its op prefix; errors.Is and
// errors.As still reach the original.
type trimmedRemote struct {
	*control.RemoteError
	msg string
}

func (e *trimmedRemote) Error() string { return e.msg }
func (e *trimmedRemote) Unwrap() error { return e.RemoteError }

func runSA(args []string, stdout io.Writer) error {
	fs, socket, asJSON := clientFlags("sa")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("sa needs a subcommand: add, update, del, get or list")
	}
	sub, words := pos[0], pos[1:]
	switch sub {
	case "add", "update":
		if len(words) == 0 {
			return usagef("sa %s needs an SA in 'ip xfrm state add' syntax", sub)
		}
		// Parse locally first: a typo gets its one-line answer without a
		// daemon, and nothing malformed travels.
		if _, err := sad.ParseSA(words); err != nil {
			return usageError{err.Error()}
		}
		op := opSAAdd
		if sub == "update" {
			op = opSAUpdate
		}
		var key string
		if err := callDaemon(*socket, op, wordsArgs{Words: words}, &key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "SA %s %sed\n", key, strings.TrimSuffix(sub, "e"))
		return nil
	case "del", "get":
		if len(words) == 0 {
			return usagef("sa %s needs src A dst B proto esp|ah spi N", sub)
		}
		if _, err := sad.ParseSAForLookup(words); err != nil {
			return usageError{err.Error()}
		}
		if sub == "del" {
			var key string
			if err := callDaemon(*socket, opSADel, wordsArgs{Words: words}, &key); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "SA %s deleted\n", key)
			return nil
		}
		var s engine.SAStats
		if err := callDaemon(*socket, opSAGet, wordsArgs{Words: words}, &s); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, s)
		}
		printSAs(stdout, []engine.SAStats{s})
		return nil
	case "list":
		if len(words) > 0 {
			return usagef("sa list takes no arguments, got %q", words[0])
		}
		var l []engine.SAStats
		if err := callDaemon(*socket, opSAList, nil, &l); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, l)
		}
		printSAs(stdout, l)
		return nil
	}
	return usagef("unknown sa subcommand %q: use add, update, del, get or list", sub)
}

// printSAs writes one block per SA: its redacted spec, then its counters.
func printSAs(w io.Writer, l []engine.SAStats) {
	if len(l) == 0 {
		fmt.Fprintln(w, "no SAs")
		return
	}
	for _, s := range l {
		fmt.Fprintf(w, "%s %s\n", s.Dir, s.Spec)
		fmt.Fprintf(w, "    packets %d bytes %d xdp-matched %d next-seq %d", s.Packets, s.Bytes, s.XDPPackets, s.NextSeq)
		for _, v := range sortedKeys(s.Verdicts) {
			fmt.Fprintf(w, " %s %d", v, s.Verdicts[v])
		}
		fmt.Fprintln(w)
	}
}
