package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// complete sources the generated script in bash, sets COMP_WORDS to words
// (the last one is being completed) and returns COMPREPLY.
func complete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	var quoted []string
	for _, w := range words {
		quoted = append(quoted, "'"+strings.ReplaceAll(w, "'", `'\''`)+"'")
	}
	prog := `source "$1" || exit 9
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
_xdpsec
printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.Command("bash", "-c", prog, "bash", script).Output()
	if err != nil {
		t.Fatalf("bash completing %q: %v", words, err)
	}
	return strings.Fields(string(out))
}

func TestCompletionBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	code, out, stderr := runCLI(t, "completion", "bash")
	if code != 0 || out != bashCompletion() || stderr != "" {
		t.Fatalf("xdpsec completion bash: exit %d, stderr %q", code, stderr)
	}
	script := filepath.Join(t.TempDir(), "xdpsec.bash")
	if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, b)
	}

	for _, c := range []struct {
		words []string
		want  []string // must all be offered
		only  bool     // and nothing else
	}{
		{[]string{"xdpsec", ""}, append(commandNames(), "help"), true},
		{[]string{"xdpsec", "pc"}, []string{"pcap"}, true},
		{[]string{"xdpsec", "pcap", ""}, []string{"decrypt", "encrypt"}, true},
		{[]string{"xdpsec", "caps", "s"}, []string{"set"}, true},
		{[]string{"xdpsec", "help", "cl"}, []string{"classify"}, true},
		{[]string{"xdpsec", "completion", ""}, []string{"bash"}, true},
		{[]string{"xdpsec", "attach", "--li"}, []string{"--link"}, true},
		{[]string{"xdpsec", "attach", "--link", ""}, []string{"lo"}, false},
		{[]string{"xdpsec", "pcap", "decrypt", "-"}, []string{"--sa", "-w", "--json"}, false},
		{[]string{"xdpsec", "pcap", "decrypt", "--sa", ""}, nil, true},
		{[]string{"xdpsec", "classify", "--pcap", "/etc/hostn"}, []string{"/etc/hostname"}, true},
		{[]string{"xdpsec", "sa", "add", "--file", "/etc/hostn"}, []string{"/etc/hostname"}, true},
		{[]string{"xdpsec", "pcap", "decrypt", "--sa-file", "/etc/hostn"}, []string{"/etc/hostname"}, true},
		{[]string{"xdpsec", "sa", "add", "--f"}, []string{"--file"}, true},
	} {
		got := complete(t, script, c.words...)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q: %q lacks %q", c.words, got, w)
			}
		}
		if c.only && len(got) != len(c.want) {
			t.Errorf("completing %q: %q, want exactly %q", c.words, got, c.want)
		}
	}

	// Every flag of every command is offered after a dash.
	for _, n := range commandNames() {
		fs := commands[n].flags()
		if fs == nil {
			continue
		}
		got := complete(t, script, "xdpsec", n, "-")
		for _, f := range commandFlags(commands[n]) {
			if !slices.Contains(got, f.word) {
				t.Errorf("xdpsec %s -<TAB>: %q lacks %s", n, got, f.word)
			}
		}
	}
}

func TestCompletionBadShell(t *testing.T) {
	code, _, stderr := runCLI(t, "completion", "fish")
	if code != 2 || !strings.Contains(stderr, "want exactly one shell: bash") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
