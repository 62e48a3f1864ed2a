package main

import (
	"os"
	"strings"
	"testing"
)

func TestDetachNotAttached(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads the bpf pin directory")
	}
	// lo exists in every namespace; nothing is pinned under a fresh root.
	root := t.TempDir()
	code, _, stderr := runCLI(t, "detach", "--link", "lo", "--pin-root", root)
	if code != 1 || !strings.Contains(stderr, "xdpsec is not attached") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("detach of a link without xdpsec: exit %d, %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "detach", "--link", "nosuch0", "--pin-root", root)
	if code != 1 || !strings.Contains(stderr, `no interface named "nosuch0"`) {
		t.Errorf("detach of a missing link: exit %d, %q", code, stderr)
	}
}
