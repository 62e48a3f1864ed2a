// Command flamegraph folds `perf script` output and draws SVG flame graphs,
// for scripts/perf.sh (Debian ships no flame-graph tool, and we run no
// downloaded script).
//
//	perf script -i perf.data | flamegraph fold > daemon.folded
//	flamegraph svg --title "xdpsec under load" daemon.folded > daemon.svg
//	flamegraph top -n 15 daemon.folded
//
// Errors are one line on stderr and exit status 1 (2 for a bad command
// line).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/xdpsec/xdpsec/internal/flamegraph"
)

const usage = `Usage:
  flamegraph fold [PERF_SCRIPT_FILE]        perf script text (stdin if no file) -> folded stacks on stdout
  flamegraph svg [--title T] [--width PX] [FOLDED_FILE]   folded stacks -> SVG on stdout
  flamegraph top [-n N] [FOLDED_FILE]       the N functions with the most samples of their own

Example:
  perf record -g -p PID -o perf.data -- sleep 5
  perf script -i perf.data | flamegraph fold > xdpsec.folded
  flamegraph svg --title "xdpsec" xdpsec.folded > xdpsec.svg
`

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	title := fs.String("title", "Flame Graph", "the graph's title")
	width := fs.Float64("width", 1200, "the graph's width in pixels")
	n := fs.Int("n", 15, "how many functions top prints")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "flamegraph %s: %v (see 'flamegraph help')\n", args[0], err)
		return 2
	}
	in := stdin
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "flamegraph %s: one input file at most, got %d (see 'flamegraph help')\n", args[0], fs.NArg())
		return 2
	}
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "flamegraph %s: %v\n", args[0], err)
			return 1
		}
		defer f.Close()
		in = f
	}
	var err error
	switch args[0] {
	case "fold":
		var st []flamegraph.Stack
		if st, err = flamegraph.FoldPerfScript(in); err == nil {
			err = flamegraph.WriteFolded(stdout, st)
		}
	case "svg":
		var st []flamegraph.Stack
		if *width < 100 {
			fmt.Fprintf(stderr, "flamegraph svg: --width %v is too narrow: use 100 or more\n", *width)
			return 2
		}
		if st, err = flamegraph.ReadFolded(in); err == nil {
			err = flamegraph.WriteSVG(stdout, st, flamegraph.SVGOptions{Title: *title, Width: *width})
		}
	case "top":
		var st []flamegraph.Stack
		if st, err = flamegraph.ReadFolded(in); err == nil {
			fmt.Fprintf(stdout, "%8s %7s  %s\n", "samples", "self%", "function")
			for _, s := range flamegraph.TopSelf(st, *n) {
				fmt.Fprintf(stdout, "%8d %6.2f%%  %s\n", s.Samples, s.Percent, s.Name)
			}
		}
	default:
		fmt.Fprintf(stderr, "flamegraph: unknown command %q (fold, svg or top; see 'flamegraph help')\n", args[0])
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "flamegraph %s: %s\n", args[0], strings.Join(strings.Fields(err.Error()), " "))
		return 1
	}
	return 0
}
