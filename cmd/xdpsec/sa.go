package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/userspace/engine"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

func init() {
	register(&command{
		name:    "sa",
		summary: "add, update, delete, list or show the daemon's SAs",
		usage: `Usage: xdpsec sa add|update - | --file FILE [--socket PATH]
       xdpsec sa add|update SPEC [--socket PATH]
       xdpsec sa del|get src A dst B proto esp|ah spi N [--socket PATH]
       xdpsec sa list [-j] [--socket PATH]

SPEC is an SA in 'ip xfrm state add' syntax. Give SAs with keys on
stdin ('-') or in a file (--file): one SA per line, as SPEC alone or as
a whole 'ip xfrm state add ...' line (a config's key file is valid
input), blank lines and # comments skipped. Every line is checked before
the first is sent; the first SA the daemon refuses stops the rest, and
the error names its line. FILE must not be readable by group or others
(chmod 600 FILE), as the config's key files; so must stdin when it is a
file. A SPEC on the command line still works, but its keys are visible
to every local user in ps and /proc/PID/cmdline: xdpsec then warns on
stderr. Keys travel only over the root-only control socket and are never
printed: list and get show "<key N bits>" in their place.

Examples:
  xdpsec sa add - <<'EOF'
  src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128
  EOF
  xdpsec sa update --file /etc/xdpsec/rekey.sas
  xdpsec sa get src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001
  xdpsec sa del src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001
  xdpsec sa list -j --socket /run/xdpsec-b/control.sock`,
		run: runSA,
	})
	flagSets["sa"] = func() *flag.FlagSet { fs, _, _, _ := saFlags(); return fs }
}

// saFlags are the client flags plus --file.
func saFlags() (*flag.FlagSet, *string, *bool, *string) {
	fs, socket, asJSON := clientFlags("sa")
	file := fs.String("file", "", "add|update: read the SAs, with their keys, from FILE (chmod 600) instead of the command line; - is stdin")
	return fs, socket, asJSON, file
}

// argvKeyWarning is printed, after an SA given on the command line was
// accepted, when that SA carries key bytes.
const argvKeyWarning = "xdpsec sa: warning: the SA's keys were on the command line, where every local user can read them (ps, /proc/PID/cmdline; and it stays in shell history); give SAs on stdin ('xdpsec sa %s -') or with --file FILE (chmod 600) instead\n"

// saStdin is where `sa add -` reads; tests replace it.
var saStdin io.Reader = os.Stdin

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
	c, err := dialDaemon(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return callOn(c, socket, op, args, result)
}

// callOn makes one call on c. A refusal by the daemon itself is its one
// line without the op prefix (the op would only repeat what was typed).
func callOn(c *control.Client, socket, op string, args, result any) error {
	if err := c.Call(op, args, result); err != nil {
		var re *control.RemoteError
		if errors.As(err, &re) && re.Code == "" {
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

func runSA(args []string, stdout, stderr io.Writer) error {
	fs, socket, asJSON, file := saFlags()
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("sa needs a subcommand: add, update, del, get or list")
	}
	sub, words := pos[0], pos[1:]
	if *file != "" && sub != "add" && sub != "update" {
		return usagef("--file only applies to sa add and sa update")
	}
	switch sub {
	case "add", "update":
		op := opSAAdd
		if sub == "update" {
			op = opSAUpdate
		}
		if len(words) > 0 && words[0] == "-" {
			if *file != "" {
				return usagef("sa %s reads its SAs from '-' (stdin) or from --file, not both", sub)
			}
			*file = "-"
			words = words[1:]
		}
		if *file != "" {
			if len(words) > 0 {
				return usagef("sa %s takes the SAs from --file or from the command line, not both", sub)
			}
			lines, err := readSALines(*file, stderr)
			if err != nil {
				return err
			}
			return sendSALines(*socket, op, sub, lines, stdout)
		}
		if len(words) == 0 {
			return usagef("sa %s needs SAs: '-' (stdin), --file FILE, or a SPEC in 'ip xfrm state add' syntax", sub)
		}
		// Parse locally first: a typo gets its one-line answer without a
		// daemon, and nothing malformed travels.
		spec, err := sad.ParseSA(words)
		if err != nil {
			return usageError{err.Error()}
		}
		var key string
		if err := callDaemon(*socket, op, wordsArgs{Words: words}, &key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "SA %s %sed\n", key, strings.TrimSuffix(sub, "e"))
		// Warned only once the SA is in: a failure stays one line.
		if hasKeyBytes(spec) {
			fmt.Fprintf(stderr, argvKeyWarning, sub)
		}
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

// readSALines reads --file FILE, or stdin for "-". Stdin redirected from a
// file others can read is refused as FILE would be: the keys are already
// exposed there. On a terminal it first says how to end the input.
func readSALines(file string, stderr io.Writer) ([]engine.SALine, error) {
	if file != "-" {
		return engine.ReadSAFile(file)
	}
	if f, ok := saStdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%w: stdin is a file with mode %04o: chmod 600 it, or pipe the SAs in", engine.ErrKeyFileMode, st.Mode().Perm())
		}
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			fmt.Fprintln(stderr, "xdpsec: reading SAs from the terminal, one per line; end with Ctrl-D")
		}
	}
	return engine.ReadSALines(saStdin, "stdin")
}

// sendSALines adds or updates the SAs in order over one connection. The
// first refusal stops the rest; the error names its line and how many
// were done before it.
func sendSALines(socket, op, sub string, lines []engine.SALine, stdout io.Writer) error {
	c, err := dialDaemon(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	verb := strings.TrimSuffix(sub, "e") + "ed"
	for i, l := range lines {
		var key string
		if err := callOn(c, socket, op, wordsArgs{Words: l.Words}, &key); err != nil {
			done := ""
			if i > 0 {
				done = fmt.Sprintf(" (the %d SA(s) before it were %s; the rest were not sent)", i, verb)
			} else if len(lines) > 1 {
				done = " (nothing was " + verb + ")"
			}
			return fmt.Errorf("%s: %w%s", l.Source, err, done)
		}
		fmt.Fprintf(stdout, "SA %s %s\n", key, verb)
	}
	return nil
}

// hasKeyBytes reports whether spec carries any key byte.
func hasKeyBytes(spec *sad.SASpec) bool {
	p := spec.Params()
	return len(p.AEAD.Key)+len(p.Enc.Key)+len(p.Auth.Key) > 0
}
