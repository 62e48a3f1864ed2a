// Package flamegraph turns `perf script` output into folded stacks and
// folded stacks into an SVG flame graph, so that scripts/perf.sh needs
// nothing beyond perf and Go (Debian ships no flame-graph tool).
//
// Folded stacks are the format of Brendan Gregg's stackcollapse scripts:
// one line per distinct stack, frames from the root to the leaf joined by
// ';', a space and the sample count:
//
//	xdpsec;runtime.goexit;main.worker;ipsec.Decrypt 42
//
// In the SVG, a frame's width is proportional to the samples of the stacks
// passing through it; frames with the same parent are merged and sorted by
// name, as in the original flame graphs (the x axis is not time).
package flamegraph

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// ErrFormat marks input that is not what the function reads.
var ErrFormat = errors.New("flamegraph: bad input")

// Stack is one folded line: the frames from the root to the leaf and how
// many samples had exactly that stack.
type Stack struct {
	Frames []string
	Count  uint64
}

// FoldPerfScript reads the text of `perf script` (recorded with -g) and
// returns one Stack per distinct stack, the process name as the root frame,
// counting one per sample, sorted by their folded text. Symbol offsets
// (+0x1f) are dropped; frames perf could not name become "[dso]" or
// "[unknown]".
func FoldPerfScript(r io.Reader) ([]Stack, error) {
	counts := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var comm string
	var frames []string // leaf first, as perf prints them
	inSample := false
	flush := func() {
		if inSample {
			parts := []string{comm}
			for i := len(frames) - 1; i >= 0; i-- {
				parts = append(parts, frames[i])
			}
			counts[strings.Join(parts, ";")]++
		}
		inSample, frames = false, frames[:0]
	}
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		switch {
		case strings.TrimSpace(s) == "":
			flush()
		case s[0] == '#':
		case s[0] == ' ' || s[0] == '\t':
			if !inSample {
				return nil, fmt.Errorf("%w: line %d: a stack frame outside a sample: %q", ErrFormat, line, s)
			}
			frames = append(frames, frameName(strings.TrimSpace(s)))
		default:
			flush()
			comm = sampleComm(s)
			inSample = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	if len(counts) == 0 {
		return nil, fmt.Errorf("%w: no samples (was it recorded with perf record -g?)", ErrFormat)
	}
	return fromCounts(counts), nil
}

// sampleComm takes the process name from a sample header, "comm  pid/tid
// [cpu] time: period event:". The name may hold spaces: it ends before the
// first field that is a number (the pid).
func sampleComm(h string) string {
	f := strings.Fields(h)
	for i, w := range f {
		pid, _, _ := strings.Cut(w, "/")
		if _, err := strconv.Atoi(pid); err == nil && i > 0 {
			return strings.ReplaceAll(strings.Join(f[:i], "_"), ";", "_")
		}
	}
	if len(f) > 0 {
		return strings.ReplaceAll(f[0], ";", "_")
	}
	return "?"
}

// frameName turns "ffffffff81234567 do_syscall_64+0x5c ([kernel.kallsyms])"
// into "do_syscall_64".
func frameName(s string) string {
	_, rest, ok := strings.Cut(s, " ")
	if !ok {
		return "[unknown]"
	}
	rest = strings.TrimSpace(rest)
	dso := ""
	if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
		dso = rest[i+2 : len(rest)-1]
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "+0x"); i > 0 {
		rest = rest[:i]
	}
	if rest == "" || rest == "[unknown]" {
		if dso != "" && dso != "[unknown]" {
			rest = "[" + dso[strings.LastIndexByte(dso, '/')+1:] + "]"
		} else {
			rest = "[unknown]"
		}
	}
	return strings.ReplaceAll(rest, ";", ":")
}

func fromCounts(counts map[string]uint64) []Stack {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Stack, 0, len(keys))
	for _, k := range keys {
		out = append(out, Stack{Frames: strings.Split(k, ";"), Count: counts[k]})
	}
	return out
}

// WriteFolded writes stacks as folded lines.
func WriteFolded(w io.Writer, stacks []Stack) error {
	bw := bufio.NewWriter(w)
	for _, s := range stacks {
		fmt.Fprintf(bw, "%s %d\n", strings.Join(s.Frames, ";"), s.Count)
	}
	return bw.Flush()
}

// ReadFolded reads folded lines; lines with the same stack are summed.
// Blank lines are skipped; anything else malformed is an error naming the
// line.
func ReadFolded(r io.Reader) ([]Stack, error) {
	counts := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		i := strings.LastIndexByte(s, ' ')
		if i <= 0 {
			return nil, fmt.Errorf("%w: line %d: want \"frame;frame;... COUNT\", got %q", ErrFormat, line, s)
		}
		n, err := strconv.ParseUint(s[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: count %q is not a whole number", ErrFormat, line, s[i+1:])
		}
		counts[strings.TrimSpace(s[:i])] += n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return fromCounts(counts), nil
}
