package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUnknownCommandIsOneClearLine(t *testing.T) {
	code, _, stderr := runCLI(t, "atach")
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if n := strings.Count(stderr, "\n"); n != 1 || !strings.Contains(stderr, `unknown command "atach"`) {
		t.Fatalf("stderr = %q", stderr)
	}
}

func TestHelpListsEveryCommandWithExample(t *testing.T) {
	code, out, _ := runCLI(t, "help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, n := range commandNames() {
		if !strings.Contains(out, n) {
			t.Errorf("overview lacks %s", n)
		}
		_, h, _ := runCLI(t, "help", n)
		if !strings.Contains(h, "Example") {
			t.Errorf("help for %s has no example:\n%s", n, h)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var sas stringList
	fs.Var(&sas, "sa", "")
	w := fs.String("w", "", "")
	pos, err := parseInterspersed(fs, []string{"--sa", "a b", "in.pcap", "-w", "out.pcap", "--sa", "c", "--", "-odd"})
	if err != nil {
		t.Fatal(err)
	}
	if *w != "out.pcap" || len(sas) != 2 || sas[1] != "c" || len(pos) != 2 || pos[0] != "in.pcap" || pos[1] != "-odd" {
		t.Fatalf("w=%q sas=%q pos=%q", *w, sas, pos)
	}
	if _, err := parseInterspersed(flag.NewFlagSet("y", flag.ContinueOnError), []string{"--nope"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

// TestHelpExamplesUseEveryFlag: each flag a command has is shown in use in
// one of its help's examples, so no flag is known by its one-line
// description alone.
func TestHelpExamplesUseEveryFlag(t *testing.T) {
	for _, n := range commandNames() {
		c := commands[n]
		fs := c.flags()
		if fs == nil {
			continue
		}
		_, examples, ok := strings.Cut(c.usage, "Example")
		if !ok {
			t.Errorf("%s: no examples", n)
			continue
		}
		fs.VisitAll(func(f *flag.Flag) {
			word := "--" + f.Name
			if len(f.Name) == 1 {
				word = "-" + f.Name
			}
			if !strings.Contains(examples, word+" ") && !strings.Contains(examples, word+"\n") && !strings.HasSuffix(examples, word) {
				t.Errorf("xdpsec %s: no example uses %s", n, word)
			}
		})
	}
}
