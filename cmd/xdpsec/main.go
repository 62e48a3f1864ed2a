// Command xdpsec attaches the xdpsec datapath to links, runs the IPsec
// offload engine, and offers the offline tools (classify, pcap decrypt and
// encrypt) and capability reports built on the same libraries.
//
// Each subcommand lives in its own file (attach.go, classify.go, ...) and
// registers itself in commands; main only dispatches and prints errors as
// one line: "xdpsec <command>: what is wrong (how to fix it)".
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand. run receives the arguments after the command
// name and writes its normal output to stdout.
type command struct {
	name    string
	summary string
	// usage is the synopsis line(s) and at least one example.
	usage string
	run   func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// usageError marks an error caused by the command line itself; it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				fmt.Fprint(stdout, helpText(c))
				return 0
			}
		}
		printOverview(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "xdpsec: unknown command %q (commands: %s; see 'xdpsec help')\n", args[0], strings.Join(commandNames(), ", "))
		return 2
	}
	err := c.run(args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, helpText(c))
		return 0
	}
	fmt.Fprintf(stderr, "xdpsec %s: %s\n", c.name, oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "run 'xdpsec help %s' for usage\n", c.name)
		return 2
	}
	return 1
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func printOverview(w io.Writer) {
	fmt.Fprint(w, "xdpsec: IPsec offload for plain Linux NICs (XDP + AF_XDP)\n\nUsage: xdpsec <command> [flags]\n\nCommands:\n")
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, "\nRun 'xdpsec help <command>' for a command's flags and examples.\n")
}

func helpText(c *command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "xdpsec %s: %s\n\n%s\n", c.name, c.summary, strings.TrimSpace(c.usage))
	if fs := c.flags(); fs != nil {
		b.WriteString("\nFlags:\n")
		fs.SetOutput(&b)
		fs.PrintDefaults()
	}
	return b.String()
}

// flagSets holds, per command, a constructor for its flag set so help can
// list the flags without running the command.
var flagSets = map[string]func() *flag.FlagSet{}

func (c *command) flags() *flag.FlagSet {
	if f, ok := flagSets[c.name]; ok {
		return f()
	}
	return nil
}

// parseInterspersed parses flags that may appear before, between or after
// positional arguments (as in "pcap decrypt --sa X in.pcap -w out.pcap")
// and returns the positional arguments in order. "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// stringList is a repeatable string flag (--sa A --sa B).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, "; ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
